//! basalt-lb: the edge load balancer, on pingora.
//!
//! Owns: the routing table built from the master's event stream (marathon-lb's `HAPROXY_*`
//! labels, service ports, task health), HTTP proxying by virtual host, path prefix,
//! `X-Marathon-App-Id` and service port, TCP service ports, its own active health checks and
//! passive ejection, and the operator endpoints (stats, routes, Prometheus).
//! Never: writes a config file, reloads or restarts to apply a change, asks init or the
//! master anything but the event stream, or lets one app's bad labels stop another's updates.

mod fast;
pub mod labels;
mod ops;
pub mod proxy;
pub mod table;
mod tcp;

use crate::labels::{Filter, Mode};
use crate::proxy::{Front, Proxy};
use crate::table::{Builder, Table, View};
use arc_swap::ArcSwap;
use basalt_api::{Client, operator};
use pingora_core::apps::HttpServerOptions;
use pingora_core::server::Fds;
use pingora_core::server::configuration::ServerConf;
use pingora_core::services::Service as _;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::IntoRawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, thiserror::Error)]
pub enum LbError {
    #[error("TLS certificate {cert} / key {key}: {reason}")]
    Tls {
        cert: String,
        key: String,
        reason: String,
    },
    #[error("cannot listen on {addr} for {what}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What an operator sets.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP vhosts and path prefixes (marathon-lb's port 80).
    pub http_listen: SocketAddr,
    /// Routing by `X-Marathon-App-Id` (9091).
    pub app_id_listen: SocketAddr,
    /// Stats, routes, health, metrics (9090).
    pub ops_listen: SocketAddr,
    /// Address service ports bind to unless `HAPROXY_{n}_BIND_ADDR` says otherwise.
    pub service_bind: IpAddr,
    /// `--group`: which `HAPROXY_GROUP`s this load balancer serves (`*` = all).
    pub groups: Vec<String>,
    /// `--strict-mode`: only ports with `HAPROXY_{n}_ENABLED=true`.
    pub strict: bool,
    pub connect_timeout: Duration,
    /// Longest wait for a backend's next bytes (HAProxy's `timeout server`).
    pub backend_timeout: Duration,
    /// Idle pooled upstream connections are closed after this.
    pub idle_timeout: Duration,
    /// Interval of the LB's own TCP checks of every backend.
    pub check_interval: Duration,
    /// HTTPS vhosts (443), terminated here with this PEM certificate chain and key.
    pub tls: Option<TlsConfig>,
    /// Proxy threads. 0 or 1: the caller's runtime; more: that many single-threaded
    /// runtimes, each connection pinned to one (pingora's no-steal model), so a request
    /// never pays for a cross-thread wake-up.
    pub threads: usize,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub listen: SocketAddr,
    pub cert: String,
    pub key: String,
}

impl TlsConfig {
    /// Loads the pair once up front: pingora panics on files it cannot use.
    fn check(&self) -> Result<(), LbError> {
        let err = |reason: String| LbError::Tls {
            cert: self.cert.clone(),
            key: self.key.clone(),
            reason,
        };
        let (certs, key) = pingora_core::tls::load_certs_and_key_files(&self.cert, &self.key)
            .map_err(|e| err(e.to_string()))?
            .ok_or_else(|| err("no certificate or no private key in the files".into()))?;
        pingora_core::tls::install_default_crypto_provider();
        pingora_core::tls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| err(e.to_string()))?;
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        let any = IpAddr::from([0, 0, 0, 0]);
        Config {
            http_listen: SocketAddr::new(any, 80),
            app_id_listen: SocketAddr::new(any, 9091),
            ops_listen: SocketAddr::new(any, 9090),
            service_bind: any,
            groups: vec!["external".into()],
            strict: false,
            connect_timeout: Duration::from_secs(3),
            backend_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            check_interval: Duration::from_secs(2),
            tls: None,
            threads: 0,
        }
    }
}

pub struct Deps {
    pub master: Client,
    pub shutdown: CancellationToken,
}

pub struct Running {
    pub http_addr: SocketAddr,
    pub https_addr: Option<SocketAddr>,
    pub app_id_addr: SocketAddr,
    pub ops_addr: SocketAddr,
    pub tasks: TaskTracker,
}

impl Running {
    /// Waits for every task after the shutdown token was cancelled.
    pub async fn wait(self) {
        self.tasks.wait().await;
    }
}

fn clock() -> &'static tokio::time::Instant {
    static START: OnceLock<tokio::time::Instant> = OnceLock::new();
    START.get_or_init(tokio::time::Instant::now)
}

/// Microseconds on the process' monotonic clock.
pub(crate) fn now_us() -> u64 {
    clock().elapsed().as_micros() as u64
}

