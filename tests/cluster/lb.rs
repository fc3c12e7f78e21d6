//! The load balancer in a real `basalt up`: real app instances (Python HTTP servers that
//! drain on SIGTERM), deployed through init's Marathon API, reached through the LB by a
//! client that counts every response.

use crate::harness::*;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

const DRAIN_SERVER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/cluster/drain_server.py"
);

struct Up {
    proc: Proc,
    dir: PathBuf,
    init: String,
    lb_http: String,
    lb_app_id: String,
    lb_stats: String,
}

impl Drop for Up {
    fn drop(&mut self) {
        self.proc.kill9();
        kill_processes_under(&self.dir);
    }
}

/// `basalt up` with every role but DNS on free ports; its agent offers `ports` (tests that
/// run at the same time must not share host ports, and stay in 30800-32767: below Linux's
/// ephemeral range, where client sockets would hold them, and above the port blocks of
/// `Cluster`).
async fn up(name: &str, ports: &str) -> Up {
    up_with(name, ports, &[]).await
}

async fn up_with(name: &str, ports: &str, extra: &[String]) -> Up {
    let dir = temp_dir(name);
    let ready = dir.join("up.ready");
    let mut args: Vec<String> = [
        "up",
        "--data-dir",
        &dir.join("data").display().to_string(),
        "--master-port",
        "0",
        "--agent-port",
        "0",
        "--no-dns",
        "--no-universe",
        "--init-port",
        "0",
        "--lb-http-port",
        "0",
        "--lb-stats-port",
        "0",
        "--lb-app-id-port",
        "0",
        "--allocation-interval",
        "50ms",
        "--kill-grace-period",
        "2s",
        "--resources",
        &format!("cpus:8;mem:8192;disk:100;ports:[{ports}]"),
        "--ready-file",
        &ready.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().cloned());
    let proc = Proc::spawn(&args, &ready, &dir.join("up.log"));
    let init = proc.ready("init").await;
    let (lb_http, lb_app_id, lb_stats) = if extra.iter().any(|a| a == "--no-lb") {
        Default::default()
    } else {
        (
            proc.ready("lb_http").await,
            proc.ready("lb_app_id").await,
            proc.ready("lb_stats").await,
        )
    };
    Up {
        proc,
        dir,
        init,
        lb_http,
        lb_app_id,
        lb_stats,
    }
}

fn app(id: &str, instances: u64, service_port: u16, labels: Value) -> Value {
    json!({
        "id": id,
        "cmd": format!("exec python3 {DRAIN_SERVER} $PORT0 0.5"),
        "cpus": 0.05, "mem": 32, "instances": instances,
        "portDefinitions": [{"port": service_port, "name": "http"}],
        "labels": labels,
        "env": {"VERSION": "v0"},
        "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/", "portIndex": 0, "delaySeconds": 0,
                          "gracePeriodSeconds": 15, "intervalSeconds": 1, "timeoutSeconds": 2,
                          "maxConsecutiveFailures": 3}],
    })
}

async fn deploy(init: &str, def: Value) {
    let id = def["id"].as_str().expect("id").to_owned();
    let (status, body) = send(
        reqwest::Method::PUT,
        &format!("{init}/v2/apps{id}?force=true"),
        def,
    )
    .await;
    assert!(status == 200 || status == 201, "{status} {body}");
}

/// Waits until init has no deployment in flight.
async fn deployed(init: &str) {
    let url = format!("{init}/v2/deployments");
    eventually("deployments finish", secs(90), || {
        let url = url.clone();
        async move {
            let d: Value = reqwest::get(&url)
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            Ok(d.as_array().is_some_and(|a| a.is_empty()).then_some(()))
        }
    })
    .await;
}

/// The LB's pool for `app` port 0, once it has `n` backends.
async fn pool_with(stats: &str, app: &str, n: usize) -> Value {
    let url = format!("{stats}/stats");
    eventually(
        &format!("lb routes {app} to {n} instances"),
        secs(60),
        || {
            let url = url.clone();
            async move {
                let s: Value = reqwest::get(&url)
                    .await
                    .map_err(|e| e.to_string())?
                    .json()
                    .await
                    .map_err(|e| e.to_string())?;
                let pool = s["pools"]
                    .as_array()
                    .and_then(|ps| ps.iter().find(|p| p["app_id"] == app).cloned());
                Ok(pool.filter(|p| p["backends"].as_array().map_or(0, Vec::len) == n))
            }
        },
    )
    .await
}

