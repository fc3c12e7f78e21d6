//! Scenarios: the core driven with chosen inputs at chosen times.

use super::*;
use basalt_api::agent::AgentInfo;
use basalt_api::scheduler::{
    Accept, Acknowledge, Decline, Filters, Operation, Reconcile, ReconcileTask,
};
use basalt_api::task::CommandInfo;

const T0: Timestamp = Timestamp(1_700_000_000_000);

struct H {
    m: Master,
    now: Timestamp,
    token: u64,
    /// Registered agents that `advance_alive` keeps heartbeating.
    alive: Vec<AgentId>,
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

impl H {
    fn new() -> Self {
        Self::with_records(Vec::new())
    }

    fn with_records(records: Vec<(String, Vec<u8>)>) -> Self {
        let cfg = Config {
            agent_timeout: ms(3000),
            unreachable_timeout: ms(60_000),
            ..Config::default()
        };
        Self {
            m: Master::new(cfg, "m1".into(), 7, T0, records),
            now: T0,
            token: 0,
            alive: Vec::new(),
        }
    }

    fn step(&mut self, input: Input) -> Vec<Action> {
        self.m.handle(self.now, input)
    }

    fn advance(&mut self, d: Duration) -> Vec<Action> {
        self.now = self.now.plus(d);
        self.step(Input::Tick)
    }

    fn tok(&mut self) -> u64 {
        self.token += 1;
        self.token
    }

    fn reply(actions: &[Action]) -> &Result<Reply, Rejection> {
        actions
            .iter()
            .find_map(|a| match a {
                Action::Reply { result, .. } => Some(result),
                _ => None,
            })
            .expect("every request gets a reply")
    }

    fn register(&mut self, host: &str, resources: &str) -> AgentId {
        let info = AgentInfo {
            hostname: host.into(),
            port: 5051,
            url: format!("http://{host}:5051"),
            resources: RoleResources::parse(resources).expect("valid").to_wire(),
            attributes: Default::default(),
            version: "test".into(),
            isolation: "none".into(),
        };
        let reply = self.tok();
        let out = self.step(Input::RegisterAgent {
            req: RegisterAgent {
                agent_id: None,
                info,
                tasks: vec![],
            },
            reply,
        });
        match Self::reply(&out) {
            Ok(Reply::AgentRegistered(r)) => {
                self.alive.push(r.agent_id.clone());
                r.agent_id.clone()
            }
            other => panic!("registration failed: {other:?}"),
        }
    }

    fn subscribe(&mut self, name: &str, conn: ConnId) -> (FrameworkId, String) {
        let info = FrameworkInfo {
            name: name.into(),
            failover_timeout: 60.0,
            ..Default::default()
        };
        let reply = self.tok();
        let out = self.step(Input::Subscribe { info, conn, reply });
        match Self::reply(&out) {
            Ok(Reply::Subscribed {
                framework_id,
                stream_id,
                ..
            }) => (framework_id.clone(), stream_id.clone()),
            other => panic!("subscribe failed: {other:?}"),
        }
    }

    fn call(&mut self, stream: &str, call: Call) -> Result<(), Rejection> {
        let reply = self.tok();
        let out = self.step(Input::Call {
            stream_id: stream.into(),
            call: Box::new(call),
            reply,
        });
        match Self::reply(&out) {
            Ok(_) => Ok(()),
            Err(e) => Err(e.clone()),
        }
    }

    /// Runs allocation and returns the offers sent on `conn`.
    /// Moves time on by `d` in 100 ms ticks while registered agents keep heartbeating.
    fn advance_alive(&mut self, d: Duration) -> Vec<Action> {
        let mut out = Vec::new();
        let mut left = d;
        while !left.is_zero() {
            let step = left.min(ms(100));
            left -= step;
            for agent in self.alive.clone() {
                let reply = self.tok();
                self.step(Input::AgentHeartbeat { agent, reply });
            }
            out.extend(self.advance(step));
        }
        out
    }

