//! The daemons: flags in, components wired together, signals handled.

use anyhow::{Context, Result};
use basalt_kernel_agent as agent;
use basalt_kernel_master as master;
use basalt_kernel_store::{Embedded, Store};
use clap::Args;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Args, Clone)]
pub(crate) struct DataDir {
    /// Where state lives [default: $XDG_DATA_HOME/basalt or ~/.local/share/basalt].
    #[arg(long, env = "BASALT_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

impl DataDir {
    fn resolve(&self) -> PathBuf {
        if let Some(d) = &self.data_dir {
            return d.clone();
        }
        if let Ok(x) = std::env::var("XDG_DATA_HOME")
            && !x.is_empty()
        {
            return PathBuf::from(x).join("basalt");
        }
        match std::env::var("HOME") {
            Ok(h) if !h.is_empty() => PathBuf::from(h).join(".local/share/basalt"),
            _ => PathBuf::from("/var/lib/basalt"),
        }
    }
}

#[derive(Args, Clone)]
pub(crate) struct MasterFlags {
    /// Agents silent this long become unreachable, and their tasks TASK_UNREACHABLE.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, env = "BASALT_AGENT_TIMEOUT")]
    agent_timeout: Duration,
    /// How often agents heartbeat.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    heartbeat_interval: Duration,
    /// Unreachable agents are removed after this; their tasks become TASK_LOST or TASK_GONE.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    unreachable_timeout: Duration,
    /// What tasks of removed agents become: lost or gone.
    #[arg(long, default_value = "lost", value_parser = ["lost", "gone"])]
    unreachable_policy: String,
    /// Time agents have to re-register after a master restart.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    agent_reregister_timeout: Duration,
    /// Batch allocation interval.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    allocation_interval: Duration,
    /// Outstanding offers are rescinded after this.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    offer_timeout: Duration,
    /// Role weights: `dev=1,prod=3`.
    #[arg(long)]
    weights: Option<String>,
    /// Allowed roles, comma separated (default: any). Mesos' deprecated `--roles`; the
    /// name `--roles` is `basalt node`'s list of process roles.
    #[arg(long)]
    allowed_roles: Option<String>,
    /// Cluster name.
    #[arg(long, default_value = "basalt")]
    cluster: String,
}

impl MasterFlags {
    fn config(&self, hostname: &str, port: u16) -> Result<master::Config> {
        let mut core = master::CoreConfig {
            agent_timeout: self.agent_timeout,
            heartbeat_interval: self.heartbeat_interval,
            unreachable_timeout: self.unreachable_timeout,
            unreachable_policy: if self.unreachable_policy == "gone" {
                master::UnreachablePolicy::Gone
            } else {
                master::UnreachablePolicy::Lost
            },
            agent_reregister_timeout: self.agent_reregister_timeout,
            allocation_interval: self.allocation_interval,
            offer_timeout: self.offer_timeout,
            hostname: hostname.to_owned(),
            port,
            cluster: self.cluster.clone(),
            ..Default::default()
        };
        if let Some(w) = &self.weights {
            for part in w.split(',').filter(|p| !p.trim().is_empty()) {
                let (role, weight) = part
                    .split_once('=')
                    .with_context(|| format!("--weights: '{part}' is not role=weight"))?;
                let weight: f64 = weight
                    .trim()
                    .parse()
                    .with_context(|| format!("--weights: bad weight in '{part}'"))?;
                anyhow::ensure!(
                    weight.is_finite() && weight > 0.0,
                    "--weights: weights must be positive"
                );
                core.weights.insert(role.trim().to_owned(), weight);
            }
        }
        if let Some(r) = &self.allowed_roles {
            core.roles = r
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
        }
        Ok(master::Config {
            core,
            ..Default::default()
        })
    }
}

#[derive(Args, Clone)]
pub(crate) struct AgentFlags {
    /// Resources to advertise, Mesos syntax: `cpus:4;mem:4096;disk:10000;ports:[31000-32000]`
    /// [default: detected from the host].
    #[arg(long, env = "BASALT_RESOURCES")]
    resources: Option<String>,
    /// Attributes: `rack:r1;zone:a`.
    #[arg(long)]
    attributes: Option<String>,
    /// Hostname the agent advertises (lets several agents on one machine look like hosts).
    #[arg(long)]
    hostname: Option<String>,
    /// Seconds between SIGTERM and SIGKILL when killing a task.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    kill_grace_period: Duration,
    /// Turn off cgroup isolation.
    #[arg(long)]
    no_cgroups: bool,
    /// Hard CPU limits per task (CFS quota), not only CPU weights (Mesos'
    /// --cgroups_enable_cfs). Costly to set up on some hosts.
    #[arg(long)]
    cgroups_enable_cfs: bool,
}

impl AgentFlags {
    fn config(&self, work_dir: PathBuf, ip: &str, default_host: &str) -> Result<agent::Config> {
        let mut attributes = BTreeMap::new();
        if let Some(a) = &self.attributes {
            for part in a.split(';').filter(|p| !p.trim().is_empty()) {
                let (k, v) = part
                    .split_once(':')
                    .with_context(|| format!("--attributes: '{part}' is not name:value"))?;
                attributes.insert(k.trim().to_owned(), v.trim().to_owned());
            }
        }
        if let Some(r) = &self.resources {
            basalt_api::RoleResources::parse(r).context("--resources")?;
        }
        Ok(agent::Config {
            work_dir,
            hostname: self
                .hostname
                .clone()
                .unwrap_or_else(|| default_host.to_owned()),
            advertise_ip: ip.to_owned(),
            resources: self.resources.clone(),
            attributes,
            kill_grace_period: self.kill_grace_period,
            cgroups: if self.no_cgroups {
                agent::CgroupsMode::Off
            } else {
                agent::CgroupsMode::Auto
            },
            cgroups_enable_cfs: self.cgroups_enable_cfs,
            launcher: std::env::current_exe().ok(),
            ..Default::default()
        })
    }
}

#[derive(Args, Clone)]
pub(crate) struct DnsFlags {
    /// DNS port, UDP and TCP [default: 8053 in `basalt up`, 53 for `basalt dns`].
    #[arg(long)]
    dns_port: Option<u16>,
    /// Port of the Mesos-DNS HTTP API (`/v1/hosts/...`).
    #[arg(long, default_value_t = 8123)]
    dns_http_port: u16,
    /// Upstream resolver for names outside the cluster domain, IP or IP:PORT; repeat for
    /// more [default: the nameservers of /etc/resolv.conf].
    #[arg(long = "dns-upstream")]
    dns_upstreams: Vec<String>,
    /// A Mesos-DNS config.json; the flags above override what it says.
    #[arg(long)]
    dns_config: Option<PathBuf>,
    /// Serve no DNS.
    #[arg(long)]
    no_dns: bool,
    /// UDP serving threads, each with its own socket [default: 1 in `basalt up`, one per
    /// core for `basalt dns`].
    #[arg(long)]
    dns_threads: Option<usize>,
}

impl DnsFlags {
    fn config(&self, ip: &str, default_port: u16, master: &str) -> Result<basalt_dns::Config> {
        let mut c = match &self.dns_config {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading --dns-config {}", p.display()))?;
                serde_json::from_str(&text).with_context(|| {
                    format!("--dns-config {} is not a Mesos-DNS config", p.display())
                })?
            }
            None => basalt_dns::Config {
                listener: ip.to_owned(),
                http_listener: ip.to_owned(),
                ..Default::default()
            },
        };
        c.port = self.dns_port.unwrap_or(default_port);
        c.http_port = self.dns_http_port;
        if !self.dns_upstreams.is_empty() {
            c.resolvers = self.dns_upstreams.clone();
        }
        if c.masters.is_empty() {
            c.masters = vec![master.to_owned()];
        }
        c.validate().map_err(|e| anyhow::anyhow!("dns: {e}"))
    }
}

