//! The master's deterministic core: registry of agents and frameworks, offers, tasks,
//! the DRF allocator, timeouts — inputs in, actions out.
//!
//! Owns: every decision the master makes and the order of its effects.
//! Never: does I/O, reads a clock or an RNG, or uses Tokio. Time, ids and seeds come in
//! as values, so a scenario replays exactly.

pub mod allocator;
pub mod master;
pub mod time;

pub use allocator::{Allocator, Grant};
pub use master::{Action, Config, Input, Master, Rejection, Reply};
pub use time::Timestamp;
