//! The one task that owns the core. It takes commands from a bounded inbox in batches,
//! applies them with `Master::handle(now, ..)`, makes the batch's store writes durable in
//! one commit, and only then performs the visible effects in order.

use crate::error::{ApiError, Error};
use basalt_api::agent::{KillTask, LaunchTasks, TeardownFramework};
use basalt_api::operator::{self, GetState};
use basalt_api::scheduler::{self, FrameworkInfo};
use basalt_api::{AgentId, Client, recordio};
use basalt_kernel_core::Timestamp;
use basalt_kernel_core::master::{
    Action, Config, ConnId, Input, Master, ReadKind, Rejection, Reply, ReplyTo, Snapshot, StoreOp,
};
use basalt_kernel_store::{Store, Write};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const INBOX: usize = 4096;
const BATCH: usize = 256;
const FRAMEWORK_QUEUE: usize = 8192;
const EVENT_QUEUE: usize = 65536;

pub(crate) fn now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Timestamp(ms)
}

/// Where a framework's events go: an HTTP stream (RecordIO frames) or an in-process
/// framework (typed events).
pub(crate) enum ConnTx {
    Http(mpsc::Sender<Bytes>),
    Local(mpsc::Sender<scheduler::Event>),
}

type ReplyTx = oneshot::Sender<Result<Reply, Rejection>>;
type EventsTx = oneshot::Sender<(GetState, broadcast::Receiver<Bytes>)>;

pub(crate) enum Cmd {
    Request {
        build: Box<dyn FnOnce(ReplyTo) -> Input + Send>,
        reply: ReplyTx,
    },
    Subscribe {
        info: FrameworkInfo,
        conn: ConnTx,
        reply: ReplyTx,
    },
    SubscribeEvents {
        reply: EventsTx,
    },
    Disconnected(ConnId),
    Input(Input),
}

enum Pending {
    Plain(ReplyTx),
    Events(EventsTx),
}

/// A cheap, cloneable way to reach the master's core.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Cmd>,
}

impl Handle {
    pub(crate) async fn send(&self, cmd: Cmd) -> Result<(), ApiError> {
        self.tx.send(cmd).await.map_err(|_| ApiError::Unavailable)
    }

    /// Sends an input built around a reply token and waits for the core's answer.
    pub(crate) async fn request(
        &self,
        build: impl FnOnce(ReplyTo) -> Input + Send + 'static,
    ) -> Result<Reply, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Request {
            build: Box::new(build),
            reply,
        })
        .await?;
        Ok(rx.await.map_err(|_| ApiError::Unavailable)??)
    }

    pub(crate) async fn read(&self, what: ReadKind) -> Result<Snapshot, ApiError> {
        match self
            .request(move |reply| Input::Read { what, reply })
            .await?
        {
            Reply::State(s) => Ok(*s),
            _ => Err(ApiError::Unavailable),
        }
    }

    pub(crate) async fn subscribe_framework(
        &self,
        info: FrameworkInfo,
        conn: ConnTx,
    ) -> Result<Reply, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Subscribe { info, conn, reply }).await?;
        Ok(rx.await.map_err(|_| ApiError::Unavailable)??)
    }

    pub(crate) async fn subscribe_events(
        &self,
    ) -> Result<(GetState, broadcast::Receiver<Bytes>), ApiError> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::SubscribeEvents { reply }).await?;
        rx.await.map_err(|_| ApiError::Unavailable)
    }

    /// Called from drop guards: must not block.
    pub(crate) fn disconnected(&self, conn: ConnId) {
        let tx = self.tx.clone();
        if let Err(mpsc::error::TrySendError::Full(cmd)) = tx.try_send(Cmd::Disconnected(conn))
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                let _ = tx.send(cmd).await;
            });
        }
    }
}

enum AgentMsg {
    Launch(AgentId, LaunchTasks),
    Kill(KillTask),
    Teardown(TeardownFramework),
}

