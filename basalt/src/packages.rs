//! `basalt package ...` (the Cosmos API for people: search, install with progress, ...) and
//! `basalt universe ...` (build, sign and serve a repository).

use anyhow::{Context, Result, anyhow, bail};
use basalt_api::Client;
use basalt_universe::publish::{self, Expiry};
use clap::{Args, Subcommand};
use comfy_table::{Table, presets::NOTHING};
use serde_json::{Value, json};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

#[derive(Args, Clone)]
pub(crate) struct PackageArgs {
    /// The package API (Cosmos) URL.
    #[arg(
        long = "universe-url",
        global = true,
        env = "BASALT_UNIVERSE_URL",
        default_value = "http://127.0.0.1:7070"
    )]
    url: String,
    /// init's URL (the Marathon API), to follow an install until the service is healthy.
    #[arg(
        long = "init-url",
        global = true,
        env = "BASALT_INIT_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    init_url: String,
    /// Print the API's JSON and nothing else.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
pub(crate) enum PackageCmd {
    /// Packages in the configured repositories (QUERY matches name, description, tags; `*`
    /// is a wildcard).
    Search { query: Option<String> },
    /// A package's definition (its newest version unless --package-version).
    Describe {
        name: String,
        #[arg(long)]
        package_version: Option<String>,
        /// Show the Marathon app it would install (with --options) instead.
        #[arg(long)]
        render: bool,
        #[arg(long)]
        options: Option<PathBuf>,
        #[arg(long)]
        app_id: Option<String>,
    },
    /// Install a package as an init app and wait until it is healthy.
    Install {
        name: String,
        #[arg(long)]
        package_version: Option<String>,
        /// A JSON file of options (checked against the package's config schema).
        #[arg(long)]
        options: Option<PathBuf>,
        #[arg(long)]
        app_id: Option<String>,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Return once the app is created instead of waiting for it to be healthy.
        #[arg(long)]
        no_wait: bool,
        /// Give up waiting after this long.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Installed packages.
    List { name: Option<String> },
    /// Remove an installed package's app.
    Uninstall {
        name: String,
        #[arg(long)]
        app_id: Option<String>,
        /// Every app installed from the package.
        #[arg(long)]
        all: bool,
    },
    /// Package repositories.
    Repo {
        #[command(subcommand)]
        cmd: RepoCmd,
    },
}

#[derive(Subcommand)]
pub(crate) enum RepoCmd {
    /// Add a repository. It must verify against --root-key unless --allow-unsigned.
    Add {
        name: String,
        /// The repository's index URL (e.g. http://host/repo.json).
        uri: String,
        /// Position in the list (repositories earlier in the list win for the same package).
        #[arg(long)]
        index: Option<u64>,
        /// The repository's root public key (a `.pub` file from `basalt universe init`).
        #[arg(long)]
        root_key: Option<PathBuf>,
        /// Use the repository without verifying anything it serves.
        #[arg(long, conflicts_with = "root_key")]
        allow_unsigned: bool,
    },
    /// Configured repositories, in order.
    List,
    /// Remove a repository.
    Remove { name: String },
}

#[derive(Subcommand)]
pub(crate) enum UniverseCmd {
    /// Generate an ed25519 key file (and FILE.pub with its public key).
    Keygen { file: PathBuf },
    /// Create a signed, empty repository.
    Init {
        repo: PathBuf,
        /// Where the signing keys are (created if missing). Keep it out of REPO.
        #[arg(long)]
        keys: PathBuf,
        #[arg(long, default_value_t = 1)]
        root_keys: usize,
        /// Root signatures needed for a new root to be trusted.
        #[arg(long, default_value_t = 1)]
        threshold: u32,
    },
    /// Add packages (Universe package directories or .tar.gz archives); then run `sign`.
    Add {
        repo: PathBuf,
        #[arg(required = true)]
        packages: Vec<PathBuf>,
    },
    /// Regenerate the index and sign targets, snapshot and timestamp.
    Sign {
        repo: PathBuf,
        #[arg(long)]
        keys: PathBuf,
        /// Only re-sign the timestamp (the periodic job that keeps the repository fresh).
        #[arg(long)]
        timestamp_only: bool,
        /// How long the timestamp stays valid.
        #[arg(long, default_value = "1day", value_parser = humantime::parse_duration)]
        timestamp_expires: Duration,
        /// How long targets and snapshot stay valid.
        #[arg(long, default_value = "90days", value_parser = humantime::parse_duration)]
        expires: Duration,
    },
    /// Publish a new root with new root keys, signed by the old root keys in --keys.
    RotateRoot {
        repo: PathBuf,
        #[arg(long)]
        keys: PathBuf,
        /// New root key files (created if missing).
        #[arg(long = "new-key", required = true)]
        new_keys: Vec<PathBuf>,
        #[arg(long, default_value_t = 1)]
        threshold: u32,
    },
    /// Serve a repository directory over HTTP.
    Serve {
        repo: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8086")]
        listen: String,
    },
}

fn table(headers: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(headers.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    t
}

fn read_json(path: &PathBuf) -> Result<Value> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// One Cosmos call; its error body's message becomes the error.
async fn call(g: &PackageArgs, rpc: &str, body: Value) -> Result<Value> {
    let c = Client::new(g.url.trim_end_matches('/'));
    let (status, v) = c
        .request("POST", &format!("/package/{rpc}"), Some(&body))
        .await
        .map_err(|e| anyhow!("the package API at {} is unreachable: {e}", g.url))?;
    if (200..300).contains(&status) {
        return Ok(v);
    }
    let msg = v
        .get("message")
        .and_then(Value::as_str)
        .map_or_else(|| v.to_string(), str::to_string);
    let kind = v.get("type").and_then(Value::as_str).unwrap_or("Error");
    let mut line = format!("{msg} ({kind})");
    if let Some(errs) = v.pointer("/data/errors").and_then(Value::as_array) {
        for e in errs {
            let path = e.get("path").and_then(Value::as_str).unwrap_or("");
            let m = e.get("message").and_then(Value::as_str).unwrap_or("");
            line.push_str(&format!(
                "\n  {}: {m}",
                if path.is_empty() { "/" } else { path }
            ));
        }
    }
    Err(anyhow!(line))
}

fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

pub(crate) async fn package(cmd: PackageCmd, g: PackageArgs) -> Result<()> {
    match cmd {
        PackageCmd::Search { query } => {
            let v = call(&g, "search", json!({"query": query.unwrap_or_default()})).await?;
            if g.json {
                print_json(&v);
                return Ok(());
            }
            let mut t = table(&["NAME", "VERSION", "SELECTED", "FRAMEWORK", "DESCRIPTION"]);
            for p in v["packages"].as_array().into_iter().flatten() {
                t.add_row(vec![
                    p["name"].as_str().unwrap_or("").to_string(),
                    p["currentVersion"].as_str().unwrap_or("").to_string(),
                    p["selected"].as_bool().unwrap_or(false).to_string(),
                    p["framework"].as_bool().unwrap_or(false).to_string(),
                    p["description"].as_str().unwrap_or("").to_string(),
                ]);
            }
            println!("{t}");
        }
        PackageCmd::Describe {
            name,
            package_version,
            render,
            options,
            app_id,
        } => {
            if render {
                let mut body = json!({"packageName": name, "packageVersion": package_version,
                                      "appId": app_id});
                if let Some(o) = &options {
                    body["options"] = read_json(o)?;
                }
                print_json(&call(&g, "render", body).await?["marathonJson"]);
            } else {
                let v = call(
                    &g,
                    "describe",
                    json!({"packageName": name, "packageVersion": package_version}),
                )
                .await?;
                print_json(&v["package"]);
            }
        }
        PackageCmd::Install {
            name,
            package_version,
            options,
            app_id,
            yes,
            no_wait,
            timeout,
        } => {
            install(
                &g,
                &name,
                package_version,
                options,
                app_id,
                yes,
                no_wait,
                timeout,
            )
            .await?
        }
        PackageCmd::List { name } => {
            let v = call(&g, "list", json!({"packageName": name})).await?;
            if g.json {
                print_json(&v);
                return Ok(());
            }
            let mut t = table(&["APP ID", "PACKAGE", "VERSION"]);
            for p in v["packages"].as_array().into_iter().flatten() {
                let d = &p["packageInformation"]["packageDefinition"];
                t.add_row(vec![
                    p["appId"].as_str().unwrap_or("").to_string(),
                    d["name"].as_str().unwrap_or("").to_string(),
                    d["version"].as_str().unwrap_or("").to_string(),
                ]);
            }
            println!("{t}");
        }
        PackageCmd::Uninstall { name, app_id, all } => {
            let v = call(
                &g,
                "uninstall",
                json!({"packageName": name, "appId": app_id, "all": all}),
            )
            .await?;
            if g.json {
                print_json(&v);
                return Ok(());
            }
            for r in v["results"].as_array().into_iter().flatten() {
                println!(
                    "Uninstalled {} {} ({})",
                    r["packageName"].as_str().unwrap_or(""),
                    r["packageVersion"].as_str().unwrap_or(""),
                    r["appId"].as_str().unwrap_or("")
                );
                if let Some(n) = r["postUninstallNotes"].as_str() {
                    println!("{n}");
                }
            }
        }
        PackageCmd::Repo { cmd } => repo(cmd, &g).await?,
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn install(
    g: &PackageArgs,
    name: &str,
    package_version: Option<String>,
    options: Option<PathBuf>,
    app_id: Option<String>,
    yes: bool,
    no_wait: bool,
    timeout: Duration,
) -> Result<()> {
    let d = call(
        g,
        "describe",
        json!({"packageName": name, "packageVersion": package_version}),
    )
    .await?;
    let pkg = &d["package"];
    let version = pkg["version"].as_str().unwrap_or("").to_string();
    if !g.json {
        eprintln!("{name} {version}");
        if let Some(n) = pkg["preInstallNotes"].as_str() {
            eprintln!("{n}");
        }
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            bail!("not a terminal: give --yes to install without the prompt");
        }
        eprint!("Continue installing? [yes/no] ");
        std::io::stderr().flush().ok();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim().to_lowercase().as_str(), "y" | "yes") {
            bail!("installation cancelled");
        }
    }
    let mut body = json!({"packageName": name, "packageVersion": version, "appId": app_id});
    if let Some(o) = &options {
        body["options"] = read_json(o)?;
    }
    let v = call(g, "install", body).await?;
    let id = v["appId"].as_str().unwrap_or("").to_string();
    if g.json {
        print_json(&v);
    }
    if !no_wait {
        wait_healthy(g, &id, timeout).await?;
    }
    if !g.json {
        eprintln!("Installed {name} {version} as {id}.");
        if let Some(n) = v["postInstallNotes"].as_str() {
            println!("{n}");
        }
    }
    Ok(())
}

/// Follows the installed app in init until every instance runs (and is healthy, if the app
/// has health checks) and no deployment is left.
async fn wait_healthy(g: &PackageArgs, id: &str, timeout: Duration) -> Result<()> {
    let init = Client::new(g.init_url.trim_end_matches('/'));
    let bar = (!g.json && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.enable_steady_tick(Duration::from_millis(100));
        b
    });
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let (status, v) = init
            .request("GET", &format!("/v2/apps{id}"), None)
            .await
            .map_err(|e| anyhow!("init at {} is unreachable: {e}", g.init_url))?;
        if status == 404 {
            bail!("{id} disappeared from init while installing");
        }
        let app = &v["app"];
        let want = app["instances"].as_u64().unwrap_or(0);
        let running = app["tasksRunning"].as_u64().unwrap_or(0);
        let healthy = app["tasksHealthy"].as_u64().unwrap_or(0);
        let checks = app["healthChecks"]
            .as_array()
            .is_some_and(|h| !h.is_empty());
        let deploying = app["deployments"].as_array().is_some_and(|d| !d.is_empty());
        let ready = if checks { healthy } else { running };
        let line = if checks {
            format!("{id}: {healthy}/{want} healthy")
        } else {
            format!("{id}: {running}/{want} running")
        };
        if let Some(b) = &bar {
            b.set_message(line.clone());
        } else if line != last && !g.json {
            eprintln!("{line}");
        }
        last = line;
        if ready >= want && !deploying {
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            let why = app["lastTaskFailure"]["message"].as_str().unwrap_or("");
            bail!(
                "{id} is not healthy after {} ({last}){}",
                humantime::format_duration(timeout),
                if why.is_empty() {
                    String::new()
                } else {
                    format!("; last failure: {why}")
                }
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn repo(cmd: RepoCmd, g: &PackageArgs) -> Result<()> {
    let v = match cmd {
        RepoCmd::Add {
            name,
            uri,
            index,
            root_key,
            allow_unsigned,
        } => {
            let mut body = json!({"name": name, "uri": uri, "allowUnsigned": allow_unsigned});
            if let Some(i) = index {
                body["index"] = i.into();
            }
            if let Some(k) = root_key {
                let bytes =
                    std::fs::read(&k).with_context(|| format!("reading {}", k.display()))?;
                let key = basalt_universe::tuf::PublicKey::from_json(&bytes)
                    .map_err(|e| anyhow!("{}: {e}", k.display()))?;
                body["rootKey"] = serde_json::to_value(key)?;
            }
            call(g, "repository/add", body).await?
        }
        RepoCmd::List => call(g, "repository/list", json!({})).await?,
        RepoCmd::Remove { name } => call(g, "repository/delete", json!({"name": name})).await?,
    };
    if g.json {
        print_json(&v);
        return Ok(());
    }
    let mut t = table(&["NAME", "URI", "SIGNED"]);
    for r in v["repositories"].as_array().into_iter().flatten() {
        t.add_row(vec![
            r["name"].as_str().unwrap_or("").to_string(),
            r["uri"].as_str().unwrap_or("").to_string(),
            if r["signed"].as_bool().unwrap_or(false) {
                "yes"
            } else {
                "NO (unverified)"
            }
            .to_string(),
        ]);
    }
    println!("{t}");
    Ok(())
}

pub(crate) async fn universe(cmd: UniverseCmd) -> Result<()> {
    let now = SystemTime::now();
    match cmd {
        UniverseCmd::Keygen { file } => {
            if file.exists() {
                bail!("{} exists; not overwriting a key", file.display());
            }
            let k = publish::keygen(&file)?;
            println!(
                "key {} written to {} (public key: {})",
                k.key_id(),
                file.display(),
                publish::public_key_path(&file).display()
            );
        }
        UniverseCmd::Init {
            repo,
            keys,
            root_keys,
            threshold,
        } => {
            let pins = publish::init(&repo, &keys, root_keys, threshold, Expiry::default(), now)?;
            println!("repository created in {}", repo.display());
            for p in pins {
                println!("root public key (pin it on clients): {}", p.display());
            }
        }
        UniverseCmd::Add { repo, packages } => {
            for p in packages {
                let pkg = publish::add(&repo, &p)?;
                println!(
                    "added {} {} (release {})",
                    pkg.name(),
                    pkg.version(),
                    pkg.release_version()
                );
            }
            println!(
                "now sign: basalt universe sign {} --keys DIR",
                repo.display()
            );
        }
        UniverseCmd::Sign {
            repo,
            keys,
            timestamp_only,
            timestamp_expires,
            expires,
        } => {
            let expiry = Expiry {
                timestamp: timestamp_expires,
                targets: expires,
                snapshot: expires,
                ..Expiry::default()
            };
            if timestamp_only {
                let v = publish::refresh_timestamp(&repo, &keys, expiry, now)?;
                println!("timestamp version {v} signed");
            } else {
                let s = publish::sign_repo(&repo, &keys, expiry, now)?;
                println!(
                    "signed {} package versions: targets version {}, timestamp version {}",
                    s.packages, s.targets_version, s.timestamp_version
                );
            }
        }
        UniverseCmd::RotateRoot {
            repo,
            keys,
            new_keys,
            threshold,
        } => {
            let v =
                publish::rotate_root(&repo, &keys, &new_keys, threshold, Expiry::default(), now)?;
            println!("root version {v} published");
        }
        UniverseCmd::Serve { repo, listen } => {
            if !repo.join("repo.json").exists() {
                bail!(
                    "{} has no repo.json (basalt universe init/sign first)",
                    repo.display()
                );
            }
            let l = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("listening on {listen}"))?;
            eprintln!(
                "serving {} at http://{}/repo.json",
                repo.display(),
                l.local_addr()?
            );
            let stop = tokio_util::sync::CancellationToken::new();
            let s = stop.clone();
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                s.cancel();
            });
            basalt_universe::serve::run(l, repo, stop).await?;
        }
    }
    Ok(())
}
