//! The Cosmos package API (`/package/*`, `/capabilities`) with Cosmos' media types and
//! error bodies, so the `dcos` CLI and scripts written for DC/OS work unchanged.
//!
//! Installs are init apps: `/package/install` renders the app and posts it to init;
//! `/package/list` and `/package/uninstall` ask init for apps labelled `DCOS_PACKAGE_NAME`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use basalt_api::Client;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::Mutex;

use crate::package::{Package, compare_versions};
use crate::render::{self, LABEL_NAME, LABEL_VERSION, RenderError};
use crate::repo::{Fetcher, Loaded, RepoError, RepoSpec};
use crate::tuf::PublicKey;

pub const ERROR_MEDIA: &str = "application/vnd.dcos.package.error+json;charset=utf-8;version=v1";
const CAPABILITIES_MEDIA: &str = "application/vnd.dcos.capabilities+json;charset=utf-8;version=v1";

/// A Cosmos error: its status, type name (what clients switch on), message and data.
#[derive(Debug)]
pub struct CosmosError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    data: Value,
}

impl CosmosError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        CosmosError {
            status,
            kind,
            message: message.into(),
            data: Value::Null,
        }
    }
    fn data(mut self, data: Value) -> Self {
        self.data = data;
        self
    }
    fn bad(message: impl Into<String>) -> Self {
        CosmosError::new(StatusCode::BAD_REQUEST, "MalformedRequest", message)
    }
}

impl IntoResponse for CosmosError {
    fn into_response(self) -> Response {
        let mut body = json!({"type": self.kind, "message": self.message});
        if !self.data.is_null() {
            body["data"] = self.data;
        }
        let mut r = (self.status, body.to_string()).into_response();
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ERROR_MEDIA));
        r
    }
}

impl From<RepoError> for CosmosError {
    fn from(e: RepoError) -> Self {
        let kind = match &e {
            RepoError::Untrusted { .. } => "RepositoryNotTrusted",
            RepoError::Verify { .. }
            | RepoError::ArchiveMismatch { .. }
            | RepoError::Archive { .. }
            | RepoError::ArchivePackage { .. } => "RepositoryVerificationFailed",
            RepoError::Fetch { .. } => "RepositoryUriConnection",
            RepoError::BadIndex { .. } => "IndexNotFound",
            RepoError::BadUri(_) | RepoError::Https(_) => "UnsupportedRepositoryUri",
        };
        CosmosError::new(StatusCode::BAD_REQUEST, kind, e.to_string())
    }
}

impl From<RenderError> for CosmosError {
    fn from(e: RenderError) -> Self {
        let (kind, data) = match &e {
            RenderError::OptionsNotAllowed(_) => ("OptionsNotAllowed", Value::Null),
            RenderError::JsonSchemaMismatch(v) => ("JsonSchemaMismatch", json!({"errors": v})),
            RenderError::NoTemplate(_) => ("ServiceMarathonTemplateNotFound", Value::Null),
            RenderError::NotObject => ("MarathonTemplateMustBeJsonObject", Value::Null),
            RenderError::BadAppId(_) => ("InvalidAppId", Value::Null),
            _ => ("PackageFileNotJson", Value::Null),
        };
        CosmosError::new(StatusCode::BAD_REQUEST, kind, e.to_string()).data(data)
    }
}

pub struct Config {
    /// Where the repository list (and what was verified of each) is kept.
    pub state_file: PathBuf,
    /// init's Marathon API.
    pub init_url: String,
    /// The cluster setting for clients that cannot say `--allow-unsigned` (`dcos package repo
    /// add`): off unless the operator turns it on.
    pub allow_unsigned: bool,
    /// The repositories to start with when there is no state file yet.
    pub default_repos: Vec<RepoSpec>,
    /// Directories served as static repositories under `/universe/<name>/`.
    pub serve: Vec<(String, PathBuf)>,
    /// How long a verified repository is reused before it is fetched and verified again
    /// (Cosmos: one minute).
    pub cache_for: Duration,
    /// Let `repository/add` take `file://` URIs (local tooling only).
    pub allow_file_uris: bool,
}

