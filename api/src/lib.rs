//! Basalt's wire types and its one typed HTTP client.
//!
//! Owns: identifiers, resources, task and framework descriptions in their Mesos v1 JSON
//! shapes, the master<->agent protocol, the scheduler and operator event types, the
//! Mesos-compatible state views, RecordIO framing, the error body, `Client`, and `probe`
//! (the HTTP(S) GET health and readiness checks make).
//! Never: holds server code, reads a clock or the environment, or knows which component
//! is on the other end of a call beyond its URL.

pub mod agent;
pub mod client;
pub mod discovery;
pub mod error;
pub mod ids;
pub mod operator;
pub mod probe;
pub mod recordio;
pub mod resources;
pub mod scheduler;
pub mod state;
pub mod task;

pub use client::{Client, ClientError};
pub use error::ErrorBody;
pub use ids::{AgentId, ExecutorId, FrameworkId, OfferId, TaskId};
pub use resources::{Milli, Ranges, ResourceError, Resources, RoleResources};
pub use task::{TaskInfo, TaskState, TaskStatus};

/// The version every Basalt component reports (`/version`, `/v1/version`, ...).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The Mesos version we answer as, so tools that branch on it take the modern path.
pub const MESOS_COMPAT_VERSION: &str = "1.11.0";