pub(crate) fn now_ms() -> u64 {
    now_us() / 1000
}

/// State the operator endpoints read.
pub(crate) struct Shared {
    pub table: Arc<ArcSwap<Table>>,
    pub config: Arc<Config>,
    /// Service ports that could not be bound, with why.
    pub listener_errors: Mutex<BTreeMap<u16, String>>,
    /// The proxy threads, when `Config::threads` > 1.
    pub proxy_rt: Option<pingora_runtime::Runtime>,
    pub updates: std::sync::atomic::AtomicU64,
}

/// Binds a listening socket the way a proxy wants it (address reuse, deep backlog).
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(4096)?;
    Ok(sock.into())
}

/// Serves HTTP on an already bound listener with pingora's own accept path (its buffered
/// streams coalesce a response's header and body into one write), until `stop` flips.
/// Binding here rather than in pingora keeps a taken port an error we report, not a panic.
fn spawn_http(
    listener: std::net::TcpListener,
    front: Front,
    tls: Option<&TlsConfig>,
    shared: &Shared,
    stop: watch::Receiver<bool>,
    tracker: &TaskTracker,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?.to_string();
    let conf = Arc::new(ServerConf::default());
    let router = || Proxy {
        front,
        table: shared.table.clone(),
        config: shared.config.clone(),
    };
    let mut opts = HttpServerOptions::default();
    opts.h2c = true;
    let mut h2 = pingora_proxy::http_proxy(&conf, router());
    h2.server_options = Some(opts.clone());
    let mut svc = pingora_core::services::listening::Service::new(
        "basalt-lb".into(),
        fast::Edge {
            h2: Arc::new(h2),
            router: router(),
            connector: pingora_core::connectors::http::v1::Connector::new(None),
            options: Some(opts),
        },
    );
    match tls {
        None => svc.add_tcp(&addr),
        Some(t) => {
            let mut settings =
                pingora_core::listeners::tls::TlsSettings::intermediate(&t.cert, &t.key)
                    .map_err(std::io::Error::other)?;
            settings.enable_h2();
            svc.add_tls_with_settings(&addr, None, settings);
        }
    }
    let mut fds = Fds::new();
    fds.add(addr, listener.into_raw_fd());
    let fds = Arc::new(parking_lot::Mutex::new(fds));
    let serve = async move {
        svc.start_service(Some(fds), stop, 1).await;
    };
    match &shared.proxy_rt {
        // Accepted connections are spawned on a random thread of this pool.
        Some(rt) => drop(rt.get_handle().spawn(tracker.track_future(serve))),
        None => drop(tracker.spawn(serve)),
    }
    Ok(())
}

/// A watch that flips to true when `token` is cancelled (pingora's shutdown signal).
fn watch_of(token: CancellationToken, tracker: &TaskTracker) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tracker.spawn(async move {
        token.cancelled().await;
        let _ = tx.send(true);
    });
    rx
}

