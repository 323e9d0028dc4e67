//! `forward`: a transparent TCP forwarder, the floor of any LB's cost.
//!
//! It copies each client connection's bytes to a connection of its own to
//! the upstream, and the answers back, without reading them
//! (`tokio::io::copy_bidirectional_with_sizes`), on a runtime like the LB's
//! (multi-threaded, one worker per core unless `TOKIO_WORKER_THREADS` says
//! otherwise). An LB cannot do less per request: it must at least take the
//! bytes in and write them out, waking for each request. So the forwarder's
//! CPU per span, at low load and at peak, is what this host charges for
//! forwarding alone, and `bench --figure lb-cpu` runs it beside the LB
//! ([`crate::figures::Figure::LbCpu`]): the LB's low-load / peak ratio can
//! only be judged against the forwarder's, measured in the same run.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Each direction's buffer: one read takes up to a whole default 512-span
/// request (about 107 KiB), so the forwarder makes as few system calls per
/// request as the LB's receiver does.
pub const DEFAULT_BUFFER: usize = 256 << 10;

/// Forwards every connection accepted on `listener` to `upstream` until
/// `stop`; then stops accepting and drops the connections it holds.
pub async fn run(
    listener: TcpListener,
    upstream: SocketAddr,
    buffer: usize,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (inbound, _) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted?,
        };
        // Reap the connections that ended, so a long run holds no handles.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(connection(inbound, upstream, buffer));
    }
    tasks.shutdown().await;
    Ok(())
}

/// One client connection: refused (closed) if the upstream cannot be
/// reached, else copied both ways until either side closes.
async fn connection(mut inbound: TcpStream, upstream: SocketAddr, buffer: usize) {
    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
        return;
    };
    // As the LB and gRPC's clients do: a short answer goes out at once.
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let _ =
        tokio::io::copy_bidirectional_with_sizes(&mut inbound, &mut outbound, buffer, buffer).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_go_through_both_ways_unchanged_and_stop_ends_it() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        // An upstream that answers each read with the same bytes reversed.
        tokio::spawn(async move {
            let (mut s, _) = upstream.accept().await.unwrap();
            let mut got = vec![0u8; 300_000];
            s.read_exact(&mut got).await.unwrap();
            got.reverse();
            s.write_all(&got).await.unwrap();
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let forwarder = tokio::spawn(run(listener, upstream_addr, 64 << 10, stop.clone()));

        let sent: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(&sent).await.unwrap();
        let mut back = vec![0u8; sent.len()];
        client.read_exact(&mut back).await.unwrap();
        back.reverse();
        assert_eq!(back, sent);

        stop.cancel();
        forwarder.await.unwrap().unwrap();
        // The forwarder let go of the client's connection.
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_client_is_closed_when_the_upstream_is_down() {
        let down = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let down_addr = down.local_addr().unwrap();
        drop(down);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let forwarder = tokio::spawn(run(listener, down_addr, DEFAULT_BUFFER, stop.clone()));
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).await.unwrap(), 0);
        stop.cancel();
        forwarder.await.unwrap().unwrap();
    }
}