    /// Offers sent to `conn` while time moves on by `d` with live agents.
    fn offers_within(&mut self, d: Duration, conn: ConnId) -> Vec<scheduler::Offer> {
        let out = self.advance_alive(d);
        sent(&out, conn)
            .into_iter()
            .filter_map(|e| e.offers)
            .flat_map(|o| o.offers)
            .collect()
    }

    fn offers(&mut self, conn: ConnId) -> Vec<scheduler::Offer> {
        let out = self.advance(ms(200));
        sent(&out, conn)
            .into_iter()
            .filter_map(|e| e.offers)
            .flat_map(|o| o.offers)
            .collect()
    }
}

fn sent(actions: &[Action], conn: ConnId) -> Vec<scheduler::Event> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SendFramework { conn: c, event } if *c == conn => Some(event.clone()),
            _ => None,
        })
        .collect()
}

fn task(id: &str, agent: &AgentId, cpus: f64, mem: f64) -> TaskInfo {
    TaskInfo {
        name: id.into(),
        task_id: TaskId::new(id),
        agent_id: agent.clone(),
        resources: Resources::new(cpus, mem).to_wire("*"),
        command: Some(CommandInfo {
            value: Some("sleep 100".into()),
            shell: true,
            ..Default::default()
        }),
        container: None,
        health_check: None,
        kill_policy: None,
        labels: None,
        discovery: None,
        data: None,
    }
}

fn accept(fw: &FrameworkId, offer: &OfferId, tasks: Vec<TaskInfo>) -> Call {
    let mut c = Call::new(Some(fw.clone()), CallType::Accept);
    c.accept = Some(Accept {
        offer_ids: vec![offer.clone()],
        operations: vec![Operation::launch(tasks)],
        filters: None,
    });
    c
}

fn status(uuid: &str, id: &str, state: TaskState) -> TaskStatus {
    let mut s = TaskStatus::new(TaskId::new(id), state, 0.0);
    s.uuid = Some(uuid.into());
    s
}

#[test]
fn registered_agent_is_offered_to_a_subscribed_framework() {
    let mut h = H::new();
    let agent = h.register("a1", "cpus:4;mem:1024;ports:[31000-31010]");
    let (fw, _) = h.subscribe("fw", 1);
    let offers = h.offers(1);
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].agent_id, agent);
    assert_eq!(offers[0].framework_id, fw);
    let r = RoleResources::from_wire(&offers[0].resources)
        .expect("valid")
        .total();
    assert_eq!(r.cpus, basalt_api::Milli(4000));
}

#[test]
fn partial_accept_reoffers_the_remainder_after_the_filter() {
    let mut h = H::new();
    let agent = h.register("a1", "cpus:4;mem:1024");
    let (fw, stream) = h.subscribe("fw", 1);
    let o = h.offers(1).remove(0);
    h.call(
        &stream,
        accept(&fw, &o.id, vec![task("t1", &agent, 1.0, 256.0)]),
    )
    .expect("accepted");
    // Within the default 5 s filter nothing comes back; after it, the remainder does.
    assert!(h.offers(1).is_empty());
    let again = h.offers_within(ms(6000), 1);
    assert_eq!(again.len(), 1);
    let r = RoleResources::from_wire(&again[0].resources)
        .expect("valid")
        .total();
    assert_eq!(
        (r.cpus, r.mem),
        (basalt_api::Milli(3000), basalt_api::Milli(768_000))
    );
}

