//! The gateway's systemd watchdog and `STATUS=` line.
//!
//! The gateway has no loop of its own (axum's accept loop and hyper's connection tasks serve the
//! requests), so liveness is proven end to end: every watchdog interval a task sends a real HTTP
//! request to the gateway's own listener (`HEAD /openapi.json`: served by the router without
//! touching Redis) and pings `WATCHDOG=1` only when a complete response came back in time. A
//! wedged runtime, accept loop or router stops the pings. Redis is deliberately not part of it:
//! while Redis is down the gateway still serves (503 from `/healthz`, errors from the API), and
//! restarting it would not bring Redis back; the outage shows in `STATUS=` instead
//! ("listening on 127.0.0.1:8000, redis ok" / "…, redis unreachable").

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::notify::{StatusLine, Watchdog};
use crate::shutdown::Shutdown;
use crate::store::Store;

/// Probe period when only the status line is wanted (no watchdog).
const STATUS_PERIOD: Duration = Duration::from_secs(5);
/// Longest wait for Redis' PONG.
const REDIS_WAIT: Duration = Duration::from_secs(2);
/// The request: answered by the router from memory, without a body (plus, when tokens are
/// required, the probe's own `Authorization` header).
fn probe_request(authorization: Option<&str>) -> Vec<u8> {
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!("HEAD /openapi.json HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n")
        .into_bytes()
}

/// Where to connect to reach a listener bound to `addr` (a wildcard address means loopback).
fn probe_addr(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// One request to our own listener; true when a `200` response arrived.
async fn probe(addr: SocketAddr, request: &[u8]) -> bool {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(request).await?;
        let mut head = Vec::with_capacity(256);
        s.take(4096).read_to_end(&mut head).await?;
        Ok::<_, std::io::Error>(head)
    };
    match exchange.await {
        Ok(head) => head.starts_with(b"HTTP/1.1 200"),
        Err(e) => {
            tracing::warn!(%addr, error = %e, "liveness probe of the gateway failed");
            false
        }
    }
}

/// Runs until `shutdown`: probes the listener at `addr` and Redis, pings the watchdog and keeps
/// the status line up to date. Returns at once when systemd is not listening.
pub async fn run(
    addr: SocketAddr,
    store: Store,
    authorization: Option<String>,
    mut shutdown: Shutdown,
) {
    let mut wd = Watchdog::from_env();
    let status = StatusLine::spawn();
    if !status.is_enabled() {
        return;
    }
    let period = wd.interval().unwrap_or(STATUS_PERIOD);
    let target = probe_addr(addr);
    let request = probe_request(authorization.as_deref());
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tick.tick() => {}
        }
        match tokio::time::timeout(period, probe(target, &request)).await {
            Ok(true) => wd.ping(),
            Ok(false) => {}
            Err(_) => tracing::warn!(%addr, "gateway did not answer its liveness probe in time"),
        }
        let redis = match tokio::time::timeout(REDIS_WAIT.min(period), store.ping()).await {
            Ok(Ok(())) => "redis ok",
            _ => "redis unreachable",
        };
        status.set(format!("listening on {addr}, {redis}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listeners_are_probed_on_loopback() {
        let a: SocketAddr = "0.0.0.0:8000".parse().expect("addr");
        assert_eq!(probe_addr(a), "127.0.0.1:8000".parse().expect("addr"));
        let a: SocketAddr = "[::]:8000".parse().expect("addr");
        assert_eq!(probe_addr(a), "[::1]:8000".parse().expect("addr"));
        let a: SocketAddr = "10.1.2.3:80".parse().expect("addr");
        assert_eq!(probe_addr(a), a);
    }
}