pub(crate) struct Universe {
    repos: Mutex<Vec<RepoSpec>>,
    cache: Mutex<HashMap<String, (tokio::time::Instant, Arc<Loaded>)>>,
    cfg: Config,
    fetcher: Fetcher,
    init: Client,
}

type Ctx = AxState<Arc<Universe>>;

impl Universe {
    pub(crate) fn open(cfg: Config) -> Result<Arc<Universe>, String> {
        let repos = match std::fs::read(&cfg.state_file) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| format!("{}: {e}", cfg.state_file.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => cfg.default_repos.clone(),
            Err(e) => return Err(format!("{}: {e}", cfg.state_file.display())),
        };
        Ok(Arc::new(Universe {
            repos: Mutex::new(repos),
            cache: Mutex::new(HashMap::new()),
            init: Client::with_timeout(cfg.init_url.clone(), Duration::from_secs(30)),
            cfg,
            fetcher: Fetcher::new(),
        }))
    }

    fn save(&self, repos: &[RepoSpec]) -> Result<(), CosmosError> {
        let bytes = serde_json::to_vec_pretty(repos).map_err(internal)?;
        if let Some(dir) = self.cfg.state_file.parent() {
            std::fs::create_dir_all(dir).map_err(internal)?;
        }
        crate::publish::write_atomic(&self.cfg.state_file, &bytes).map_err(internal)
    }

    /// Every repository's verified content, in order. Fails if any repository fails
    /// verification: a repository that cannot prove its content contributes nothing.
    /// The list lock is not held while fetching, so a slow repository never blocks
    /// `repository/list` or `repository/delete` (the way out of a bad repository).
    async fn load_all(&self) -> Result<Vec<(RepoSpec, Arc<Loaded>)>, CosmosError> {
        let specs = self.repos.lock().await.clone();
        let mut out = Vec::with_capacity(specs.len());
        for spec in specs {
            let cached = self
                .cache
                .lock()
                .await
                .get(&spec.uri)
                .and_then(|(at, l)| (at.elapsed() < self.cfg.cache_for).then(|| l.clone()));
            let loaded = match cached {
                Some(l) => l,
                None => {
                    let l = Arc::new(spec.load(&self.fetcher, SystemTime::now()).await?);
                    for s in &l.skipped {
                        tracing::warn!(repo = %spec.name, skipped = %s, "index entry skipped");
                    }
                    if l.trust.is_some() && !same_trust(&l.trust, &spec.trust) {
                        self.commit_trust(&spec, &l.trust).await?;
                    }
                    self.cache
                        .lock()
                        .await
                        .insert(spec.uri.clone(), (tokio::time::Instant::now(), l.clone()));
                    l
                }
            };
            out.push((spec, loaded));
        }
        Ok(out)
    }

    /// Persists what a load verified, onto the repository it was loaded from as it was
    /// then: if the list changed meanwhile (removed, re-added, or a newer load committed
    /// first) nothing is written, so the remembered versions never go back.
    async fn commit_trust(
        &self,
        from: &RepoSpec,
        trust: &Option<crate::tuf::Trust>,
    ) -> Result<(), CosmosError> {
        let mut repos = self.repos.lock().await;
        let Some(i) = repos.iter().position(|r| {
            r.name == from.name && r.uri == from.uri && same_trust(&r.trust, &from.trust)
        }) else {
            return Ok(());
        };
        let mut next = repos.clone();
        next[i].trust = trust.clone();
        self.save(&next)?;
        *repos = next;
        Ok(())
    }

