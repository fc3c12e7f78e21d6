//! The package universe in a real `basalt up`: the Cosmos API with its media types, the
//! `basalt package` and `basalt universe` CLIs, installs that become healthy init apps, and
//! a third-party signed repository served over HTTP that is tampered with in every way the
//! signatures must catch.

use crate::harness::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Up {
    proc: Proc,
    dir: PathBuf,
    init: String,
    universe: String,
}

impl Drop for Up {
    fn drop(&mut self) {
        self.proc.kill9();
        kill_processes_under(&self.dir);
    }
}

async fn up(name: &str, ports: &str) -> Up {
    up_with(name, ports, &[]).await
}

async fn up_with(name: &str, ports: &str, extra: &[&str]) -> Up {
    let dir = temp_dir(name);
    let ready = dir.join("up.ready");
    let args: Vec<String> = [
        "up",
        "--data-dir",
        &dir.join("data").display().to_string(),
        "--master-port",
        "0",
        "--agent-port",
        "0",
        "--no-dns",
        "--no-lb",
        "--init-port",
        "0",
        "--universe-port",
        "0",
        // Each request re-reads and re-verifies the repositories, so the test sees every
        // change it makes to a served repository at once.
        "--universe-repo-cache",
        "0s",
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
    .chain(extra)
    .map(|s| s.to_string())
    .collect();
    let proc = Proc::spawn(&args, &ready, &dir.join("up.log"));
    let init = proc.ready("init").await;
    let universe = proc.ready("universe").await;
    Up {
        proc,
        dir,
        init,
        universe,
    }
}

/// `repository/list` is `vnd.dcos.package.repository.list-...` on the wire.
fn media(kind: &str, dir: &str, v: &str) -> String {
    let kind = kind.replace('/', ".");
    format!("application/vnd.dcos.package.{kind}-{dir}+json;charset=utf-8;version={v}")
}

/// A Cosmos RPC exactly as the dcos CLI sends it; returns status, Content-Type and body.
async fn rpc(base: &str, kind: &str, accept_v: &str, body: Value) -> (u16, String, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/package/{kind}"))
        .header("Content-Type", media(kind, "request", "v1"))
        .header(
            "Accept",
            format!(
                "{},application/vnd.dcos.package.error+json;charset=utf-8;version=v1",
                media(kind, "response", accept_v)
            ),
        )
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, ct, r.json().await.unwrap_or(Value::Null))
}