struct Actor {
    master: Master,
    store: Arc<dyn Store>,
    pending: HashMap<ReplyTo, Pending>,
    next_token: ReplyTo,
    conns: HashMap<ConnId, ConnTx>,
    next_conn: ConnId,
    events: broadcast::Sender<Bytes>,
    links: HashMap<String, mpsc::Sender<AgentMsg>>,
    /// Relayed acknowledgements go on their own link, in batches, so a burst of them can
    /// neither delay nor crowd out launches and kills.
    ack_links: HashMap<String, mpsc::Sender<basalt_api::agent::AckRelay>>,
    self_tx: mpsc::Sender<Cmd>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

pub(crate) fn spawn(
    cfg: Config,
    master_id: String,
    seed: u64,
    records: Vec<(String, Vec<u8>)>,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
) -> (Handle, tokio::task::JoinHandle<Result<(), Error>>) {
    let (tx, rx) = mpsc::channel(INBOX);
    let master = Master::new(cfg, master_id, seed, now(), records);
    let (events, _) = broadcast::channel(EVENT_QUEUE);
    let actor = Actor {
        master,
        store,
        pending: HashMap::new(),
        next_token: 0,
        conns: HashMap::new(),
        next_conn: 0,
        events,
        links: HashMap::new(),
        ack_links: HashMap::new(),
        self_tx: tx.clone(),
        tracker: TaskTracker::new(),
        shutdown,
    };
    let task = tokio::spawn(actor.run(rx));
    (Handle { tx }, task)
}

impl Actor {
    async fn run(mut self, mut inbox: mpsc::Receiver<Cmd>) -> Result<(), Error> {
        let result = self.main_loop(&mut inbox).await;
        // Links and pending agent calls end with us.
        self.links.clear();
        self.tracker.close();
        self.tracker.wait().await;
        result
    }

    async fn main_loop(&mut self, inbox: &mut mpsc::Receiver<Cmd>) -> Result<(), Error> {
        loop {
            let wait = Duration::from_millis(
                self.master
                    .next_deadline()
                    .millis()
                    .saturating_sub(now().millis()),
            );
            tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                cmd = inbox.recv() => {
                    let Some(cmd) = cmd else { return Ok(()) };
                    let mut batch = vec![cmd];
                    while batch.len() < BATCH {
                        match inbox.try_recv() {
                            Ok(c) => batch.push(c),
                            Err(_) => break,
                        }
                    }
                    let mut actions = Vec::new();
                    for cmd in batch {
                        self.accept_cmd(cmd, &mut actions);
                    }
                    if now() >= self.master.next_deadline() {
                        actions.extend(self.master.handle(now(), Input::Tick));
                    }
                    self.perform(actions).await?;
                }
                _ = tokio::time::sleep(wait) => {
                    let actions = self.master.handle(now(), Input::Tick);
                    self.perform(actions).await?;
                }
            }
        }
    }

    fn token(&mut self) -> ReplyTo {
        self.next_token += 1;
        self.next_token
    }

    fn accept_cmd(&mut self, cmd: Cmd, actions: &mut Vec<Action>) {
        let t = now();
        match cmd {
            Cmd::Request { build, reply } => {
                let token = self.token();
                self.pending.insert(token, Pending::Plain(reply));
                actions.extend(self.master.handle(t, build(token)));
            }
            Cmd::Subscribe { info, conn, reply } => {
                let token = self.token();
                self.next_conn += 1;
                let id = self.next_conn;
                self.conns.insert(id, conn);
                self.pending.insert(token, Pending::Plain(reply));
                let out = self.master.handle(
                    t,
                    Input::Subscribe {
                        info,
                        conn: id,
                        reply: token,
                    },
                );
                let refused = out
                    .iter()
                    .any(|a| matches!(a, Action::Reply { to, result: Err(_) } if *to == token));
                if refused {
                    self.conns.remove(&id);
                }
                actions.extend(out);
            }
            Cmd::SubscribeEvents { reply } => {
                let token = self.token();
                self.pending.insert(token, Pending::Events(reply));
                actions.extend(self.master.handle(
                    t,
                    Input::Read {
                        what: ReadKind::Operator,
                        reply: token,
                    },
                ));
            }
            Cmd::Disconnected(conn) => {
                if self.conns.remove(&conn).is_some() {
                    actions.extend(self.master.handle(t, Input::Disconnected { conn }));
                }
            }
            Cmd::Input(input) => actions.extend(self.master.handle(t, input)),
        }
    }