async fn start_dns(
    cfg: basalt_dns::Config,
    threads: usize,
    master_url: &str,
    token: &CancellationToken,
) -> Result<basalt_dns::Running> {
    let leader = master_url
        .trim_start_matches("http://")
        .parse::<std::net::SocketAddr>()
        .ok();
    let deps = basalt_dns::Deps {
        master: basalt_api::Client::new(master_url),
        leader,
        shutdown: token.clone(),
        threads,
    };
    basalt_dns::start(cfg, deps)
        .await
        .map_err(|e| anyhow::anyhow!("{e} (use --dns-port/--dns-http-port, or --no-dns)"))
}

#[derive(Args, Clone)]
pub(crate) struct InitFlags {
    /// Port of init's Marathon API (`/v2/apps`).
    #[arg(long, default_value_t = 8080)]
    init_port: u16,
    /// Run no init (Marathon) service manager.
    #[arg(long)]
    no_init: bool,
}

async fn start_init(
    dir: &Path,
    ip: &str,
    port: u16,
    master_url: &str,
    token: &CancellationToken,
) -> Result<basalt_init::Running> {
    let store =
        Embedded::open(&dir.join("init").join("state.redb")).context("opening init's store")?;
    let cfg = basalt_init::Config {
        ip: ip.to_owned(),
        port,
        ..Default::default()
    };
    let deps = basalt_init::Deps {
        master: basalt_api::Client::new(master_url),
        store: Arc::new(store),
        shutdown: token.clone(),
    };
    basalt_init::start(cfg, deps)
        .await
        .map_err(|e| anyhow::anyhow!("{e} (use --init-port, or --no-init)"))
}

