//! Reliable status updates. Every update is appended to one journal and synced before it is
//! sent (one writer, one fsync per batch: group commit), then retried with backoff until the
//! master acknowledges it, and only then marked done. Per task, updates go out strictly in
//! order; tasks send concurrently.

use crate::checkpoint;
use crate::runtime::{Agent, TaskKey};
use basalt_api::agent::StatusUpdateMessage;
use basalt_api::task::TaskStatus;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Most journal operations one fsync covers.
const MAX_BATCH: usize = 4096;
/// Past this many lines, the journal is rewritten with only what is still pending.
const COMPACT_AFTER: usize = 20_000;
/// First retry delay of an unacknowledged update.
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// How long an update the master forwarded first waits for its framework's acknowledgement
/// before it is sent again (the master forwards it again); doubling up to
/// `RESEND_FORWARDED_MAX`, as Mesos' agent backs off.
const RESEND_FORWARDED: Duration = Duration::from_secs(10);
const RESEND_FORWARDED_MAX: Duration = Duration::from_secs(600);
/// Relayed acknowledgements that came before anyone waited for them, kept at most this many.
const MAX_EARLY: usize = 10_000;

/// Acknowledgements relayed by the master (`POST /internal/ack`), handed to the sender
/// waiting for that update.
#[derive(Default)]
pub(crate) struct Relayed {
    inner: Mutex<RelayedInner>,
}

#[derive(Default)]
struct RelayedInner {
    waiting: HashMap<String, oneshot::Sender<()>>,
    /// Arrived before their sender started waiting (the master's answer and the relay
    /// race); oldest first, bounded.
    early: VecDeque<String>,
}

impl Relayed {
    pub(crate) fn ack(&self, uuid: String) {
        let Ok(mut r) = self.inner.lock() else { return };
        match r.waiting.remove(&uuid) {
            Some(tx) => {
                let _ = tx.send(());
            }
            None => {
                if r.early.len() >= MAX_EARLY {
                    r.early.pop_front();
                }
                r.early.push_back(uuid);
            }
        }
    }

    /// `None` if the acknowledgement is here already; else what resolves when it comes.
    fn wait(&self, uuid: &str) -> Option<oneshot::Receiver<()>> {
        let Ok(mut r) = self.inner.lock() else {
            return None;
        };
        if let Some(i) = r.early.iter().position(|u| u == uuid) {
            r.early.remove(i);
            return None;
        }
        let (tx, rx) = oneshot::channel();
        r.waiting.insert(uuid.to_owned(), tx);
        Some(rx)
    }

    fn cancel(&self, uuid: &str) {
        if let Ok(mut r) = self.inner.lock() {
            r.waiting.remove(uuid);
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Entry {
    Add(Box<StatusUpdateMessage>),
    Ack(String),
}

enum Op {
    Add {
        uuid: String,
        line: Vec<u8>,
        done: oneshot::Sender<io::Result<()>>,
    },
    Ack(String),
}

/// Reads the journal: the updates not yet acknowledged, in the order they were written.
/// A torn last line (a crash mid-append, before its fsync) is dropped: it was never sent.
pub(crate) fn replay(path: &Path) -> io::Result<Vec<StatusUpdateMessage>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut adds: Vec<StatusUpdateMessage> = Vec::new();
    let mut acked: HashSet<String> = HashSet::new();
    for line in io::BufReader::new(file).split(b'\n') {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Entry>(&line) {
            Ok(Entry::Add(m)) => adds.push(*m),
            Ok(Entry::Ack(u)) => {
                acked.insert(u);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "skipping an unreadable journal line")
            }
        }
    }
    adds.retain(|m| m.status.uuid.as_ref().is_some_and(|u| !acked.contains(u)));
    Ok(adds)
}

fn add_line(m: &StatusUpdateMessage) -> io::Result<Vec<u8>> {
    let mut line =
        serde_json::to_vec(&Entry::Add(Box::new(m.clone()))).map_err(io::Error::other)?;
    line.push(b'\n');
    Ok(line)
}

/// The journal writer's handle.
#[derive(Clone)]
pub(crate) struct Journal {
    tx: mpsc::Sender<Op>,
}

impl Journal {
    /// Rewrites the journal with `pending` only, then starts the writer on `tracker`.
    pub(crate) fn open(
        path: PathBuf,
        pending: &[StatusUpdateMessage],
        tracker: &tokio_util::task::TaskTracker,
        shutdown: CancellationToken,
    ) -> io::Result<Journal> {
        let mut lines: HashMap<String, (u64, Vec<u8>)> = HashMap::new();
        let mut all = Vec::new();
        for (seq, m) in pending.iter().enumerate() {
            let line = add_line(m)?;
            all.extend_from_slice(&line);
            if let Some(u) = &m.status.uuid {
                lines.insert(u.clone(), (seq as u64, line));
            }
        }
        checkpoint::write_atomic(&path, &all, true)?;
        let file = std::fs::OpenOptions::new().append(true).open(&path)?;
        let (tx, rx) = mpsc::channel(MAX_BATCH);
        let count = lines.len();
        tracker.spawn(write_loop(path, file, lines, count, rx, shutdown));
        Ok(Journal { tx })
    }

