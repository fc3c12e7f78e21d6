//! `basalt app ...` and `basalt deployment ...`: init's Marathon API for people. Commands
//! that change an app wait for its deployment, with a spinner, and exit non-zero if it
//! does not finish within `--timeout`.

use anyhow::{Context, Result, anyhow, bail};
use basalt_api::Client;
use clap::{Args, Subcommand};
use comfy_table::{Table, presets::NOTHING};
use serde_json::{Value, json};
use std::io::IsTerminal;
use std::time::Duration;

#[derive(Args, Clone)]
pub(crate) struct InitArgs {
    /// init's URL (the Marathon API).
    #[arg(
        long = "init-url",
        global = true,
        env = "BASALT_INIT_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// Print the API's JSON and nothing else.
    #[arg(long, global = true)]
    json: bool,
    /// Give up waiting for a deployment after this long.
    #[arg(long, global = true, default_value = "10m", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Return once the change is accepted instead of waiting for its deployment.
    #[arg(long, global = true)]
    no_wait: bool,
}

#[derive(Subcommand)]
pub(crate) enum AppCmd {
    /// Create an app from a Marathon app definition (a file, or - for stdin).
    Add { file: String },
    /// Apps with their instances and health.
    List,
    /// One app's definition and status, as JSON.
    Show { id: String },
    /// Replace fields of an app from a JSON file (fields left out keep their values).
    Update { id: String, file: String },
    /// Set the number of instances.
    Scale { id: String, instances: u64 },
    /// Replace every instance, rolling.
    Restart { id: String },
    /// Stop all instances and delete the app.
    Remove {
        id: String,
        /// Even while a deployment holds the app.
        #[arg(long)]
        force: bool,
    },
    /// The app's running instances.
    Tasks { id: String },
}

#[derive(Subcommand)]
pub(crate) enum DeploymentCmd {
    /// Deployments in flight.
    List,
    /// Wait until a deployment finishes.
    Watch { id: String },
    /// Undo a deployment: the app goes back to its previous version.
    Rollback {
        id: String,
        /// Drop the deployment where it stands instead of rolling back.
        #[arg(long)]
        force: bool,
    },
}

fn table(headers: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(headers.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    t
}

fn app_path(id: &str) -> String {
    format!("/v2/apps/{}", id.trim_start_matches('/'))
}

/// Marathon's error body as one readable line: the message and every detail.
fn explain(status: u16, v: &Value) -> anyhow::Error {
    let mut msg = v
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| v.to_string());
    if let Some(details) = v.get("details").and_then(Value::as_array) {
        let parts: Vec<String> = details
            .iter()
            .map(|d| {
                let errs: Vec<&str> = d["errors"]
                    .as_array()
                    .map(|e| e.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                format!("{}: {}", d["path"].as_str().unwrap_or("/"), errs.join(", "))
            })
            .collect();
        msg = format!("{msg} ({})", parts.join("; "));
    }
    if status == 409 {
        msg = format!("{msg} (use --force to override)");
    }
    anyhow!("{msg}")
}

async fn call(c: &Client, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
    let (status, v) = c
        .request(method, path, body)
        .await
        .map_err(|e| anyhow!(e.message()))?;
    if !(200..300).contains(&status) {
        return Err(explain(status, &v));
    }
    Ok(v)
}

fn read_json(file: &str) -> Result<Value> {
    let text = if file == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading stdin")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?
    };
    serde_json::from_str(&text).with_context(|| format!("{file} is not JSON"))
}

