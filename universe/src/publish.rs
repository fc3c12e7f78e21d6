//! Building and signing a repository on disk (`basalt universe init|add|sign`). The result is
//! static files, so any web server can host it:
//!
//! ```text
//! REPO/repo.json                       the Universe v5 index, generated from the archives
//! REPO/packages/<name>/<rv>.tar.gz     one archive per package version
//! REPO/1.root.json, 2.root.json, ...   every root ever published (clients walk rotations)
//! REPO/root.json                       the newest root
//! REPO/targets.json snapshot.json timestamp.json
//! KEYS/root-1.key ... targets.key snapshot.key timestamp.key   (never published)
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::archive::{self, ArchiveError};
use crate::package::{Package, PackageError};
use crate::repo::archive_path;
use crate::tuf::{
    KeyPair, MetaFile, PublicKey, Role, Root, Signed, Snapshot, TargetFile, Targets, Timestamp,
    TufError, sign,
};

pub const INDEX_FILE: &str = "repo.json";

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error(transparent)]
    Tuf(#[from] TufError),
    #[error("{0}: {1}")]
    Archive(String, ArchiveError),
    #[error("{0}: {1}")]
    Package(String, PackageError),
    #[error("{0}")]
    Invalid(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PublishError + '_ {
    move |e| PublishError::Io(path.display().to_string(), e)
}

/// How long each role's signatures stay good. The timestamp is short so that a server
/// which stops updating (or an attacker replaying it) is noticed within a day.
#[derive(Clone, Copy, Debug)]
pub struct Expiry {
    pub root: Duration,
    pub targets: Duration,
    pub snapshot: Duration,
    pub timestamp: Duration,
}

impl Default for Expiry {
    fn default() -> Self {
        const DAY: u64 = 86_400;
        Expiry {
            root: Duration::from_secs(365 * DAY),
            targets: Duration::from_secs(90 * DAY),
            snapshot: Duration::from_secs(90 * DAY),
            timestamp: Duration::from_secs(DAY),
        }
    }
}

/// Writes through a temporary file and a rename, so a reader (or a crash) never sees half a
/// file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PublishError> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        // On disk before the rename, so a crash leaves the old file or the new, never an
        // empty one.
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Generates a key file (mode 0600) unless it exists; returns the key either way.
pub fn keygen(path: &Path) -> Result<KeyPair, PublishError> {
    if path.exists() {
        let bytes = std::fs::read(path).map_err(io(path))?;
        return Ok(KeyPair::from_json(&bytes)?);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let key = KeyPair::generate()?;
    let text = serde_json::to_vec_pretty(&key.to_json())
        .map_err(|e| PublishError::Invalid(e.to_string()))?;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(&text).map_err(io(path))?;
    let public = serde_json::to_vec_pretty(&key.public())
        .map_err(|e| PublishError::Invalid(e.to_string()))?;
    let pub_path = public_key_path(path);
    std::fs::write(&pub_path, public).map_err(io(&pub_path))?;
    Ok(key)
}

/// `root-1.key` -> `root-1.pub`: what a client pins.
pub fn public_key_path(key: &Path) -> PathBuf {
    key.with_extension("pub")
}

fn load_key(path: &Path) -> Result<KeyPair, PublishError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    Ok(KeyPair::from_json(&bytes)?)
}

/// Creates a repository: keys (kept if they exist), the first root signed by every root key,
/// and an empty signed index. Returns the paths of the root public keys to pin.
pub fn init(
    repo: &Path,
    keys: &Path,
    root_keys: usize,
    threshold: u32,
    expiry: Expiry,
    now: SystemTime,
) -> Result<Vec<PathBuf>, PublishError> {
    if root_keys == 0 || threshold == 0 || threshold as usize > root_keys {
        return Err(PublishError::Invalid(format!(
            "a threshold of {threshold} of {root_keys} root keys cannot be met"
        )));
    }
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    if abs(keys).starts_with(abs(repo)) {
        return Err(PublishError::Invalid(format!(
            "the keys directory {} is inside the repository {}: everything there is published; \
             keep keys elsewhere",
            keys.display(),
            repo.display()
        )));
    }
    if repo.join("1.root.json").exists() {
        return Err(PublishError::Invalid(format!(
            "{} already holds a repository (1.root.json exists)",
            repo.display()
        )));
    }
    std::fs::create_dir_all(repo.join("packages")).map_err(io(repo))?;
    let mut root_pairs = Vec::new();
    let mut pins = Vec::new();
    for i in 1..=root_keys {
        let p = keys.join(format!("root-{i}.key"));
        root_pairs.push(keygen(&p)?);
        pins.push(public_key_path(&p));
    }
    let role_key = |name: &str| keygen(&keys.join(format!("{name}.key")));
    let (t, s, ts) = (
        role_key("targets")?,
        role_key("snapshot")?,
        role_key("timestamp")?,
    );
    let root_public: Vec<PublicKey> = root_pairs.iter().map(KeyPair::public).collect();
    let root = Root::new(1, now + expiry.root)
        .with_role(Role::Root, &root_public, threshold)
        .with_role(Role::Targets, &[t.public()], 1)
        .with_role(Role::Snapshot, &[s.public()], 1)
        .with_role(Role::Timestamp, &[ts.public()], 1);
    let refs: Vec<&KeyPair> = root_pairs.iter().collect();
    let signed = sign(root, &refs)?;
    let bytes = signed.to_json_bytes()?;
    write_atomic(&repo.join("1.root.json"), &bytes)?;
    write_atomic(&repo.join("root.json"), &bytes)?;
    sign_repo(repo, keys, expiry, now)?;
    Ok(pins)
}

/// Adds a package (a Universe package directory or a `.tar.gz`) as the next release of its
/// name. A directory named by a number (the Universe layout `.../hello-world/3/`) keeps that
/// release number.
pub fn add(repo: &Path, src: &Path) -> Result<Package, PublishError> {
    let label = src.display().to_string();
    let files = if src.is_dir() {
        archive::read_dir(src).map_err(|e| PublishError::Archive(label.clone(), e))?
    } else {
        let bytes = std::fs::read(src).map_err(io(src))?;
        archive::read_tar_gz(&bytes).map_err(|e| PublishError::Archive(label.clone(), e))?
    };
    let from_dir = src
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|_| src.is_dir());
    add_files(repo, files, from_dir, &label)
}