#[test]
fn accepting_an_offer_not_held_is_refused_and_changes_nothing() {
    let mut h = H::new();
    let agent = h.register("a1", "cpus:4;mem:1024");
    let (fw, stream) = h.subscribe("fw", 1);
    let (fw2, stream2) = h.subscribe("other", 2);
    let mut offers = h.offers(1);
    offers.extend(h.offers(2));
    let mine = offers
        .iter()
        .find(|o| o.framework_id == fw)
        .expect("fw got the agent")
        .clone();
    let err = h
        .call(
            &stream2,
            accept(&fw2, &mine.id, vec![task("t1", &agent, 1.0, 64.0)]),
        )
        .expect_err("refused");
    assert_eq!(err.kind, RejectionKind::BadRequest);
    assert!(h.m.tasks.is_empty());
    // The rightful holder can still use it.
    h.call(
        &stream,
        accept(&fw, &mine.id, vec![task("t1", &agent, 1.0, 64.0)]),
    )
    .expect("accepted");
    assert_eq!(h.m.tasks.len(), 1);
}

#[test]
fn accept_asking_for_more_than_offered_is_refused_whole() {
    let mut h = H::new();
    let agent = h.register("a1", "cpus:2;mem:1024");
    let (fw, stream) = h.subscribe("fw", 1);
    let o = h.offers(1).remove(0);
    let err = h
        .call(
            &stream,
            accept(
                &fw,
                &o.id,
                vec![
                    task("ok", &agent, 1.0, 64.0),
                    task("big", &agent, 5.0, 64.0),
                ],
            ),
        )
        .expect_err("refused");
    assert!(err.message.contains("cpus"), "{}", err.message);
    assert!(h.m.tasks.is_empty());
    assert!(
        h.m.offers.contains_key(&o.id),
        "the offer stays outstanding"
    );
}

#[test]
fn status_updates_flow_to_the_framework_and_terminal_tasks_free_resources() {
    let mut h = H::new();
    let agent = h.register("a1", "cpus:1;mem:256");
    let (fw, stream) = h.subscribe("fw", 1);
    let o = h.offers(1).remove(0);
    h.call(
        &stream,
        accept(&fw, &o.id, vec![task("t1", &agent, 1.0, 256.0)]),
    )
    .expect("accepted");
    let msg = |s| StatusUpdateMessage {
        framework_id: fw.clone(),
        status: s,
    };
    let r = h.tok();
    let out = h.step(Input::StatusUpdate {
        agent: agent.clone(),
        msg: msg(status("u1", "t1", TaskState::Running)),
        reply: r,
    });
    assert!(sent(&out, 1).iter().any(|e| {
        e.update
            .as_ref()
            .is_some_and(|u| u.status.state == TaskState::Running)
    }));
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Publish(e) if e.kind == operator::EventType::TaskUpdated))
    );
    let r = h.tok();
    h.step(Input::StatusUpdate {
        agent: agent.clone(),
        msg: msg(status("u2", "t1", TaskState::Finished)),
        reply: r,
    });
    let mut ack = Call::new(Some(fw.clone()), CallType::Acknowledge);
    ack.acknowledge = Some(Acknowledge {
        agent_id: agent.clone(),
        task_id: TaskId::new("t1"),
        uuid: "u2".into(),
    });
    h.call(&stream, ack).expect("ack");
    assert!(
        h.m.tasks.is_empty(),
        "acknowledged terminal task leaves the live set"
    );
    assert_eq!(
        h.m.allocator.available(&agent).total().cpus,
        basalt_api::Milli(1000)
    );
    assert_eq!(
        h.offers_within(ms(7000), 1).len(),
        1,
        "freed resources are offered again"
    );
}

