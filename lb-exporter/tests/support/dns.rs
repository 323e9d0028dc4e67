//! An authoritative DNS server for `test.` on 127.0.0.1 (UDP and TCP, one
//! port) whose A records the test changes while it runs: the samplers'
//! headless Service, as the resolvers see it. Shared by lb-exporter's tests
//! and, through `#[path]`, the sampler's cluster component tests and the root
//! package's cluster tests.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_server::Server;
use hickory_server::proto::rr::rdata::{A, AAAA, SOA};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType, RrKey};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use tokio::net::TcpListener;

pub struct FakeDns {
    pub addr: SocketAddr,
    zone: Arc<InMemoryZoneHandler>,
    server: Option<Server<Catalog>>,
    serial: u32,
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
        let mut server = Server::new(catalog);
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

    /// Stops answering.
    pub async fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.shutdown_gracefully().await;
        }
    }
}