    /// Appends `m`; the receiver resolves once it is on disk.
    async fn add(&self, m: &StatusUpdateMessage) -> io::Result<oneshot::Receiver<io::Result<()>>> {
        let uuid = m.status.uuid.clone().unwrap_or_default();
        let line = add_line(m)?;
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Op::Add { uuid, line, done })
            .await
            .map_err(|_| io::Error::other("the status journal is closed"))?;
        Ok(rx)
    }

    /// Marks an update acknowledged. Not synced on its own: losing it only resends a
    /// duplicate, which the master acknowledges again.
    async fn ack(&self, uuid: String) {
        let _ = self.tx.send(Op::Ack(uuid)).await;
    }
}

async fn write_loop(
    path: PathBuf,
    file: std::fs::File,
    mut pending: HashMap<String, (u64, Vec<u8>)>,
    mut lines: usize,
    mut rx: mpsc::Receiver<Op>,
    shutdown: CancellationToken,
) {
    let mut file = Some(file);
    // Never reset, unlike `lines`, so compaction can restore append order.
    let mut next_seq = lines as u64;
    loop {
        let first = tokio::select! {
            op = rx.recv() => match op { Some(op) => op, None => break },
            _ = shutdown.cancelled() => break,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let mut buf = Vec::new();
        let mut waiters = Vec::new();
        for op in batch {
            match op {
                Op::Add { uuid, line, done } => {
                    buf.extend_from_slice(&line);
                    pending.insert(uuid, (next_seq, line));
                    next_seq += 1;
                    waiters.push(done);
                }
                Op::Ack(uuid) => {
                    pending.remove(&uuid);
                    let mut line = serde_json::to_vec(&Entry::Ack(uuid)).unwrap_or_default();
                    line.push(b'\n');
                    buf.extend_from_slice(&line);
                }
            }
            lines += 1;
        }
        let sync = !waiters.is_empty();
        let compact = lines > COMPACT_AFTER && pending.len() * 4 < lines;
        // Replay order is delivery order, so the rewrite keeps the original order.
        let snapshot: Option<Vec<u8>> = compact.then(|| {
            let mut v: Vec<&(u64, Vec<u8>)> = pending.values().collect();
            v.sort_unstable_by_key(|(seq, _)| *seq);
            v.into_iter().flat_map(|(_, l)| l.iter().copied()).collect()
        });
        let Some(mut f) = file.take() else { break };
        let p = path.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let mut result = f
                .write_all(&buf)
                .and_then(|()| if sync { f.sync_data() } else { Ok(()) });
            if let (Ok(()), Some(all)) = (&result, snapshot) {
                result = checkpoint::write_atomic(&p, &all, true).and_then(|()| {
                    f = std::fs::OpenOptions::new().append(true).open(&p)?;
                    Ok(())
                });
            }
            (f, result)
        })
        .await;
        let (f, result) = match joined {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(error = %e, "the status journal writer panicked");
                break;
            }
        };
        file = Some(f);
        if compact && result.is_ok() {
            lines = pending.len();
        }
        if let Err(e) = &result {
            tracing::error!(path = %path.display(), error = %e, "cannot write the status journal");
        }
        for w in waiters {
            let _ = w.send(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            });
        }
    }
}