#[test]
fn silent_agent_goes_unreachable_then_its_tasks_are_lost() {
    let mut h = H::new();
    let agent = h.register("a1", "cpus:1;mem:256");
    let (fw, stream) = h.subscribe("fw", 1);
    let o = h.offers(1).remove(0);
    h.call(
        &stream,
        accept(&fw, &o.id, vec![task("t1", &agent, 0.5, 64.0)]),
    )
    .expect("accepted");
    let out = h.advance(ms(4000));
    let updates: Vec<_> = sent(&out, 1).into_iter().filter_map(|e| e.update).collect();
    assert_eq!(
        updates.first().map(|u| u.status.state),
        Some(TaskState::Unreachable)
    );
    let r = h.tok();
    let hb = h.step(Input::AgentHeartbeat {
        agent: agent.clone(),
        reply: r,
    });
    assert!(
        matches!(H::reply(&hb), Err(e) if e.kind == RejectionKind::NotFound),
        "must re-register"
    );
    let out = h.advance(ms(61_000));
    let updates: Vec<_> = sent(&out, 1).into_iter().filter_map(|e| e.update).collect();
    assert_eq!(
        updates.first().map(|u| u.status.state),
        Some(TaskState::Lost)
    );
    assert!(
        out.iter().any(
            |a| matches!(a, Action::Publish(e) if e.kind == operator::EventType::AgentRemoved)
        )
    );
}

#[test]
fn reregistering_agent_brings_unreachable_tasks_back_to_running() {
    let mut h = H::new();
    let agent = h.register("a1", "cpus:1;mem:256");
    let (fw, stream) = h.subscribe("fw", 1);
    let o = h.offers(1).remove(0);
    let t = task("t1", &agent, 0.5, 64.0);
    h.call(&stream, accept(&fw, &o.id, vec![t.clone()]))
        .expect("accepted");
    let r = h.tok();
    let msg = StatusUpdateMessage {
        framework_id: fw.clone(),
        status: status("u1", "t1", TaskState::Running),
    };
    h.step(Input::StatusUpdate {
        agent: agent.clone(),
        msg,
        reply: r,
    });
    h.advance(ms(4000));
    assert_eq!(
        h.m.tasks.values().next().map(|t| t.state),
        Some(TaskState::Unreachable)
    );
    let info = h.m.agents[&agent].info.clone();
    let reported = AgentTask {
        launch: TaskLaunch {
            framework_id: fw.clone(),
            framework_name: "fw".into(),
            role: "*".into(),
            task: t,
        },
        status: status("u1", "t1", TaskState::Running),
    };
    let r = h.tok();
    let out = h.step(Input::RegisterAgent {
        req: RegisterAgent {
            agent_id: Some(agent.clone()),
            info,
            tasks: vec![reported],
        },
        reply: r,
    });
    assert!(H::reply(&out).is_ok());
    assert_eq!(
        h.m.tasks.values().next().map(|t| t.state),
        Some(TaskState::Running)
    );
}

#[test]
fn agent_reusing_a_live_agents_id_from_elsewhere_is_refused() {
    let mut h = H::new();
    let agent = h.register("a1", "cpus:1;mem:256");
    let mut info = h.m.agents[&agent].info.clone();
    info.url = "http://elsewhere:5051".into();
    let r = h.tok();
    let out = h.step(Input::RegisterAgent {
        req: RegisterAgent {
            agent_id: Some(agent),
            info,
            tasks: vec![],
        },
        reply: r,
    });
    assert!(matches!(H::reply(&out), Err(e) if e.kind == RejectionKind::Conflict));
}

#[test]
fn decline_filter_hides_the_agent_until_refuse_seconds_pass() {
    let mut h = H::new();
    h.register("a1", "cpus:1;mem:256");
    let (fw, stream) = h.subscribe("fw", 1);
    let o = h.offers(1).remove(0);
    let mut d = Call::new(Some(fw.clone()), CallType::Decline);
    d.decline = Some(Decline {
        offer_ids: vec![o.id],
        filters: Some(Filters {
            refuse_seconds: Some(2.0),
        }),
    });
    h.call(&stream, d).expect("declined");
    assert!(h.offers(1).is_empty());
    assert_eq!(h.offers_within(ms(3000), 1).len(), 1);
}

#[test]
fn outstanding_offers_are_rescinded_after_the_offer_timeout() {
    let mut h = H::new();
    h.register("a1", "cpus:1;mem:256");
    h.subscribe("fw", 1);
    let o = h.offers(1).remove(0);
    let out = h.advance(Duration::from_secs(61));
    assert!(
        sent(&out, 1)
            .iter()
            .any(|e| e.rescind.as_ref().is_some_and(|r| r.offer_id == o.id))
    );
    assert!(h.m.offers.is_empty());
}

