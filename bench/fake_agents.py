#!/usr/bin/env python3
"""Registers simulated agents with a real `basalt master`, each reporting running tasks,
the way agents re-register after a master failover. For benchmarks of what consumes the
master's state (DNS, the load balancer): the master and its event stream are real, only
the agents are not.

    python3 bench/fake_agents.py MASTER_URL TASKS [TASKS_PER_AGENT] [APPS]
"""
import json
import sys
import urllib.request

master, tasks = sys.argv[1].rstrip("/"), int(sys.argv[2])
per_agent = int(sys.argv[3]) if len(sys.argv) > 3 else 100
apps = int(sys.argv[4]) if len(sys.argv) > 4 else max(1, tasks // 10)


def scalar(name, v):
    return {"name": name, "type": "SCALAR", "scalar": {"value": v}}


def ports(b, e):
    return {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": b, "end": e}]}}


n = 0
agent = 0
while n < tasks:
    ip = f"10.{1 + agent // 250}.{agent % 250}.1"
    reported = []
    for i in range(min(per_agent, tasks - n)):
        app = f"app-{n % apps}"
        tid = f"{app}.{n:08d}-0b2d6c5e-8f1a-11ef-9a33-0242ac110002"
        port = 31000 + i
        reported.append({
            "launch": {
                "framework_id": {"value": "marathon-bench"},
                "framework_name": "marathon",
                "role": "*",
                "task": {
                    "name": app,
                    "task_id": {"value": tid},
                    "agent_id": {"value": "pending"},
                    "resources": [scalar("cpus", 0.1), scalar("mem", 32), ports(port, port)],
                    "command": {"value": "sleep 3600", "shell": True},
                },
            },
            "status": {"task_id": {"value": tid}, "state": "TASK_RUNNING", "timestamp": 1.0},
        })
        n += 1
    body = {
        "info": {
            "hostname": ip,
            "port": 5051,
            "url": f"http://{ip}:5051",
            "resources": [scalar("cpus", 64), scalar("mem", 262144), scalar("disk", 100000),
                          ports(31000, 32000)],
            "attributes": {"rack": f"r{agent % 10}"},
            "version": "bench",
            "isolation": "none: simulated",
        },
        "tasks": reported,
    }
    req = urllib.request.Request(master + "/internal/agents/register", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        r.read()
    agent += 1
print(f"registered {agent} simulated agents with {n} running tasks", file=sys.stderr)
