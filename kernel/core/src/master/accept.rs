//! ACCEPT: validate the whole call against the offers first, then apply it. A call with
//! anything wrong is refused whole and changes nothing (the offers stay outstanding).

use super::{Action, AgentStatus, Master, Rejection, Task, records, views};
use crate::time::Timestamp;
use basalt_api::agent::LaunchTasks;
use basalt_api::resources::UNRESERVED;
use basalt_api::scheduler::{Accept, OperationType};
use basalt_api::task::TaskLaunch;
use basalt_api::{
    FrameworkId, Milli, Ranges, Resources, RoleResources, TaskId, TaskInfo, TaskState, TaskStatus,
};
use std::collections::BTreeSet;

enum Planned {
    Launch(Box<TaskInfo>, RoleResources),
    Reserve(Resources),
    Unreserve(Resources),
}

/// Takes `want` out of `remaining` for a framework of `role`: unreserved asks are met from
/// `*` first, then from the role's reservation; reserved asks only from that reservation.
/// Returns what was consumed, split by role, or why it does not fit.
pub(crate) fn fit(
    remaining: &RoleResources,
    want: &RoleResources,
    role: &str,
) -> Result<RoleResources, String> {
    let mut used = RoleResources::default();
    for (wrole, w) in &want.0 {
        if wrole != UNRESERVED && wrole != role {
            return Err(format!(
                "resources reserved for role '{wrole}' cannot be used by a framework of role '{role}'"
            ));
        }
        let sources: Vec<&str> = if wrole == UNRESERVED && role != UNRESERVED {
            vec![UNRESERVED, role]
        } else {
            vec![wrole.as_str()]
        };
        let mut need = [w.cpus, w.mem, w.disk];
        let mut ports_left = w.ports.clone();
        for src in sources {
            let have = remaining.get(src).sub(&used.get(src));
            let avail = [have.cpus, have.mem, have.disk];
            let mut take = Resources::default();
            let mut taken = [Milli::ZERO; 3];
            for i in 0..3 {
                let t = need[i].min(avail[i]);
                taken[i] = t;
                need[i] = need[i] - t;
            }
            take.cpus = taken[0];
            take.mem = taken[1];
            take.disk = taken[2];
            let here = Ranges::from_pairs(
                ports_left
                    .iter_ports()
                    .filter(|p| have.ports.contains_port(*p))
                    .map(|p| (p, p)),
            )
            .unwrap_or_default();
            ports_left = ports_left.difference(&here);
            take.ports = here;
            used.add_to(src, &take);
        }
        if need.iter().any(|n| n.0 > 0) {
            let names = ["cpus", "mem", "disk"];
            let short: Vec<&str> = (0..3)
                .filter(|&i| need[i].0 > 0)
                .map(|i| names[i])
                .collect();
            return Err(format!(
                "not enough {} left in the offers",
                short.join(", ")
            ));
        }
        if !ports_left.is_empty() {
            return Err(format!(
                "ports {} are not in the offers",
                ports_left.to_mesos_string()
            ));
        }
    }
    Ok(used)
}

