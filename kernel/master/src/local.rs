//! The in-process transport of the scheduler API: built-in frameworks (init, cron) call
//! the core through the same inputs the HTTP API uses.

use crate::actor::{ConnTx, Handle};
use crate::error::ApiError;
use basalt_api::scheduler::{Call, FrameworkInfo, SchedulerApi, SchedulerError, Subscription};
use basalt_kernel_core::master::{Input, Reply};
use tokio::sync::mpsc;

#[derive(Clone)]
pub struct LocalScheduler {
    handle: Handle,
}

impl LocalScheduler {
    pub fn new(handle: Handle) -> Self {
        Self { handle }
    }
}

fn err(e: ApiError) -> SchedulerError {
    match e {
        ApiError::Unavailable => SchedulerError::Unavailable(e.to_string()),
        other => SchedulerError::Rejected(other.to_string()),
    }
}

#[async_trait::async_trait]
impl SchedulerApi for LocalScheduler {
    async fn subscribe(&self, info: FrameworkInfo) -> Result<Subscription, SchedulerError> {
        let (tx, rx) = mpsc::channel(crate::actor::framework_queue());
        match self
            .handle
            .subscribe_framework(info, ConnTx::Local(tx))
            .await
            .map_err(err)?
        {
            Reply::Subscribed {
                framework_id,
                stream_id,
                ..
            } => Ok(Subscription {
                framework_id,
                stream_id,
                events: rx,
            }),
            _ => Err(SchedulerError::Unavailable("unexpected reply".into())),
        }
    }

    async fn call(&self, stream_id: &str, call: Call) -> Result<(), SchedulerError> {
        let stream_id = stream_id.to_owned();
        let call = Box::new(call);
        match self
            .handle
            .request(move |reply| Input::Call {
                stream_id,
                call,
                reply,
            })
            .await
            .map_err(err)?
        {
            Reply::Ok => Ok(()),
            _ => Err(SchedulerError::Unavailable("unexpected reply".into())),
        }
    }
}