async fn tcp_accept_loop(
    listener: TcpListener,
    port: u16,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => return,
        };
        match accepted {
            Ok((sock, peer)) => {
                let _ = sock.set_nodelay(true);
                tokio::spawn(tcp::serve_conn(
                    sock,
                    peer,
                    port,
                    shared.table.clone(),
                    shared.config.clone(),
                ));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning on the error.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The service-port listeners that exist, started and stopped as the table changes.
struct Listeners {
    running: HashMap<u16, (Mode, IpAddr, CancellationToken)>,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    reserved: Vec<u16>,
}

impl Listeners {
    fn sync(&mut self, table: &Table) {
        let mut errors = BTreeMap::new();
        let wanted: HashMap<u16, (Mode, IpAddr)> = table
            .service_ports
            .iter()
            .map(|(p, pool)| {
                (
                    *p,
                    (
                        pool.spec.mode,
                        pool.spec
                            .bind_addr
                            .unwrap_or(self.shared.config.service_bind),
                    ),
                )
            })
            .collect();
        self.running.retain(|port, (mode, ip, stop)| {
            let keep = wanted.get(port) == Some(&(*mode, *ip));
            if !keep {
                stop.cancel();
            }
            keep
        });
        for (port, (mode, ip)) in wanted {
            if self.running.contains_key(&port) {
                continue;
            }
            if self.reserved.contains(&port) {
                errors.insert(port, "the load balancer's own port".to_owned());
                continue;
            }
            let addr = SocketAddr::new(ip, port);
            let listener = match bind(addr) {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(port, error = %e, "cannot bind service port");
                    errors.insert(port, e.to_string());
                    continue;
                }
            };
            let stop = self.shutdown.child_token();
            let started = match mode {
                Mode::Http => spawn_http(
                    listener,
                    Front::ServicePort(port),
                    None,
                    &self.shared,
                    watch_of(stop.clone(), &self.tracker),
                    &self.tracker,
                ),
                Mode::Tcp => TcpListener::from_std(listener).map(|l| {
                    self.tracker
                        .spawn(tcp_accept_loop(l, port, self.shared.clone(), stop.clone()));
                }),
            };
            if let Err(e) = started {
                errors.insert(port, e.to_string());
                continue;
            }
            tracing::info!(port, ?mode, %ip, "service port listening");
            self.running.insert(port, (mode, ip, stop));
        }
        if let Ok(mut e) = self.shared.listener_errors.lock() {
            *e = errors;
        }
    }
}

/// Starts the load balancer: binds its fixed ports, then follows the master.
pub async fn serve(config: Config, deps: Deps) -> Result<Running, LbError> {
    let bind_fixed = |what, addr| bind(addr).map_err(|source| LbError::Bind { what, addr, source });
    if let Some(t) = &config.tls {
        t.check()?;
    }
    let https = match &config.tls {
        Some(t) => Some((bind_fixed("HTTPS vhosts", t.listen)?, t.clone())),
        None => None,
    };
    let http = bind_fixed("HTTP vhosts", config.http_listen)?;
    let app_id = bind_fixed("X-Marathon-App-Id routing", config.app_id_listen)?;
    let ops = bind_fixed("stats and operator API", config.ops_listen)?;
    let local = |l: &std::net::TcpListener, fallback| l.local_addr().unwrap_or(fallback);
    let http_addr = local(&http, config.http_listen);
    let app_id_addr = local(&app_id, config.app_id_listen);
    let ops_addr = local(&ops, config.ops_listen);
    tracing::info!(http = %http_addr, app_id = %app_id_addr, ops = %ops_addr, groups = ?config.groups, "lb listening");

    let filter = Filter {
        groups: config.groups.clone(),
        strict: config.strict,
    };
    let proxy_rt = (config.threads > 1)
        .then(|| pingora_runtime::Runtime::new_no_steal(config.threads, "basalt-lb"));
    let shared = Arc::new(Shared {
        table: Arc::new(ArcSwap::from_pointee(Table::default())),
        config: Arc::new(config),
        listener_errors: Mutex::new(BTreeMap::new()),
        proxy_rt,
        updates: Default::default(),
    });
    let tasks = TaskTracker::new();
    let shutdown = deps.shutdown.clone();
    let mut https_addr = None;
    let mut fixed = vec![
        (http, Front::Vhost, http_addr, None),
        (app_id, Front::AppId, app_id_addr, None),
    ];
    if let Some((l, t)) = https {
        let addr = l.local_addr().unwrap_or(t.listen);
        https_addr = Some(addr);
        fixed.push((l, Front::Vhost, addr, Some(t)));
    }
    for (listener, front, addr, tls) in fixed {
        spawn_http(
            listener,
            front,
            tls.as_ref(),
            &shared,
            watch_of(shutdown.clone(), &tasks),
            &tasks,
        )
        .map_err(|source| LbError::Bind {
            what: "HTTP",
            addr,
            source,
        })?;
    }
    let ops = TcpListener::from_std(ops).map_err(|source| LbError::Bind {
        what: "stats and operator API",
        addr: ops_addr,
        source,
    })?;
    let router = ops::router(shared.clone());
    let sd = shutdown.clone();
    tasks.spawn(async move {
        let r = axum::serve(ops, router)
            .with_graceful_shutdown(async move { sd.cancelled().await })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "lb operator server failed");
        }
    });

    let (tx, rx) = mpsc::unbounded_channel();
    let master = deps.master;
    let sd = shutdown.clone();
    tasks.spawn(async move {
        tokio::select! {
            _ = master.follow_events(tx) => {}
            _ = sd.cancelled() => {}
        }
    });
    let listeners = Listeners {
        running: HashMap::new(),
        shared: shared.clone(),
        tracker: tasks.clone(),
        shutdown: shutdown.clone(),
        reserved: [
            Some(http_addr),
            Some(app_id_addr),
            Some(ops_addr),
            https_addr,
        ]
        .iter()
        .flatten()
        .map(|a| a.port())
        .collect(),
    };
    tasks.spawn(apply_events(
        shared.clone(),
        Builder::new(filter),
        listeners,
        rx,
        shutdown.clone(),
    ));
    tasks.spawn(readiness_checks(shared.clone(), shutdown.clone()));
    tasks.spawn(health_checks(shared, shutdown));
    tasks.close();
    Ok(Running {
        http_addr,
        https_addr,
        app_id_addr,
        ops_addr,
        tasks,
    })
}

