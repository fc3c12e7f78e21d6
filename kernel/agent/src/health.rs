//! Health checks, run by the agent next to the task as Mesos does (`TaskInfo.health_check`):
//! HTTP, TCP or a command, on a schedule. Changes of health go to the master as
//! `TASK_RUNNING` updates with `healthy` set, so init, DNS and the load balancer all see
//! the same truth; too many failures in a row past the grace period kill the task.

use crate::runtime::{self, Agent, TaskKey};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Check {
    Http {
        port: u16,
        path: String,
        /// `http.scheme: "https"`: over TLS, the certificate not checked (as Mesos).
        tls: bool,
    },
    Tcp {
        port: u16,
    },
    Command {
        value: String,
    },
}

/// A Mesos `HealthCheck`, with Mesos' defaults for what is left out.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Spec {
    pub(crate) check: Check,
    pub(crate) delay: Duration,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) grace: Duration,
    /// 0 = never kill.
    pub(crate) max_failures: u32,
}

fn secs(v: &Value, key: &str, default: f64) -> Duration {
    let s = v.get(key).and_then(Value::as_f64).unwrap_or(default);
    Duration::from_secs_f64(if s.is_finite() && s >= 0.0 {
        s
    } else {
        default
    })
}

impl Spec {
    pub(crate) fn parse(v: &Value) -> Result<Spec, String> {
        let port = |section: &str| -> Result<u16, String> {
            v.pointer(&format!("/{section}/port"))
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("health check {section}.port must be a port number"))
        };
        let check = match v.get("type").and_then(Value::as_str).unwrap_or("") {
            "HTTP" => Check::Http {
                port: port("http")?,
                path: v
                    .pointer("/http/path")
                    .and_then(Value::as_str)
                    .unwrap_or("/")
                    .to_owned(),
                tls: v
                    .pointer("/http/scheme")
                    .and_then(Value::as_str)
                    .is_some_and(|s| s.eq_ignore_ascii_case("https")),
            },
            "TCP" => Check::Tcp { port: port("tcp")? },
            "COMMAND" => Check::Command {
                value: v
                    .pointer("/command/value")
                    .and_then(Value::as_str)
                    .filter(|c| !c.trim().is_empty())
                    .ok_or("health check command.value is missing")?
                    .to_owned(),
            },
            other => {
                return Err(format!(
                    "health check type '{other}' is not HTTP, TCP or COMMAND"
                ));
            }
        };
        Ok(Spec {
            check,
            delay: secs(v, "delay_seconds", 15.0),
            interval: secs(v, "interval_seconds", 10.0).max(Duration::from_millis(100)),
            timeout: secs(v, "timeout_seconds", 20.0).max(Duration::from_millis(100)),
            grace: secs(v, "grace_period_seconds", 10.0),
            max_failures: v
                .get("consecutive_failures")
                .and_then(Value::as_u64)
                .map_or(3, |n| n.min(u64::from(u32::MAX)) as u32),
        })
    }
}

/// One probe. HTTP counts 200-399 as healthy, as Mesos does.
pub(crate) async fn probe(check: &Check, timeout: Duration, cwd: &std::path::Path) -> bool {
    let work = async {
        match check {
            Check::Tcp { port } => tokio::net::TcpStream::connect(("127.0.0.1", *port))
                .await
                .is_ok(),
            Check::Http { port, path, tls } => {
                basalt_api::probe::get("127.0.0.1", *port, path, *tls, 0)
                    .await
                    .is_ok_and(|a| (200..400).contains(&a.status))
            }
            Check::Command { value } => tokio::process::Command::new("/bin/sh")
                .args(["-c", value])
                .current_dir(cwd)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .status()
                .await
                .is_ok_and(|s| s.success()),
        }
    };
    tokio::time::timeout(timeout, work).await.unwrap_or(false)
}

/// Checks the task until it ends or the agent stops.
pub(crate) fn watch(agent: &Arc<Agent>, key: TaskKey, spec: Spec) {
    let a = agent.clone();
    let mut exited = match agent.table().live.get(&key) {
        Some(e) => e.exited.subscribe(),
        None => return,
    };
    agent.tracker.spawn(async move {
        let over = async {
            let _ = exited.wait_for(|x| *x).await;
        };
        tokio::select! {
            _ = run(&a, &key, &spec) => {}
            _ = over => {}
            _ = a.shutdown.cancelled() => {}
        }
    });
}

