//! The Basalt agent (Mesos-agent equivalent): runs the tasks the master sends it, each in a
//! sandbox under a small supervisor process, and reports their states reliably.
//!
//! Owns: registration and heartbeats with the master, sandboxes and their files API, the
//! process containerizer (fork/exec under a supervisor that outlives the agent, forked by a
//! small launcher process), cgroup isolation (v1 and v2), the tasks' health checks,
//! checkpoints and recovery of running tasks, and the on-disk journal of status updates
//! that are retried until the master acknowledges them.
//! Never: touches the cluster store, decides placement, or kills tasks on its own shutdown
//! (they keep running and the next agent on the same work dir re-adopts them).

mod cgroups;
mod checkpoint;
mod config;
mod error;
mod fetcher;
mod files;
mod health;
mod http;
mod launcher;
mod master;
mod runtime;
mod supervisor;
mod updates;

pub use config::{CgroupsMode, Config};
pub use error::Error;
pub use launcher::{LAUNCHER_ARG, launcher_main};

use tokio_util::sync::CancellationToken;

/// What the agent needs from the world, built by `basalt/` or by a test.
pub struct Deps {
    /// The agent's HTTP API, already bound (tests bind 127.0.0.1:0).
    pub http: tokio::net::TcpListener,
    /// The master the agent registers with.
    pub master: basalt_api::Client,
    pub shutdown: CancellationToken,
}

/// Recovers checkpointed tasks, registers with the master and serves the agent API until
/// `shutdown`; returns once everything it started has stopped. Running tasks are left
/// running.
pub async fn serve(config: Config, deps: Deps) -> Result<(), Error> {
    runtime::serve(config, deps).await
}