/// Applies events as they come; one rebuild per burst.
async fn apply_events(
    shared: Arc<Shared>,
    mut builder: Builder,
    mut listeners: Listeners,
    mut rx: mpsc::UnboundedReceiver<operator::Event>,
    shutdown: CancellationToken,
) {
    let mut view = View::default();
    let mut retry = tokio::time::interval(Duration::from_secs(5));
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let ev = tokio::select! {
            e = rx.recv() => e,
            _ = retry.tick() => {
                // Service ports that failed to bind are tried again.
                let failed = shared.listener_errors.lock().map(|e| !e.is_empty()).unwrap_or(false);
                if failed {
                    listeners.sync(&shared.table.load());
                }
                continue;
            }
            _ = shutdown.cancelled() => return,
        };
        let Some(ev) = ev else { return };
        let mut changed = view.apply(&ev);
        while let Ok(ev) = rx.try_recv() {
            changed |= view.apply(&ev);
        }
        if !changed {
            continue;
        }
        let table = Arc::new(builder.build(&view));
        tracing::debug!(
            generation = table.generation,
            tasks = view.task_count(),
            apps = table.apps.len(),
            "lb routes rebuilt"
        );
        shared.table.store(table.clone());
        shared.updates.fetch_add(1, Ordering::Relaxed);
        listeners.sync(&table);
    }
}

/// New instances with a readiness check are probed every 100 ms until it passes once; only
/// then do they get traffic (the check's own interval would add up to seconds).
async fn readiness_checks(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = shutdown.cancelled() => return,
        }
        let mut checks = tokio::task::JoinSet::new();
        for b in shared.table.load().backends() {
            let Some(r) = b.readiness.clone() else {
                continue;
            };
            if b.is_ready() {
                continue;
            }
            checks.spawn(async move {
                let at = SocketAddr::new(b.addr.ip(), r.port);
                let status =
                    tokio::time::timeout(Duration::from_secs(1), http_status(at, &r.path)).await;
                if let Ok(Some(code)) = status
                    && r.ready_codes.contains(&code)
                {
                    b.state.ready.store(true, Ordering::Relaxed);
                    tracing::info!(backend = %b.addr, task = %b.task_id, "instance ready");
                }
            });
        }
        while checks.join_next().await.is_some() {}
    }
}

/// The status code of `GET path` on `addr`.
async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: basalt-lb-check\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match s.read(&mut buf[n..]).await {
            Ok(0) | Err(_) => return None,
            Ok(k) => n += k,
        }
    }
    status_code(&buf[..n])
}

/// "HTTP/1.x NNN ..." -> NNN.
fn status_code(head: &[u8]) -> Option<u16> {
    if !head.starts_with(b"HTTP/1.") || head.len() < 12 {
        return None;
    }
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// One check: a TCP connect, or with `path` an HTTP/1.0 GET answered 2xx or 3xx
/// (HAProxy's `option httpchk` rule).
async fn probe(addr: SocketAddr, path: Option<&str>) -> bool {
    match path {
        None => tokio::net::TcpStream::connect(addr).await.is_ok(),
        Some(p) => http_status(addr, p)
            .await
            .is_some_and(|c| (200..400).contains(&c)),
    }
}

/// The LB's own view of its backends: a probe of each (see `probe`) every `check_interval`;
/// two failures in a row take a backend out until a connect succeeds again.
async fn health_checks(shared: Arc<Shared>, shutdown: CancellationToken) {
    let every = shared.config.check_interval;
    let timeout = every.min(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
        let mut checks = tokio::task::JoinSet::new();
        for b in shared.table.load().backends() {
            checks.spawn(async move {
                    let ok = matches!(
                        tokio::time::timeout(timeout, probe(b.addr, b.check_path.as_deref())).await,
                        Ok(true)
                    );
                    let st = &b.state;
                    if ok {
                        st.check_failures_in_row.store(0, Ordering::Relaxed);
                        if st.check_down.swap(false, Ordering::Relaxed) {
                            tracing::info!(backend = %b.addr, task = %b.task_id, "backend check passes again");
                        }
                    } else if st.check_failures_in_row.fetch_add(1, Ordering::Relaxed) + 1 >= 2
                        && !st.check_down.swap(true, Ordering::Relaxed)
                    {
                        tracing::warn!(backend = %b.addr, task = %b.task_id, "backend failed its checks; out of rotation");
                    }
                });
        }
        while checks.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::status_code;

    #[test]
    fn reads_status_codes() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(status_code(b"HTTP/1.0 302 Found"), Some(302));
        assert_eq!(status_code(b"HTTP/1.1 503 Unavailable"), Some(503));
        assert_eq!(status_code(b"SSH-2.0-OpenSSH"), None);
        assert_eq!(status_code(b"HTTP/1.1 2x0 ?"), None);
        assert_eq!(status_code(b"HTTP/1.1"), None);
    }
}