async fn get_host(client: &reqwest::Client, base: &str, host: &str, path: &str) -> (u16, String) {
    match client
        .get(format!("{base}{path}"))
        .header("Host", host)
        .send()
        .await
    {
        Ok(r) => {
            let s = r.status().as_u16();
            (s, r.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

/// A client that keeps `workers` requests in flight until stopped, counting every answer.
struct Load {
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(url: &str, host: &str, workers: usize) -> Load {
        let load = Load {
            ok: Arc::default(),
            failed: Arc::default(),
            stop: Arc::default(),
            errors: Arc::default(),
            handles: Vec::new(),
        };
        let mut handles = Vec::new();
        for _ in 0..workers {
            let (ok, failed, stop, errors) = (
                load.ok.clone(),
                load.failed.clone(),
                load.stop.clone(),
                load.errors.clone(),
            );
            let (url, host) = (url.to_owned(), host.to_owned());
            handles.push(tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .expect("client");
                while !stop.load(Ordering::Relaxed) {
                    let (status, body) = get_host(&client, &url, &host, "/").await;
                    if status == 200 {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut e) = errors.lock()
                            && e.len() < 10
                        {
                            e.push(format!("{status} {body}"));
                        }
                    }
                }
            }));
        }
        Load { handles, ..load }
    }

    fn counts(&self) -> (u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    async fn stop(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            let _ = h.await;
        }
        let errors = self.errors.lock().map(|e| e.clone()).unwrap_or_default();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            errors,
        )
    }
}