/// Waits until deployment `dep` is gone from `/v2/deployments`, showing the app's progress.
async fn wait_deployment(c: &Client, a: &InitArgs, dep: &str) -> Result<()> {
    let pb = (!a.json && std::io::stderr().is_terminal()).then(|| {
        let pb = indicatif::ProgressBar::new_spinner();
        pb.enable_steady_tick(Duration::from_millis(100));
        pb
    });
    let deadline = tokio::time::Instant::now() + a.timeout;
    loop {
        let deps = call(c, "GET", "/v2/deployments", None).await?;
        let current = deps
            .as_array()
            .and_then(|l| l.iter().find(|d| d["id"] == json!(dep)).cloned());
        let Some(d) = current else {
            if let Some(p) = pb {
                p.finish_and_clear();
            }
            if !a.json {
                eprintln!("deployment {dep} finished");
            }
            return Ok(());
        };
        if let Some(p) = &pb {
            let app = d["affectedApps"][0].as_str().unwrap_or_default().to_owned();
            let action = d["currentActions"][0]["action"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let status = call(c, "GET", &app_path(&app), None).await.ok();
            let progress = status
                .map(|s| {
                    format!(
                        "{}/{} running, {} healthy",
                        s["app"]["tasksRunning"], s["app"]["instances"], s["app"]["tasksHealthy"]
                    )
                })
                .unwrap_or_default();
            p.set_message(format!("{action} {app}: {progress}"));
        }
        if tokio::time::Instant::now() > deadline {
            if let Some(p) = pb {
                p.finish_and_clear();
            }
            bail!(
                "deployment {dep} did not finish within {} (it goes on; `basalt deployment rollback {dep}` undoes it)",
                humantime::format_duration(a.timeout)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn finish(c: &Client, a: &InitArgs, v: Value, dep: Option<&str>) -> Result<()> {
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    match dep {
        Some(d) if !a.no_wait => wait_deployment(c, a, d).await,
        Some(d) => {
            if !a.json {
                eprintln!("deployment {d} started");
            }
            Ok(())
        }
        None => Ok(()),
    }
}

pub(crate) async fn app(cmd: AppCmd, a: InitArgs) -> Result<()> {
    let c = Client::new(&a.url);
    match cmd {
        AppCmd::Add { file } => {
            let def = read_json(&file)?;
            let v = call(&c, "POST", "/v2/apps", Some(&def)).await?;
            let dep = v["deployments"][0]["id"].as_str().map(str::to_owned);
            if !a.json {
                eprintln!("created {}", v["id"].as_str().unwrap_or_default());
            }
            finish(&c, &a, v, dep.as_deref()).await
        }
        AppCmd::List => {
            let v = call(&c, "GET", "/v2/apps", None).await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let mut t = table(&[
                "ID",
                "INSTANCES",
                "RUNNING",
                "HEALTHY",
                "CPUS",
                "MEM",
                "DEPLOYING",
                "CMD",
            ]);
            for app in v["apps"].as_array().into_iter().flatten() {
                let deploying = app["deployments"].as_array().is_some_and(|d| !d.is_empty());
                t.add_row(vec![
                    app["id"].as_str().unwrap_or_default().to_owned(),
                    app["instances"].to_string(),
                    app["tasksRunning"].to_string(),
                    app["tasksHealthy"].to_string(),
                    app["cpus"].to_string(),
                    app["mem"].to_string(),
                    if deploying { "yes" } else { "" }.to_owned(),
                    app["cmd"]
                        .as_str()
                        .unwrap_or("-")
                        .chars()
                        .take(60)
                        .collect(),
                ]);
            }
            println!("{t}");
            Ok(())
        }
        AppCmd::Show { id } => {
            let v = call(&c, "GET", &app_path(&id), None).await?;
            println!("{}", serde_json::to_string_pretty(&v["app"])?);
            Ok(())
        }
        AppCmd::Update { id, file } => {
            let def = read_json(&file)?;
            let v = call(&c, "PUT", &app_path(&id), Some(&def)).await?;
            let dep = v["deploymentId"].as_str().map(str::to_owned);
            finish(&c, &a, v, dep.as_deref()).await
        }
        AppCmd::Scale { id, instances } => {
            let v = call(
                &c,
                "PUT",
                &app_path(&id),
                Some(&json!({ "instances": instances })),
            )
            .await?;
            let dep = v["deploymentId"].as_str().map(str::to_owned);
            finish(&c, &a, v, dep.as_deref()).await
        }
        AppCmd::Restart { id } => {
            let v = call(
                &c,
                "POST",
                &format!("{}/restart", app_path(&id)),
                Some(&json!({})),
            )
            .await?;
            let dep = v["deploymentId"].as_str().map(str::to_owned);
            finish(&c, &a, v, dep.as_deref()).await
        }
        AppCmd::Remove { id, force } => {
            let q = if force { "?force=true" } else { "" };
            let v = call(&c, "DELETE", &format!("{}{q}", app_path(&id)), None).await?;
            let dep = v["deploymentId"].as_str().map(str::to_owned);
            finish(&c, &a, v, dep.as_deref()).await
        }
        AppCmd::Tasks { id } => {
            let v = call(&c, "GET", &format!("{}/tasks", app_path(&id)), None).await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let mut t = table(&["ID", "HOST", "PORTS", "STATE", "HEALTHY", "STARTED"]);
            for task in v["tasks"].as_array().into_iter().flatten() {
                let healthy = task["healthCheckResults"][0]["alive"]
                    .as_bool()
                    .map_or("-", |h| if h { "yes" } else { "no" });
                t.add_row(vec![
                    task["id"].as_str().unwrap_or_default().to_owned(),
                    task["host"].as_str().unwrap_or_default().to_owned(),
                    task["ports"].to_string(),
                    task["state"].as_str().unwrap_or_default().to_owned(),
                    healthy.to_owned(),
                    task["startedAt"].as_str().unwrap_or("-").to_owned(),
                ]);
            }
            println!("{t}");
            Ok(())
        }
    }
}

pub(crate) async fn deployment(cmd: DeploymentCmd, a: InitArgs) -> Result<()> {
    let c = Client::new(&a.url);
    match cmd {
        DeploymentCmd::List => {
            let v = call(&c, "GET", "/v2/deployments", None).await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let mut t = table(&["ID", "APP", "ACTION", "VERSION"]);
            for d in v.as_array().into_iter().flatten() {
                t.add_row(vec![
                    d["id"].as_str().unwrap_or_default().to_owned(),
                    d["affectedApps"][0].as_str().unwrap_or_default().to_owned(),
                    d["currentActions"][0]["action"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    d["version"].as_str().unwrap_or_default().to_owned(),
                ]);
            }
            println!("{t}");
            Ok(())
        }
        DeploymentCmd::Watch { id } => wait_deployment(&c, &a, &id).await,
        DeploymentCmd::Rollback { id, force } => {
            let q = if force { "?force=true" } else { "" };
            let (status, v) = c
                .request("DELETE", &format!("/v2/deployments/{id}{q}"), None)
                .await
                .map_err(|e| anyhow!(e.message()))?;
            if !(200..300).contains(&status) {
                return Err(explain(status, &v));
            }
            let dep = v["deploymentId"].as_str().map(str::to_owned);
            if !a.json && dep.is_none() {
                eprintln!("deployment {id} dropped");
            }
            finish(&c, &a, v, dep.as_deref()).await
        }
    }
}
