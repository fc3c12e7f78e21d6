"""The real `marathon` Python client (thefactory/marathon-python 0.13.0) against init:
create, list, get, scale, update, list tasks, kill a task, delete, and read events.
Exits non-zero with a message on the first thing that does not work.

    python marathon_client.py INIT_URL
"""
import sys
import threading
import time

from marathon import MarathonClient
from marathon.models import MarathonApp

url = sys.argv[1]
c = MarathonClient(url)
seen = []


def listen():
    try:
        for ev in c.event_stream(event_types=["deployment_success", "status_update_event"]):
            seen.append(ev.event_type)
    except Exception as e:  # the stream ends when the test does
        seen.append(f"error: {e}")


threading.Thread(target=listen, daemon=True).start()


def wait(what, pred, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        try:
            if pred():
                return
        except Exception:
            pass
        time.sleep(0.2)
    sys.exit(f"timed out waiting for {what}")


def running(n):
    a = c.get_app("pyapp")
    return a.tasks_running == n and not a.deployments


app = c.create_app("pyapp", MarathonApp(cmd="sleep 600", cpus=0.05, mem=16, instances=1,
                                         labels={"owner": "py"}))
assert app.id == "/pyapp", app.id
assert any(a.id == "/pyapp" for a in c.list_apps()), "listed"
assert [a.id for a in c.list_apps(label="owner==py")] == ["/pyapp"], "label selector"
wait("one running", lambda: running(1))

c.scale_app("pyapp", instances=2)
wait("two running", lambda: running(2))

c.update_app("pyapp", MarathonApp(cmd="sleep 601", cpus=0.05, mem=16, instances=2))
wait("the update rolled out", lambda: running(2) and all(t.version == c.get_app("pyapp").version
                                                          for t in c.list_tasks("pyapp")))
tasks = c.list_tasks("pyapp")
assert len(tasks) == 2, tasks
victim = tasks[0].id
c.kill_task("pyapp", victim, scale=True)
wait("scaled to one by the kill", lambda: running(1) and victim not in [t.id for t in c.list_tasks("pyapp")])
assert c.get_app("pyapp").instances == 1

assert c.list_deployments() == [] or all(d.affected_apps for d in c.list_deployments())
c.delete_app("pyapp")
wait("deleted", lambda: "/pyapp" not in [a.id for a in c.list_apps()] and not c.list_tasks())
wait("events", lambda: "deployment_success" in seen and "status_update_event" in seen, timeout=10)
print("marathon client: all calls worked;", len(seen), "events")
