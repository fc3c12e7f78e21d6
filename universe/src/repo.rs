//! Reading a repository: its index (the Universe repository JSON) and, for signed
//! repositories, the TUF metadata beside it that the index and every archive must match.
//!
//! A repository URI names its index (`http://host/path/repo.json`, as Cosmos' names
//! `https://universe.mesosphere.com/repo`); the metadata files (`1.root.json`,
//! `timestamp.json`, `snapshot.json`, `targets.json`) and archives
//! (`packages/<name>/<releaseVersion>.tar.gz`) live in the same directory.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::{Duration, SystemTime};

use crate::archive::{self, ArchiveError};
use crate::package::{Package, PackageError, REPO_MEDIA_V5};
use crate::tuf::{PublicKey, Targets, Trust, TufError, refresh};

/// Metadata files are small; a server that sends more is hostile or broken.
pub const MAX_META_BYTES: u64 = 32 << 20;
/// An index of 10,000 packages is about 20 MiB.
pub const MAX_INDEX_BYTES: u64 = 256 << 20;

/// One configured repository, as persisted.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepoSpec {
    pub name: String,
    pub uri: String,
    /// The operator's explicit choice to use this repository without verification.
    #[serde(default)]
    pub allow_unsigned: bool,
    /// The repository's root key the operator pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_key: Option<PublicKey>,
    /// What was verified last time: the root in force and the versions seen, so an older
    /// snapshot or a frozen timestamp is caught.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<Trust>,
}

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(
        "repository {name:?} ({uri}) is not trusted: pin its root key \
         (basalt package repo add {name} {uri} --root-key FILE), or accept it unverified \
         with --allow-unsigned (for clients without that flag, such as `dcos package repo \
         add`, start the universe with --universe-allow-unsigned)"
    )]
    Untrusted { name: String, uri: String },
    #[error("repository {name:?}: {source}")]
    Verify { name: String, source: TufError },
    #[error("repository {name:?}: {uri}: {reason}")]
    Fetch {
        name: String,
        uri: String,
        reason: String,
    },
    #[error("repository {name:?}: the index is not a Universe repository: {reason}")]
    BadIndex { name: String, reason: String },
    #[error("repository {name:?}: archive {file}: {source}")]
    Archive {
        name: String,
        file: String,
        source: ArchiveError,
    },
    #[error("repository {name:?}: archive {file}: {source}")]
    ArchivePackage {
        name: String,
        file: String,
        source: PackageError,
    },
    #[error("repository {name:?}: archive {file} does not match the index entry of {package}")]
    ArchiveMismatch {
        name: String,
        file: String,
        package: String,
    },
    #[error("{0:?} is not an http:// or file:// URI")]
    BadUri(String),
    #[error(
        "{0}: https:// repositories are not supported yet; mirror it over http:// \
         (its signatures, not the transport, are what make a repository trustworthy)"
    )]
    Https(String),
}

/// A repository's verified content.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub packages: Vec<Package>,
    /// Present for signed repositories: what every archive must match.
    pub targets: Option<Targets>,
    /// The trust to persist after this load.
    pub trust: Option<Trust>,
    /// Entries of an unsigned index that were skipped, with why.
    pub skipped: Vec<String>,
}

/// Fetches repository files over HTTP or from a `file://` directory.
#[derive(Clone)]
pub struct Fetcher {
    http: reqwest::Client,
}

impl Default for Fetcher {
    fn default() -> Self {
        Fetcher::new()
    }
}

impl Fetcher {
    pub fn new() -> Fetcher {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        Fetcher { http }
    }

    /// `Ok(None)` when the file does not exist. Stops reading after `max + 1` bytes so the
    /// caller can tell "too long" without holding more.
    pub async fn get(&self, url: &str, max: u64) -> Result<Option<Vec<u8>>, String> {
        if let Some(path) = url.strip_prefix("file://") {
            return match tokio::fs::File::open(path).await {
                Ok(f) => {
                    use tokio::io::AsyncReadExt;
                    let mut buf = Vec::new();
                    f.take(max + 1)
                        .read_to_end(&mut buf)
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(Some(buf))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e.to_string()),
            };
        }
        let mut resp = self
            .http
            .get(url)
            .header(
                "Accept",
                format!(
                    "{REPO_MEDIA_V5},{},{},application/json;q=0.5",
                    REPO_MEDIA_V5.replace("v5", "v4"),
                    REPO_MEDIA_V5.replace("v5", "v3")
                ),
            )
            .header("User-Agent", "basalt-universe dcos/2.2")
            .send()
            .await
            .map_err(|e| format!("cannot fetch: {e}"))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        let mut buf = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            buf.extend_from_slice(&chunk);
            if buf.len() as u64 > max {
                break;
            }
        }
        Ok(Some(buf))
    }
}