/// A queued update's durability, reported by the journal writer.
type Durable = oneshot::Receiver<io::Result<()>>;

struct Queued {
    msg: Arc<StatusUpdateMessage>,
    durable: Option<Durable>,
}

/// Per-task queues of updates; a task's queue exists exactly while a sender drains it.
#[derive(Default)]
pub(crate) struct Queues {
    by_task: Mutex<HashMap<TaskKey, VecDeque<Queued>>>,
}

impl Queues {
    /// Number of updates not yet acknowledged.
    pub(crate) fn pending(&self) -> usize {
        self.by_task
            .lock()
            .map(|q| q.values().map(VecDeque::len).sum())
            .unwrap_or(0)
    }

    /// Queues `m`, whose durability `durable` reports; starts a sender when the task has none.
    fn push(
        &self,
        agent: &Arc<Agent>,
        key: TaskKey,
        m: StatusUpdateMessage,
        durable: Option<Durable>,
    ) {
        let item = Queued {
            msg: Arc::new(m),
            durable,
        };
        let start = {
            let mut q = self
                .by_task
                .lock()
                .expect("the queue lock is never poisoned: no panics under it");
            match q.get_mut(&key) {
                Some(existing) => {
                    existing.push_back(item);
                    false
                }
                None => {
                    q.insert(key.clone(), VecDeque::from([item]));
                    true
                }
            }
        };
        if start {
            let agent = agent.clone();
            agent.tracker.clone().spawn(drain(agent, key));
        }
    }

    fn front(&self, key: &TaskKey) -> Option<(Arc<StatusUpdateMessage>, Option<Durable>)> {
        let mut q = self
            .by_task
            .lock()
            .expect("the queue lock is never poisoned: no panics under it");
        match q.get_mut(key).and_then(|d| d.front_mut()) {
            Some(item) => Some((item.msg.clone(), item.durable.take())),
            None => {
                q.remove(key);
                None
            }
        }
    }

    fn pop(&self, key: &TaskKey) {
        let mut q = self
            .by_task
            .lock()
            .expect("the queue lock is never poisoned: no panics under it");
        if let Some(d) = q.get_mut(key) {
            d.pop_front();
        }
    }
}

/// Journals `status` and queues it for delivery; its uuid is assigned here.
pub(crate) async fn submit(agent: &Arc<Agent>, key: TaskKey, mut status: TaskStatus) {
    status.uuid = Some(uuid::Uuid::new_v4().to_string());
    let m = StatusUpdateMessage {
        framework_id: key.0.clone(),
        status,
    };
    // Queue first, so a task's updates keep the order in which they were submitted even if
    // their journal appends finish in another order.
    let durable = agent.journal.add(&m).await;
    match durable {
        Ok(rx) => agent.queues.push(agent, key, m, Some(rx)),
        Err(e) => {
            if agent.shutdown.is_cancelled() {
                return;
            }
            tracing::error!(task_id = %key.1, framework_id = %key.0, error = %e, "status update not journaled; sending it anyway");
            agent.queues.push(agent, key, m, None);
        }
    }
}

/// Re-queues updates found in the journal at start; they are already durable.
pub(crate) fn requeue(agent: &Arc<Agent>, pending: Vec<StatusUpdateMessage>) {
    for m in pending {
        let key = (m.framework_id.clone(), m.status.task_id.clone());
        agent.queues.push(agent, key, m, None);
    }
}

/// Sends one task's updates in order until its queue is empty or the agent stops.
async fn drain(agent: Arc<Agent>, key: TaskKey) {
    while let Some((msg, durable)) = agent.queues.front(&key) {
        if let Some(d) = durable {
            match d.await {
                Ok(Ok(())) => {}
                _ if agent.shutdown.is_cancelled() => return,
                // The writer already logged why; the master should still hear of it.
                _ => {}
            }
        }
        if !send_until_acked(&agent, &msg).await {
            return;
        }
        agent.queues.pop(&key);
        let uuid = msg.status.uuid.clone().unwrap_or_default();
        agent.journal.ack(uuid).await;
        crate::runtime::acknowledged(&agent, &key, &msg.status).await;
    }
}

