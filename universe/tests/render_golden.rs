//! A package in the Universe layout that uses what real Universe packages use (nested
//! option objects with defaults, a required field, `asJson`, `resource.json` assets and a
//! Docker image by digest, array iteration, boolean and inverted sections, pre- and
//! post-install notes, two versions of packaging 3.0 and 4.0) renders to the Marathon JSON
//! Cosmos produces for it, labels included.

#![allow(clippy::unwrap_used)]

use basalt_universe::archive;
use basalt_universe::package::Package;
use basalt_universe::render::{self, RenderError};
use base64::Engine as _;
use serde_json::{Value, json};
use std::path::PathBuf;

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/cassandra-like")
        .join(rel)
}

fn load(release: u64) -> Package {
    let files = archive::read_dir(&fixture(&release.to_string())).unwrap();
    Package::from_files(&files, release).unwrap()
}

fn json_file(rel: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixture(rel)).unwrap()).unwrap()
}

#[test]
fn renders_what_cosmos_renders() {
    let pkg = load(1);
    let options = json_file("options.json");
    let r = render::render(&pkg, "http://repo.example/repo.json", Some(&options), None).unwrap();
    let mut app = r.app;
    let labels = app["labels"].as_object_mut().unwrap();
    // The two encoded labels: the options as given, the whole package definition.
    let opts = labels.remove("DCOS_PACKAGE_OPTIONS").unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let decoded: Value =
        serde_json::from_slice(&b64.decode(opts.as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(decoded, options);
    let def = labels.remove("DCOS_PACKAGE_DEFINITION").unwrap();
    let env: Value = serde_json::from_slice(&b64.decode(def.as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(env["data"], pkg.to_value());
    assert_eq!(
        env["metadata"]["Content-Type"],
        "application/vnd.dcos.universe.package+json;charset=utf-8;version=v4"
    );
    assert_eq!(app, json_file("expected.json"));
    assert_eq!(r.resolved_options["nodes"]["heap"]["size"], 2048);
}

#[test]
fn defaults_alone_and_an_older_version() {
    let r = render::render(&load(1), "s", None, Some("/team/db")).unwrap();
    assert_eq!(r.app["id"], "/team/db");
    assert_eq!(r.app["env"]["NETWORK"], "host");
    assert!(r.app["env"].get("TLS_CIPHERS").is_none());
    assert!(
        r.app.get("secrets").is_none(),
        "an empty string is a false section"
    );
    assert_eq!(r.app["constraints"], json!([]));
    let old = render::render(&load(0), "s", None, None).unwrap();
    assert_eq!(old.app["id"], "/cassandra");
    assert_eq!(old.app["labels"]["DCOS_PACKAGE_VERSION"], "1.0.0");
    assert_eq!(
        load(0).str("postInstallNotes"),
        Some("Installed. Docs: https://example.org/docs")
    );
}

#[test]
fn options_failing_the_schema_name_their_paths() {
    let bad = json!({"service": {"cpus": 0.01, "mem": "lots"}, "nodes": {"count": 0}});
    let err = render::render(&load(1), "s", Some(&bad), None).unwrap_err();
    let RenderError::JsonSchemaMismatch(v) = &err else {
        panic!("{err}")
    };
    let mut paths: Vec<&str> = v.iter().map(|e| e.path.as_str()).collect();
    paths.sort();
    assert_eq!(
        paths,
        ["/nodes/count", "/service/cpus", "/service/mem"],
        "{err}"
    );
}
