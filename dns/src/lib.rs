//! Mesos-DNS-compatible service discovery: `web.marathon.mesos` A records, SRV records for
//! task ports, `leader`/`master`/`slave` names, PTR records, and the Mesos-DNS HTTP API,
//! kept current by the master's operator event stream (milliseconds, not a 30-60 s poll).
//!
//! Owns: the DNS and DNS-HTTP listeners, the record set built from cluster events, and
//! forwarding of other names to upstream resolvers.
//! Never: writes to the master, polls `/master/state`, or blocks a query on a lock: the
//! record set is an immutable snapshot swapped whole on each change.

pub mod answer;
pub mod config;
pub mod fast;
mod http;
pub mod names;
pub mod records;
mod server;

pub use config::{Config, ConfigError};

use arc_swap::ArcSwap;
use basalt_api::Client;
use basalt_api::operator;
use records::{Cluster, RecordSet};
use server::{Shared, Stats};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
}

pub struct Deps {
    /// The master whose event stream feeds us.
    pub master: Client,
    /// That master's address, for `leader.{domain}`.
    pub leader: Option<SocketAddr>,
    pub shutdown: CancellationToken,
    /// UDP serving threads, each with its own socket on the port (SO_REUSEPORT).
    pub threads: usize,
}

/// A started server: where it listens, and its tasks to wait for after shutdown.
pub struct Running {
    pub dns_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub tasks: TaskTracker,
    pub udp_threads: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Waits for every task and thread after the shutdown token was cancelled.
    pub async fn wait(self) {
        self.tasks.wait().await;
        let threads = self.udp_threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

fn default_upstreams(own: SocketAddr) -> Vec<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    config::resolv_conf_servers(&text)
        .into_iter()
        .filter(|a| *a != own)
        .collect()
}

/// Binds DNS (UDP and TCP on one port) and HTTP, then follows the master.
pub async fn start(cfg: Config, deps: Deps) -> Result<Running, DnsError> {
    let cfg = cfg.validate()?;
    let dns_bind = format!("{}:{}", cfg.listener, cfg.port);
    let udp_err = |source| DnsError::Bind {
        what: "DNS over UDP",
        addr: dns_bind.clone(),
        source,
    };
    let first_addr: SocketAddr = dns_bind.parse().map_err(|_| {
        udp_err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "listener must be an IP address",
        ))
    })?;
    let first = server::reuseport_udp(first_addr).map_err(udp_err)?;
    let dns_addr = first.local_addr().map_err(udp_err)?;
    let mut sockets = vec![first];
    for _ in 1..deps.threads.max(1) {
        sockets.push(server::reuseport_udp(dns_addr).map_err(udp_err)?);
    }
    // TCP on the same port UDP got, so `--dns-port 0` still gives one port for both.
    let tcp_bind = dns_addr.to_string();
    let tcp = tokio::net::TcpListener::bind(&tcp_bind)
        .await
        .map_err(|source| DnsError::Bind {
            what: "DNS over TCP",
            addr: tcp_bind.clone(),
            source,
        })?;
    let http_bind = format!("{}:{}", cfg.http_listener, cfg.http_port);
    let http = tokio::net::TcpListener::bind(&http_bind)
        .await
        .map_err(|source| DnsError::Bind {
            what: "DNS HTTP API",
            addr: http_bind.clone(),
            source,
        })?;
    let http_addr = http.local_addr().map_err(|source| DnsError::Bind {
        what: "DNS HTTP API",
        addr: http_bind.clone(),
        source,
    })?;

    let parse_all = |list: &[String]| -> Vec<SocketAddr> {
        list.iter()
            .filter_map(|r| config::parse_resolver(r).ok())
            .collect()
    };
    let upstreams = if cfg.resolvers.is_empty() {
        default_upstreams(dns_addr)
    } else {
        parse_all(&cfg.resolvers)
    };
    let zone_upstreams = cfg
        .zone_resolvers
        .iter()
        .map(|(z, r)| (z.clone(), parse_all(r)))
        .collect();
    tracing::info!(dns = %dns_addr, http = %http_addr, domain = %cfg.domain, upstreams = ?upstreams, "dns listening");

    let shared = Arc::new(Shared {
        records: ArcSwap::from_pointee(RecordSet::default()),
        cfg,
        upstreams,
        zone_upstreams,
        counter: AtomicU64::new(0),
        stats: Stats::default(),
    });
    let tasks = TaskTracker::new();
    let shutdown = deps.shutdown.clone();
    let udp_threads = server::spawn_udp_threads(shared.clone(), sockets, shutdown.clone())
        .map_err(|source| DnsError::Bind {
            what: "DNS over UDP",
            addr: dns_addr.to_string(),
            source,
        })?;
    server::spawn_tcp(shared.clone(), tcp, shutdown.clone(), &tasks);

    let (index_tx, index_rx) = watch::channel(0u64);
    let app = http::router(http::Ctx {
        shared: shared.clone(),
        index: index_rx,
    });
    let sd = shutdown.clone();
    tasks.spawn(async move {
        let r = axum::serve(http, app)
            .with_graceful_shutdown(async move { sd.cancelled().await })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "dns http server failed");
        }
    });

    let leader = deps.leader.map(|a| (a.ip(), a.port()));
    let (tx, rx) = mpsc::unbounded_channel();
    tasks.spawn(read_events(deps.master, tx, shutdown.clone()));
    tasks.spawn(apply_events(shared, leader, rx, index_tx, shutdown));
    tasks.close();
    Ok(Running {
        dns_addr,
        http_addr,
        tasks,
        udp_threads,
    })
}

/// Follows the operator stream until shutdown; every event goes to `tx`.
async fn read_events(
    master: Client,
    tx: mpsc::UnboundedSender<operator::Event>,
    shutdown: CancellationToken,
) {
    tokio::select! {
        _ = master.follow_events(tx) => {}
        _ = shutdown.cancelled() => {}
    }
}

fn unix_secs() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

/// Applies events as they come; after each burst, builds one new record set and swaps it
/// in, so a flood of events costs one rebuild, not one per event.
async fn apply_events(
    shared: Arc<Shared>,
    leader: Option<(IpAddr, u16)>,
    mut rx: mpsc::UnboundedReceiver<operator::Event>,
    index: watch::Sender<u64>,
    shutdown: CancellationToken,
) {
    let mut cluster = Cluster::with_leader(leader);
    let mut n = 0u64;
    // The leader and masters are known before the first event.
    shared.records.store(Arc::new(records::build(
        &cluster,
        &shared.cfg,
        unix_secs(),
        n,
    )));
    loop {
        let ev = tokio::select! {
            e = rx.recv() => e,
            _ = shutdown.cancelled() => return,
        };
        let Some(ev) = ev else { return };
        let mut changed = cluster.apply(&ev);
        while let Ok(ev) = rx.try_recv() {
            changed |= cluster.apply(&ev);
        }
        if !changed {
            continue;
        }
        n += 1;
        let rs = records::build(&cluster, &shared.cfg, unix_secs(), n);
        tracing::debug!(
            index = n,
            tasks = cluster.task_count(),
            names = rs.a.len(),
            "dns records rebuilt"
        );
        shared.records.store(Arc::new(rs));
        index.send_replace(n);
    }
}