#[test]
fn framework_failover_keeps_its_id_and_tasks() {
    let mut h = H::new();
    let agent = h.register("a1", "cpus:1;mem:256");
    let (fw, stream) = h.subscribe("fw", 1);
    let o = h.offers(1).remove(0);
    h.call(
        &stream,
        accept(&fw, &o.id, vec![task("t1", &agent, 0.5, 64.0)]),
    )
    .expect("accepted");
    h.step(Input::Disconnected { conn: 1 });
    h.advance_alive(Duration::from_secs(30));
    assert_eq!(
        h.m.tasks.len(),
        1,
        "tasks survive within the failover timeout"
    );
    let info = FrameworkInfo {
        name: "fw".into(),
        id: Some(fw.clone()),
        failover_timeout: 60.0,
        ..Default::default()
    };
    let r = h.tok();
    let out = h.step(Input::Subscribe {
        info,
        conn: 2,
        reply: r,
    });
    assert!(
        matches!(H::reply(&out), Ok(Reply::Subscribed { framework_id, .. }) if *framework_id == fw)
    );
    assert!(
        h.call(&stream, Call::new(Some(fw.clone()), CallType::Revive))
            .is_err(),
        "old stream id is stale"
    );
    // Past the timeout without reconnecting, the framework is torn down.
    h.step(Input::Disconnected { conn: 2 });
    // The agent stays alive meanwhile, so the teardown reaches it.
    let out = h.advance_alive(Duration::from_secs(61));
    assert!(out.iter().any(|a| matches!(a, Action::Teardown { .. })));
    assert!(h.m.tasks.is_empty());
    let info = FrameworkInfo {
        name: "fw".into(),
        id: Some(fw),
        failover_timeout: 60.0,
        ..Default::default()
    };
    let r = h.tok();
    let out = h.step(Input::Subscribe {
        info,
        conn: 3,
        reply: r,
    });
    assert!(matches!(H::reply(&out), Err(e) if e.kind == RejectionKind::Forbidden));
}

#[test]
fn explicit_reconciliation_answers_for_known_and_unknown_tasks() {
    let mut h = H::new();
    let agent = h.register("a1", "cpus:1;mem:256");
    let (fw, stream) = h.subscribe("fw", 1);
    let o = h.offers(1).remove(0);
    h.call(
        &stream,
        accept(&fw, &o.id, vec![task("t1", &agent, 0.5, 64.0)]),
    )
    .expect("accepted");
    let mut c = Call::new(Some(fw.clone()), CallType::Reconcile);
    c.reconcile = Some(Reconcile {
        tasks: vec![
            ReconcileTask {
                task_id: TaskId::new("t1"),
                agent_id: None,
            },
            ReconcileTask {
                task_id: TaskId::new("nope"),
                agent_id: Some(agent.clone()),
            },
        ],
    });
    let r = h.tok();
    let out = h.step(Input::Call {
        stream_id: stream,
        call: Box::new(c),
        reply: r,
    });
    let states: Vec<_> = sent(&out, 1)
        .into_iter()
        .filter_map(|e| e.update.map(|u| u.status.state))
        .collect();
    assert_eq!(states, vec![TaskState::Staging, TaskState::Gone]);
}

#[test]
fn master_restart_recovers_agents_and_frameworks_from_records() {
    let mut h = H::new();
    let agent = h.register("a1", "cpus:1;mem:256");
    let (fw, _) = h.subscribe("fw", 1);
    let mut records = Vec::new();
    for id in [&agent] {
        if let StoreOp::Put(k, v) = records::put_agent(&h.m.agents[id]) {
            records.push((k, v));
        }
    }
    if let StoreOp::Put(k, v) = records::put_framework(&h.m.frameworks[&fw]) {
        records.push((k, v));
    }
    let h2 = H::with_records(records);
    assert_eq!(
        h2.m.agents.get(&agent).map(|a| a.status),
        Some(AgentStatus::Recovered)
    );
    assert!(h2.m.frameworks.get(&fw).is_some_and(|f| f.recovered));
}