#[derive(Args, Clone)]
pub(crate) struct LbFlags {
    /// Port of the load balancer's HTTP virtual hosts [default: 9080 in `basalt up`, 80 for
    /// `basalt lb`].
    #[arg(long)]
    lb_http_port: Option<u16>,
    /// Port of the load balancer's stats, routes and metrics.
    #[arg(long, default_value_t = 9090)]
    lb_stats_port: u16,
    /// Port that routes by the `X-Marathon-App-Id` header.
    #[arg(long, default_value_t = 9091)]
    lb_app_id_port: u16,
    /// `HAPROXY_GROUP`s this load balancer exposes (comma list; `*` for every app).
    #[arg(long = "lb-group", default_value = "external", value_delimiter = ',')]
    lb_groups: Vec<String>,
    /// Expose only ports labelled `HAPROXY_{n}_ENABLED=true` (marathon-lb's --strict-mode).
    #[arg(long)]
    lb_strict_mode: bool,
    /// PEM certificate chain for HTTPS vhosts (with --lb-tls-key); no HTTPS without it.
    #[arg(long, requires = "lb_tls_key")]
    lb_tls_cert: Option<PathBuf>,
    /// PEM private key of --lb-tls-cert.
    #[arg(long, requires = "lb_tls_cert")]
    lb_tls_key: Option<PathBuf>,
    /// Port of HTTPS vhosts [default: 9443 in `basalt up`, 443 for `basalt lb`].
    #[arg(long)]
    lb_https_port: Option<u16>,
    /// Run no load balancer.
    #[arg(long)]
    no_lb: bool,
}

impl LbFlags {
    fn config(&self, ip: &str, default_http: u16, default_https: u16) -> Result<basalt_lb::Config> {
        let ip: std::net::IpAddr = ip
            .parse()
            .with_context(|| format!("--ip {ip} is not an IP address"))?;
        let at = |port| std::net::SocketAddr::new(ip, port);
        Ok(basalt_lb::Config {
            http_listen: at(self.lb_http_port.unwrap_or(default_http)),
            app_id_listen: at(self.lb_app_id_port),
            ops_listen: at(self.lb_stats_port),
            service_bind: ip,
            groups: self.lb_groups.clone(),
            strict: self.lb_strict_mode,
            tls: match (&self.lb_tls_cert, &self.lb_tls_key) {
                (Some(cert), Some(key)) => Some(basalt_lb::TlsConfig {
                    listen: at(self.lb_https_port.unwrap_or(default_https)),
                    cert: cert.display().to_string(),
                    key: key.display().to_string(),
                }),
                _ => None,
            },
            ..Default::default()
        })
    }
}

async fn start_lb(
    cfg: basalt_lb::Config,
    master_url: &str,
    token: &CancellationToken,
) -> Result<basalt_lb::Running> {
    let deps = basalt_lb::Deps {
        master: basalt_api::Client::new(master_url),
        shutdown: token.clone(),
    };
    basalt_lb::serve(cfg, deps).await.map_err(|e| {
        anyhow::anyhow!("{e} (use --lb-http-port/--lb-stats-port/--lb-app-id-port, or --no-lb)")
    })
}

