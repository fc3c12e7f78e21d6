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
        // Each upstream gets its share, so a dead first one cannot use up the whole budget.
        let share = budget / u32::try_from(ups.len()).unwrap_or(u32::MAX).max(1);
        for up in ups {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break;
            }
            let until = (now + share).min(deadline);
            let got = tokio::time::timeout_at(until, async {
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
                Err(_) => tracing::debug!(upstream = %up, "upstream timed out"),
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

/// A UDP socket on `addr` that other threads may bind too (SO_REUSEPORT): the kernel
/// spreads packets over them, so threads never contend for one socket.
pub(crate) fn reuseport_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    // Bursts from many clients must queue in the kernel, not be dropped.
    let _ = s.set_recv_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Serves UDP with one OS thread per socket, each running its own single-threaded
/// runtime: no work stealing or cross-thread wakeups on the query path.
pub(crate) fn spawn_udp_threads(
    shared: Arc<Shared>,
    sockets: Vec<std::net::UdpSocket>,
    shutdown: CancellationToken,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    let mut handles = Vec::new();
    for (i, sock) in sockets.into_iter().enumerate() {
        let (shared, shutdown) = (shared.clone(), shutdown.clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let h = std::thread::Builder::new()
            .name(format!("dns-udp-{i}"))
            .spawn(move || {
                rt.block_on(async move {
                    match UdpSocket::from_std(sock) {
                        Ok(sock) => batched::udp_loop(shared, Arc::new(sock), shutdown).await,
                        Err(e) => tracing::error!(error = %e, "dns udp socket unusable"),
                    }
                });
            })?;
        handles.push(h);
    }
    Ok(handles)
}

/// One packet per syscall; the batched loop in `batched` is what serves on Linux.
#[allow(dead_code)]
async fn udp_loop(shared: Arc<Shared>, sock: Arc<UdpSocket>, shutdown: CancellationToken) {
    let forwards = Arc::new(tokio::sync::Semaphore::new(MAX_FORWARDS));
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, peer) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    // ICMP errors from earlier sends surface here; keep serving.
                    tracing::debug!(error = %e, "udp receive failed");
                    continue;
                }
            },
        };
        let req = &buf[..n];
        match shared.decide(req, true) {
            Outcome::Reply(bytes) => {
                // Try the non-blocking send first: a full buffer is rare, awaiting is not free.
                match sock.try_send_to(&bytes, peer) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        let _ = sock.send_to(&bytes, peer).await;
                    }
                    Err(_) => {}
                }
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
                tokio::spawn(async move {
                    if let Some(b) = shared.forward(&req, &zone, false).await {
                        let _ = sock.send_to(&b, peer).await;
                    }
                    drop(permit);
                });
            }
        }
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

/// The UDP hot path: up to `BATCH` queries per `recvmmsg`, their answers out with one
/// `sendmmsg`. Syscalls, not DNS, dominate a query's cost, so batching is what brings us
/// level with NSD.
mod batched {
    use super::{MAX_FORWARDS, Shared};
    use crate::answer::{self, Outcome};
    use std::io;
    use std::os::fd::AsRawFd;
    use std::sync::Arc;
    use tokio::io::Interest;
    use tokio::net::UdpSocket;
    use tokio_util::sync::CancellationToken;

    const BATCH: usize = 32;
    /// Queries are small; anything longer is cut and answered FORMERR by the parser.
    const QUERY_MAX: usize = 4096;

    struct Batch {
        bufs: Vec<[u8; QUERY_MAX]>,
        addrs: Vec<libc::sockaddr_storage>,
        iovs: Vec<libc::iovec>,
        hdrs: Vec<libc::mmsghdr>,
    }

    impl Batch {
        fn new() -> Batch {
            // SAFETY: all-zero is a valid value for these plain C structs.
            let zero_addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let zero_hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
            Batch {
                bufs: vec![[0u8; QUERY_MAX]; BATCH],
                addrs: vec![zero_addr; BATCH],
                iovs: vec![
                    libc::iovec {
                        iov_base: std::ptr::null_mut(),
                        iov_len: 0
                    };
                    BATCH
                ],
                hdrs: vec![zero_hdr; BATCH],
            }
        }