    async fn perform(&mut self, actions: Vec<Action>) -> Result<(), Error> {
        // One durable commit for the whole batch, before any of its effects is visible.
        let writes: Vec<Write> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Persist(ops) => Some(ops),
                _ => None,
            })
            .flatten()
            .map(|op| match op {
                StoreOp::Put(k, v) => Write::Put(k.clone(), v.clone()),
                StoreOp::Delete(k) => Write::Delete(k.clone()),
            })
            .collect();
        if !writes.is_empty() {
            let store = self.store.clone();
            let res = tokio::task::spawn_blocking(move || store.apply(&writes))
                .await
                .map_err(|e| Error::Internal(e.to_string()))?;
            if let Err(e) = res {
                // The core is now ahead of the store: stop, and let a restart recover
                // from what is durable rather than acknowledge what is not.
                tracing::error!(error = %e, "store write failed; master stopping");
                self.shutdown.cancel();
                return Err(e.into());
            }
        }
        let mut followups = Vec::new();
        for a in actions {
            match a {
                Action::Persist(_) => {}
                Action::Reply { to, result } => self.reply(to, result),
                Action::SendFramework { conn, event } => {
                    if !self.send_framework(conn, event) {
                        followups.push(conn);
                    }
                }
                Action::CloseFramework { conn, last } => {
                    if let Some(ev) = last {
                        self.send_framework(conn, ev);
                    }
                    self.conns.remove(&conn);
                }
                Action::Launch { agent, url, msg } => {
                    self.send_to_agent(&url, AgentMsg::Launch(agent, msg))
                }
                Action::Kill { url, msg, .. } => self.send_to_agent(&url, AgentMsg::Kill(msg)),
                Action::Teardown { url, msg } => self.send_to_agent(&url, AgentMsg::Teardown(msg)),
                Action::AckAgent { url, msg } => self.send_ack(&url, msg),
                Action::Publish(ev) => self.publish(&ev),
            }
        }
        for conn in followups {
            // A framework that cannot keep up, or went away, is disconnected.
            if self.conns.remove(&conn).is_some() {
                let more = self.master.handle(now(), Input::Disconnected { conn });
                Box::pin(self.perform(more)).await?;
            }
        }
        Ok(())
    }

    fn reply(&mut self, to: ReplyTo, result: Result<Reply, Rejection>) {
        match self.pending.remove(&to) {
            Some(Pending::Plain(tx)) => {
                let _ = tx.send(result);
            }
            Some(Pending::Events(tx)) => {
                if let Ok(Reply::State(s)) = result
                    && let Snapshot::Operator(state) = *s
                {
                    // Subscribing here, between two inputs, is what makes the snapshot
                    // and the events after it line up exactly.
                    let _ = tx.send((state, self.events.subscribe()));
                }
            }
            None => {}
        }
    }

    /// Returns false if the connection is gone or full.
    fn send_framework(&mut self, conn: ConnId, event: scheduler::Event) -> bool {
        let Some(tx) = self.conns.get(&conn) else {
            return true;
        };
        match tx {
            ConnTx::Http(tx) => match serde_json::to_vec(&event) {
                Ok(bytes) => tx.try_send(recordio::encode(&bytes)).is_ok(),
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode a scheduler event");
                    true
                }
            },
            ConnTx::Local(tx) => tx.try_send(event).is_ok(),
        }
    }

    fn publish(&self, ev: &operator::Event) {
        if self.events.receiver_count() == 0 {
            return;
        }
        match serde_json::to_vec(ev) {
            Ok(bytes) => {
                let _ = self.events.send(recordio::encode(&bytes));
            }
            Err(e) => tracing::error!(error = %e, "cannot encode an operator event"),
        }
    }

    fn send_ack(&mut self, url: &str, msg: basalt_api::agent::AckRelay) {
        let link = self.ack_links.entry(url.to_owned()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(65_536);
            let client = Client::with_timeout(url, Duration::from_secs(10));
            self.tracker
                .spawn(ack_link(client, rx, self.shutdown.clone()));
            tx
        });
        // Full: dropped; the agent's resend brings it back.
        let _ = link.try_send(msg);
    }

    fn send_to_agent(&mut self, url: &str, msg: AgentMsg) {
        let link = self.links.entry(url.to_owned()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(1024);
            let client = Client::with_timeout(url, Duration::from_secs(10));
            self.tracker.spawn(agent_link(
                client,
                rx,
                self.self_tx.clone(),
                self.shutdown.clone(),
            ));
            tx
        });
        if let Err(e) = link.try_send(msg) {
            let msg = match e {
                mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m) => m,
            };
            if let AgentMsg::Launch(agent, l) = msg {
                undeliverable(&self.self_tx, agent, l);
            }
        }
    }
}