impl Master {
    pub(super) fn accept(
        &mut self,
        now: Timestamp,
        fw: &FrameworkId,
        a: Accept,
        out: &mut Vec<Action>,
    ) -> Result<(), Rejection> {
        let refuse = self.refuse(a.filters.as_ref())?;
        self.check_offers(fw, &a.offer_ids)?;
        let agent_id = {
            let mut agents = a
                .offer_ids
                .iter()
                .filter_map(|o| self.offers.get(o))
                .map(|o| o.agent.clone());
            let first = agents
                .next()
                .ok_or_else(|| Rejection::bad("offer_ids must not be empty"))?;
            if agents.any(|x| x != first) {
                return Err(Rejection::bad(
                    "offers accepted together must come from the same agent",
                ));
            }
            first
        };
        let agent = self
            .agents
            .get(&agent_id)
            .filter(|a| a.status == AgentStatus::Reachable)
            .ok_or_else(|| {
                Rejection::bad(format!("agent {agent_id} of these offers is not reachable"))
            })?;
        let url = agent.info.url.clone();
        let role = self
            .frameworks
            .get(fw)
            .map(|f| f.role.clone())
            .unwrap_or_else(|| UNRESERVED.to_owned());
        let mut remaining = RoleResources::default();
        for o in &a.offer_ids {
            if let Some(offer) = self.offers.get(o) {
                remaining = remaining.add(&offer.resources);
            }
        }

        // Plan on a scratch copy.
        let mut plan = Vec::new();
        let mut ids_here: BTreeSet<TaskId> = BTreeSet::new();
        for op in &a.operations {
            match op.kind {
                OperationType::Launch => {
                    let launch = op
                        .launch
                        .as_ref()
                        .ok_or_else(|| Rejection::bad("LAUNCH needs 'launch'"))?;
                    for t in &launch.task_infos {
                        let want = self.validate_task(fw, &agent_id, t, &ids_here)?;
                        let used = fit(&remaining, &want, &role)
                            .map_err(|e| Rejection::bad(format!("task {}: {e}", t.task_id)))?;
                        remaining = remaining.sub(&used);
                        ids_here.insert(t.task_id.clone());
                        plan.push(Planned::Launch(Box::new(t.clone()), used));
                    }
                }
                OperationType::Reserve => {
                    if role == UNRESERVED {
                        return Err(Rejection::bad(
                            "a framework of role '*' cannot reserve resources",
                        ));
                    }
                    let r = op
                        .reserve
                        .as_ref()
                        .ok_or_else(|| Rejection::bad("RESERVE needs 'reserve'"))?;
                    let parsed = RoleResources::from_wire(&r.resources)
                        .map_err(|e| Rejection::bad(e.to_string()))?;
                    let want = parsed.get(&role);
                    if parsed.0.keys().any(|k| k != &role) || want.is_empty() {
                        return Err(Rejection::bad(format!(
                            "RESERVE resources must name the reservation role '{role}'"
                        )));
                    }
                    if !remaining.get(UNRESERVED).contains(&want) {
                        return Err(Rejection::bad(
                            "RESERVE asks for more unreserved resources than the offers hold",
                        ));
                    }
                    remaining.sub_from(UNRESERVED, &want);
                    remaining.add_to(&role, &want);
                    plan.push(Planned::Reserve(want));
                }
                OperationType::Unreserve => {
                    let r = op
                        .unreserve
                        .as_ref()
                        .ok_or_else(|| Rejection::bad("UNRESERVE needs 'unreserve'"))?;
                    let parsed = RoleResources::from_wire(&r.resources)
                        .map_err(|e| Rejection::bad(e.to_string()))?;
                    let want = parsed.get(&role);
                    if parsed.0.keys().any(|k| k != &role) || want.is_empty() {
                        return Err(Rejection::bad(format!(
                            "UNRESERVE resources must be reserved for role '{role}'"
                        )));
                    }
                    let dynamic: RoleResources = self
                        .agents
                        .get(&agent_id)
                        .map(|a| {
                            let mut d = RoleResources::default();
                            for (r, res) in &a.dynamic {
                                d.add_to(r, res);
                            }
                            d
                        })
                        .unwrap_or_default();
                    if !remaining.get(&role).contains(&want) || !dynamic.get(&role).contains(&want)
                    {
                        return Err(Rejection::bad(
                            "UNRESERVE asks for resources that are not dynamically reserved in these offers",
                        ));
                    }
                    remaining.sub_from(&role, &want);
                    remaining.add_to(UNRESERVED, &want);
                    plan.push(Planned::Unreserve(want));
                }
                OperationType::Unsupported => {
                    return Err(Rejection::bad(
                        "unsupported offer operation (supported: LAUNCH, RESERVE, UNRESERVE)",
                    ));
                }
            }
        }

        // Commit.
        let mut offered = RoleResources::default();
        for o in &a.offer_ids {
            if let Some(offer) = self.take_offer(o) {
                offered = offered.add(&offer.resources);
            }
        }
        self.counters.offers_accepted += a.offer_ids.len() as u64;
        let mut held = offered.clone();
        let mut launches = Vec::new();
        let fname = self
            .frameworks
            .get(fw)
            .map(|f| f.info.name.clone())
            .unwrap_or_default();
        for p in plan {
            match p {
                Planned::Reserve(r) => {
                    let mut to = held.clone();
                    to.sub_from(UNRESERVED, &r);
                    to.add_to(&role, &r);
                    self.change_reservation(
                        &agent_id,
                        fw,
                        &held,
                        &to,
                        Some((role.clone(), r)),
                        None,
                        out,
                    );
                    held = to;
                }
                Planned::Unreserve(r) => {
                    let mut to = held.clone();
                    to.sub_from(&role, &r);
                    to.add_to(UNRESERVED, &r);
                    self.change_reservation(
                        &agent_id,
                        fw,
                        &held,
                        &to,
                        None,
                        Some((role.clone(), r)),
                        out,
                    );
                    held = to;
                }
                Planned::Launch(info, used) => {
                    held = held.sub(&used);
                    let mut status = TaskStatus::new(
                        info.task_id.clone(),
                        TaskState::Staging,
                        now.as_secs_f64(),
                    );
                    status.agent_id = Some(agent_id.clone());
                    status.source = Some(basalt_api::task::source::MASTER.into());
                    let task = Task {
                        framework: fw.clone(),
                        agent: agent_id.clone(),
                        info: (*info).clone(),
                        role: role.clone(),
                        resources: used,
                        state: TaskState::Staging,
                        statuses: vec![status],
                        unacked: None,
                        relay: None,
                    };
                    out.push(Action::Publish(views::task_added(&task)));
                    let key = (fw.clone(), info.task_id.clone());
                    if let Some(f) = self.frameworks.get_mut(fw) {
                        f.tasks.insert(info.task_id.clone());
                    }
                    if let Some(a) = self.agents.get_mut(&agent_id) {
                        a.tasks.insert(key.clone());
                    }
                    self.tasks.insert(key, task);
                    self.counters.tasks_launched += 1;
                    launches.push(TaskLaunch {
                        framework_id: fw.clone(),
                        framework_name: fname.clone(),
                        role: role.clone(),
                        task: *info,
                    });
                }
            }
        }
        if !launches.is_empty() {
            out.push(Action::Launch {
                agent: agent_id.clone(),
                url,
                msg: LaunchTasks {
                    master_id: self.id.clone(),
                    tasks: launches,
                },
            });
        }
        if !held.is_empty() {
            self.allocator.recover(&agent_id, fw, &held);
            self.allocator.add_filter(fw, &agent_id, now.plus(refuse));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn change_reservation(
        &mut self,
        agent_id: &basalt_api::AgentId,
        fw: &FrameworkId,
        from: &RoleResources,
        to: &RoleResources,
        reserve: Option<(String, Resources)>,
        unreserve: Option<(String, Resources)>,
        out: &mut Vec<Action>,
    ) {
        let Some(agent) = self.agents.get_mut(agent_id) else {
            return;
        };
        if let Some(r) = reserve {
            agent.dynamic.push(r);
        }
        if let Some((role, r)) = unreserve {
            let mut left = r;
            for (drole, d) in agent.dynamic.iter_mut() {
                if *drole == role && !left.is_empty() {
                    let take = Resources {
                        cpus: d.cpus.min(left.cpus),
                        mem: d.mem.min(left.mem),
                        disk: d.disk.min(left.disk),
                        ports: Ranges::from_pairs(
                            d.ports
                                .iter_ports()
                                .filter(|p| left.ports.contains_port(*p))
                                .map(|p| (p, p)),
                        )
                        .unwrap_or_default(),
                    };
                    *d = d.sub(&take);
                    left = left.sub(&take);
                }
            }
            agent.dynamic.retain(|(_, d)| !d.is_empty());
        }
        let total = agent.total();
        out.push(Action::Persist(vec![records::put_agent(agent)]));
        self.allocator.update_agent_total(agent_id, total);
        self.allocator.update_allocation(agent_id, fw, from, to);
    }

    fn validate_task(
        &self,
        fw: &FrameworkId,
        agent: &basalt_api::AgentId,
        t: &TaskInfo,
        ids_here: &BTreeSet<TaskId>,
    ) -> Result<RoleResources, Rejection> {
        let id = &t.task_id;
        if t.agent_id != *agent {
            return Err(Rejection::bad(format!(
                "task {id}: agent_id {} is not the offers' agent {agent}",
                t.agent_id
            )));
        }
        if ids_here.contains(id)
            || self
                .tasks
                .get(&(fw.clone(), id.clone()))
                .is_some_and(|t| !t.state.is_terminal())
        {
            return Err(Rejection::bad(format!(
                "task {id}: a task with this id is already running"
            )));
        }
        let has_cmd = t
            .command
            .as_ref()
            .is_some_and(|c| c.value.as_deref().is_some_and(|v| !v.trim().is_empty()));
        if !has_cmd && t.container.is_none() {
            return Err(Rejection::bad(format!(
                "task {id}: needs a command with a non-empty 'value'"
            )));
        }
        let want = RoleResources::from_wire(&t.resources)
            .map_err(|e| Rejection::bad(format!("task {id}: {e}")))?;
        let total = want.total();
        if total.cpus.0 <= 0 && total.mem.0 <= 0 {
            return Err(Rejection::bad(format!("task {id}: uses no cpus or mem")));
        }
        Ok(want)
    }
}