fn cli(u: &Up, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .args(["--universe-url", &u.universe, "--init-url", &u.init])
        .output()
        .expect("run basalt")
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

async fn app_ids(init: &str) -> Vec<String> {
    get_json(&format!("{init}/v2/apps")).await["apps"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn healthy(init: &str, id: &str) -> Value {
    let url = format!("{init}/v2/apps{id}?embed=apps.tasks");
    eventually(&format!("{id} healthy"), secs(60), || {
        let url = url.clone();
        async move {
            let v = get_json(&url).await;
            let app = &v["app"];
            let want = app["instances"].as_u64().unwrap_or(0);
            Ok((want > 0 && app["tasksHealthy"].as_u64() == Some(want)).then(|| app.clone()))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn universe_installs_lists_and_uninstalls_through_cosmos_api_and_cli() {
    let u = up("universe-api", "31700-31799").await;
    let base = u.universe.clone();

    let caps = get_json(&format!("{base}/capabilities")).await;
    assert!(
        caps["capabilities"]
            .as_array()
            .is_some_and(|c| c.iter().any(|x| x["name"] == "PACKAGE_MANAGEMENT")),
        "{caps}"
    );

    // Search: the built-in signed repository, Cosmos' shape and media type.
    let (s, ct, v) = rpc(&base, "search", "v1", json!({"query": "hello"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(ct, media("search", "response", "v1"));
    let pkgs = v["packages"].as_array().expect("packages");
    assert_eq!(pkgs.len(), 1, "{v}");
    assert_eq!(pkgs[0]["name"], "hello-world");
    assert_eq!(pkgs[0]["currentVersion"], "0.2.0");
    assert_eq!(pkgs[0]["versions"], json!({"0.1.0": "0", "0.2.0": "1"}));
    assert_eq!(pkgs[0]["selected"], true);
    let (_, _, all) = rpc(&base, "search", "v1", json!({})).await;
    assert_eq!(all["packages"][0]["name"], "hello-world", "selected first");
    assert_eq!(all["packages"][1]["name"], "kv-store");
    assert_eq!(all["packages"][2]["name"], "static-site");

    // Describe (v3), list-versions, an unknown package (Cosmos' error body and type).
    let (s, ct, v) = rpc(
        &base,
        "describe",
        "v3",
        json!({"packageName": "hello-world", "packageVersion": "0.1.0"}),
    )
    .await;
    assert_eq!(
        (s, ct.as_str()),
        (200, media("describe", "response", "v3").as_str())
    );
    assert_eq!(v["package"]["version"], "0.1.0");
    assert_eq!(v["package"]["releaseVersion"], 0);
    assert!(v["package"]["config"]["properties"]["service"].is_object());
    let (_, _, v) = rpc(
        &base,
        "list-versions",
        "v1",
        json!({"packageName": "hello-world", "includePackageVersions": true}),
    )
    .await;
    assert_eq!(v["results"], json!({"0.1.0": "0", "0.2.0": "1"}));
    let (s, ct, v) = rpc(&base, "describe", "v3", json!({"packageName": "nope"})).await;
    assert_eq!(s, 400);
    assert_eq!(
        ct,
        "application/vnd.dcos.package.error+json;charset=utf-8;version=v1"
    );
    assert_eq!(v["type"], "PackageNotFound", "{v}");
    let (s, _, v) = rpc(
        &base,
        "describe",
        "v3",
        json!({"packageName": "hello-world", "packageVersion": "9"}),
    )
    .await;
    assert_eq!((s, v["type"].as_str()), (400, Some("VersionNotFound")));

    // Render: nested defaults, options, asJson, the package labels.
    let (s, _, v) = rpc(
        &base,
        "render",
        "v1",
        json!({"packageName": "hello-world", "options": {
            "service": {"vhost": "hello.test", "constraints": [["hostname", "UNIQUE"]]}}}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let app = &v["marathonJson"];
    assert_eq!(app["id"], "/hello-world");
    assert_eq!(app["cpus"], 0.1);
    assert_eq!(app["constraints"], json!([["hostname", "UNIQUE"]]));
    assert_eq!(app["labels"]["HAPROXY_0_VHOST"], "hello.test");
    assert_eq!(app["labels"]["DCOS_PACKAGE_NAME"], "hello-world");
    assert_eq!(app["labels"]["DCOS_PACKAGE_VERSION"], "0.2.0");
    assert!(
        app["labels"]["DCOS_PACKAGE_SOURCE"]
            .as_str()
            .is_some_and(|s| s.ends_with("/repo.json"))
    );

    // Bad input: options that fail the schema, options that are not an object, a body
    // that is not JSON, the wrong media type. Nothing reaches init.
    let before = app_ids(&u.init).await;
    let (s, _, v) = rpc(
        &base,
        "install",
        "v2",
        json!({"packageName": "hello-world", "options": {"service": {"cpus": 0}}}),
    )
    .await;
    assert_eq!(
        (s, v["type"].as_str()),
        (400, Some("JsonSchemaMismatch")),
        "{v}"
    );
    assert_eq!(v["data"]["errors"][0]["path"], "/service/cpus", "{v}");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("/service/cpus"))
    );
    let (s, _, v) = rpc(
        &base,
        "install",
        "v2",
        json!({"packageName": "hello-world", "options": {"nope": 1}}),
    )
    .await;
    assert_eq!(
        (s, v["type"].as_str()),
        (400, Some("JsonSchemaMismatch")),
        "{v}"
    );
    let (s, _, v) = rpc(
        &base,
        "install",
        "v2",
        json!({"packageName": "hello-world", "appId": "Bad_Id"}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let r = reqwest::Client::new()
        .post(format!("{base}/package/install"))
        .header("Content-Type", media("install", "request", "v1"))
        .body("{not json")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 400);
    let r = reqwest::Client::new()
        .post(format!("{base}/package/install"))
        .header("Content-Type", media("describe", "request", "v1"))
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 415);
    assert_eq!(app_ids(&u.init).await, before);

    // Install over the API (the CLI's v1 response), the page serves the option's text.
    let (s, ct, v) = rpc(
        &base,
        "install",
        "v1",
        json!({"packageName": "hello-world", "packageVersion": "0.1.0",
               "options": {"hello": {"message": "hi \"there\" & <you>"}}}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(ct, media("install", "response", "v1"));
    assert_eq!(
        v,
        json!({"packageName": "hello-world", "packageVersion": "0.1.0", "appId": "/hello-world"})
    );
    let app = healthy(&u.init, "/hello-world").await;
    let task = &app["tasks"][0];
    let page = reqwest::get(format!(
        "http://{}:{}/",
        task["host"].as_str().unwrap_or("127.0.0.1"),
        task["ports"][0]
    ))
    .await
    .expect("page")
    .text()
    .await
    .expect("text");
    assert_eq!(page.trim(), "hi \"there\" & <you>");
    let (s, _, v) = rpc(
        &base,
        "install",
        "v2",
        json!({"packageName": "hello-world"}),
    )
    .await;
    assert_eq!(
        (s, v["type"].as_str()),
        (409, Some("PackageAlreadyInstalled")),
        "{v}"
    );

    // list is an init query; uninstall removes the app.
    let (_, _, v) = rpc(&base, "list", "v1", json!({})).await;
    assert_eq!(v["packages"][0]["appId"], "/hello-world", "{v}");
    assert_eq!(
        v["packages"][0]["packageInformation"]["packageDefinition"]["version"],
        "0.1.0"
    );
    let (s, _, v) = rpc(
        &base,
        "uninstall",
        "v1",
        json!({"packageName": "hello-world"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["results"][0]["appId"], "/hello-world");
    assert_eq!(
        v["results"][0]["postUninstallNotes"],
        "hello-world is gone."
    );
    eventually("hello-world removed", secs(30), || {
        let init = u.init.clone();
        async move { Ok((!app_ids(&init).await.contains(&"/hello-world".to_string())).then_some(())) }
    })
    .await;
    let (s, _, v) = rpc(
        &base,
        "uninstall",
        "v1",
        json!({"packageName": "hello-world"}),
    )
    .await;
    assert_eq!(
        (s, v["type"].as_str()),
        (400, Some("UninstallNonExistentAppForPackage"))
    );

    // The CLI: install with options, progress until healthy, post-install notes; list;
    // uninstall; a clear one-line error for an unknown package.
    let opts = u.dir.join("site.json");
    std::fs::write(
        &opts,
        json!({"site": {"title": "Basalt docs"}, "service": {"instances": 2}}).to_string(),
    )
    .expect("options");
    let o = cli(
        &u,
        &[
            "package",
            "install",
            "static-site",
            "--yes",
            "--options",
            &opts.display().to_string(),
        ],
    );
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    assert!(
        text(&o.stdout).contains("static-site is up."),
        "{}",
        text(&o.stdout)
    );
    assert!(text(&o.stderr).contains("2/2 healthy") || text(&o.stderr).contains("Installed"));
    let app = get_json(&format!("{}/v2/apps/static-site", u.init)).await;
    assert_eq!(
        app["app"]["tasksHealthy"], 2,
        "installed means healthy: {app}"
    );
    let o = cli(&u, &["package", "list"]);
    assert!(
        text(&o.stdout).contains("/static-site"),
        "{}",
        text(&o.stdout)
    );
    let o = cli(&u, &["package", "uninstall", "static-site"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // A package whose program is an asset of the repository, fetched by the agent.
    let (s, _, v) = rpc(&base, "install", "v2", json!({"packageName": "kv-store"})).await;
    assert_eq!(s, 200, "{v}");
    let app = healthy(&u.init, "/kv-store").await;
    let kv = format!(
        "http://{}:{}/v1/kv",
        app["tasks"][0]["host"].as_str().unwrap_or("127.0.0.1"),
        app["tasks"][0]["ports"][0]
    );
    let http = reqwest::Client::new();
    let put = http
        .put(format!("{kv}/greeting"))
        .body("hello")
        .send()
        .await
        .expect("PUT");
    assert_eq!(put.status().as_u16(), 204);
    let got = reqwest::get(format!("{kv}/greeting"))
        .await
        .expect("GET")
        .text()
        .await
        .expect("text");
    assert_eq!(got, "hello");
    let (s, _, _) = rpc(&base, "uninstall", "v1", json!({"packageName": "kv-store"})).await;
    assert_eq!(s, 200);

    let o = cli(&u, &["package", "install", "nope", "--yes"]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("Package [nope] not found (PackageNotFound)"),
        "{err}"
    );
    let o = cli(&u, &["package", "install", "hello-world"]);
    assert_eq!(o.status.code(), Some(1), "no prompt without a terminal");
    assert!(text(&o.stderr).contains("--yes"));
}

fn universe_cli(args: &[&str]) -> Output {
    Command::new(bin())
        .arg("universe")
        .args(args)
        .output()
        .expect("run basalt universe")
}

fn must(o: Output) -> String {
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    text(&o.stdout)
}

fn write_package(dir: &Path, version: &str) {
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::write(
        dir.join("package.json"),
        json!({"packagingVersion": "4.0", "name": "acme-web", "version": version,
               "maintainer": "ops@acme.test", "description": "Acme's web tier", "tags": ["acme"]})
        .to_string(),
    )
    .expect("package.json");
    std::fs::write(
        dir.join("config.json"),
        json!({"type": "object", "properties": {"n": {"type": "integer", "default": 1}}})
            .to_string(),
    )
    .expect("config.json");
    std::fs::write(
        dir.join("marathon.json.mustache"),
        r#"{"id": "/acme-web", "instances": {{n}}, "cpus": 0.05, "mem": 16, "cmd": "exec sleep 600"}"#,
    )
    .expect("template");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn universe_trusts_only_what_verifies() {
    let mut u = up("universe-trust", "31800-31899").await;
    let work = u.dir.join("acme");
    let (repo, keys) = (work.join("repo"), work.join("keys"));
    let (repo_s, keys_s) = (repo.display().to_string(), keys.display().to_string());

    // A third party builds and signs its repository with the CLI and serves it.
    must(universe_cli(&["init", &repo_s, "--keys", &keys_s]));
    write_package(&work.join("src/0"), "1.0.0");
    must(universe_cli(&[
        "add",
        &repo_s,
        &work.join("src/0").display().to_string(),
    ]));
    must(universe_cli(&["sign", &repo_s, "--keys", &keys_s]));
    // A tarball that reaches out of its package is refused by the tooling.
    let evil = work.join("evil.tar.gz");
    let py = format!(
        "import tarfile,io\nt=tarfile.open('{}','w:gz')\nd=b'{{}}'\ni=tarfile.TarInfo('../package.json')\ni.size=len(d)\nt.addfile(i,io.BytesIO(d))\nt.close()",
        evil.display()
    );
    must(
        Command::new("python3")
            .args(["-c", &py])
            .output()
            .expect("python3"),
    );
    let o = universe_cli(&["add", &repo_s, &evil.display().to_string()]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("`..` leaves the package"),
        "{}",
        text(&o.stderr)
    );

    let port = free_port();
    let serve_args: Vec<String> = vec![
        "universe".into(),
        "serve".into(),
        repo_s.clone(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
    ];
    let _server = Proc::spawn(&serve_args, &work.join("none"), &work.join("serve.log"));
    let uri = format!("http://127.0.0.1:{port}/repo.json");
    eventually("repository served", secs(20), || {
        let uri = uri.clone();
        async move {
            Ok(reqwest::get(&uri)
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ()))
        }
    })
    .await;

    // Not pinned, not explicitly allowed: refused, with the way out in the message.
    let o = cli(&u, &["package", "repo", "add", "acme", &uri]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("--root-key") && err.contains("--allow-unsigned"),
        "{err}"
    );
    let (_, _, v) = rpc(&u.universe, "repository/list", "v1", json!({})).await;
    assert_eq!(v["repositories"].as_array().map(Vec::len), Some(1), "{v}");

    // Pinned by its root key: trusted.
    let pin = keys.join("root-1.pub").display().to_string();
    must(cli(
        &u,
        &["package", "repo", "add", "acme", &uri, "--root-key", &pin],
    ));
    let (s, _, v) = rpc(&u.universe, "search", "v1", json!({"query": "acme"})).await;
    assert_eq!(
        (s, v["packages"][0]["name"].as_str()),
        (200, Some("acme-web")),
        "{v}"
    );

    // One byte changed in the archive: the install is refused, nothing reaches init.
    let archive = repo.join("packages/acme-web/0.tar.gz");
    let good = std::fs::read(&archive).expect("archive");
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    std::fs::write(&archive, &bad).expect("tamper");
    let (s, _, v) = rpc(
        &u.universe,
        "install",
        "v2",
        json!({"packageName": "acme-web"}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("sha256 mismatch")),
        "{v}"
    );
    // A wrong length.
    let mut longer = good.clone();
    longer.push(0);
    std::fs::write(&archive, &longer).expect("lengthen");
    let (_, _, v) = rpc(
        &u.universe,
        "install",
        "v2",
        json!({"packageName": "acme-web"}),
    )
    .await;
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("larger than") || m.contains("bytes")),
        "{v}"
    );
    assert!(!app_ids(&u.init).await.contains(&"/acme-web".to_string()));
    std::fs::write(&archive, &good).expect("restore");
    let (s, _, v) = rpc(
        &u.universe,
        "install",
        "v2",
        json!({"packageName": "acme-web"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");

    // A tampered index (a package edited in place) fails against targets.json.
    let index_path = repo.join("repo.json");
    let index = std::fs::read_to_string(&index_path).expect("index");
    std::fs::write(
        &index_path,
        index.replace("Acme's web tier", "Acme's web tieR"),
    )
    .expect("edit index");
    let (s, _, v) = rpc(&u.universe, "search", "v1", json!({})).await;
    assert_eq!(
        (s, v["type"].as_str()),
        (400, Some("RepositoryVerificationFailed")),
        "{v}"
    );
    std::fs::write(&index_path, &index).expect("restore index");

    // Rollback: the client has seen a newer snapshot; the server goes back to the old one.
    let snapshot_files = [
        "targets.json",
        "snapshot.json",
        "timestamp.json",
        "repo.json",
    ];
    let old: Vec<Vec<u8>> = snapshot_files
        .iter()
        .map(|f| std::fs::read(repo.join(f)).expect("meta"))
        .collect();
    write_package(&work.join("src/1"), "1.1.0");
    must(universe_cli(&[
        "add",
        &repo_s,
        &work.join("src/1").display().to_string(),
    ]));
    must(universe_cli(&["sign", &repo_s, "--keys", &keys_s]));
    let (_, _, v) = rpc(
        &u.universe,
        "list-versions",
        "v1",
        json!({"packageName": "acme-web"}),
    )
    .await;
    assert_eq!(v["results"], json!({"1.0.0": "0", "1.1.0": "1"}), "{v}");
    let new: Vec<Vec<u8>> = snapshot_files
        .iter()
        .map(|f| std::fs::read(repo.join(f)).expect("meta"))
        .collect();
    for (f, b) in snapshot_files.iter().zip(&old) {
        std::fs::write(repo.join(f), b).expect("roll back");
    }
    let (s, _, v) = rpc(&u.universe, "search", "v1", json!({})).await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("rollback")),
        "{v}"
    );
    for (f, b) in snapshot_files.iter().zip(&new) {
        std::fs::write(repo.join(f), b).expect("forward again");
    }

    // The trust (versions seen) survives a restart: the old copy is still refused after it.
    u.proc.kill9();
    u.proc.respawn();
    u.universe = u.proc.ready("universe").await;
    let (s, _, v) = rpc(&u.universe, "repository/list", "v1", json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(v["repositories"][1]["name"], "acme", "{v}");
    for (f, b) in snapshot_files.iter().zip(&old) {
        std::fs::write(repo.join(f), b).expect("roll back");
    }
    let (_, _, v) = rpc(&u.universe, "search", "v1", json!({})).await;
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("rollback")),
        "after a restart: {v}"
    );
    for (f, b) in snapshot_files.iter().zip(&new) {
        std::fs::write(repo.join(f), b).expect("forward again");
    }

    // A timestamp that expires: the repository is refused once it has.
    must(universe_cli(&[
        "sign",
        &repo_s,
        "--keys",
        &keys_s,
        "--timestamp-only",
        "--timestamp-expires",
        "1s",
    ]));
    let msg = eventually("the expired timestamp refused", secs(20), || {
        let base = u.universe.clone();
        async move {
            let (s, _, v) = rpc(&base, "search", "v1", json!({})).await;
            Ok((s == 400).then(|| v["message"].as_str().unwrap_or("").to_string()))
        }
    })
    .await;
    assert!(msg.contains("timestamp.json expired"), "{msg}");
    must(universe_cli(&[
        "sign",
        &repo_s,
        "--keys",
        &keys_s,
        "--timestamp-only",
    ]));
    let (s, _, _) = rpc(&u.universe, "search", "v1", json!({})).await;
    assert_eq!(s, 200);

    // A root rotated with the old key's signature is followed; the pinned trust moves on.
    must(universe_cli(&[
        "rotate-root",
        &repo_s,
        "--keys",
        &keys_s,
        "--new-key",
        &work.join("keys2/root-a.key").display().to_string(),
    ]));
    let (s, _, v) = rpc(&u.universe, "search", "v1", json!({"query": "acme"})).await;
    assert_eq!(s, 200, "{v}");
    let state: Value = serde_json::from_slice(
        &std::fs::read(u.dir.join("data/universe/repositories.json")).expect("state"),
    )
    .expect("json");
    assert_eq!(state[1]["trust"]["root"]["signed"]["version"], 2, "{state}");

    // The same index served without metadata: only with an explicit --allow-unsigned.
    let plain = repo.join("plain");
    std::fs::create_dir_all(&plain).expect("dir");
    std::fs::copy(repo.join("repo.json"), plain.join("repo.json")).expect("copy");
    let plain_uri = format!("http://127.0.0.1:{port}/plain/repo.json");
    let o = cli(&u, &["package", "repo", "add", "plain", &plain_uri]);
    assert_eq!(o.status.code(), Some(1));
    // A file:// URI would make the server read its own files for any caller: refused.
    let file_uri = format!("file://{}/repo.json", plain.display());
    let o = cli(
        &u,
        &[
            "package",
            "repo",
            "add",
            "local",
            &file_uri,
            "--allow-unsigned",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("UnsupportedRepositoryUri"),
        "{}",
        text(&o.stderr)
    );
    let o = cli(
        &u,
        &[
            "package",
            "repo",
            "add",
            "plain",
            &plain_uri,
            "--allow-unsigned",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("NO (unverified)"),
        "{}",
        text(&o.stdout)
    );
    let o = cli(&u, &["package", "repo", "remove", "plain"]);
    assert!(o.status.success());
    let o = cli(&u, &["package", "repo", "remove", "plain"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("RepositoryNotPresent"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dcos_cli_installs_lists_and_uninstalls_packages() {
    // The cluster setting that lets clients without --allow-unsigned add a plain repository.
    let u = up_with(
        "universe-dcos",
        "31900-31999",
        &["--universe-allow-unsigned"],
    )
    .await;
    let home = u.dir.join("dcos-home");
    std::fs::create_dir_all(&home).expect("home");
    let dcos = |args: &[&str]| -> (bool, String) {
        let o = Command::new(dcos_cli())
            .args(args)
            .env("HOME", &home)
            .env("DCOS_URL", &u.universe)
            .env_remove("DCOS_DIR")
            .output()
            .expect("run dcos");
        (
            o.status.success(),
            format!("{}{}", text(&o.stdout), text(&o.stderr)),
        )
    };

    let (ok, out) = dcos(&["package", "search", "hello"]);
    assert!(
        ok && out.contains("hello-world") && out.contains("0.2.0"),
        "{out}"
    );
    let (ok, out) = dcos(&["package", "describe", "hello-world", "--package-versions"]);
    assert!(
        ok && out.contains("\"0.1.0\"") && out.contains("\"0.2.0\""),
        "{out}"
    );
    let (ok, out) = dcos(&["package", "describe", "nope"]);
    assert!(!ok && out.contains("Package [nope] not found"), "{out}");

    let bad = u.dir.join("bad.json");
    std::fs::write(&bad, r#"{"service": {"cpus": 0}}"#).expect("options");
    let (ok, out) = dcos(&[
        "package",
        "install",
        "hello-world",
        "--yes",
        "--options",
        &bad.display().to_string(),
    ]);
    assert!(!ok && out.contains("/service/cpus"), "{out}");
    assert!(app_ids(&u.init).await.is_empty());

    let (ok, out) = dcos(&["package", "install", "hello-world", "--yes"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("Installing Marathon app for package [hello-world] version [0.2.0]")
            && out.contains("hello-world is running."),
        "{out}"
    );
    healthy(&u.init, "/hello-world").await;
    let (ok, out) = dcos(&["package", "install", "hello-world", "--yes"]);
    assert!(!ok && out.contains("already installed"), "{out}");
    let (ok, out) = dcos(&["package", "list", "--json"]);
    assert!(ok && out.contains("/hello-world"), "{out}");
    let (ok, out) = dcos(&["package", "uninstall", "hello-world", "--yes"]);
    assert!(
        ok && out.contains("Uninstalled package [hello-world] version [0.2.0]"),
        "{out}"
    );
    let (ok, out) = dcos(&["package", "uninstall", "hello-world", "--yes"]);
    assert!(!ok && out.contains("not installed"), "{out}");

    // A plain (unsigned) Universe repository, added the only way this CLI can: allowed by
    // the cluster setting, first in the list (the CLI sends --index as a string).
    let plain = u.dir.join("plain");
    std::fs::create_dir_all(&plain).expect("dir");
    std::fs::copy(
        u.dir.join("data/universe/builtin/repo/repo.json"),
        plain.join("repo.json"),
    )
    .expect("copy index");
    let port = free_port();
    let args: Vec<String> = vec![
        "universe".into(),
        "serve".into(),
        plain.display().to_string(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
    ];
    let _server = Proc::spawn(&args, &u.dir.join("none"), &u.dir.join("serve.log"));
    let uri = format!("http://127.0.0.1:{port}/repo.json");
    eventually("plain repository served", secs(20), || {
        let uri = uri.clone();
        async move {
            Ok(reqwest::get(&uri)
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ()))
        }
    })
    .await;
    let (ok, out) = dcos(&["package", "repo", "add", "plain", &uri, "--index=0"]);
    assert!(ok, "{out}");
    let (ok, out) = dcos(&["package", "repo", "list"]);
    assert!(ok, "{out}");
    let first = out.lines().next().unwrap_or("");
    assert!(first.starts_with("plain:"), "{out}");
    let (ok, out) = dcos(&["package", "repo", "remove", "plain"]);
    assert!(ok, "{out}");
}
