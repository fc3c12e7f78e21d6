//! The Basalt master's shell: one task owns the deterministic core and performs its
//! actions (store writes, agent calls, framework and operator streams); axum serves the
//! Mesos-compatible HTTP API.
//!
//! Owns: the master's HTTP surface, the order in which core actions take effect, the
//! event fan-out to subscribers, and the in-process `SchedulerApi` for built-in frameworks.
//! Never: decides anything itself (allocation and state changes happen in the core), or
//! replies before what it acknowledges is in the store.

mod actor;
mod error;
mod http;
mod local;

pub use actor::Handle;
pub use basalt_kernel_core::master::{Config as CoreConfig, UnreachablePolicy};
pub use error::Error;
pub use local::LocalScheduler;

use basalt_kernel_store::Store;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Config {
    pub core: CoreConfig,
    /// Largest request body accepted, in bytes (default 8 MiB).
    pub max_body: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            core: CoreConfig::default(),
            max_body: 8 * 1024 * 1024,
        }
    }
}

/// What the master needs from the world.
pub struct Deps {
    pub http: tokio::net::TcpListener,
    pub store: Arc<dyn Store>,
    /// Unique per start (Mesos: date-time-ip-port-pid); agent, framework and offer ids
    /// are minted from it.
    pub master_id: String,
    /// Orders agents in allocation rounds.
    pub seed: u64,
    pub shutdown: CancellationToken,
}

/// Starts the master: recovers the registry, then serves until `shutdown`. The handle
/// lets in-process frameworks (`LocalScheduler`) reach the core.
pub async fn start(
    config: Config,
    deps: Deps,
) -> Result<(Handle, tokio::task::JoinHandle<Result<(), Error>>), Error> {
    let store = deps.store.clone();
    let records = tokio::task::spawn_blocking(move || store.list("master/"))
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
    let (handle, actor) = actor::spawn(
        config.core.clone(),
        deps.master_id,
        deps.seed,
        records,
        deps.store,
        deps.shutdown.clone(),
    );
    let app = http::router(handle.clone(), config.max_body);
    let shutdown = deps.shutdown.clone();
    let listener = deps.http;
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        // The HTTP side stopping for any reason stops the master.
        let actor_result = actor.await.map_err(|e| Error::Internal(e.to_string()))?;
        served.map_err(|e| Error::Io(e.to_string()))?;
        actor_result
    });
    Ok((handle, task))
}

/// Serves until `shutdown`; returns once all it started has stopped.
pub async fn serve(config: Config, deps: Deps) -> Result<(), Error> {
    let (_handle, task) = start(config, deps).await?;
    task.await.map_err(|e| Error::Internal(e.to_string()))?
}