#[derive(Args)]
pub(crate) struct LbArgs {
    /// The master whose event stream feeds the load balancer.
    #[arg(long, env = "BASALT_MASTER", default_value = "http://127.0.0.1:5050")]
    master: String,
    /// Address to listen on (vhosts, service ports, stats).
    #[arg(long, default_value = "0.0.0.0", env = "BASALT_LB_IP")]
    ip: String,
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Proxy threads, each a single-threaded runtime [default: one per core].
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    #[command(flatten)]
    lb: LbFlags,
}

fn lb_ready(r: &basalt_lb::Running) -> serde_json::Value {
    serde_json::json!({"lb_http": format!("http://{}", r.http_addr),
        "lb_https": r.https_addr.map(|a| format!("https://{a}")),
        "lb_app_id": format!("http://{}", r.app_id_addr),
        "lb_stats": format!("http://{}", r.ops_addr)})
}

pub(crate) async fn lb(a: LbArgs) -> Result<()> {
    let token = CancellationToken::new();
    shutdown_on_signals(token.clone());
    let master = a.master.trim_end_matches('/').to_owned();
    let mut cfg = a.lb.config(&a.ip, 80, 443)?;
    cfg.threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let running = start_lb(cfg, &master, &token).await?;
    write_ready(&a.ready_file, lb_ready(&running))?;
    eprintln!(
        "load balancer for {master}: vhosts http://{}, X-Marathon-App-Id http://{}, stats http://{}/stats",
        running.http_addr, running.app_id_addr, running.ops_addr
    );
    token.cancelled().await;
    running.wait().await;
    Ok(())
}

