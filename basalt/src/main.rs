//! The one `basalt` binary: daemons (`basalt up`, `basalt master`, `basalt agent`) and the
//! user CLI (`basalt node list`, `basalt task list|log`, `basalt run`, `basalt package`).
//!
//! Owns: flags, environment, config files, logging, process signals, output formatting.
//! Never: holds business logic; every decision is in a component crate.

#![allow(clippy::print_stdout, clippy::disallowed_methods)]

mod apps;
mod cli;
mod daemon;
mod packages;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "basalt",
    version,
    about = "Basalt: a batteries-included datacenter operating system"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a working single-node cluster (master + agent) in this process.
    Up(Box<daemon::UpArgs>),
    /// Run a master.
    Master(daemon::MasterArgs),
    /// Run an agent that joins a master.
    Agent(daemon::AgentArgs),
    /// Run Mesos-DNS-compatible service discovery for a master.
    Dns(daemon::DnsArgs),
    /// Run init, the Marathon-compatible service manager, against a master.
    Init(daemon::InitArgs),
    /// Run the edge load balancer (marathon-lb labels, no reloads) for a master.
    Lb(daemon::LbArgs),
    /// Agents of the cluster (`basalt node list`), or run chosen roles as one node
    /// (`basalt node --roles agent,lb --master-url URL`).
    #[command(args_conflicts_with_subcommands = true)]
    Node {
        #[command(subcommand)]
        cmd: Option<cli::NodeCmd>,
        #[command(flatten)]
        run: Box<daemon::NodeArgs>,
    },
    /// Tasks of the cluster.
    Task {
        #[command(subcommand)]
        cmd: cli::TaskCmd,
    },
    /// Launch one task, stream its states, exit with its exit code (like mesos-execute).
    Run(cli::RunArgs),
    /// Apps of init, the Marathon-compatible service manager.
    App {
        #[command(subcommand)]
        cmd: apps::AppCmd,
        #[command(flatten)]
        g: apps::InitArgs,
    },
    /// init's deployments.
    Deployment {
        #[command(subcommand)]
        cmd: apps::DeploymentCmd,
        #[command(flatten)]
        g: apps::InitArgs,
    },
    /// Packages from the signed universe (the Cosmos API): search, install, list, uninstall.
    Package {
        #[command(subcommand)]
        cmd: packages::PackageCmd,
        #[command(flatten)]
        g: packages::PackageArgs,
    },
    /// Build, sign and serve a package repository.
    Universe {
        #[command(subcommand)]
        cmd: packages::UniverseCmd,
    },
}

// The proxy path allocates per request (headers, buffers); glibc's malloc was ~10 % of the
// load balancer's CPU per request, mimalloc a fraction of that (bench/lb.sh).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // The agent's task launcher is this binary too; it must start before any thread.
    if std::env::args().nth(1).as_deref() == Some(basalt_kernel_agent::LAUNCHER_ARG) {
        basalt_kernel_agent::launcher_main();
    }
    let cli = Cli::parse();
    let daemon = matches!(
        cli.cmd,
        Cmd::Up(_)
            | Cmd::Master(_)
            | Cmd::Agent(_)
            | Cmd::Dns(_)
            | Cmd::Init(_)
            | Cmd::Lb(_)
            | Cmd::Node { cmd: None, .. }
    );
    init_logging(daemon);
    if !daemon {
        // `basalt package describe x | head` should end quietly when head does, as other
        // Unix tools do, not panic on the closed pipe.
        // SAFETY: restoring the default disposition of one signal before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let mut builder = match &cli.cmd {
        // The load balancer's proxy threads are its own single-threaded runtimes; with one
        // proxy thread this is it. Either way no request pays for a cross-thread wake-up.
        Cmd::Lb(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(async move {
        let r = match cli.cmd {
            Cmd::Up(a) => daemon::up(*a).await.map(|()| 0),
            Cmd::Master(a) => daemon::master(a).await.map(|()| 0),
            Cmd::Agent(a) => daemon::agent(a).await.map(|()| 0),
            Cmd::Dns(a) => daemon::dns(a).await.map(|()| 0),
            Cmd::Init(a) => daemon::init(a).await.map(|()| 0),
            Cmd::Lb(a) => daemon::lb(a).await.map(|()| 0),
            Cmd::Node { cmd: Some(cmd), .. } => cli::node(cmd).await.map(|()| 0),
            Cmd::Node { cmd: None, run } => daemon::node(*run).await.map(|()| 0),
            Cmd::App { cmd, g } => apps::app(cmd, g).await.map(|()| 0),
            Cmd::Deployment { cmd, g } => apps::deployment(cmd, g).await.map(|()| 0),
            Cmd::Package { cmd, g } => packages::package(cmd, g).await.map(|()| 0),
            Cmd::Universe { cmd } => packages::universe(cmd).await.map(|()| 0),
            Cmd::Task { cmd } => cli::task(cmd).await.map(|()| 0),
            Cmd::Run(a) => cli::run(a).await,
        };
        match r {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                1
            }
        }
    });
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    std::process::exit(code);
}

fn init_logging(daemon: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if daemon { "info" } else { "warn" };
    let filter = EnvFilter::try_from_env("BASALT_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let json = std::env::var("BASALT_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