/// The pid of the drain server listening on `port`.
fn server_pid(port: u16) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        (cmd.contains("drain_server.py") && cmd.contains(&format!(" {port} "))).then_some(pid)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lb_rolling_upgrades_and_a_killed_backend_under_load() {
    let u = up("lb-roll", "30800-30999").await;
    let labels = json!({"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "web.test"});
    let mut def = app("/web", 3, 10601, labels);
    deploy(&u.init, def.clone()).await;
    deployed(&u.init).await;
    pool_with(&u.lb_stats, "/web", 3).await;

    let load = Load::start(&u.lb_http, "web.test", 4);
    for v in 1..=10 {
        def["env"]["VERSION"] = json!(format!("v{v}"));
        deploy(&u.init, def.clone()).await;
        deployed(&u.init).await;
    }
    // The LB converges on the last version only.
    let client = reqwest::Client::new();
    eventually("only v10 answers", secs(30), || {
        let (client, base) = (client.clone(), u.lb_http.clone());
        async move {
            let mut all = true;
            for _ in 0..9 {
                let (_, body) = get_host(&client, &base, "web.test", "/").await;
                all &= body.starts_with("v10 ");
            }
            Ok(all.then_some(()))
        }
    })
    .await;
    let (ok, failed) = load.counts();
    eprintln!("ten rolling upgrades under load: {ok} answered, {failed} failed");
    assert_eq!(
        failed,
        0,
        "errors: {:?}",
        load.errors.lock().map(|e| e.clone())
    );
    assert!(ok > 200, "the load ran for the whole test: {ok}");

    // kill -9 one instance: only requests in flight to it at that instant may fail (at most
    // one per worker, 4 here); every later request's connect is refused and retried once on
    // another instance.
    let pool = pool_with(&u.lb_stats, "/web", 3).await;
    let victim: u16 = pool["backends"][0]["address"]
        .as_str()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .expect("backend port");
    let victim_task = pool["backends"][0]["task_id"]
        .as_str()
        .expect("task id")
        .to_owned();
    let pid = server_pid(victim).expect("victim pid");
    let (ok_before, failed_before) = load.counts();
    // SAFETY: kill(2) on a test backend we found by its command line.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    // init replaces it; the LB routes to the replacement once it is healthy.
    tokio::time::timeout(secs(60), async {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let s: Value = reqwest::get(format!("{}/stats", u.lb_stats))
                .await
                .expect("stats")
                .json()
                .await
                .expect("json");
            let tasks: Vec<String> = s["pools"][0]["backends"]
                .as_array()
                .map(|bs| {
                    bs.iter()
                        .filter_map(|b| b["task_id"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if tasks.len() == 3 && !tasks.contains(&victim_task) {
                break;
            }
        }
    })
    .await
    .expect("the killed instance is replaced in the LB");
    let (ok_after, failed_after) = load.counts();
    let (ok_total, failed_total, errors) = load.stop().await;
    eprintln!(
        "kill -9 of one of three instances: {} answered, {} failed meanwhile ({ok_total} / {failed_total} in all)",
        ok_after - ok_before,
        failed_after - failed_before
    );
    assert!(
        failed_after - failed_before <= 4,
        "more failures than requests in flight: {errors:?}"
    );
    assert!(ok_after > ok_before);
}

fn raw_request(addr: &str, request: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lb_routes_vhosts_paths_app_ids_tcp_and_follows_scaling() {
    let u = up("lb-routes", "31000-31199").await;
    let ext = |extra: Value| {
        let mut l = json!({"HAPROXY_GROUP": "external"});
        if let (Some(l), Some(e)) = (l.as_object_mut(), extra.as_object()) {
            l.extend(e.clone());
        }
        l
    };
    deploy(
        &u.init,
        app(
            "/site",
            1,
            10701,
            ext(json!({"HAPROXY_0_VHOST": "site.test,www.site.test"})),
        ),
    )
    .await;
    deploy(
        &u.init,
        app(
            "/site-api",
            1,
            10702,
            ext(json!({"HAPROXY_0_VHOST": "site.test", "HAPROXY_0_PATH": "/api"})),
        ),
    )
    .await;
    deploy(
        &u.init,
        app("/docs", 1, 10703, ext(json!({"HAPROXY_0_PATH": "/docs"}))),
    )
    .await;
    deploy(
        &u.init,
        app("/raw", 1, 10704, ext(json!({"HAPROXY_0_MODE": "tcp"}))),
    )
    .await;
    deploy(
        &u.init,
        app(
            "/private",
            1,
            10705,
            json!({"HAPROXY_GROUP": "internal", "HAPROXY_0_VHOST": "private.test"}),
        ),
    )
    .await;
    deploy(
        &u.init,
        app("/typo", 1, 10706, ext(json!({"HAPROXY_0_MODE": "quic"}))),
    )
    .await;
    deployed(&u.init).await;
    for a in ["/site", "/site-api", "/docs", "/raw"] {
        pool_with(&u.lb_stats, a, 1).await;
    }

    let client = reqwest::Client::new();
    let lb = &u.lb_http;
    let who = |body: &str| body.split_whitespace().nth(1).unwrap_or("").to_owned();
    let (s, body) = get_host(&client, lb, "site.test", "/").await;
    assert_eq!(s, 200);
    assert!(who(&body).starts_with("site."), "{body}");
    assert!(
        !body.contains("xff=-"),
        "HTTP mode adds X-Forwarded-For: {body}"
    );
    let (_, body) = get_host(&client, lb, "WWW.Site.Test:80", "/x").await;
    assert!(
        who(&body).starts_with("site."),
        "comma list, any case, port ignored: {body}"
    );
    let (_, body) = get_host(&client, lb, "site.test", "/api/users").await;
    assert!(
        who(&body).starts_with("site-api."),
        "longest path prefix wins: {body}"
    );
    let (_, body) = get_host(&client, lb, "anything.test", "/docs/intro").await;
    assert!(who(&body).starts_with("docs."), "path-only route: {body}");
    let (s, body) = get_host(&client, lb, "private.test", "/").await;
    assert_eq!(s, 503, "another group's app is not exposed: {body}");
    let (s, _) = get_host(&client, lb, "nobody.test", "/").await;
    assert_eq!(s, 503);

    // Request bodies, sized and chunked, arrive whole.
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let sum = payload.iter().map(|b| u64::from(*b)).sum::<u64>() % 65521;
    let r = client
        .post(format!("{lb}/upload"))
        .header("Host", "site.test")
        .body(payload.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.text().await.unwrap_or_default(),
        format!("posted 200000 bytes sum {sum}\n")
    );
    let body_file = u.dir.join("payload.bin");
    std::fs::write(&body_file, &payload).expect("payload file");
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "10",
            "-H",
            "Host: site.test",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
        ])
        .arg(format!("@{}", body_file.display()))
        .arg(format!("{lb}/upload"))
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("posted 200000 bytes sum {sum}\n")
    );

    // X-Marathon-App-Id on 9091.
    let r = client
        .get(format!("{}/", u.lb_app_id))
        .header("X-Marathon-App-Id", "/site-api")
        .send()
        .await
        .expect("app id request");
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().await.unwrap_or_default().contains("site-api."));

    // Service ports: HTTP mode and TCP mode (bytes through untouched: no X-Forwarded-For).
    let (s, body) = get_host(&client, "http://127.0.0.1:10701", "x", "/").await;
    assert_eq!(s, 200, "{body}");
    let raw = raw_request("127.0.0.1:10704", b"GET / HTTP/1.0\r\nHost: raw\r\n\r\n");
    assert!(
        raw.starts_with("HTTP/1.0 200") || raw.starts_with("HTTP/1.1 200"),
        "{raw}"
    );
    assert!(
        raw.contains("xff=-"),
        "TCP mode does not touch the bytes: {raw}"
    );
    assert!(
        std::net::TcpStream::connect("127.0.0.1:10705").is_err(),
        "internal group"
    );

    // A bad label is reported for its app, and nothing else is held back.
    let stats: Value = get_json(&format!("{}/stats", u.lb_stats)).await;
    let typo = stats["apps"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["id"] == "/typo").cloned())
        .expect("typo app in stats");
    assert!(
        typo["problems"][0]
            .as_str()
            .unwrap_or("")
            .contains("HAPROXY_0_MODE"),
        "{typo}"
    );

    // Bad input: garbage, huge headers, and slow clients do not hurt anyone else.
    let http_addr = lb.trim_start_matches("http://").to_owned();
    let garbage = raw_request(&http_addr, b"NOT HTTP AT ALL\r\n\r\n");
    assert!(
        garbage.is_empty() || garbage.starts_with("HTTP/1.1 400"),
        "{garbage}"
    );
    let mut huge = b"GET / HTTP/1.1\r\nHost: site.test\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 2 << 20));
    huge.extend(b"\r\n\r\n");
    let big = raw_request(&http_addr, &huge);
    assert!(
        !big.starts_with("HTTP/1.1 200"),
        "a 2 MiB header is refused"
    );
    let slow: Vec<std::net::TcpStream> = (0..200)
        .filter_map(|_| {
            let mut s = std::net::TcpStream::connect(&http_addr).ok()?;
            s.write_all(b"GET / HTTP/1.1\r\nHost: site.test\r\nX-Slow: ")
                .ok()?;
            Some(s)
        })
        .collect();
    assert_eq!(slow.len(), 200);
    let (s, _) = get_host(&client, lb, "site.test", "/").await;
    assert_eq!(s, 200, "served while 200 slowloris connections hang");
    drop(slow);

    // Scaling 1 -> 10 -> 1 is followed, and round-robin reaches every instance.
    let (s, body) = send(
        reqwest::Method::PATCH,
        &format!("{}/v2/apps/site", u.init),
        json!({"instances": 10}),
    )
    .await;
    assert!(s == 200, "{s} {body}");
    pool_with(&u.lb_stats, "/site", 10).await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..40 {
        let (_, body) = get_host(&client, lb, "site.test", "/").await;
        seen.insert(who(&body));
    }
    assert_eq!(seen.len(), 10, "every instance gets traffic: {seen:?}");
    let (s, body) = send(
        reqwest::Method::PATCH,
        &format!("{}/v2/apps/site", u.init),
        json!({"instances": 1}),
    )
    .await;
    assert!(s == 200, "{s} {body}");
    pool_with(&u.lb_stats, "/site", 1).await;
    let (s, _) = get_host(&client, lb, "site.test", "/").await;
    assert_eq!(s, 200);

    let metrics = reqwest::get(format!("{}/metrics", u.lb_stats))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("basalt_lb_backend_requests_total{backend=\"site_10701\""),
        "{metrics}"
    );
    let routes: Value = get_json(&format!("{}/routes", u.lb_stats)).await;
    assert_eq!(
        routes["vhosts"]["site.test"][0]["backend"], "site-api_10702",
        "{routes}"
    );
}