#[derive(Args)]
pub(crate) struct InitArgs {
    #[command(flatten)]
    data: DataDir,
    /// The master init runs its apps on.
    #[arg(long, env = "BASALT_MASTER", default_value = "http://127.0.0.1:5050")]
    master: String,
    #[arg(long, default_value = "127.0.0.1", env = "BASALT_IP")]
    ip: String,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

pub(crate) async fn init(a: InitArgs) -> Result<()> {
    let dir = a.data.resolve();
    let token = CancellationToken::new();
    shutdown_on_signals(token.clone());
    let master = a.master.trim_end_matches('/').to_owned();
    let running = start_init(&dir, &a.ip, a.port, &master, &token).await?;
    let url = format!("http://{}", running.addr);
    write_ready(&a.ready_file, serde_json::json!({ "init": url }))?;
    eprintln!("init (Marathon API) for {master}: {url}/v2/apps");
    token.cancelled().await;
    running.tasks.wait().await;
    Ok(())
}

#[derive(Args)]
pub(crate) struct DnsArgs {
    /// The master whose event stream feeds DNS.
    #[arg(long, env = "BASALT_MASTER", default_value = "http://127.0.0.1:5050")]
    master: String,
    #[arg(long, default_value = "127.0.0.1", env = "BASALT_IP")]
    ip: String,
    #[arg(long)]
    ready_file: Option<PathBuf>,
    #[command(flatten)]
    dns: DnsFlags,
}

pub(crate) async fn dns(a: DnsArgs) -> Result<()> {
    let token = CancellationToken::new();
    shutdown_on_signals(token.clone());
    let master = a.master.trim_end_matches('/').to_owned();
    let hostport = master.trim_start_matches("http://");
    let cfg = a.dns.config(&a.ip, 53, hostport)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let running = start_dns(cfg, a.dns.dns_threads.unwrap_or(cores), &master, &token).await?;
    write_ready(
        &a.ready_file,
        serde_json::json!({"dns": running.dns_addr.to_string(), "dns_http": format!("http://{}", running.http_addr)}),
    )?;
    eprintln!(
        "DNS for {master}: {} (UDP and TCP), HTTP API http://{}",
        running.dns_addr, running.http_addr
    );
    token.cancelled().await;
    running.wait().await;
    Ok(())
}

#[derive(Args)]
pub(crate) struct UpArgs {
    #[command(flatten)]
    data: DataDir,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1", env = "BASALT_IP")]
    ip: String,
    #[arg(long, default_value_t = 5050)]
    master_port: u16,
    #[arg(long, default_value_t = 5051)]
    agent_port: u16,
    /// Write the bound addresses here as JSON once serving.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    #[command(flatten)]
    master: MasterFlags,
    #[command(flatten)]
    agent: AgentFlags,
    #[command(flatten)]
    dns: DnsFlags,
    #[command(flatten)]
    init: InitFlags,
    #[command(flatten)]
    lb: LbFlags,
    #[command(flatten)]
    universe: UniverseFlags,
}

#[derive(Args, Clone)]
pub(crate) struct UniverseFlags {
    /// Port of the package API (Cosmos `/package/*`).
    #[arg(long, default_value_t = 7070)]
    universe_port: u16,
    /// Run no package universe.
    #[arg(long)]
    no_universe: bool,
    /// Accept package repositories added without a pinned root key, unverified. Off by
    /// default; for clients that cannot pass `--allow-unsigned` (`dcos package repo add`).
    #[arg(long)]
    universe_allow_unsigned: bool,
    /// Do not build and list the built-in signed repository.
    #[arg(long)]
    no_builtin_repo: bool,
    /// How long a verified repository is reused before it is fetched and checked again.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    universe_repo_cache: Duration,
    /// init's Marathon API, when init is not one of this node's roles.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    universe_init_url: String,
}

async fn start_universe(
    dir: &Path,
    ip: &str,
    f: &UniverseFlags,
    init_url: &str,
    token: &CancellationToken,
) -> Result<basalt_universe::Running> {
    let cfg = basalt_universe::Config {
        ip: ip.to_owned(),
        port: f.universe_port,
        dir: dir.join("universe"),
        init_url: init_url.to_owned(),
        allow_unsigned: f.universe_allow_unsigned,
        builtin: !f.no_builtin_repo,
        cache_for: f.universe_repo_cache,
    };
    let deps = basalt_universe::Deps {
        shutdown: token.clone(),
    };
    basalt_universe::start(cfg, deps)
        .await
        .map_err(|e| anyhow::anyhow!("{e} (use --universe-port, or --no-universe)"))
}

#[derive(Args)]
pub(crate) struct MasterArgs {
    #[command(flatten)]
    data: DataDir,
    #[arg(long, default_value = "127.0.0.1", env = "BASALT_IP")]
    ip: String,
    #[arg(long, default_value_t = 5050)]
    port: u16,
    /// Hostname the master advertises.
    #[arg(long)]
    hostname: Option<String>,
    #[arg(long)]
    ready_file: Option<PathBuf>,
    #[command(flatten)]
    master: MasterFlags,
}

#[derive(Args)]
pub(crate) struct AgentArgs {
    #[command(flatten)]
    data: DataDir,
    /// The master's URL.
    #[arg(long, env = "BASALT_MASTER", default_value = "http://127.0.0.1:5050")]
    master: String,
    #[arg(long, default_value = "127.0.0.1", env = "BASALT_IP")]
    ip: String,
    #[arg(long, default_value_t = 5051)]
    port: u16,
    #[arg(long)]
    ready_file: Option<PathBuf>,
    #[command(flatten)]
    agent: AgentFlags,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

async fn bind(ip: &str, port: u16, what: &str) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind((ip, port))
        .await
        .with_context(|| format!("cannot listen on {ip}:{port} for the {what} (is another basalt running? use --{what}-port)"))
}

fn shutdown_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term => {},
        }
        tracing::info!("stopping");
        token.cancel();
    });
}

fn write_ready(path: &Option<PathBuf>, v: serde_json::Value) -> Result<()> {
    if let Some(p) = path {
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&v)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, p).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

fn open_store(dir: &Path) -> Result<Arc<dyn Store>> {
    let s = Embedded::open(&dir.join("master").join("registry.redb"))
        .context("opening the master's store")?;
    Ok(Arc::new(s))
}

fn master_deps(
    listener: tokio::net::TcpListener,
    store: Arc<dyn Store>,
    token: &CancellationToken,
) -> master::Deps {
    let id = uuid::Uuid::new_v4();
    let seed = id.as_u128() as u64;
    master::Deps {
        http: listener,
        store,
        master_id: id.to_string(),
        seed,
        shutdown: token.clone(),
    }
}

/// The roles one node process can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Role {
    Master,
    Agent,
    Dns,
    Init,
    Lb,
    Universe,
}

