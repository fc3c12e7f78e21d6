//! The repository `basalt up` ships with: packages that run on a fresh machine without a
//! container registry, signed at start-up by keys of this cluster's own (kept in the data
//! dir), and trusted by pinning that root key — the same path a third-party repository
//! takes, with no exception for ourselves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::publish::{self, Expiry, PublishError};
use crate::repo::RepoSpec;
use crate::tuf::PublicKey;

/// (package, release, file, contents), in the Universe layout under `universe/packages/`.
const FILES: &[(&str, u64, &str, &str)] = &[
    (
        "hello-world",
        0,
        "package.json",
        include_str!("../packages/hello-world/0/package.json"),
    ),
    (
        "hello-world",
        0,
        "config.json",
        include_str!("../packages/hello-world/0/config.json"),
    ),
    (
        "hello-world",
        0,
        "marathon.json.mustache",
        include_str!("../packages/hello-world/0/marathon.json.mustache"),
    ),
    (
        "hello-world",
        0,
        "resource.json",
        include_str!("../packages/hello-world/0/resource.json"),
    ),
    (
        "hello-world",
        1,
        "package.json",
        include_str!("../packages/hello-world/1/package.json"),
    ),
    (
        "hello-world",
        1,
        "config.json",
        include_str!("../packages/hello-world/1/config.json"),
    ),
    (
        "hello-world",
        1,
        "marathon.json.mustache",
        include_str!("../packages/hello-world/1/marathon.json.mustache"),
    ),
    (
        "hello-world",
        1,
        "resource.json",
        include_str!("../packages/hello-world/1/resource.json"),
    ),
    (
        "static-site",
        0,
        "package.json",
        include_str!("../packages/static-site/0/package.json"),
    ),
    (
        "static-site",
        0,
        "config.json",
        include_str!("../packages/static-site/0/config.json"),
    ),
    (
        "static-site",
        0,
        "marathon.json.mustache",
        include_str!("../packages/static-site/0/marathon.json.mustache"),
    ),
];

/// The name the built-in repository has in the repository list.
pub const NAME: &str = "Universe";

pub struct Builtin {
    /// The published files (served at `/universe/builtin/`).
    pub repo_dir: PathBuf,
    /// The repository list entry, pinned to this cluster's root key.
    pub spec: RepoSpec,
}

/// (Re)builds and signs the built-in repository under `dir`. Keys and the root persist;
/// every start re-signs targets, snapshot and timestamp one version up, so a client that
/// saw the previous run's repository accepts this one and would refuse an older copy.
pub fn prepare(dir: &Path, now: SystemTime) -> Result<Builtin, PublishError> {
    let repo = dir.join("repo");
    let keys = dir.join("keys");
    if !repo.join("1.root.json").exists() {
        publish::init(&repo, &keys, 1, 1, Expiry::default(), now)?;
    }
    let packages = repo.join("packages");
    match std::fs::remove_dir_all(&packages) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(PublishError::Io(packages.display().to_string(), e)),
    }
    let mut by_release: BTreeMap<(&str, u64), BTreeMap<String, Vec<u8>>> = BTreeMap::new();
    for (name, rv, file, text) in FILES {
        by_release
            .entry((name, *rv))
            .or_default()
            .insert((*file).to_string(), text.as_bytes().to_vec());
    }
    for ((name, rv), files) in by_release {
        publish::add_files(&repo, files, Some(rv), &format!("built-in {name}/{rv}"))?;
    }
    publish::sign_repo(&repo, &keys, Expiry::default(), now)?;
    let pin = publish::public_key_path(&keys.join("root-1.key"));
    let bytes = std::fs::read(&pin).map_err(|e| PublishError::Io(pin.display().to_string(), e))?;
    let root_key = PublicKey::from_json(&bytes)?;
    Ok(Builtin {
        spec: RepoSpec {
            name: NAME.to_string(),
            uri: format!("file://{}/repo.json", repo.display()),
            allow_unsigned: false,
            root_key: Some(root_key),
            trust: None,
        },
        repo_dir: repo,
    })
}

/// Re-signs the timestamp (its expiry is a day) so the built-in repository never expires
/// under a long-running cluster.
pub fn refresh(dir: &Path, now: SystemTime) -> Result<u64, PublishError> {
    publish::refresh_timestamp(&dir.join("repo"), &dir.join("keys"), Expiry::default(), now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::Fetcher;

    #[tokio::test]
    async fn the_builtin_repository_verifies_and_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("basalt-builtin-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let now = SystemTime::now();
        let b = prepare(&dir, now).expect("prepare");
        let loaded = b.spec.load(&Fetcher::new(), now).await.expect("verifies");
        let names: Vec<_> = loaded
            .packages
            .iter()
            .map(|p| format!("{}@{}", p.name(), p.version()))
            .collect();
        assert_eq!(
            names,
            [
                "hello-world@0.1.0",
                "hello-world@0.2.0",
                "static-site@1.0.0"
            ]
        );
        let trust = loaded.trust.expect("signed");
        // A second start re-signs one version up; the trust from the first run accepts it.
        let b2 = prepare(&dir, now).expect("again");
        let mut spec = b2.spec.clone();
        spec.trust = Some(trust.clone());
        let again = spec
            .load(&Fetcher::new(), now)
            .await
            .expect("verifies again");
        let t2 = again.trust.expect("signed");
        assert!(t2.targets_version > trust.targets_version);
        let targets = again.targets.expect("targets");
        for p in &again.packages {
            let from_archive = spec
                .load_archive(&Fetcher::new(), &targets, p)
                .await
                .expect("archive verifies");
            assert_eq!(&from_archive, p);
        }
        assert!(refresh(&dir, now).expect("timestamp") > t2.timestamp_version);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