    /// The package `name` at `version` (or its newest version) over all repositories;
    /// where two repositories hold the same name and version, the earlier one wins.
    async fn find(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<(RepoSpec, Arc<Loaded>, Package), CosmosError> {
        let all = self.load_all().await?;
        let candidates: Vec<(usize, &Package)> = merged(&all)
            .into_iter()
            .filter(|(_, p)| p.name() == name)
            .collect();
        if candidates.is_empty() {
            return Err(CosmosError::new(
                StatusCode::BAD_REQUEST,
                "PackageNotFound",
                format!("Package [{name}] not found"),
            )
            .data(json!({"packageName": name})));
        }
        let pick = match version {
            Some(v) => candidates.iter().find(|(_, p)| p.version() == v),
            None => candidates.iter().max_by(|a, b| newer(a.1, b.1)),
        };
        let Some((ri, p)) = pick else {
            return Err(CosmosError::new(
                StatusCode::BAD_REQUEST,
                "VersionNotFound",
                format!(
                    "Version [{}] of package [{name}] not found",
                    version.unwrap_or("")
                ),
            )
            .data(json!({"packageName": name, "packageVersion": version})));
        };
        let (spec, loaded) = &all[*ri];
        Ok((spec.clone(), loaded.clone(), (*p).clone()))
    }
}

fn same_trust(a: &Option<crate::tuf::Trust>, b: &Option<crate::tuf::Trust>) -> bool {
    serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}

/// Every (name, version) once, tagged with the index of the repository it comes from:
/// the earliest repository holding it wins (Cosmos' merge).
fn merged(all: &[(RepoSpec, Arc<Loaded>)]) -> Vec<(usize, &Package)> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (ri, (_, loaded)) in all.iter().enumerate() {
        for p in &loaded.packages {
            if seen.insert((p.name(), p.version())) {
                out.push((ri, p));
            }
        }
    }
    out
}

/// Version order; the release number breaks ties within one repository.
fn newer(a: &Package, b: &Package) -> std::cmp::Ordering {
    compare_versions(a.version(), b.version()).then(a.release_version().cmp(&b.release_version()))
}

fn internal(e: impl std::fmt::Display) -> CosmosError {
    CosmosError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        e.to_string(),
    )
}

pub(crate) fn router(u: Arc<Universe>) -> Router {
    let mut r = Router::new()
        .route("/capabilities", get(capabilities))
        .route("/package/search", post(search))
        .route("/package/describe", post(describe))
        .route("/package/list-versions", post(list_versions))
        .route("/package/render", post(render_pkg))
        .route("/package/install", post(install))
        .route("/package/uninstall", post(uninstall))
        .route("/package/list", post(list))
        .route("/package/repository/list", post(repo_list))
        .route("/package/repository/add", post(repo_add))
        .route("/package/repository/delete", post(repo_delete))
        .route("/health", get(|| async { "ok" }));
    for (name, dir) in &u.cfg.serve {
        r = r.nest(
            &format!("/universe/{name}"),
            crate::serve::router(dir.clone()),
        );
    }
    r.with_state(u)
}

/// Checks the request's media type and picks the response's version from `Accept`.
/// `kind` is e.g. `package.describe`; `versions` lists what we answer, newest first.
fn negotiate(
    headers: &HeaderMap,
    kind: &str,
    versions: &[&'static str],
) -> Result<&'static str, CosmosError> {
    let request = format!("application/vnd.dcos.{kind}-request+json");
    if let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        let ct = ct.to_ascii_lowercase();
        let ours = ct.starts_with(&request);
        let plain = ct.starts_with("application/json");
        if !ours && !plain {
            return Err(CosmosError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedContentType",
                format!(
                    "Unsupported Content-Type: {ct}; expected {request};charset=utf-8;version=v1"
                ),
            ));
        }
    }
    let response = format!("application/vnd.dcos.{kind}-response+json");
    let newest = versions.first().copied().unwrap_or("v1");
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(newest);
    };
    let mut asked_ours = false;
    let mut best: Option<&'static str> = None;
    for range in accept.split(',') {
        let range = range.trim().to_ascii_lowercase();
        if !range.starts_with(&response) {
            continue;
        }
        asked_ours = true;
        let v = range
            .split(';')
            .find_map(|p| p.trim().strip_prefix("version="))
            .unwrap_or("");
        if let Some(found) = versions.iter().find(|x| **x == v) {
            // The first acceptable version the client lists wins.
            best.get_or_insert(found);
        }
    }
    match (best, asked_ours) {
        (Some(v), _) => Ok(v),
        (None, false) => Ok(newest),
        (None, true) => Err(CosmosError::new(
            StatusCode::NOT_ACCEPTABLE,
            "NotAcceptable",
            format!(
                "{accept} is not available; this server answers {response};charset=utf-8;version={}",
                versions.join("|")
            ),
        )),
    }
}