#[derive(Args)]
pub(crate) struct NodeArgs {
    /// Roles to run in this process (comma list), e.g. `agent,lb` on a public edge node.
    #[arg(long, value_delimiter = ',')]
    roles: Vec<Role>,
    /// The master to join, when `master` is not one of the roles.
    #[arg(long, env = "BASALT_MASTER", default_value = "http://127.0.0.1:5050")]
    master_url: String,
    #[command(flatten)]
    up: UpArgs,
}

pub(crate) async fn up(a: UpArgs) -> Result<()> {
    let all = [
        Role::Master,
        Role::Agent,
        Role::Dns,
        Role::Init,
        Role::Lb,
        Role::Universe,
    ];
    run_roles(a, &all, None).await
}

/// `basalt node --roles ...`: the chosen roles in one process, joined to `--master-url`
/// unless the master is one of them. The load balancer here serves port 80 by default, as
/// on marathon-lb's public agents.
pub(crate) async fn node(a: NodeArgs) -> Result<()> {
    if a.roles.is_empty() {
        anyhow::bail!(
            "basalt node: give --roles (master,agent,dns,init,lb,universe) to run, or a subcommand (list)"
        );
    }
    let master =
        (!a.roles.contains(&Role::Master)).then(|| a.master_url.trim_end_matches('/').to_owned());
    run_roles(a.up, &a.roles, master).await
}

async fn run_roles(a: UpArgs, roles: &[Role], remote_master: Option<String>) -> Result<()> {
    let has = |r: Role| roles.contains(&r);
    let is_up = remote_master.is_none() && roles.len() == 6;
    let dir = a.data.resolve();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let token = CancellationToken::new();
    shutdown_on_signals(token.clone());
    let host = host_name();
    let mut daemons: Vec<(&str, tokio::task::JoinHandle<Result<()>>)> = Vec::new();
    let master_url = match &remote_master {
        Some(url) => url.clone(),
        None => {
            let ml = bind(&a.ip, a.master_port, "master").await?;
            let mport = ml.local_addr()?.port();
            let store = open_store(&dir)?;
            let mcfg = a.master.config(&a.ip, mport)?;
            let (_handle, mtask) = master::start(mcfg, master_deps(ml, store, &token)).await?;
            daemons.push((
                "master",
                tokio::spawn(
                    async move { mtask.await.context("master task")?.map_err(Into::into) },
                ),
            ));
            format!("http://{}:{mport}", a.ip)
        }
    };
    let mut agent_url = String::new();
    if has(Role::Agent) {
        let al = bind(&a.ip, a.agent_port, "agent").await?;
        agent_url = format!("http://{}:{}", a.ip, al.local_addr()?.port());
        let acfg = a.agent.config(dir.join("agent"), &a.ip, &host)?;
        let adeps = agent::Deps {
            http: al,
            master: basalt_api::Client::new(&master_url),
            shutdown: token.clone(),
        };
        daemons.push((
            "agent",
            tokio::spawn(async move { agent::serve(acfg, adeps).await.map_err(Into::into) }),
        ));
    }
    let dns = if a.dns.no_dns || !has(Role::Dns) {
        None
    } else {
        let hostport = master_url.trim_start_matches("http://").to_owned();
        let cfg = a
            .dns
            .config(&a.ip, if is_up { 8053 } else { 53 }, &hostport)?;
        Some(start_dns(cfg, a.dns.dns_threads.unwrap_or(1), &master_url, &token).await?)
    };
    let init = if a.init.no_init || !has(Role::Init) {
        None
    } else {
        Some(start_init(&dir, &a.ip, a.init.init_port, &master_url, &token).await?)
    };
    let lb = if a.lb.no_lb || !has(Role::Lb) {
        None
    } else {
        let cfg = if is_up {
            a.lb.config(&a.ip, 9080, 9443)?
        } else {
            a.lb.config(&a.ip, 80, 443)?
        };
        Some(start_lb(cfg, &master_url, &token).await?)
    };
    let init_url = init
        .as_ref()
        .map(|r| format!("http://{}", r.addr))
        .unwrap_or_default();
    let universe = if a.universe.no_universe || !has(Role::Universe) {
        None
    } else {
        let target = if init.is_some() {
            init_url.clone()
        } else {
            a.universe.universe_init_url.clone()
        };
        Some(start_universe(&dir, &a.ip, &a.universe, &target, &token).await?)
    };
    let universe_url = universe
        .as_ref()
        .map(|r| format!("http://{}", r.addr))
        .unwrap_or_default();
    let (dns_addr, dns_http) = match &dns {
        Some(r) => (r.dns_addr.to_string(), format!("http://{}", r.http_addr)),
        None => (String::new(), String::new()),
    };
    let mut ready = serde_json::json!({"master": master_url, "agent": agent_url, "data_dir": dir,
                           "dns": dns_addr, "dns_http": dns_http, "init": init_url,
                           "universe": universe_url});
    if let (Some(r), Some(m)) = (&lb, ready.as_object_mut())
        && let serde_json::Value::Object(l) = lb_ready(r)
    {
        m.extend(l);
    }
    write_ready(&a.ready_file, ready)?;
    eprintln!(
        "{}",
        if is_up {
            "Basalt is up."
        } else {
            "Basalt node is up."
        }
    );
    eprintln!("  master:   {master_url}   (Mesos API: {master_url}/master/state)");
    if has(Role::Agent) {
        eprintln!("  agent:    {agent_url}");
    }
    if dns.is_some() {
        eprintln!("  dns:      {dns_addr} (UDP/TCP, domain mesos)   HTTP API: {dns_http}");
    }
    if init.is_some() {
        eprintln!("  init:     {init_url}   (Marathon API: {init_url}/v2/apps)");
    }
    if let Some(l) = &lb {
        eprintln!(
            "  lb:       http://{} (HAPROXY_0_VHOST apps)   stats: http://{}/stats",
            l.http_addr, l.ops_addr
        );
    }
    if universe.is_some() {
        eprintln!("  universe: {universe_url}   (Cosmos API: basalt package search)");
    }
    eprintln!("  data dir: {}", dir.display());
    if is_up {
        eprintln!("Try: basalt run -- echo hello   |   basalt node list   |   Ctrl-C to stop");
    }
    // The master and the agent end on the shutdown signal (or on a fatal error, which
    // stops everything else too); the other roles follow the token.
    if daemons.is_empty() {
        token.cancelled().await;
    }
    let mut result = Ok(());
    for (name, task) in daemons {
        let r = task.await.with_context(|| format!("{name} task"));
        token.cancel();
        if let Err(e) = r.and_then(|r| r.with_context(|| format!("{name} failed")))
            && result.is_ok()
        {
            result = Err(e);
        }
    }
    token.cancel();
    if let Some(d) = dns {
        d.wait().await;
    }
    if let Some(i) = init {
        i.tasks.wait().await;
    }
    if let Some(l) = lb {
        l.wait().await;
    }
    if let Some(u) = universe {
        u.tasks.wait().await;
    }
    result
}