        /// One `recvmmsg`: how many datagrams arrived.
        fn recv(&mut self, fd: i32) -> io::Result<usize> {
            for i in 0..BATCH {
                self.iovs[i] = libc::iovec {
                    iov_base: self.bufs[i].as_mut_ptr().cast(),
                    iov_len: QUERY_MAX,
                };
                // SAFETY: zeroed mmsghdr is valid; the pointers set below stay valid for
                // the syscall because `self` is borrowed mutably throughout.
                self.hdrs[i] = unsafe { std::mem::zeroed() };
                self.hdrs[i].msg_hdr.msg_name = (&raw mut self.addrs[i]).cast();
                self.hdrs[i].msg_hdr.msg_namelen =
                    std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                self.hdrs[i].msg_hdr.msg_iov = &raw mut self.iovs[i];
                self.hdrs[i].msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: `hdrs` holds BATCH initialised headers pointing into our buffers.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    self.hdrs.as_mut_ptr(),
                    BATCH as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(n as usize)
        }

        fn query(&self, i: usize) -> &[u8] {
            let len = (self.hdrs[i].msg_len as usize).min(QUERY_MAX);
            &self.bufs[i][..len]
        }

        fn peer(&self, i: usize) -> Option<std::net::SocketAddr> {
            use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
            let a = &self.addrs[i];
            match i32::from(a.ss_family) {
                libc::AF_INET => {
                    // SAFETY: the family says the storage holds a sockaddr_in.
                    let v4: &libc::sockaddr_in =
                        unsafe { &*(a as *const _ as *const libc::sockaddr_in) };
                    Some(SocketAddr::V4(SocketAddrV4::new(
                        Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)),
                        u16::from_be(v4.sin_port),
                    )))
                }
                libc::AF_INET6 => {
                    // SAFETY: the family says the storage holds a sockaddr_in6.
                    let v6: &libc::sockaddr_in6 =
                        unsafe { &*(a as *const _ as *const libc::sockaddr_in6) };
                    Some(SocketAddr::V6(SocketAddrV6::new(
                        Ipv6Addr::from(v6.sin6_addr.s6_addr),
                        u16::from_be(v6.sin6_port),
                        v6.sin6_flowinfo,
                        v6.sin6_scope_id,
                    )))
                }
                _ => None,
            }
        }
    }

    /// Sends `replies` (bytes, index of the peer in `batch`) with `sendmmsg`, waiting for
    /// room when the socket buffer is full.
    async fn send_all(sock: &UdpSocket, batch: &mut Batch, replies: &mut [(Vec<u8>, usize)]) {
        let fd = sock.as_raw_fd();
        let mut iovs: Vec<libc::iovec> = replies
            .iter_mut()
            .map(|(b, _)| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        let mut hdrs: Vec<libc::mmsghdr> = Vec::with_capacity(replies.len());
        for (k, (_, i)) in replies.iter().enumerate() {
            // SAFETY: zeroed mmsghdr is valid.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = (&raw mut batch.addrs[*i]).cast();
            h.msg_hdr.msg_namelen = batch.hdrs[*i].msg_hdr.msg_namelen;
            h.msg_hdr.msg_iov = &raw mut iovs[k];
            h.msg_hdr.msg_iovlen = 1;
            hdrs.push(h);
        }
        let mut sent = 0;
        while sent < hdrs.len() {
            let r = sock.try_io(Interest::WRITABLE, || {
                // SAFETY: headers from `sent` on point into `iovs`, `replies` and
                // `batch.addrs`, all alive and unmoved for this call.
                let n = unsafe {
                    libc::sendmmsg(
                        fd,
                        hdrs[sent..].as_mut_ptr(),
                        (hdrs.len() - sent) as libc::c_uint,
                        libc::MSG_DONTWAIT,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match r {
                Ok(n) => sent += n.max(1),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if sock.writable().await.is_err() {
                        return;
                    }
                }
                // One bad destination must not hold up the rest of the batch.
                Err(_) => sent += 1,
            }
        }
    }

    pub(super) async fn udp_loop(
        shared: Arc<Shared>,
        sock: Arc<UdpSocket>,
        shutdown: CancellationToken,
    ) {
        let forwards = Arc::new(tokio::sync::Semaphore::new(MAX_FORWARDS));
        let mut batch = Batch::new();
        let mut replies: Vec<(Vec<u8>, usize)> = Vec::with_capacity(BATCH);
        let fd = sock.as_raw_fd();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                r = sock.readable() => if r.is_err() { return },
            }
            let n = match sock.try_io(Interest::READABLE, || batch.recv(fd)) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "udp receive failed");
                    continue;
                }
            };
            replies.clear();
            for i in 0..n {
                let req = batch.query(i);
                match shared.decide(req, true) {
                    Outcome::Reply(b) => replies.push((b, i)),
                    Outcome::Drop => {}
                    Outcome::Forward { zone } => {
                        let Some(peer) = batch.peer(i) else { continue };
                        let Ok(permit) = forwards.clone().try_acquire_owned() else {
                            if let Some(b) = answer::servfail(req) {
                                replies.push((b, i));
                            }
                            continue;
                        };
                        let (shared, sock, req) = (shared.clone(), sock.clone(), req.to_vec());
                        tokio::spawn(async move {
                            if let Some(b) = shared.forward(&req, &zone, false).await {
                                let _ = sock.send_to(&b, peer).await;
                            }
                            drop(permit);
                        });
                    }
                }
            }
            if !replies.is_empty() {
                send_all(&sock, &mut batch, &mut replies).await;
            }
        }
    }
}
