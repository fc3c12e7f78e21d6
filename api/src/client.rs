//! The one typed HTTP client every component and the CLI use to talk to a master or an
//! agent. Errors keep the server's `{"message"}`.

use crate::agent::{
    KillTask, LaunchTasks, RegisterAgent, RegisterAgentReply, StatusAck, StatusUpdateMessage,
    TeardownFramework,
};
use crate::error::ErrorBody;
use crate::ids::AgentId;
use crate::operator;
use crate::recordio;
use crate::scheduler::{
    self, Call, CallType, FrameworkInfo, SchedulerApi, SchedulerError, Subscribe, Subscription,
};
use crate::state::{
    AgentStateView, FileChunk, FileEntry, FrameworksView, MasterState, SlavesView, TasksView,
};
use futures_util::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Header carrying a scheduler subscription's stream id (Mesos' name).
pub const STREAM_ID_HEADER: &str = "Mesos-Stream-Id";
/// Largest record a stream reader accepts.
const MAX_RECORD: usize = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status; `message` is its own words.
    #[error("{message} (HTTP {status})")]
    Http { status: u16, message: String },
    #[error("cannot reach {url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("unexpected answer from {url}: {reason}")]
    Decode { url: String, reason: String },
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server's own message for HTTP errors, else the whole error.
    pub fn message(&self) -> String {
        match self {
            ClientError::Http { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    /// A client without a total timeout, for long-lived streams.
    stream_http: reqwest::Client,
}

impl Client {
    /// A client for the server at `base` (`http://127.0.0.1:5050`).
    pub fn new(base: impl Into<String>) -> Self {
        Self::with_timeout(base, Duration::from_secs(30))
    }

    pub fn with_timeout(base: impl Into<String>, timeout: Duration) -> Self {
        let base = base.into().trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let stream_http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .tcp_keepalive(Duration::from_secs(15))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            base,
            http,
            stream_http,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn check(url: &str, resp: reqwest::Response) -> Result<reqwest::Response, ClientError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| b.message)
            .unwrap_or_else(|_| {
                if text.trim().is_empty() {
                    status.canonical_reason().unwrap_or("error").to_owned()
                } else {
                    text.trim().chars().take(500).collect()
                }
            });
        tracing::debug!(%url, status = status.as_u16(), %message, "request failed");
        Err(ClientError::Http {
            status: status.as_u16(),
            message,
        })
    }

    fn transport(url: &str) -> impl FnOnce(reqwest::Error) -> ClientError + '_ {
        move |source| ClientError::Transport {
            url: url.to_owned(),
            source,
        }
    }

    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = self.url(path);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(Self::transport(&url))?;
        let resp = Self::check(&url, resp).await?;
        let bytes = resp.bytes().await.map_err(Self::transport(&url))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            url,
            reason: e.to_string(),
        })
    }

    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let url = self.url(path);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(Self::transport(&url))?;
        let resp = Self::check(&url, resp).await?;
        resp.text().await.map_err(Self::transport(&url))
    }

    pub async fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        let resp = self
            .http
            .post(&url)
            .json(body)
            .send()
            .await
            .map_err(Self::transport(&url))?;
        let resp = Self::check(&url, resp).await?;
        let bytes = resp.bytes().await.map_err(Self::transport(&url))?;
        let bytes = if bytes.is_empty() {
            &b"null"[..]
        } else {
            &bytes[..]
        };
        serde_json::from_slice(bytes).map_err(|e| ClientError::Decode {
            url,
            reason: e.to_string(),
        })
    }

    /// POST whose answer has no body worth reading (202 Accepted).
    pub async fn post_unit<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<(), ClientError> {
        let url = self.url(path);
        let resp = self
            .http
            .post(&url)
            .json(body)
            .send()
            .await
            .map_err(Self::transport(&url))?;
        Self::check(&url, resp).await.map(|_| ())
    }

    /// Any method with an optional JSON body; returns the status and the answer's JSON
    /// whatever the status, for APIs whose errors say more than a message (Marathon's
    /// `details`). Only transport failures are errors here.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, serde_json::Value), ClientError> {
        let url = self.url(path);
        let m =
            reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| ClientError::Decode {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let mut req = self.http.request(m, &url);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(Self::transport(&url))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(Self::transport(&url))?;
        let v = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&bytes).trim().to_owned())
        });
        Ok((status, v))
    }

    // --- master read endpoints ---

    pub async fn master_state(&self) -> Result<MasterState, ClientError> {
        self.get_json("/master/state").await
    }

    pub async fn slaves(&self) -> Result<SlavesView, ClientError> {
        self.get_json("/master/slaves").await
    }

    pub async fn frameworks(&self) -> Result<FrameworksView, ClientError> {
        self.get_json("/master/frameworks").await
    }

    pub async fn tasks(&self) -> Result<TasksView, ClientError> {
        self.get_json("/master/tasks").await
    }

    pub async fn metrics_snapshot(
        &self,
    ) -> Result<serde_json::Map<String, serde_json::Value>, ClientError> {
        self.get_json("/metrics/snapshot").await
    }

    // --- master <- agent ---

    pub async fn register_agent(
        &self,
        req: &RegisterAgent,
    ) -> Result<RegisterAgentReply, ClientError> {
        self.post_json("/internal/agents/register", req).await
    }

    pub async fn agent_heartbeat(&self, agent: &AgentId) -> Result<(), ClientError> {
        self.post_unit(
            &format!("/internal/agents/{agent}/heartbeat"),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn send_status(
        &self,
        agent: &AgentId,
        update: &StatusUpdateMessage,
    ) -> Result<StatusAck, ClientError> {
        self.post_json(&format!("/internal/agents/{agent}/status"), update)
            .await
    }

    // --- agent <- master ---

    pub async fn launch(&self, req: &LaunchTasks) -> Result<(), ClientError> {
        self.post_unit("/internal/launch", req).await
    }

    pub async fn kill(&self, req: &KillTask) -> Result<(), ClientError> {
        self.post_unit("/internal/kill", req).await
    }

    pub async fn teardown(&self, req: &TeardownFramework) -> Result<(), ClientError> {
        self.post_unit("/internal/teardown", req).await
    }

    pub async fn relay_acks(&self, req: &crate::agent::AckRelays) -> Result<(), ClientError> {
        self.post_unit("/internal/ack", req).await
    }

    // --- agent read endpoints ---

    pub async fn agent_state(&self) -> Result<AgentStateView, ClientError> {
        self.get_json("/state").await
    }

    pub async fn files_browse(&self, path: &str) -> Result<Vec<FileEntry>, ClientError> {
        self.get_json(&format!("/files/browse?path={}", encode_query(path)))
            .await
    }

    /// Reads `length` bytes of a sandbox file from `offset`.
    pub async fn files_read(
        &self,
        path: &str,
        offset: u64,
        length: u64,
    ) -> Result<FileChunk, ClientError> {
        self.get_json(&format!(
            "/files/read?path={}&offset={offset}&length={length}",
            encode_query(path)
        ))
        .await
    }

    // --- operator event stream ---

    /// `POST /api/v1 {"type":"SUBSCRIBE"}`: the first event is `SUBSCRIBED` with the whole
    /// state, then every change in order.
    pub async fn subscribe_events(&self) -> Result<EventStream<operator::Event>, ClientError> {
        let url = self.url("/api/v1");
        let resp = self
            .stream_http
            .post(&url)
            .header("Accept", "application/json")
            .json(&operator::Call {
                kind: operator::CallType::Subscribe,
            })
            .send()
            .await
            .map_err(Self::transport(&url))?;
        let resp = Self::check(&url, resp).await?;
        Ok(EventStream::new(url, resp))
    }

    /// Follows the operator stream for as long as `tx` is open: every event goes to `tx`,
    /// and a broken stream is re-subscribed with backoff (100 ms doubling to 5 s). After a
    /// reconnect the first event is a fresh `SUBSCRIBED` snapshot, so a consumer that rebuilds
    /// on `SUBSCRIBED` never misses a change. Cancel by dropping the receiver or the future.
    pub async fn follow_events(&self, tx: tokio::sync::mpsc::UnboundedSender<operator::Event>) {
        let mut delay = std::time::Duration::from_millis(100);
        loop {
            match self.subscribe_events().await {
                Ok(mut s) => {
                    delay = std::time::Duration::from_millis(100);
                    loop {
                        match s.next().await {
                            Ok(Some(ev)) => {
                                if tx.send(ev).is_err() {
                                    return;
                                }
                            }
                            Ok(None) => {
                                tracing::warn!(url = %self.url("/api/v1"), "master closed the event stream; reconnecting");
                                break;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "event stream failed; reconnecting");
                                break;
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot subscribe to the master; keeping the last view")
                }
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(std::time::Duration::from_secs(5));
        }
    }

    /// An operator read call (`GET_STATE`, ...), answered as JSON.
    pub async fn operator_call(
        &self,
        kind: operator::CallType,
    ) -> Result<serde_json::Value, ClientError> {
        self.post_json("/api/v1", &operator::Call { kind }).await
    }
}

/// Percent-encodes a query parameter value (`/` kept, as paths are passed this way).
pub fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A RecordIO stream of JSON events.
pub struct EventStream<T> {
    url: String,
    body: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    decoder: recordio::Decoder,
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> EventStream<T> {
    fn new(url: String, resp: reqwest::Response) -> Self {
        Self {
            url,
            body: resp.bytes_stream().boxed(),
            decoder: recordio::Decoder::new(MAX_RECORD),
            _t: std::marker::PhantomData,
        }
    }

    /// The next event; `Ok(None)` when the server closed the stream.
    pub async fn next(&mut self) -> Result<Option<T>, ClientError> {
        loop {
            let decoded = self
                .decoder
                .next_record()
                .map_err(|e| ClientError::Decode {
                    url: self.url.clone(),
                    reason: e.to_string(),
                })?;
            if let Some(rec) = decoded {
                return serde_json::from_slice(&rec)
                    .map(Some)
                    .map_err(|e| ClientError::Decode {
                        url: self.url.clone(),
                        reason: e.to_string(),
                    });
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.decoder.feed(&chunk),
                Some(Err(e)) => {
                    return Err(ClientError::Transport {
                        url: self.url.clone(),
                        source: e,
                    });
                }
                None => return Ok(None),
            }
        }
    }
}

fn sched_err(e: ClientError) -> SchedulerError {
    match e {
        ClientError::Http { status, message } if (400..500).contains(&status) => {
            SchedulerError::Rejected(message)
        }
        other => SchedulerError::Unavailable(other.to_string()),
    }
}

#[async_trait::async_trait]
impl SchedulerApi for Client {
    async fn subscribe(&self, info: FrameworkInfo) -> Result<Subscription, SchedulerError> {
        let url = self.url("/api/v1/scheduler");
        let mut call = Call::new(info.id.clone(), CallType::Subscribe);
        call.subscribe = Some(Subscribe {
            framework_info: info,
        });
        let resp = self
            .stream_http
            .post(&url)
            .header("Accept", "application/json")
            .json(&call)
            .send()
            .await
            .map_err(|e| SchedulerError::Unavailable(e.to_string()))?;
        let resp = Self::check(&url, resp).await.map_err(sched_err)?;
        let stream_id = resp
            .headers()
            .get(STREAM_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let mut events: EventStream<scheduler::Event> = EventStream::new(url, resp);
        let first = events
            .next()
            .await
            .map_err(|e| SchedulerError::Unavailable(e.to_string()))?
            .ok_or_else(|| {
                SchedulerError::Unavailable("the master closed the subscription".into())
            })?;
        let framework_id = match (&first.subscribed, &first.error) {
            (Some(s), _) => s.framework_id.clone(),
            (None, Some(e)) => return Err(SchedulerError::Rejected(e.message.clone())),
            _ => {
                return Err(SchedulerError::Unavailable(
                    "first event was not SUBSCRIBED".into(),
                ));
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        // The reader lives exactly as long as the receiver: it ends when the stream closes or
        // the subscriber drops `events`.
        tokio::spawn(async move {
            if tx.send(first).await.is_err() {
                return;
            }
            loop {
                match events.next().await {
                    Ok(Some(ev)) => {
                        if tx.send(ev).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        tracing::debug!(error = %e, "scheduler stream ended");
                        return;
                    }
                }
            }
        });
        Ok(Subscription {
            framework_id,
            stream_id,
            events: rx,
        })
    }

    async fn call(&self, stream_id: &str, call: Call) -> Result<(), SchedulerError> {
        let url = self.url("/api/v1/scheduler");
        let resp = self
            .http
            .post(&url)
            .header(STREAM_ID_HEADER, stream_id)
            .json(&call)
            .send()
            .await
            .map_err(|e| SchedulerError::Unavailable(e.to_string()))?;
        Self::check(&url, resp).await.map(|_| ()).map_err(sched_err)
    }
}