pub(crate) async fn master(a: MasterArgs) -> Result<()> {
    let dir = a.data.resolve();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let token = CancellationToken::new();
    shutdown_on_signals(token.clone());
    let l = bind(&a.ip, a.port, "master").await?;
    let port = l.local_addr()?.port();
    let url = format!("http://{}:{port}", a.ip);
    let host = a.hostname.clone().unwrap_or_else(|| a.ip.clone());
    let cfg = a.master.config(&host, port)?;
    let store = open_store(&dir)?;
    let (_h, task) = master::start(cfg, master_deps(l, store, &token)).await?;
    write_ready(
        &a.ready_file,
        serde_json::json!({"master": url, "data_dir": dir}),
    )?;
    tracing::info!(url = %url, "master serving");
    task.await.context("master task")??;
    Ok(())
}

pub(crate) async fn agent(a: AgentArgs) -> Result<()> {
    let dir = a.data.resolve();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let token = CancellationToken::new();
    shutdown_on_signals(token.clone());
    let l = bind(&a.ip, a.port, "agent").await?;
    let port = l.local_addr()?.port();
    let url = format!("http://{}:{port}", a.ip);
    let cfg = a.agent.config(dir.join("agent"), &a.ip, &host_name())?;
    write_ready(
        &a.ready_file,
        serde_json::json!({"agent": url, "data_dir": dir}),
    )?;
    let deps = agent::Deps {
        http: l,
        master: basalt_api::Client::new(&a.master),
        shutdown: token,
    };
    tracing::info!(url = %url, master = %a.master, "agent serving");
    agent::serve(cfg, deps).await?;
    Ok(())
}