fn reply(kind: &str, version: &str, body: Value) -> Response {
    let media =
        format!("application/vnd.dcos.{kind}-response+json;charset=utf-8;version={version}");
    let mut r = (StatusCode::OK, body.to_string()).into_response();
    if let Ok(v) = HeaderValue::from_str(&media) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn parse_body(body: &Bytes) -> Result<Map<String, Value>, CosmosError> {
    if body.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(CosmosError::bad("the request body must be a JSON object")),
        Err(e) => Err(CosmosError::bad(format!(
            "the request body is not JSON: {e}"
        ))),
    }
}

fn opt_str<'a>(m: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, CosmosError> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(CosmosError::bad(format!("\"{field}\" must be a string"))),
    }
}

fn req_str<'a>(m: &'a Map<String, Value>, field: &str) -> Result<&'a str, CosmosError> {
    opt_str(m, field)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| CosmosError::bad(format!("\"{field}\" is required")))
}

async fn capabilities() -> Response {
    let body = json!({"capabilities": [
        {"name": "PACKAGE_MANAGEMENT"}, {"name": "SUPPORT_CLUSTER_REPORT"},
        {"name": "METRONOME"}, {"name": "LOGGING"}, {"name": "LOGGING_V2"}
    ]});
    let mut r = (StatusCode::OK, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(CAPABILITIES_MEDIA),
    );
    r
}

/// Cosmos' query: a case-insensitive substring of the name, the description or a tag; a
/// query with `*` must match one of them whole, `*` standing for anything.
fn matches_query(p: &Package, query: &str) -> bool {
    let q = query.to_lowercase();
    if q.is_empty() {
        return true;
    }
    let hay: Vec<String> = std::iter::once(p.name().to_lowercase())
        .chain(std::iter::once(p.description().to_lowercase()))
        .chain(p.tags().into_iter().map(str::to_lowercase))
        .collect();
    if q.contains('*') {
        hay.iter().any(|h| glob_whole(h, &q))
    } else {
        hay.iter().any(|h| h.contains(&q))
    }
}