/// The directory of a repository URI (where its metadata lives) and its index file name.
pub fn split_uri(uri: &str) -> Result<(String, String), RepoError> {
    // The HTTP client is built without TLS: turning it on for every client in the process
    // would need a crypto provider installed before each one, or aws-lc's C build.
    if uri.starts_with("https://") {
        return Err(RepoError::Https(uri.to_string()));
    }
    let ok = ["http://", "file://"].iter().any(|p| uri.starts_with(p));
    let cut = uri.rfind('/').filter(|i| *i + 1 < uri.len());
    match (ok, cut) {
        (true, Some(i)) if i > uri.find("://").unwrap_or(0) + 2 => {
            Ok((uri[..=i].to_string(), uri[i + 1..].to_string()))
        }
        _ => Err(RepoError::BadUri(uri.to_string())),
    }
}

impl RepoSpec {
    /// Fetches and verifies the repository. Nothing is trusted (nor returned) unless the
    /// whole chain checks out; the caller persists `Loaded::trust` only then.
    pub async fn load(&self, f: &Fetcher, now: SystemTime) -> Result<Loaded, RepoError> {
        let (base, index_name) = split_uri(&self.uri)?;
        let fetch_err = |reason: String| RepoError::Fetch {
            name: self.name.clone(),
            uri: self.uri.clone(),
            reason,
        };
        let verify_err = |source| RepoError::Verify {
            name: self.name.clone(),
            source,
        };
        let trust = match (&self.trust, &self.root_key) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(key)) => {
                let url = format!("{base}1.root.json");
                let root = f
                    .get(&url, MAX_META_BYTES)
                    .await
                    .map_err(fetch_err)?
                    .ok_or_else(|| RepoError::Fetch {
                        name: self.name.clone(),
                        uri: url.clone(),
                        reason: "not found: the repository is not signed (no 1.root.json)".into(),
                    })?;
                Some(Trust::from_pinned_key(key, &root, now).map_err(verify_err)?)
            }
            (None, None) if self.allow_unsigned => None,
            (None, None) => {
                return Err(RepoError::Untrusted {
                    name: self.name.clone(),
                    uri: self.uri.clone(),
                });
            }
        };
        let (targets, trust) = match trust {
            Some(t) => {
                // Each fetch owns its inputs, so the future is Send for the HTTP handlers.
                let verified = refresh(&t, now, MAX_META_BYTES, |name: &str, max: u64| {
                    let (f, url) = (f.clone(), format!("{base}{name}"));
                    async move { f.get(&url, max).await }
                })
                .await
                .map_err(verify_err)?;
                (Some(verified.targets), Some(verified.trust))
            }
            None => (None, None),
        };
        let max = targets
            .as_ref()
            .and_then(|t| t.get(&index_name))
            .map_or(MAX_INDEX_BYTES, |t| t.length);
        let index = f
            .get(&self.uri, max)
            .await
            .map_err(fetch_err)?
            .ok_or_else(|| fetch_err("the index was not found (404)".into()))?;
        if let Some(t) = &targets {
            t.verify(&index_name, &index).map_err(verify_err)?;
        } else if index.len() as u64 > MAX_INDEX_BYTES {
            return Err(fetch_err(format!(
                "the index is over {MAX_INDEX_BYTES} bytes"
            )));
        }
        let (packages, skipped) =
            parse_index(&index, targets.is_some()).map_err(|reason| RepoError::BadIndex {
                name: self.name.clone(),
                reason,
            })?;
        Ok(Loaded {
            packages,
            targets,
            trust,
            skipped,
        })
    }

    /// A package's archive, checked against the signed targets and against the index entry
    /// it must equal. Only signed repositories carry archives.
    pub async fn load_archive(
        &self,
        f: &Fetcher,
        targets: &Targets,
        indexed: &Package,
    ) -> Result<Package, RepoError> {
        let (base, _) = split_uri(&self.uri)?;
        let file = archive_path(indexed.name(), indexed.release_version());
        let Some(target) = targets.get(&file) else {
            // A signed index without archives is still whole: the index hash covers it.
            return Ok(indexed.clone());
        };
        let bytes = f
            .get(&format!("{base}{file}"), target.length)
            .await
            .map_err(|reason| RepoError::Fetch {
                name: self.name.clone(),
                uri: format!("{base}{file}"),
                reason,
            })?
            .ok_or_else(|| RepoError::Fetch {
                name: self.name.clone(),
                uri: format!("{base}{file}"),
                reason: "not found (404)".into(),
            })?;
        targets
            .verify(&file, &bytes)
            .map_err(|source| RepoError::Verify {
                name: self.name.clone(),
                source,
            })?;
        let files = archive::read_tar_gz(&bytes).map_err(|source| RepoError::Archive {
            name: self.name.clone(),
            file: file.clone(),
            source,
        })?;
        let pkg = Package::from_files(&files, indexed.release_version()).map_err(|source| {
            RepoError::ArchivePackage {
                name: self.name.clone(),
                file: file.clone(),
                source,
            }
        })?;
        if pkg != *indexed {
            return Err(RepoError::ArchiveMismatch {
                name: self.name.clone(),
                file,
                package: indexed.name().to_string(),
            });
        }
        Ok(pkg)
    }
}

