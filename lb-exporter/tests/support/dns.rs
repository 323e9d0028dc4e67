//! An authoritative DNS server for `test.` on 127.0.0.1 (UDP and TCP, one
//! port) whose A records the test changes while it runs: the samplers'
//! headless Service, as the resolvers see it. It can be told to answer one
//! record type with an error code, as dnsmasq refuses AAAA. Shared by lb-exporter's tests
//! and, through `#[path]`, the sampler's cluster component tests and the root
//! package's cluster tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::Time;
pub use hickory_server::proto::op::ResponseCode;
pub use hickory_server::proto::rr::RecordType;
use hickory_server::proto::rr::rdata::{A, AAAA, SOA};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RrKey};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{
    AxfrPolicy, Catalog, MessageResponseBuilder, ZoneHandler, ZoneType,
};
use tokio::net::TcpListener;

pub struct FakeDns {
    pub addr: SocketAddr,
    zone: Arc<InMemoryZoneHandler>,
    faults: Faults,
    server: Option<Server<Faulty>>,
    serial: u32,
}

/// Record types answered with an error code instead of from the zone.
type Faults = Arc<Mutex<HashMap<RecordType, ResponseCode>>>;

/// The catalog, except for the record types in `faults`.
struct Faulty {
    catalog: Catalog,
    faults: Faults,
}

#[async_trait::async_trait]
impl RequestHandler for Faulty {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let fault = request.request_info().ok().and_then(|info| {
            let kind = info.query.query_type();
            self.faults.lock().unwrap().get(&kind).copied()
        });
        match fault {
            Some(code) => {
                let response = MessageResponseBuilder::new(&request.queries, None)
                    .error_msg(&request.metadata, code);
                response_handle
                    .send_response(response)
                    .await
                    .expect("the test resolver takes the answer")
            }
            None => {
                self.catalog
                    .handle_request::<R, T>(request, response_handle)
                    .await
            }
        }
    }
}

impl FakeDns {
    pub async fn start() -> FakeDns {
        let origin = Name::from_ascii("test.").unwrap();
        let zone = InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
        let soa = SOA::new(
            Name::from_ascii("ns.test.").unwrap(),
            Name::from_ascii("admin.test.").unwrap(),
            1,
            60,
            60,
            60,
            0,
        );
        zone.upsert(Record::from_rdata(origin.clone(), 0, RData::SOA(soa)), 1)
            .await;
        let zone = Arc::new(zone);
        let mut catalog = Catalog::new();
        catalog.upsert(
            LowerName::new(&origin),
            vec![zone.clone() as Arc<dyn ZoneHandler>],
        );
        let faults = Faults::default();
        let mut server = Server::new(Faulty {
            catalog,
            faults: faults.clone(),
        });
        // UDP and TCP on the same port.
        let (udp, tcp) = loop {
            let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let port = udp.local_addr().unwrap().port();
            if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)).await {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().unwrap();
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 64);
        FakeDns {
            addr,
            zone,
            faults,
            server: Some(server),
            serial: 1,
        }
    }

    /// Replaces the A and AAAA records of `name` (`samplers.test.`) with
    /// `ips`.
    pub async fn set(&mut self, name: &str, ips: &[&str]) {
        let name = Name::from_ascii(name).unwrap();
        self.serial += 1;
        {
            let mut records = self.zone.records_mut().await;
            for kind in [RecordType::A, RecordType::AAAA] {
                records.remove(&RrKey::new(LowerName::new(&name), kind));
            }
        }
        for ip in ips {
            let data = match ip.parse::<IpAddr>().unwrap() {
                IpAddr::V4(v4) => RData::A(A(v4)),
                IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
            };
            let record = Record::from_rdata(name.clone(), 0, data);
            self.zone.upsert(record, self.serial).await;
        }
    }

    /// Answers every question for `kind` with `code` (REFUSED, SERVFAIL)
    /// from now on, or from the zone again with `None`.
    pub fn answer_with(&self, kind: RecordType, code: Option<ResponseCode>) {
        let mut faults = self.faults.lock().unwrap();
        match code {
            Some(code) => faults.insert(kind, code),
            None => faults.remove(&kind),
        };
    }

    /// Stops answering.
    pub async fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.shutdown_gracefully().await;
        }
    }
}