fn glob_whole(hay: &str, pattern: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if hay.len() < first.len() + last.len() || !hay.starts_with(first) || !hay.ends_with(last) {
        return false;
    }
    let mut rest = &hay[first.len()..hay.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

async fn search(AxState(u): Ctx, headers: HeaderMap, body: Bytes) -> Result<Response, CosmosError> {
    let v = negotiate(&headers, "package.search", &["v1"])?;
    let req = parse_body(&body)?;
    let query = opt_str(&req, "query")?.unwrap_or("");
    let all = u.load_all().await?;
    let mut by_name: Vec<(String, Vec<Package>)> = Vec::new();
    for (_, p) in merged(&all) {
        match by_name.iter_mut().find(|(n, _)| n == p.name()) {
            Some((_, list)) => list.push(p.clone()),
            None => by_name.push((p.name().to_string(), vec![p.clone()])),
        }
    }
    let mut results: Vec<Value> = by_name
        .into_iter()
        .filter_map(|(name, mut versions)| {
            versions.sort_by(newer);
            let newest = versions.last()?.clone();
            if !versions.iter().any(|p| matches_query(p, query)) {
                return None;
            }
            let vmap: Map<String, Value> = versions
                .iter()
                .map(|p| {
                    (
                        p.version().to_string(),
                        Value::String(p.release_version().to_string()),
                    )
                })
                .collect();
            Some(json!({
                "name": name,
                "currentVersion": newest.version(),
                "versions": vmap,
                "description": newest.description(),
                "framework": newest.framework(),
                "tags": newest.tags(),
                "selected": newest.selected(),
                "images": newest.images(),
            }))
        })
        .collect();
    results.sort_by(|a, b| {
        let key = |x: &Value| {
            (
                !x["selected"].as_bool().unwrap_or(false),
                x["name"].as_str().unwrap_or("").to_string(),
            )
        };
        key(a).cmp(&key(b))
    });
    Ok(reply("package.search", v, json!({ "packages": results })))
}

async fn describe(
    AxState(u): Ctx,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, CosmosError> {
    let v = negotiate(&headers, "package.describe", &["v3", "v2"])?;
    let req = parse_body(&body)?;
    let name = req_str(&req, "packageName")?;
    let (_, _, p) = u.find(name, opt_str(&req, "packageVersion")?).await?;
    // v3 wraps the package; v2 is the package itself (what the dcos CLI reads by version).
    let body = if v == "v2" {
        p.to_value()
    } else {
        json!({ "package": p.to_value() })
    };
    Ok(reply("package.describe", v, body))
}

async fn list_versions(
    AxState(u): Ctx,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, CosmosError> {
    let v = negotiate(&headers, "package.list-versions", &["v1"])?;
    let req = parse_body(&body)?;
    let name = req_str(&req, "packageName")?;
    u.find(name, None).await?;
    let all = u.load_all().await?;
    let mut versions: Vec<&Package> = merged(&all)
        .into_iter()
        .map(|(_, p)| p)
        .filter(|p| p.name() == name)
        .collect();
    versions.sort_by(|a, b| newer(a, b));
    let results: Map<String, Value> = versions
        .iter()
        .map(|p| {
            (
                p.version().to_string(),
                Value::String(p.release_version().to_string()),
            )
        })
        .collect();
    Ok(reply(
        "package.list-versions",
        v,
        json!({ "results": results }),
    ))
}

/// The package as it will be installed: from its verified archive when the repository is
/// signed and carries one.
async fn installable(
    u: &Universe,
    req: &Map<String, Value>,
) -> Result<(RepoSpec, Package), CosmosError> {
    let name = req_str(req, "packageName")?;
    let (spec, loaded, p) = u.find(name, opt_str(req, "packageVersion")?).await?;
    let p = match &loaded.targets {
        Some(t) => spec.load_archive(&u.fetcher, t, &p).await?,
        None => p,
    };
    Ok((spec, p))
}

async fn render_pkg(
    AxState(u): Ctx,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, CosmosError> {
    let v = negotiate(&headers, "package.render", &["v1"])?;
    let req = parse_body(&body)?;
    let (spec, p) = installable(&u, &req).await?;
    let r = render::render(&p, &spec.uri, req.get("options"), opt_str(&req, "appId")?)?;
    Ok(reply("package.render", v, json!({ "marathonJson": r.app })))
}

async fn install(
    AxState(u): Ctx,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, CosmosError> {
    let v = negotiate(&headers, "package.install", &["v2", "v1"])?;
    let req = parse_body(&body)?;
    let (spec, p) = installable(&u, &req).await?;
    let r = render::render(&p, &spec.uri, req.get("options"), opt_str(&req, "appId")?)?;
    let app_id = r.app["id"].as_str().unwrap_or("").to_string();
    let (status, answer) = u
        .init
        .request("POST", "/v2/apps", Some(&r.app))
        .await
        .map_err(|e| {
            CosmosError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                format!("init (Marathon) is unavailable: {e}"),
            )
        })?;
    match status {
        200..=299 => {}
        409 => {
            return Err(CosmosError::new(
                StatusCode::CONFLICT,
                "PackageAlreadyInstalled",
                format!("Package is already installed (an app with id {app_id} exists)"),
            )
            .data(json!({"packageName": p.name(), "appId": app_id})));
        }
        _ => {
            let msg = answer
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| answer.to_string(), str::to_string);
            return Err(CosmosError::new(
                StatusCode::BAD_REQUEST,
                "MarathonBadResponse",
                format!("init refused the app: {msg}"),
            )
            .data(json!({"details": answer.get("details").cloned().unwrap_or(Value::Null)})));
        }
    }
    tracing::info!(package = p.name(), version = p.version(), app = %app_id, "package installed");
    let mut out = json!({
        "packageName": p.name(),
        "packageVersion": p.version(),
        "appId": app_id,
    });
    if v == "v2" {
        if let Some(n) = p.str("postInstallNotes") {
            out["postInstallNotes"] = n.into();
        }
        if let Some(cli) = p.resource().and_then(|r| r.get("cli")) {
            out["cli"] = cli.clone();
        }
    }
    Ok(reply("package.install", v, out))
}

/// init's apps that came from packages (optionally of one package / one app id).
async fn installed(
    u: &Universe,
    name: Option<&str>,
    app_id: Option<&str>,
) -> Result<Vec<Map<String, Value>>, CosmosError> {
    let selector = match name {
        Some(n) => format!("{LABEL_NAME}=={n}"),
        None => LABEL_NAME.to_string(),
    };
    let (status, body) = u
        .init
        .request(
            "GET",
            &format!(
                "/v2/apps?label={}",
                basalt_api::client::encode_query(&selector)
            ),
            None,
        )
        .await
        .map_err(|e| {
            CosmosError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                format!("init (Marathon) is unavailable: {e}"),
            )
        })?;
    if status != 200 {
        return Err(CosmosError::new(
            StatusCode::BAD_GATEWAY,
            "MarathonBadResponse",
            format!("init answered {status}: {body}"),
        ));
    }
    let want = app_id.map(|a| {
        if a.starts_with('/') {
            a.to_string()
        } else {
            format!("/{a}")
        }
    });
    Ok(body
        .get("apps")
        .and_then(Value::as_array)
        .map(|apps| {
            apps.iter()
                .filter_map(|a| a.as_object().cloned())
                .filter(|a| {
                    want.as_deref()
                        .is_none_or(|w| a.get("id").and_then(Value::as_str) == Some(w))
                })
                .collect()
        })
        .unwrap_or_default())
}

fn labels_of(app: &Map<String, Value>) -> Map<String, Value> {
    app.get("labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

async fn uninstall(
    AxState(u): Ctx,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, CosmosError> {
    let v = negotiate(&headers, "package.uninstall", &["v1"])?;
    let req = parse_body(&body)?;
    let name = req_str(&req, "packageName")?;
    let app_id = opt_str(&req, "appId")?;
    let all = req.get("all").and_then(Value::as_bool).unwrap_or(false);
    let apps = installed(&u, Some(name), app_id).await?;
    if apps.is_empty() {
        return Err(CosmosError::new(
            StatusCode::BAD_REQUEST,
            "UninstallNonExistentAppForPackage",
            match app_id {
                Some(a) => format!("Package [{name}] with id [{a}] is not installed"),
                None => format!("Package [{name}] is not installed"),
            },
        )
        .data(json!({"packageName": name, "appId": app_id})));
    }
    if apps.len() > 1 && !all {
        let ids: Vec<&str> = apps
            .iter()
            .filter_map(|a| a.get("id").and_then(Value::as_str))
            .collect();
        return Err(CosmosError::new(
            StatusCode::BAD_REQUEST,
            "AmbiguousAppId",
            format!(
                "Multiple apps named [{name}] are installed: [{}]; give --app-id or --all",
                ids.join(", ")
            ),
        )
        .data(json!({"packageName": name, "appIds": ids})));
    }
    let mut results = Vec::new();
    for app in apps {
        let id = app.get("id").and_then(Value::as_str).unwrap_or("");
        let (status, answer) = u
            .init
            .request("DELETE", &format!("/v2/apps{id}?force=true"), None)
            .await
            .map_err(|e| {
                CosmosError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    e.to_string(),
                )
            })?;
        if !(200..300).contains(&status) && status != 404 {
            return Err(CosmosError::new(
                StatusCode::BAD_GATEWAY,
                "MarathonBadResponse",
                format!("init refused to remove {id}: {answer}"),
            ));
        }
        let labels = labels_of(&app);
        let def = render::definition_from_labels(&labels);
        let mut r = json!({"packageName": name, "appId": id});
        if let Some(ver) = labels.get(LABEL_VERSION) {
            r["packageVersion"] = ver.clone();
        }
        if let Some(n) = def.as_ref().and_then(|d| d.get("postUninstallNotes")) {
            r["postUninstallNotes"] = n.clone();
        }
        tracing::info!(package = name, app = id, "package uninstalled");
        results.push(r);
    }
    Ok(reply("package.uninstall", v, json!({ "results": results })))
}

async fn list(AxState(u): Ctx, headers: HeaderMap, body: Bytes) -> Result<Response, CosmosError> {
    let v = negotiate(&headers, "package.list", &["v1"])?;
    let req = parse_body(&body)?;
    let apps = installed(&u, opt_str(&req, "packageName")?, opt_str(&req, "appId")?).await?;
    let packages: Vec<Value> = apps
        .iter()
        .filter_map(|app| {
            let labels = labels_of(app);
            let mut def = render::definition_from_labels(&labels)?;
            let resource = def.as_object_mut().and_then(|d| d.remove("resource"));
            let mut info = json!({"packageDefinition": def});
            if let Some(r) = resource {
                info["resourceDefinition"] = r;
            }
            Some(json!({"appId": app.get("id").cloned().unwrap_or(Value::Null), "packageInformation": info}))
        })
        .collect();
    Ok(reply("package.list", v, json!({ "packages": packages })))
}

fn repo_json(repos: &[RepoSpec]) -> Value {
    json!({"repositories": repos.iter().map(|r| {
        let mut v = json!({"name": r.name, "uri": r.uri});
        v["signed"] = Value::Bool(r.root_key.is_some() || r.trust.is_some());
        v
    }).collect::<Vec<_>>()})
}

async fn repo_list(
    AxState(u): Ctx,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, CosmosError> {
    let v = negotiate(&headers, "package.repository.list", &["v1"])?;
    parse_body(&body)?;
    let repos = u.repos.lock().await;
    Ok(reply("package.repository.list", v, repo_json(&repos)))
}

fn already_present(name: &str, uri: &str) -> CosmosError {
    CosmosError::new(
        StatusCode::BAD_REQUEST,
        "RepositoryAlreadyPresent",
        format!("Repository name [{name}] or URI [{uri}] is already present"),
    )
    .data(json!({"name": name, "uri": uri}))
}

async fn repo_add(
    AxState(u): Ctx,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, CosmosError> {
    let v = negotiate(&headers, "package.repository.add", &["v1"])?;
    let req = parse_body(&body)?;
    let name = req_str(&req, "name")?.to_string();
    let uri = req_str(&req, "uri")?.to_string();
    let root_key = match req.get("rootKey") {
        None | Some(Value::Null) => None,
        Some(k) => Some(
            serde_json::from_value::<PublicKey>(k.clone())
                .map_err(|e| CosmosError::bad(format!("\"rootKey\" is not a public key: {e}")))?,
        ),
    };
    let explicit = req
        .get("allowUnsigned")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let spec = RepoSpec {
        allow_unsigned: root_key.is_none() && (explicit || u.cfg.allow_unsigned),
        name: name.clone(),
        uri: uri.clone(),
        root_key,
        trust: None,
    };
    crate::repo::split_uri(&uri)?;
    // A file:// repository would let any caller of this API make the server read its
    // local files; the built-in repository is local, but never added through here.
    if uri.starts_with("file://") && !u.cfg.allow_file_uris {
        return Err(CosmosError::new(
            StatusCode::BAD_REQUEST,
            "UnsupportedRepositoryUri",
            format!(
                "{uri}: file:// repositories cannot be added through the API; \
                 serve it over http:// (basalt universe serve)"
            ),
        ));
    }
    {
        let repos = u.repos.lock().await;
        if repos.iter().any(|r| r.name == name || r.uri == uri) {
            return Err(already_present(&name, &uri));
        }
    }
    // Verified before it is stored: an untrusted or broken repository never enters the list.
    let loaded = Arc::new(spec.load(&u.fetcher, SystemTime::now()).await?);
    let mut repos = u.repos.lock().await;
    // Checked again: another add may have won while this one was verifying.
    if repos.iter().any(|r| r.name == name || r.uri == uri) {
        return Err(already_present(&name, &uri));
    }
    let index = match req.get("index") {
        None | Some(Value::Null) => repos.len(),
        // The dcos CLI sends the index as a JSON string ("0").
        Some(i) => match i
            .as_u64()
            .or_else(|| i.as_str().and_then(|t| t.parse().ok()))
        {
            Some(i) if (i as usize) <= repos.len() => i as usize,
            _ => {
                return Err(CosmosError::new(
                    StatusCode::BAD_REQUEST,
                    "RepositoryAddIndexOutOfBounds",
                    format!("\"index\" must be between 0 and {}", repos.len()),
                ));
            }
        },
    };
    let mut stored = spec;
    stored.trust = loaded.trust.clone();
    let mut next = repos.clone();
    next.insert(index, stored);
    u.save(&next)?;
    *repos = next;
    u.cache
        .lock()
        .await
        .insert(uri.clone(), (tokio::time::Instant::now(), loaded));
    tracing::info!(repo = %name, %uri, "repository added");
    Ok(reply("package.repository.add", v, repo_json(&repos)))
}

async fn repo_delete(
    AxState(u): Ctx,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, CosmosError> {
    let v = negotiate(&headers, "package.repository.delete", &["v1"])?;
    let req = parse_body(&body)?;
    let name = opt_str(&req, "name")?;
    let uri = opt_str(&req, "uri")?;
    if name.is_none() && uri.is_none() {
        return Err(CosmosError::bad("give \"name\" or \"uri\""));
    }
    let mut repos = u.repos.lock().await;
    let Some(pos) = repos
        .iter()
        .position(|r| Some(r.name.as_str()) == name || Some(r.uri.as_str()) == uri)
    else {
        return Err(CosmosError::new(
            StatusCode::BAD_REQUEST,
            "RepositoryNotPresent",
            format!("Repository [{}] is not present", name.or(uri).unwrap_or("")),
        ));
    };
    let mut next = repos.clone();
    let gone = next.remove(pos);
    u.save(&next)?;
    *repos = next;
    u.cache.lock().await.remove(&gone.uri);
    tracing::info!(repo = %gone.name, "repository removed");
    Ok(reply("package.repository.delete", v, repo_json(&repos)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(ct: Option<&str>, accept: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(c) = ct {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(c).expect("h"));
        }
        if let Some(a) = accept {
            h.insert(header::ACCEPT, HeaderValue::from_str(a).expect("h"));
        }
        h
    }

    #[test]
    fn media_types_pick_the_version() {
        let ct = "application/vnd.dcos.package.install-request+json;charset=utf-8;version=v1";
        let v1 = "application/vnd.dcos.package.install-response+json;charset=utf-8;version=v1,application/vnd.dcos.package.error+json;charset=utf-8;version=v1";
        assert_eq!(
            negotiate(
                &headers(Some(ct), Some(v1)),
                "package.install",
                &["v2", "v1"]
            )
            .expect("v1"),
            "v1"
        );
        assert_eq!(
            negotiate(&headers(Some(ct), None), "package.install", &["v2", "v1"]).expect("v2"),
            "v2"
        );
        assert_eq!(
            negotiate(
                &headers(Some("application/json"), Some("*/*")),
                "package.install",
                &["v2", "v1"]
            )
            .expect("default"),
            "v2"
        );
        let err = negotiate(
            &headers(
                Some(ct),
                Some("application/vnd.dcos.package.install-response+json;charset=utf-8;version=v9"),
            ),
            "package.install",
            &["v2", "v1"],
        )
        .expect_err("406");
        assert_eq!(err.status, StatusCode::NOT_ACCEPTABLE);
        let err = negotiate(
            &headers(
                Some("application/vnd.dcos.package.describe-request+json;charset=utf-8;version=v1"),
                None,
            ),
            "package.install",
            &["v2"],
        )
        .expect_err("415");
        assert_eq!(err.kind, "UnsupportedContentType");
    }

    #[test]
    fn queries_match_like_cosmos() {
        let p = Package::from_value(json!({"packagingVersion":"4.0","name":"hello-world",
            "version":"1","maintainer":"m","description":"A tiny Web server","tags":["http"],
            "releaseVersion":0}))
        .expect("pkg");
        for q in [
            "", "hello", "HELLO", "web", "http", "h*o-w*", "*world", "hello*", "ht*p",
        ] {
            assert!(matches_query(&p, q), "{q}");
        }
        for q in ["kafka", "w*h", "h*o-w", "*hello"] {
            assert!(!matches_query(&p, q), "{q}");
        }
    }
}