/// Adds a package from its files; `release` fixes the release number (else the next one).
pub fn add_files(
    repo: &Path,
    files: BTreeMap<String, Vec<u8>>,
    release: Option<u64>,
    label: &str,
) -> Result<Package, PublishError> {
    let label = label.to_string();
    let probe =
        Package::from_files(&files, 0).map_err(|e| PublishError::Package(label.clone(), e))?;
    // Only this name's releases: adding to a repository of thousands stays one small read.
    let existing = read_archives_under(repo, Some(probe.name()))?;
    let same_name: Vec<&Package> = existing.iter().collect();
    if let Some(dup) = same_name.iter().find(|p| p.version() == probe.version()) {
        return Err(PublishError::Invalid(format!(
            "{} {} is already in the repository (release {}); give the new one a new version",
            probe.name(),
            probe.version(),
            dup.release_version()
        )));
    }
    let rv = release.unwrap_or_else(|| {
        same_name
            .iter()
            .map(|p| p.release_version() + 1)
            .max()
            .unwrap_or(0)
    });
    if same_name.iter().any(|p| p.release_version() == rv) {
        return Err(PublishError::Invalid(format!(
            "{} already has a release {rv}",
            probe.name()
        )));
    }
    let pkg = Package::from_files(&files, rv).map_err(|e| PublishError::Package(label, e))?;
    let mut canonical = BTreeMap::new();
    for (k, v) in files {
        if archive::PACKAGE_FILES.contains(&k.as_str()) {
            canonical.insert(k, v);
        }
    }
    let bytes =
        archive::write_tar_gz(&canonical).map_err(|e| PublishError::Archive("pack".into(), e))?;
    let path = repo.join(archive_path(pkg.name(), rv));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    write_atomic(&path, &bytes)?;
    Ok(pkg)
}

/// Every archive in the repository, read and checked, sorted by name and release.
pub fn read_archives(repo: &Path) -> Result<Vec<Package>, PublishError> {
    read_archives_under(repo, None)
}

fn read_archives_under(repo: &Path, name: Option<&str>) -> Result<Vec<Package>, PublishError> {
    parse_archives(&archive_files(repo, name)?)
}

fn parse_archives(archives: &[(String, Vec<u8>)]) -> Result<Vec<Package>, PublishError> {
    let mut out = Vec::new();
    for (rel, bytes) in archives {
        let rel = rel.clone();
        let rv = rel
            .rsplit('/')
            .next()
            .and_then(|f| f.strip_suffix(".tar.gz"))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| PublishError::Invalid(format!("{rel}: not <releaseVersion>.tar.gz")))?;
        let files =
            archive::read_tar_gz(bytes).map_err(|e| PublishError::Archive(rel.clone(), e))?;
        let pkg =
            Package::from_files(&files, rv).map_err(|e| PublishError::Package(rel.clone(), e))?;
        // Clients look an archive up by the name in the index; one filed under another name
        // would never be checked against its targets entry.
        if rel != archive_path(pkg.name(), rv) {
            return Err(PublishError::Invalid(format!(
                "{rel} holds package {}; it belongs at {}",
                pkg.name(),
                archive_path(pkg.name(), rv)
            )));
        }
        out.push(pkg);
    }
    out.sort_by(|a, b| (a.name(), a.release_version()).cmp(&(b.name(), b.release_version())));
    Ok(out)
}

