//! TCP-mode service ports: bytes both ways between a client and one backend.

use crate::table::Table;
use crate::{Config, now_ms, now_us};
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::net::TcpStream;

/// Proxies one accepted connection on service port `port`: picks a backend, tries one other
/// when the connect fails, then copies until either side closes.
pub(crate) async fn serve_conn(
    mut client: TcpStream,
    peer: SocketAddr,
    port: u16,
    table: Arc<ArcSwap<Table>>,
    config: Arc<Config>,
) {
    let Some(pool) = table.load().service_ports.get(&port).cloned() else {
        return;
    };
    let mut tried = Vec::new();
    let start = now_us();
    let (backend, mut upstream) = loop {
        let Some(b) = pool.select(&tried, None, Some(peer.ip()), now_ms()) else {
            tracing::debug!(port, app = %pool.app_id, "no backend for TCP connection");
            return;
        };
        tried.push(b.addr);
        match tokio::time::timeout(config.connect_timeout, TcpStream::connect(b.addr)).await {
            Ok(Ok(s)) => break (b, s),
            Ok(Err(_)) | Err(_) => {
                b.state.failed(now_ms(), b.addr);
                b.state.errors.fetch_add(1, Ordering::Relaxed);
                if tried.len() >= 2 {
                    return;
                }
            }
        }
    };
    let _ = upstream.set_nodelay(true);
    let st = &backend.state;
    st.succeeded();
    st.active.fetch_add(1, Ordering::Relaxed);
    let res = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    st.active.fetch_sub(1, Ordering::Relaxed);
    st.requests.fetch_add(1, Ordering::Relaxed);
    st.latency_us_total
        .fetch_add(now_us().saturating_sub(start), Ordering::Relaxed);
    if res.is_err() {
        st.errors.fetch_add(1, Ordering::Relaxed);
    }
}