pub fn archive_path(name: &str, release_version: u64) -> String {
    format!("packages/{name}/{release_version}.tar.gz")
}

/// Parses `{"packages": [...]}`. In a signed index every entry must be valid (the publisher
/// vouched for all of it); an unsigned third-party index may carry shapes we do not run,
/// which are skipped and reported rather than failing the whole repository.
pub fn parse_index(bytes: &[u8], strict: bool) -> Result<(Vec<Package>, Vec<String>), String> {
    #[derive(serde::Deserialize)]
    struct Index {
        packages: Vec<Value>,
    }
    let index: Index = serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => format!("no \"packages\" list: {e}"),
        _ => format!("not JSON: {e}"),
    })?;
    let mut out = Vec::with_capacity(index.packages.len());
    let mut skipped = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, entry) in index.packages.into_iter().enumerate() {
        let label = entry
            .get("name")
            .and_then(Value::as_str)
            .map_or(format!("entry {i}"), str::to_string);
        match Package::from_index(entry) {
            Ok(p) => {
                if !seen.insert((p.name().to_string(), p.version().to_string())) {
                    let msg = format!("{label} {} appears twice", p.version());
                    if strict {
                        return Err(msg);
                    }
                    skipped.push(msg);
                    continue;
                }
                out.push(p);
            }
            Err(e) if strict => return Err(format!("{label}: {e}")),
            Err(e) => skipped.push(format!("{label}: {e}")),
        }
    }
    Ok((out, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_split_into_directory_and_index() {
        assert_eq!(
            split_uri("http://h:1/a/repo.json").expect("ok"),
            ("http://h:1/a/".to_string(), "repo.json".to_string())
        );
        assert_eq!(
            split_uri("http://universe.example/repo").expect("ok"),
            ("http://universe.example/".to_string(), "repo".to_string())
        );
        assert!(matches!(
            split_uri("https://universe.mesosphere.com/repo"),
            Err(RepoError::Https(_))
        ));
        assert_eq!(
            split_uri("file:///srv/r/repo.json").expect("ok").0,
            "file:///srv/r/"
        );
        for bad in ["ftp://h/x", "http://h/", "http://host", "repo.json"] {
            assert!(split_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unsigned_indexes_skip_what_they_cannot_run() {
        let idx = br#"{"packages":[
            {"packagingVersion":"4.0","name":"ab","version":"1","maintainer":"m","description":"d","tags":[],"releaseVersion":0},
            {"packagingVersion":"4.0","name":"BAD","version":"1","maintainer":"m","description":"d","tags":[],"releaseVersion":0}]}"#;
        let (p, skipped) = parse_index(idx, false).expect("parses");
        assert_eq!(p.len(), 1);
        assert!(skipped[0].contains("BAD"), "{skipped:?}");
        assert!(parse_index(idx, true).expect_err("strict").contains("BAD"));
        assert!(parse_index(b"{}", false).is_err());
        assert!(parse_index(b"nope", false).is_err());
    }
}