/// Relayed acknowledgements to one agent, as many per request as are waiting. One that
/// cannot be delivered is dropped: the agent resends its update and gets it again.
async fn ack_link(
    client: Client,
    mut rx: mpsc::Receiver<basalt_api::agent::AckRelay>,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = rx.recv() => match m { Some(m) => m, None => return },
        };
        let mut acks = vec![first];
        while acks.len() < 1024 {
            match rx.try_recv() {
                Ok(a) => acks.push(a),
                Err(_) => break,
            }
        }
        let batch = basalt_api::agent::AckRelays { acks };
        for attempt in 1..=3 {
            match client.relay_acks(&batch).await {
                Ok(()) => break,
                Err(e) if attempt == 3 || e.status().is_some_and(|s| (400..500).contains(&s)) => {
                    tracing::debug!(url = client.base_url(), error = %e, "acknowledgements not relayed; the agent will resend");
                    break;
                }
                Err(_) => tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200 * attempt)) => {}
                },
            }
        }
    }
}

fn undeliverable(tx: &mpsc::Sender<Cmd>, agent: AgentId, l: LaunchTasks) {
    let mut by_fw: HashMap<_, Vec<_>> = HashMap::new();
    for t in l.tasks {
        by_fw
            .entry(t.framework_id)
            .or_default()
            .push(t.task.task_id);
    }
    for (framework, tasks) in by_fw {
        let input = Input::LaunchUndeliverable {
            agent: agent.clone(),
            framework,
            tasks,
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(Cmd::Input(input)).await;
        });
    }
}

/// Delivers messages to one agent in order, retrying a few times.
async fn agent_link(
    client: Client,
    mut rx: mpsc::Receiver<AgentMsg>,
    master: mpsc::Sender<Cmd>,
    shutdown: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = rx.recv() => match m { Some(m) => m, None => return },
        };
        let mut delay = Duration::from_millis(100);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let r = match &msg {
                AgentMsg::Launch(_, l) => client.launch(l).await,
                AgentMsg::Kill(k) => client.kill(k).await,
                AgentMsg::Teardown(t) => client.teardown(t).await,
            };
            match r {
                Ok(()) => break,
                // The agent answered and refused: retrying will not help.
                Err(e) if e.status().is_some_and(|s| (400..500).contains(&s)) => {
                    tracing::warn!(url = client.base_url(), error = %e, "agent refused a message");
                    if let AgentMsg::Launch(agent, l) = msg {
                        undeliverable(&master, agent, l);
                    }
                    break;
                }
                Err(e) if attempt >= 4 => {
                    tracing::warn!(url = client.base_url(), error = %e, "agent unreachable; giving up on message");
                    if let AgentMsg::Launch(agent, l) = msg {
                        undeliverable(&master, agent, l);
                    }
                    break;
                }
                Err(_) => {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay *= 2;
                }
            }
        }
    }
}

pub(crate) const fn framework_queue() -> usize {
    FRAMEWORK_QUEUE
}
