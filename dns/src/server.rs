//! Sockets: UDP workers that answer inline from the current record set, a TCP listener
//! (length-prefixed messages, RFC 7766), and the forwarder for names outside the domain.

use crate::answer::{self, Outcome};
use crate::config::Config;
use crate::records::RecordSet;
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

/// Everything a query needs, shared by all workers.
pub(crate) struct Shared {
    pub(crate) records: ArcSwap<RecordSet>,
    pub(crate) cfg: Config,
    /// Default upstreams, then per zone.
    pub(crate) upstreams: Vec<SocketAddr>,
    pub(crate) zone_upstreams: std::collections::BTreeMap<String, Vec<SocketAddr>>,
    pub(crate) counter: AtomicU64,
    pub(crate) stats: Stats,
}

#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) queries: AtomicU64,
    pub(crate) forwarded: AtomicU64,
    pub(crate) forward_failures: AtomicU64,
}

/// Most forwards in flight at once; beyond it new ones get SERVFAIL at once instead of
/// queueing behind a dead upstream (a flood must not stall in-domain answers).
const MAX_FORWARDS: usize = 1024;
const TCP_IDLE: Duration = Duration::from_secs(10);

impl Shared {
    fn next_shuffle(&self) -> u64 {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 17
    }

    fn decide(&self, req: &[u8], udp: bool) -> Outcome {
        self.stats.queries.fetch_add(1, Ordering::Relaxed);
        let rs = self.records.load();
        answer::answer(req, &rs, &self.cfg, udp, self.next_shuffle())
    }

    fn upstreams_for(&self, zone: &Option<String>) -> &[SocketAddr] {
        match zone.as_ref().and_then(|z| self.zone_upstreams.get(z)) {
            Some(u) => u,
            None if self.cfg.external_on => &self.upstreams,
            None => &[],
        }
    }

    /// Asks the upstreams in turn within the configured timeout: UDP first, TCP when the
    /// UDP answer is truncated and the client came over TCP. SERVFAIL when none answers.
    async fn forward(
        &self,
        req: &[u8],
        zone: &Option<String>,
        client_tcp: bool,
    ) -> Option<Vec<u8>> {
        let ups = self.upstreams_for(zone);
        if ups.is_empty() {
            return answer::refused(req);
        }
        self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
        let budget = Duration::from_secs_f64(self.cfg.timeout);
        let deadline = tokio::time::Instant::now() + budget;
        for up in ups {
            let got = tokio::time::timeout_at(deadline, async {
                let r = forward_udp(*up, req).await?;
                if client_tcp && r.len() > 2 && r[2] & 0x02 != 0 {
                    return forward_tcp(*up, req).await;
                }
                Ok::<_, std::io::Error>(r)
            })
            .await;
            match got {
                Ok(Ok(r)) => return Some(r),
                Ok(Err(e)) => tracing::debug!(upstream = %up, error = %e, "upstream failed"),
                Err(_) => break,
            }
        }
        self.stats.forward_failures.fetch_add(1, Ordering::Relaxed);
        answer::servfail(req)
    }
}

async fn forward_udp(up: SocketAddr, req: &[u8]) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if up.is_ipv4() {
        "0.0.0.0:0".parse().map_err(std::io::Error::other)?
    } else {
        "[::]:0".parse().map_err(std::io::Error::other)?
    };
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(up).await?;
    sock.send(req).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await?;
        // Only the answer to our id counts; anything else on the port is noise.
        if n >= 2 && req.len() >= 2 && buf[..2] == req[..2] {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn forward_tcp(up: SocketAddr, req: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(up).await?;
    let len = u16::try_from(req.len()).map_err(std::io::Error::other)?;
    s.write_all(&len.to_be_bytes()).await?;
    s.write_all(req).await?;
    let n = s.read_u16().await? as usize;
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Serves UDP on `sock` with `workers` tasks reading the same socket.
pub(crate) fn spawn_udp(
    shared: Arc<Shared>,
    sock: Arc<UdpSocket>,
    workers: usize,
    shutdown: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) {
    let forwards = Arc::new(tokio::sync::Semaphore::new(MAX_FORWARDS));
    for _ in 0..workers.max(1) {
        let (shared, sock, shutdown, forwards) = (
            shared.clone(),
            sock.clone(),
            shutdown.clone(),
            forwards.clone(),
        );
        let t2 = tracker.clone();
        tracker.spawn(async move {
            let mut buf = vec![0u8; 65535];
            loop {
                let (n, peer) = tokio::select! {
                    r = sock.recv_from(&mut buf) => match r {
                        Ok(x) => x,
                        Err(e) => {
                            // ICMP errors from earlier sends surface here; keep serving.
                            tracing::debug!(error = %e, "udp receive failed");
                            continue;
                        }
                    },
                    _ = shutdown.cancelled() => return,
                };
                let req = &buf[..n];
                match shared.decide(req, true) {
                    Outcome::Reply(bytes) => {
                        let _ = sock.send_to(&bytes, peer).await;
                    }
                    Outcome::Drop => {}
                    Outcome::Forward { zone } => {
                        let Ok(permit) = forwards.clone().try_acquire_owned() else {
                            if let Some(b) = answer::servfail(req) {
                                let _ = sock.send_to(&b, peer).await;
                            }
                            continue;
                        };
                        let (shared, sock, req) = (shared.clone(), sock.clone(), req.to_vec());
                        t2.spawn(async move {
                            if let Some(b) = shared.forward(&req, &zone, false).await {
                                let _ = sock.send_to(&b, peer).await;
                            }
                            drop(permit);
                        });
                    }
                }
            }
        });
    }
}

pub(crate) fn spawn_tcp(
    shared: Arc<Shared>,
    listener: TcpListener,
    shutdown: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) {
    let t2 = tracker.clone();
    tracker.spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "tcp accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.cancelled() => return,
            };
            let (shared, shutdown) = (shared.clone(), shutdown.clone());
            t2.spawn(async move {
                tokio::select! {
                    _ = tcp_conn(shared, stream) => {}
                    _ = shutdown.cancelled() => {}
                }
            });
        }
    });
}

async fn tcp_conn(shared: Arc<Shared>, mut s: TcpStream) {
    loop {
        let Ok(Ok(len)) = tokio::time::timeout(TCP_IDLE, s.read_u16()).await else {
            return;
        };
        let mut req = vec![0u8; len as usize];
        if tokio::time::timeout(TCP_IDLE, s.read_exact(&mut req))
            .await
            .map_or(true, |r| r.is_err())
        {
            return;
        }
        let reply = match shared.decide(&req, false) {
            Outcome::Reply(b) => Some(b),
            Outcome::Drop => None,
            Outcome::Forward { zone } => shared.forward(&req, &zone, true).await,
        };
        let Some(b) = reply else { continue };
        let Ok(n) = u16::try_from(b.len()) else {
            return;
        };
        if s.write_all(&n.to_be_bytes()).await.is_err() || s.write_all(&b).await.is_err() {
            return;
        }
    }
}