#[test]
fn kill_of_unknown_task_is_refused() {
    let mut h = H::new();
    h.register("a1", "cpus:1;mem:256");
    let (fw, stream) = h.subscribe("fw", 1);
    let mut c = Call::new(Some(fw), CallType::Kill);
    c.kill = Some(scheduler::Kill {
        task_id: TaskId::new("ghost"),
        agent_id: None,
        kill_policy: None,
    });
    assert!(matches!(h.call(&stream, c), Err(e) if e.kind == RejectionKind::NotFound));
}

#[test]
fn reserve_then_launch_from_the_reservation() {
    let mut h = H::new();
    let agent = h.register("a1", "cpus:4;mem:1024");
    let info = FrameworkInfo {
        name: "p".into(),
        role: Some("prod".into()),
        ..Default::default()
    };
    let r = h.tok();
    let out = h.step(Input::Subscribe {
        info,
        conn: 1,
        reply: r,
    });
    let Ok(Reply::Subscribed {
        framework_id: fw,
        stream_id: stream,
        ..
    }) = H::reply(&out)
    else {
        panic!("subscribed")
    };
    let (fw, stream) = (fw.clone(), stream.clone());
    let o = h.offers(1).remove(0);
    let mut reserve = Operation::launch(vec![]);
    reserve.kind = basalt_api::scheduler::OperationType::Reserve;
    reserve.launch = None;
    let mut rr = RoleResources::default();
    rr.add_to("prod", &Resources::new(2.0, 512.0));
    reserve.reserve = Some(basalt_api::scheduler::ResourcesOp {
        resources: rr.to_wire(),
    });
    let mut c = Call::new(Some(fw.clone()), CallType::Accept);
    c.accept = Some(Accept {
        offer_ids: vec![o.id],
        operations: vec![
            reserve,
            Operation::launch(vec![task("t1", &agent, 3.0, 64.0)]),
        ],
        filters: None,
    });
    h.call(&stream, c).expect("reserve + launch");
    assert_eq!(
        h.m.agents[&agent].total().get("prod").cpus,
        basalt_api::Milli(2000)
    );
    let t = h.m.tasks.values().next().expect("task");
    assert_eq!(
        t.resources.get("prod").cpus.0 + t.resources.get("*").cpus.0,
        3000
    );
}