async fn run(agent: &Arc<Agent>, key: &TaskKey, spec: &Spec) {
    tokio::time::sleep(spec.delay).await;
    let started = tokio::time::Instant::now();
    let mut healthy: Option<bool> = None;
    let mut ever_healthy = false;
    let mut failures = 0u32;
    let sandbox = agent
        .table()
        .live
        .get(key)
        .map(|e| e.record.sandbox.clone())
        .unwrap_or_default();
    let mut tick = tokio::time::interval(spec.interval);
    loop {
        tick.tick().await;
        let ok = probe(&spec.check, spec.timeout, &sandbox).await;
        if ok {
            failures = 0;
            ever_healthy = true;
        } else {
            if !ever_healthy && started.elapsed() < spec.grace {
                // Still starting: failures in the grace period do not count.
                continue;
            }
            failures += 1;
        }
        if healthy != Some(ok) {
            healthy = Some(ok);
            if !runtime::report_health(agent, key, ok).await {
                return;
            }
        }
        if !ok && spec.max_failures > 0 && failures >= spec.max_failures {
            tracing::info!(task_id = %key.1, failures, "task unhealthy; killing it");
            runtime::kill_unhealthy(agent, key).await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn parses_mesos_health_checks_with_defaults() {
        let s = Spec::parse(
            &json!({"type": "HTTP", "http": {"port": 8080, "path": "/ok"}, "interval_seconds": 2}),
        )
        .expect("valid");
        assert_eq!(
            s.check,
            Check::Http {
                port: 8080,
                path: "/ok".into(),
                tls: false
            }
        );
        let tls_spec =
            Spec::parse(&json!({"type": "HTTP", "http": {"port": 8443, "scheme": "https"}}))
                .expect("valid");
        assert!(matches!(tls_spec.check, Check::Http { tls: true, .. }));
        assert_eq!(s.interval, Duration::from_secs(2));
        assert_eq!((s.max_failures, s.delay), (3, Duration::from_secs(15)));
        assert!(Spec::parse(&json!({"type": "HTTP", "http": {}})).is_err());
        assert!(Spec::parse(&json!({"type": "GOPHER"})).is_err());
        assert!(Spec::parse(&json!({"type": "COMMAND", "command": {"value": "true"}})).is_ok());
    }

    #[tokio::test]
    async fn probes_tell_up_from_down() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let status = if String::from_utf8_lossy(&buf).contains("/bad") {
                    500
                } else {
                    200
                };
                let _ = s
                    .write_all(
                        format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n").as_bytes(),
                    )
                    .await;
            }
        });
        let t = Duration::from_secs(2);
        let cwd = std::env::temp_dir();
        assert!(probe(&Check::Tcp { port }, t, &cwd).await);
        assert!(
            probe(
                &Check::Http {
                    port,
                    path: "/".into(),
                    tls: false
                },
                t,
                &cwd
            )
            .await
        );
        assert!(
            !probe(
                &Check::Http {
                    port,
                    path: "/bad".into(),
                    tls: false
                },
                t,
                &cwd
            )
            .await
        );
        assert!(
            probe(
                &Check::Command {
                    value: "exit 0".into()
                },
                t,
                &cwd
            )
            .await
        );
        assert!(
            !probe(
                &Check::Command {
                    value: "exit 3".into()
                },
                t,
                &cwd
            )
            .await
        );
        let free = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        assert!(!probe(&Check::Tcp { port: free }, t, &cwd).await);
    }

    #[tokio::test]
    async fn https_checks_speak_tls_to_a_real_server() {
        let dir = std::env::temp_dir().join(format!("basalt-tls-hc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let made = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=task.example"])
            .arg("-keyout")
            .arg(dir.join("k.pem"))
            .arg("-out")
            .arg(dir.join("c.pem"))
            .output()
            .expect("openssl (scripts/test.sh installs it)");
        assert!(made.status.success(), "{made:?}");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        // `s_server -www` answers any GET with 200 and a status page.
        let mut server = tokio::process::Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept", &port.to_string()])
            .arg("-cert")
            .arg(dir.join("c.pem"))
            .arg("-key")
            .arg(dir.join("k.pem"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("s_server");
        let t = Duration::from_secs(2);
        let cwd = std::env::temp_dir();
        let https = Check::Http {
            port,
            path: "/".into(),
            tls: true,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut up = false;
        while tokio::time::Instant::now() < deadline {
            if probe(&https, t, &cwd).await {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            up,
            "an HTTPS check of a TLS server with a self-signed certificate passes"
        );
        let plain = Check::Http {
            port,
            path: "/".into(),
            tls: false,
        };
        assert!(
            !probe(&plain, t, &cwd).await,
            "plain HTTP to a TLS port fails"
        );
        let _ = server.kill().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