/// Retries until the master acknowledges; false when the agent is stopping.
async fn send_until_acked(agent: &Arc<Agent>, msg: &StatusUpdateMessage) -> bool {
    let mut delay = FIRST_RETRY;
    let mut resend = RESEND_FORWARDED;
    let mut reg = agent.registration.subscribe();
    loop {
        let id = tokio::select! {
            r = reg.wait_for(|r| r.id.is_some()) => match r {
                Ok(r) => r.id.clone(),
                Err(_) => return false,
            },
            _ = agent.shutdown.cancelled() => return false,
        };
        let Some(id) = id else { continue };
        let epoch = reg.borrow().epoch;
        let result = {
            let _permit = tokio::select! {
                p = agent.sends.acquire() => p.ok(),
                _ = agent.shutdown.cancelled() => return false,
            };
            tokio::select! {
                r = agent.master.send_status(&id, msg) => r,
                _ = agent.shutdown.cancelled() => return false,
            }
        };
        match result {
            Ok(ack) if !ack.pending => {
                agent.metrics.acked();
                return true;
            }
            Ok(_) => {
                // Forwarded: done once the framework's acknowledgement comes back, sent
                // again if it does not come in time or the agent registers anew.
                let uuid = msg.status.uuid.clone().unwrap_or_default();
                let Some(rx) = agent.relayed.wait(&uuid) else {
                    agent.metrics.acked();
                    return true;
                };
                tokio::select! {
                    r = rx => {
                        if r.is_ok() {
                            agent.metrics.acked();
                            return true;
                        }
                    }
                    _ = tokio::time::sleep(resend) => {
                        resend = (resend * 2).min(RESEND_FORWARDED_MAX);
                    }
                    _ = reg.wait_for(|r| r.epoch != epoch && r.id.is_some()) => {}
                    _ = agent.shutdown.cancelled() => {
                        agent.relayed.cancel(&uuid);
                        return false;
                    }
                }
                agent.relayed.cancel(&uuid);
                delay = FIRST_RETRY;
                continue;
            }
            Err(e) if e.status() == Some(404) => {
                tracing::info!(agent_id = %id, error = %e, "master does not know this agent; re-registering");
                agent.need_reregistration(epoch);
            }
            Err(e) if e.status() == Some(400) => {
                // The master says the update itself is malformed; resending cannot help.
                tracing::error!(task_id = %msg.status.task_id, error = %e, "master rejected a status update; dropping it");
                return true;
            }
            Err(e) => {
                agent.metrics.retried();
                tracing::debug!(task_id = %msg.status.task_id, error = %e, "status update not acknowledged; will retry");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            // A fresh registration is the moment to resend, not the end of the backoff.
            _ = reg.wait_for(|r| r.epoch != epoch && r.id.is_some()) => {}
            _ = agent.shutdown.cancelled() => return false,
        }
        delay = (delay * 2).min(agent.config.registration_backoff_max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt_api::{FrameworkId, TaskId, TaskState};

    fn msg(task: &str, state: TaskState, uuid: &str) -> StatusUpdateMessage {
        let mut s = TaskStatus::new(TaskId::new(task), state, 1.0);
        s.uuid = Some(uuid.into());
        StatusUpdateMessage {
            framework_id: FrameworkId::new("fw"),
            status: s,
        }
    }

    #[test]
    fn replay_keeps_unacknowledged_updates_in_order_and_drops_a_torn_tail() {
        let dir = std::env::temp_dir().join(format!("basalt-journal-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("updates.log");
        let mut text = Vec::new();
        for m in [
            msg("a", TaskState::Running, "u1"),
            msg("a", TaskState::Finished, "u2"),
            msg("b", TaskState::Running, "u3"),
        ] {
            text.extend(add_line(&m).expect("serializes"));
        }
        text.extend(b"{\"ack\":\"u1\"}\n{\"add\":{\"framework_id\":");
        std::fs::write(&path, text).expect("written");
        let pending = replay(&path).expect("replayed");
        let uuids: Vec<_> = pending
            .iter()
            .filter_map(|m| m.status.uuid.clone())
            .collect();
        assert_eq!(uuids, vec!["u2", "u3"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
