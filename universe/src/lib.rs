//! The signed package universe: DC/OS Universe packages (`package.json`, `config.json`,
//! `marathon.json.mustache`, `resource.json`), repositories whose index and archives are
//! signed TUF-style with ed25519, and the Cosmos-compatible `/package/*` API that installs
//! packages as init apps.
//!
//! Owns: package loading and rendering, repository metadata (signing and verification), the
//! list of configured repositories and what was last verified of each.
//! Never: trusts a repository byte before its signatures, lengths and hashes check out (unless
//! the operator said `--allow-unsigned` for that repository), writes an archive to disk while
//! reading it, or keeps its own record of installs: those are init apps with
//! `DCOS_PACKAGE_*` labels.

pub mod archive;
pub mod builtin;
pub mod cosmos;
pub mod mustache;
pub mod package;
pub mod publish;
pub mod render;
pub mod repo;
pub mod serve;
pub mod tuf;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub struct Config {
    pub ip: String,
    pub port: u16,
    /// The universe's own folder of the data dir: repository list, built-in repository.
    pub dir: PathBuf,
    /// init's Marathon API, where installs go.
    pub init_url: String,
    /// Accept repositories added without a pinned key (for `dcos package repo add`).
    pub allow_unsigned: bool,
    /// Build, sign and serve the built-in repository, and list it first on a new cluster.
    pub builtin: bool,
    /// How long a verified repository is reused before it is fetched and verified again.
    pub cache_for: Duration,
}

pub struct Deps {
    pub shutdown: CancellationToken,
}

pub struct Running {
    pub addr: SocketAddr,
    pub tasks: TaskTracker,
}

#[derive(Debug, thiserror::Error)]
pub enum UniverseError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("built-in repository: {0}")]
    Builtin(#[from] publish::PublishError),
    #[error("{0}")]
    State(String),
}

/// The built-in timestamp lasts a day; re-signing twice as often leaves room for a missed run.
const TIMESTAMP_EVERY: Duration = Duration::from_secs(6 * 3600);

/// Prepares the built-in repository, binds the package API and serves it.
pub async fn start(cfg: Config, deps: Deps) -> Result<Running, UniverseError> {
    let bind = format!("{}:{}", cfg.ip, cfg.port);
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .map_err(|source| UniverseError::Bind {
            addr: bind.clone(),
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| UniverseError::Bind {
            addr: bind.clone(),
            source,
        })?;
    let builtin_dir = cfg.dir.join("builtin");
    let mut defaults = Vec::new();
    let mut serve = Vec::new();
    if cfg.builtin {
        let dir = builtin_dir.clone();
        // Where agents fetch the built-in packages' assets from.
        let host = if cfg.ip == "0.0.0.0" || cfg.ip == "::" {
            "127.0.0.1".to_string()
        } else {
            cfg.ip.clone()
        };
        let url = format!("http://{host}:{}/universe/builtin", addr.port());
        let b =
            tokio::task::spawn_blocking(move || builtin::prepare(&dir, &url, SystemTime::now()))
                .await
                .map_err(|e| UniverseError::State(e.to_string()))??;
        defaults.push(b.spec);
        serve.push(("builtin".to_string(), b.repo_dir));
    }
    let universe = cosmos::Universe::open(cosmos::Config {
        state_file: cfg.dir.join("repositories.json"),
        init_url: cfg.init_url.clone(),
        allow_unsigned: cfg.allow_unsigned,
        default_repos: defaults,
        serve,
        cache_for: cfg.cache_for,
        allow_file_uris: false,
    })
    .map_err(UniverseError::State)?;
    tracing::info!(%addr, builtin = cfg.builtin, "universe (Cosmos API) listening");
    let tasks = TaskTracker::new();
    let sd = deps.shutdown.clone();
    tasks.spawn(async move {
        let r = axum::serve(listener, cosmos::router(universe))
            .with_graceful_shutdown(async move { sd.cancelled().await })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "universe http server failed");
        }
    });
    if cfg.builtin {
        let sd = deps.shutdown.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(TIMESTAMP_EVERY) => {}
                    _ = sd.cancelled() => return,
                }
                let dir = builtin_dir.clone();
                match tokio::task::spawn_blocking(move || builtin::refresh(&dir, SystemTime::now()))
                    .await
                {
                    Ok(Ok(v)) => {
                        tracing::info!(version = v, "built-in repository timestamp re-signed")
                    }
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "re-signing the built-in timestamp failed")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "re-signing the built-in timestamp failed")
                    }
                }
            }
        });
    }
    tasks.close();
    Ok(Running { addr, tasks })
}