fn curl(args: &[&str]) -> (String, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lb_terminates_tls_speaks_h2_upgrades_and_keeps_sessions_sticky() {
    let dir = temp_dir("lb-tls-certs");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let st = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=secure.test",
            "-addext",
            "subjectAltName=DNS:secure.test",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );

    // A certificate that is not one: `basalt lb` refuses to start, in one readable line.
    let bad = std::process::Command::new(bin())
        .args([
            "lb",
            "--ip",
            "127.0.0.1",
            "--lb-http-port",
            "0",
            "--lb-stats-port",
            "0",
            "--lb-app-id-port",
            "0",
            "--lb-https-port",
            "0",
            "--lb-tls-key",
        ])
        .arg(&key)
        .arg("--lb-tls-cert")
        .arg(&key)
        .output()
        .expect("basalt lb");
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("TLS certificate"), "{err}");

    let tls_args: Vec<String> = vec![
        "--lb-tls-cert".into(),
        cert.display().to_string(),
        "--lb-tls-key".into(),
        key.display().to_string(),
        "--lb-https-port".into(),
        "0".into(),
    ];
    let u = up_with("lb-tls", "31200-31399", &tls_args).await;
    let https = u.proc.ready("lb_https").await;
    let labels = json!({"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "secure.test",
                        "HAPROXY_0_REDIRECT_TO_HTTPS": "true", "HAPROXY_0_STICKY": "true"});
    deploy(&u.init, app("/secure", 3, 10801, labels)).await;
    deployed(&u.init).await;
    pool_with(&u.lb_stats, "/secure", 3).await;
    let https_port = https.rsplit(':').next().unwrap_or("0").to_owned();
    let resolve = format!("secure.test:{https_port}:127.0.0.1");
    let url = format!("https://secure.test:{https_port}/");

    // TLS terminated with the configured certificate, HTTP/2 by ALPN.
    let (out, err) = curl(&[
        "--cacert",
        &cert.display().to_string(),
        "--resolve",
        &resolve,
        "--http2",
        "-w",
        "\n%{http_code} %{http_version}",
        &url,
    ]);
    assert!(out.ends_with("200 2"), "{out} {err}");
    assert!(out.starts_with("v0 secure."), "{out}");
    // HTTP/1.1 over TLS too.
    let (out, _) = curl(&[
        "--cacert",
        &cert.display().to_string(),
        "--resolve",
        &resolve,
        "--http1.1",
        "-w",
        "\n%{http_code} %{http_version}",
        &url,
    ]);
    assert!(out.ends_with("200 1.1"), "{out}");
    // Plain HTTP to a REDIRECT_TO_HTTPS app is sent to https.
    let (out, _) = curl(&[
        "-H",
        "Host: secure.test",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        &format!("{}/a?b=1", u.lb_http),
    ]);
    assert_eq!(out, "301 https://secure.test/a?b=1");
    // h2c (prior knowledge) on the plain port, to an app without the redirect.
    deploy(
        &u.init,
        app(
            "/plain",
            1,
            10802,
            json!({"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "plain.test"}),
        ),
    )
    .await;
    deployed(&u.init).await;
    pool_with(&u.lb_stats, "/plain", 1).await;
    let (out, err) = curl(&[
        "--http2-prior-knowledge",
        "-H",
        "Host: plain.test",
        "-w",
        "\n%{http_version}",
        &format!("{}/", u.lb_http),
    ]);
    assert!(
        out.ends_with("\n2") && out.starts_with("v0 plain."),
        "{out} {err}"
    );

    // Sticky sessions: the cookie from the first answer pins every later request.
    let (out, _) = curl(&[
        "--cacert",
        &cert.display().to_string(),
        "--resolve",
        &resolve,
        "-D",
        "-",
        &url,
    ]);
    let cookie = out
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie:")
                .then(|| l[11..].trim().to_owned())
        })
        .and_then(|c| c.split(';').next().map(str::to_owned))
        .expect("a sticky cookie");
    assert!(cookie.starts_with("mesosphere_server_id="), "{cookie}");
    let mut seen = std::collections::HashSet::new();
    for _ in 0..9 {
        let (out, _) = curl(&[
            "--cacert",
            &cert.display().to_string(),
            "--resolve",
            &resolve,
            "-H",
            &format!("Cookie: {cookie}"),
            &url,
        ]);
        seen.insert(out.split_whitespace().nth(1).unwrap_or("").to_owned());
    }
    assert_eq!(
        seen.len(),
        1,
        "one instance behind a sticky cookie: {seen:?}"
    );

    // An upgraded connection (WebSocket-style) is spliced both ways after the 101.
    let addr = u.lb_http.trim_start_matches("http://").to_owned();
    let mut s = std::net::TcpStream::connect(&addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: plain.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        .expect("upgrade request");
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).expect("101");
        assert!(n > 0, "closed before the 101");
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got).into_owned();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(b"hello through the proxy").expect("frame");
    let mut echo = Vec::new();
    while echo.len() < 23 {
        let n = s.read(&mut buf).expect("echo");
        assert!(n > 0, "closed before the echo");
        echo.extend_from_slice(&buf[..n]);
    }
    assert_eq!(&echo[..], b"hello through the proxy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lb_runs_as_a_role_of_an_edge_node() {
    // The cluster: master, agent and init, no LB of its own.
    let u = up_with("lb-edge-core", "31400-31499", &["--no-lb".to_string()]).await;
    let master = u.proc.ready("master").await;
    // A public edge node: an agent and a load balancer, joined to that master.
    let dir = temp_dir("lb-edge-node");
    let ready = dir.join("node.ready");
    let args: Vec<String> = [
        "node",
        "--roles",
        "agent,lb",
        "--master-url",
        &master,
        "--data-dir",
        &dir.join("data").display().to_string(),
        "--agent-port",
        "0",
        "--hostname",
        "edge-1.test",
        "--attributes",
        "public_ip:true",
        "--resources",
        "cpus:2;mem:1024;disk:100;ports:[31500-31599]",
        "--lb-http-port",
        "0",
        "--lb-stats-port",
        "0",
        "--lb-app-id-port",
        "0",
        "--ready-file",
        &ready.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let node = Proc::spawn(&args, &ready, &dir.join("node.log"));
    let edge_http = node.ready("lb_http").await;
    let edge_stats = node.ready("lb_stats").await;
    // The edge agent registered; the app lands on it (the constraint says so) and the edge
    // LB serves it.
    let labels = json!({"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "edge.test"});
    let mut def = app("/edge", 1, 10901, labels);
    def["constraints"] = json!([["public_ip", "IS", "true"]]);
    deploy(&u.init, def).await;
    deployed(&u.init).await;
    let pool = pool_with(&edge_stats, "/edge", 1).await;
    assert!(
        pool["backends"][0]["address"]
            .as_str()
            .is_some_and(|a| a.contains(":315")),
        "runs on the edge agent's ports: {pool}"
    );
    let (s, body) = get_host(&reqwest::Client::new(), &edge_http, "edge.test", "/").await;
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("edge."), "{body}");
    drop(node);
    kill_processes_under(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lb_sends_traffic_only_to_ready_instances() {
    let u = up("lb-ready", "31600-31699").await;
    // Healthy at once (GET / answers), ready only after 4 s (GET /ready).
    let mut def = app(
        "/warm",
        1,
        10951,
        json!({"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "warm.test"}),
    );
    def["env"]["READY_AFTER"] = json!("4");
    def["readinessChecks"] = json!([{"name": "ready", "protocol": "HTTP", "path": "/ready", "portName": "http",
                                     "intervalSeconds": 1, "timeoutSeconds": 1, "httpStatusCodesForReady": [200]}]);
    deploy(&u.init, def).await;
    let pool = pool_with(&u.lb_stats, "/warm", 1).await;
    let client = reqwest::Client::new();
    let (s, body) = get_host(&client, &u.lb_http, "warm.test", "/").await;
    assert_eq!(pool["backends"][0]["state"], "unready", "{pool}");
    assert_eq!(s, 503, "healthy but not ready: no traffic ({body})");
    assert!(body.contains("ready"), "{body}");
    let deadline = tokio::time::Instant::now() + secs(30);
    loop {
        let (s, body) = get_host(&client, &u.lb_http, "warm.test", "/").await;
        if s == 200 {
            assert!(body.starts_with("v0 warm."), "{body}");
            break;
        }
        assert_eq!(s, 503, "{body}");
        assert!(tokio::time::Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pool = pool_with(&u.lb_stats, "/warm", 1).await;
    assert_eq!(pool["backends"][0]["state"], "up", "{pool}");
}