fn archive_files(repo: &Path, only: Option<&str>) -> Result<Vec<(String, Vec<u8>)>, PublishError> {
    let dir = repo.join("packages");
    let mut out = Vec::new();
    let names = match std::fs::read_dir(&dir) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(PublishError::Io(dir.display().to_string(), e)),
    };
    let dirs: Vec<(String, PathBuf)> = match only {
        Some(name) => vec![(name.to_string(), dir.join(name))],
        None => names
            .filter_map(|e| e.ok())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect(),
    };
    for (pname, pdir) in dirs {
        if !pdir.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&pdir).map_err(io(&pdir))? {
            let f = f.map_err(io(&pdir))?.path();
            if f.to_string_lossy().ends_with(".tar.gz") {
                let rel = format!(
                    "packages/{pname}/{}",
                    f.file_name()
                        .map(|n| n.to_string_lossy())
                        .unwrap_or_default()
                );
                out.push((rel, std::fs::read(&f).map_err(io(&f))?));
            }
        }
    }
    Ok(out)
}

/// Every regular file under `dir` (recursively), named `prefix/...`.
fn asset_files(dir: &Path, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, PublishError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(PublishError::Io(dir.display().to_string(), e)),
    };
    for e in entries {
        let e = e.map_err(io(dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        let kind = e.file_type().map_err(io(&path))?;
        if kind.is_dir() {
            out.extend(asset_files(&path, &format!("{prefix}/{name}"))?);
        } else if kind.is_file() {
            out.push((
                format!("{prefix}/{name}"),
                std::fs::read(&path).map_err(io(&path))?,
            ));
        }
    }
    Ok(out)
}

fn current_version<T: serde::de::DeserializeOwned>(
    path: &Path,
    version: impl Fn(&T) -> u64,
) -> u64 {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Signed<T>>(&b).ok())
        .map_or(0, |s| version(&s.signed))
}

fn load_root(repo: &Path) -> Result<Root, PublishError> {
    let path = repo.join("root.json");
    let bytes = std::fs::read(&path).map_err(io(&path))?;
    let signed: Signed<Root> = serde_json::from_slice(&bytes)
        .map_err(|e| PublishError::Invalid(format!("{}: {e}", path.display())))?;
    Ok(signed.signed)
}

fn role_key(root: &Root, keys: &Path, role: Role) -> Result<KeyPair, PublishError> {
    let path = keys.join(format!("{}.key", role.name()));
    let key = load_key(&path)?;
    if !root.roles.get(role).keyids.contains(&key.key_id()) {
        return Err(PublishError::Invalid(format!(
            "{} is not a {} key of this repository's root.json",
            path.display(),
            role.name()
        )));
    }
    Ok(key)
}

/// What a signing run produced.
#[derive(Debug, Clone)]
pub struct Signed3 {
    pub packages: usize,
    pub targets_version: u64,
    pub timestamp_version: u64,
}

/// Regenerates the index from the archives and signs targets, snapshot and timestamp, each
/// one version up from what is published.
pub fn sign_repo(
    repo: &Path,
    keys: &Path,
    expiry: Expiry,
    now: SystemTime,
) -> Result<Signed3, PublishError> {
    let root = load_root(repo)?;
    let (tk, sk) = (
        role_key(&root, keys, Role::Targets)?,
        role_key(&root, keys, Role::Snapshot)?,
    );
    let archives = archive_files(repo, None)?;
    let packages = parse_archives(&archives)?;
    let index = serde_json::json!({
        "packages": packages.iter().map(Package::to_value).collect::<Vec<_>>()
    });
    let index_bytes =
        serde_json::to_vec(&index).map_err(|e| PublishError::Invalid(e.to_string()))?;
    let mut files = BTreeMap::new();
    files.insert(INDEX_FILE.to_string(), TargetFile::of(&index_bytes));
    for (rel, bytes) in &archives {
        files.insert(rel.clone(), TargetFile::of(bytes));
    }
    // Files packages point at (`resource.json` assets) are targets too.
    for (rel, bytes) in asset_files(&repo.join("assets"), "assets")? {
        files.insert(rel, TargetFile::of(&bytes));
    }
    let tv = current_version::<Targets>(&repo.join("targets.json"), |t| t.version) + 1;
    let targets = sign(Targets::new(tv, now + expiry.targets, files), &[&tk])?.to_json_bytes()?;
    let sv = current_version::<Snapshot>(&repo.join("snapshot.json"), |s| s.version) + 1;
    let snapshot = sign(
        Snapshot::new(sv, now + expiry.snapshot, MetaFile::new(tv)),
        &[&sk],
    )?
    .to_json_bytes()?;
    write_atomic(&repo.join(INDEX_FILE), &index_bytes)?;
    write_atomic(&repo.join("targets.json"), &targets)?;
    write_atomic(&repo.join("snapshot.json"), &snapshot)?;
    let timestamp_version = sign_timestamp(repo, keys, &root, sv, &snapshot, expiry, now)?;
    Ok(Signed3 {
        packages: packages.len(),
        targets_version: tv,
        timestamp_version,
    })
}

