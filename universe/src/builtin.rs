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

/// One file of a built-in package, from `universe/packages/<package>/<release>/<file>`.
macro_rules! package_file {
    ($pkg:literal, $rv:literal, $file:literal) => {
        (
            $pkg,
            $rv,
            $file,
            include_str!(concat!("../packages/", $pkg, "/", $rv, "/", $file)),
        )
    };
}

/// (package, release, file, contents), in the Universe layout under `universe/packages/`.
const FILES: &[(&str, &str, &str, &str)] = &[
    package_file!("hello-world", "0", "package.json"),
    package_file!("hello-world", "0", "config.json"),
    package_file!("hello-world", "0", "marathon.json.mustache"),
    package_file!("hello-world", "0", "resource.json"),
    package_file!("hello-world", "1", "package.json"),
    package_file!("hello-world", "1", "config.json"),
    package_file!("hello-world", "1", "marathon.json.mustache"),
    package_file!("hello-world", "1", "resource.json"),
    package_file!("static-site", "0", "package.json"),
    package_file!("static-site", "0", "config.json"),
    package_file!("static-site", "0", "marathon.json.mustache"),
    package_file!("kv-store", "0", "package.json"),
    package_file!("kv-store", "0", "config.json"),
    package_file!("kv-store", "0", "marathon.json.mustache"),
    package_file!("kv-store", "0", "resource.json"),
];

/// Files the packages' `resource.json` point at, published under `assets/` of the repository
/// (and so listed with their sha256 in the signed targets).
const ASSETS: &[(&str, &str)] = &[(
    "kv-store/kv.py",
    include_str!("../packages/kv-store/assets/kv.py"),
)];

/// Stands for the repository's own URL in the built-in packages' `resource.json`, which
/// only this process knows (its address and port).
const URL_PLACEHOLDER: &str = "@BUILTIN_URL@";

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
/// `url` is where the repository is served (`http://host:port/universe/builtin`): agents
/// fetch the packages' assets from there.
pub fn prepare(dir: &Path, url: &str, now: SystemTime) -> Result<Builtin, PublishError> {
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
    let assets = repo.join("assets");
    match std::fs::remove_dir_all(&assets) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(PublishError::Io(assets.display().to_string(), e)),
    }
    for (rel, text) in ASSETS {
        let path = assets.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| PublishError::Io(parent.display().to_string(), e))?;
        }
        publish::write_atomic(&path, text.as_bytes())?;
    }
    let url = url.trim_end_matches('/');
    let mut by_release: BTreeMap<(&str, &str), BTreeMap<String, Vec<u8>>> = BTreeMap::new();
    for (name, rv, file, text) in FILES {
        by_release.entry((name, rv)).or_default().insert(
            (*file).to_string(),
            text.replace(URL_PLACEHOLDER, url).into_bytes(),
        );
    }
    for ((name, rv), files) in by_release {
        let release = rv.parse().ok();
        publish::add_files(&repo, files, release, &format!("built-in {name}/{rv}"))?;
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
        let b = prepare(&dir, "http://127.0.0.1:7070/universe/builtin", now).expect("prepare");
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
                "kv-store@1.0.0",
                "static-site@1.0.0"
            ]
        );
        let kv = loaded
            .packages
            .iter()
            .find(|p| p.name() == "kv-store")
            .expect("kv-store");
        assert_eq!(
            kv.resource().expect("resource")["assets"]["uris"]["kv-py"],
            "http://127.0.0.1:7070/universe/builtin/assets/kv-store/kv.py"
        );
        let asset = std::fs::read(dir.join("repo/assets/kv-store/kv.py")).expect("asset");
        loaded
            .targets
            .as_ref()
            .expect("signed")
            .verify("assets/kv-store/kv.py", &asset)
            .expect("the asset is a signed target");
        let trust = loaded.trust.expect("signed");
        // A second start re-signs one version up; the trust from the first run accepts it.
        let b2 = prepare(&dir, "http://127.0.0.1:7070/universe/builtin", now).expect("again");
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