#[test]
fn the_frameworks_acknowledgement_is_relayed_to_the_agent() {
    let mut h = H::new();
    let agent = h.register("a1", "cpus:1;mem:256");
    let (fw, stream) = h.subscribe("fw", 1);
    let o = h.offers(1).remove(0);
    h.call(
        &stream,
        accept(&fw, &o.id, vec![task("t1", &agent, 1.0, 256.0)]),
    )
    .expect("accepted");
    let update = |h: &mut H, uuid: &str, state| {
        let reply = h.tok();
        let out = h.step(Input::StatusUpdate {
            agent: agent.clone(),
            msg: StatusUpdateMessage {
                framework_id: fw.clone(),
                status: status(uuid, "t1", state),
            },
            reply,
        });
        match H::reply(&out) {
            Ok(Reply::StatusAck { uuid, pending }) => (uuid.clone(), *pending),
            other => panic!("{other:?}"),
        }
    };
    let ack = |h: &mut H, uuid: &str| {
        let mut c = Call::new(Some(fw.clone()), CallType::Acknowledge);
        c.acknowledge = Some(Acknowledge {
            agent_id: agent.clone(),
            task_id: TaskId::new("t1"),
            uuid: uuid.into(),
        });
        let reply = h.tok();
        h.step(Input::Call {
            stream_id: stream.clone(),
            call: Box::new(c),
            reply,
        })
    };
    let relayed = |out: &[Action]| -> Vec<String> {
        out.iter()
            .filter_map(|a| match a {
                Action::AckAgent { msg, .. } => Some(msg.uuid.clone()),
                _ => None,
            })
            .collect()
    };
    // Forwarded to the framework: the agent is told to wait for its acknowledgement.
    assert_eq!(
        update(&mut h, "u1", TaskState::Running),
        ("u1".into(), true)
    );
    // Sent again before the framework answered: still pending, not acknowledged.
    assert_eq!(
        update(&mut h, "u1", TaskState::Running),
        ("u1".into(), true)
    );
    let out = ack(&mut h, "u1");
    assert_eq!(
        relayed(&out),
        ["u1"],
        "the framework's ack goes on to the agent"
    );
    assert!(relayed(&ack(&mut h, "u1")).is_empty(), "once");
    // A terminal update resent before its ack stays pending too.
    assert_eq!(
        update(&mut h, "u2", TaskState::Finished),
        ("u2".into(), true)
    );
    assert_eq!(
        update(&mut h, "u2", TaskState::Finished),
        ("u2".into(), true)
    );
    assert_eq!(relayed(&ack(&mut h, "u2")), ["u2"]);
    assert!(h.m.tasks.is_empty());
    // After that, a late copy is simply acknowledged.
    assert!(!update(&mut h, "u2", TaskState::Finished).1);
}

#[test]
fn a_task_that_ended_while_the_master_was_away_still_reaches_its_framework() {
    let mut h = H::new();
    let agent = h.register("a1", "cpus:1;mem:256");
    let (fw, stream) = h.subscribe("fw", 1);
    let o = h.offers(1).remove(0);
    h.call(
        &stream,
        accept(&fw, &o.id, vec![task("t1", &agent, 1.0, 256.0)]),
    )
    .expect("accepted");
    let key = (fw.clone(), TaskId::new("t1"));
    // As after a master restart that lost the task: the agent re-registers reporting it
    // FINISHED, with its RUNNING and FINISHED updates still unacknowledged.
    let launch = h.m.tasks[&key].info.clone();
    h.m.tasks.remove(&key);
    let info = h.m.agents[&agent].info.clone();
    let reply = h.tok();
    h.step(Input::RegisterAgent {
        req: RegisterAgent {
            agent_id: Some(agent.clone()),
            info,
            tasks: vec![basalt_api::agent::AgentTask {
                launch: basalt_api::task::TaskLaunch {
                    framework_id: fw.clone(),
                    framework_name: "fw".into(),
                    role: "*".into(),
                    task: launch,
                },
                status: status("u2", "t1", TaskState::Finished),
            }],
        },
        reply,
    });
    assert!(
        !h.m.tasks[&key].state.is_terminal(),
        "known, but not as ended: the update has yet to reach the framework"
    );
    for (uuid, state) in [("u1", TaskState::Running), ("u2", TaskState::Finished)] {
        let reply = h.tok();
        let out = h.step(Input::StatusUpdate {
            agent: agent.clone(),
            msg: StatusUpdateMessage {
                framework_id: fw.clone(),
                status: status(uuid, "t1", state),
            },
            reply,
        });
        assert!(
            sent(&out, 1)
                .iter()
                .any(|e| e.update.as_ref().is_some_and(|u| u.status.state == state)),
            "{state:?} forwarded"
        );
        let mut ack = Call::new(Some(fw.clone()), CallType::Acknowledge);
        ack.acknowledge = Some(Acknowledge {
            agent_id: agent.clone(),
            task_id: TaskId::new("t1"),
            uuid: uuid.into(),
        });
        h.call(&stream, ack).expect("ack");
    }
    assert!(h.m.tasks.is_empty(), "acknowledged: completed");
}