fn sign_timestamp(
    repo: &Path,
    keys: &Path,
    root: &Root,
    snapshot_version: u64,
    snapshot: &[u8],
    expiry: Expiry,
    now: SystemTime,
) -> Result<u64, PublishError> {
    let key = role_key(root, keys, Role::Timestamp)?;
    let v = current_version::<Timestamp>(&repo.join("timestamp.json"), |t| t.version) + 1;
    let ts = sign(
        Timestamp::new(
            v,
            now + expiry.timestamp,
            MetaFile::of(snapshot_version, snapshot),
        ),
        &[&key],
    )?
    .to_json_bytes()?;
    write_atomic(&repo.join("timestamp.json"), &ts)?;
    Ok(v)
}

/// Re-signs only the timestamp over the published snapshot: the periodic job of the online
/// timestamp key, which keeps clients from seeing an expired repository.
pub fn refresh_timestamp(
    repo: &Path,
    keys: &Path,
    expiry: Expiry,
    now: SystemTime,
) -> Result<u64, PublishError> {
    let root = load_root(repo)?;
    let path = repo.join("snapshot.json");
    let snapshot = std::fs::read(&path).map_err(io(&path))?;
    let sv = current_version::<Snapshot>(&path, |s| s.version);
    sign_timestamp(repo, keys, &root, sv, &snapshot, expiry, now)
}

/// Publishes a new root (version + 1) with `new_root_keys` at `threshold`, signed by the old
/// root keys found in KEYS (`root-*.key`) and by the new ones: clients that trust the old root
/// accept it only if enough of the old keys signed.
pub fn rotate_root(
    repo: &Path,
    keys: &Path,
    new_root_keys: &[PathBuf],
    threshold: u32,
    expiry: Expiry,
    now: SystemTime,
) -> Result<u64, PublishError> {
    let old = load_root(repo)?;
    let mut signers = Vec::new();
    for entry in std::fs::read_dir(keys).map_err(io(keys))? {
        let p = entry.map_err(io(keys))?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("root-") && name.ends_with(".key") {
            let k = load_key(&p)?;
            if old.roles.root.keyids.contains(&k.key_id()) {
                signers.push(k);
            }
        }
    }
    let mut new_keys = Vec::new();
    for p in new_root_keys {
        new_keys.push(keygen(p)?);
    }
    let public: Vec<PublicKey> = new_keys.iter().map(KeyPair::public).collect();
    let keyset = |role: Role| -> Vec<PublicKey> {
        old.roles
            .get(role)
            .keyids
            .iter()
            .filter_map(|id| old.keys.get(id).cloned())
            .collect()
    };
    let v = old.version + 1;
    let root = Root::new(v, now + expiry.root)
        .with_role(Role::Root, &public, threshold)
        .with_role(
            Role::Targets,
            &keyset(Role::Targets),
            old.roles.targets.threshold,
        )
        .with_role(
            Role::Snapshot,
            &keyset(Role::Snapshot),
            old.roles.snapshot.threshold,
        )
        .with_role(
            Role::Timestamp,
            &keyset(Role::Timestamp),
            old.roles.timestamp.threshold,
        );
    let mut refs: Vec<&KeyPair> = signers.iter().collect();
    refs.extend(new_keys.iter());
    let bytes = sign(root, &refs)?.to_json_bytes()?;
    write_atomic(&repo.join(format!("{v}.root.json")), &bytes)?;
    write_atomic(&repo.join("root.json"), &bytes)?;
    Ok(v)
}
