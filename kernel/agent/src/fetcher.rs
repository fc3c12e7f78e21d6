//! The Mesos fetcher: a task's `CommandInfo.uris` (Marathon's `fetch`/`uris`) put into its
//! sandbox before it starts. Archives are extracted with the host's `tar` (and `unzip`), as
//! the Mesos fetcher does, so every compression the host knows works and GNU tar's refusal of
//! `..` and absolute member names applies.

use serde_json::Value;
use std::path::Path;
use tokio::io::AsyncWriteExt;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FetchUri {
    pub(crate) value: String,
    pub(crate) executable: bool,
    pub(crate) extract: bool,
    pub(crate) output_file: Option<String>,
}

const ARCHIVES: &[&str] = &[
    ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip",
];

/// Checks the URIs of a launch; the error becomes the task's TASK_ERROR message.
pub(crate) fn parse(uris: &[Value]) -> Result<Vec<FetchUri>, String> {
    let mut out = Vec::with_capacity(uris.len());
    for u in uris {
        let value = u
            .get("value")
            .and_then(Value::as_str)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| format!("a URI to fetch has no value: {u}"))?
            .to_string();
        if value.starts_with("https://") {
            return Err(format!(
                "cannot fetch {value}: this agent's fetcher speaks http:// and file:// \
                 (no TLS); mirror it over http:// or into a local path"
            ));
        }
        if !(value.starts_with("http://") || value.starts_with("file://") || value.starts_with('/'))
        {
            return Err(format!(
                "cannot fetch {value}: expected an http:// or file:// URI or an absolute path"
            ));
        }
        let output_file = match u.get("output_file") {
            None | Some(Value::Null) => None,
            // Not a path, and not the task's own log files.
            Some(Value::String(o))
                if !o.is_empty()
                    && !o.contains('/')
                    && ![".", "..", "stdout", "stderr"].contains(&o.as_str()) =>
            {
                Some(o.clone())
            }
            Some(o) => return Err(format!("output_file {o} must be a plain file name")),
        };
        let flag =
            |name: &str, default: bool| u.get(name).and_then(Value::as_bool).unwrap_or(default);
        out.push(FetchUri {
            value,
            executable: flag("executable", false),
            extract: flag("extract", true),
            output_file,
        });
    }
    Ok(out)
}

impl FetchUri {
    /// The file name in the sandbox: `output_file`, else the URI's last path segment.
    fn file_name(&self) -> String {
        if let Some(o) = &self.output_file {
            return o.clone();
        }
        let path = self
            .value
            .split(['?', '#'])
            .next()
            .unwrap_or("")
            .trim_end_matches('/');
        match path.rsplit('/').next() {
            Some(n) if !n.is_empty() && n != "." && n != ".." && !n.contains(':') => n.to_string(),
            _ => "download".to_string(),
        }
    }
}

/// The agent's one HTTP client for downloads (connections are reused across tasks).
pub(crate) fn http() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        // A server that stops sending is given up on; a slow but steady one is not.
        reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .read_timeout(std::time::Duration::from_secs(60))
            .build()
            .unwrap_or_default()
    })
}

/// Fetches every URI into `sandbox`, in order; the first failure stops the launch.
pub(crate) async fn fetch_all(
    uris: &[FetchUri],
    sandbox: &Path,
    http: &reqwest::Client,
) -> Result<(), String> {
    for u in uris {
        fetch_one(u, sandbox, http)
            .await
            .map_err(|e| format!("Failed to fetch {}: {e}", u.value))?;
    }
    Ok(())
}

async fn fetch_one(u: &FetchUri, sandbox: &Path, http: &reqwest::Client) -> Result<(), String> {
    let name = u.file_name();
    let dest = sandbox.join(&name);
    if u.value.starts_with("http://") {
        let mut resp = http.get(&u.value).send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        // Never through a symlink an earlier archive may have left in the sandbox.
        let mut f = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&dest)
            .await
            .map_err(|e| format!("{}: {e}", dest.display()))?;
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            f.write_all(&chunk)
                .await
                .map_err(|e| format!("{}: {e}", dest.display()))?;
        }
        f.flush().await.map_err(|e| e.to_string())?;
    } else {
        let src = u.value.strip_prefix("file://").unwrap_or(&u.value);
        if tokio::fs::symlink_metadata(&dest)
            .await
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            return Err(format!(
                "{name} in the sandbox is a symlink; not writing through it"
            ));
        }
        tokio::fs::copy(src, &dest)
            .await
            .map_err(|e| format!("{src}: {e}"))?;
    }
    if u.executable {
        use std::os::unix::fs::PermissionsExt;
        tokio::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))
            .await
            .map_err(|e| e.to_string())?;
        return Ok(());
    }
    let lower = name.to_ascii_lowercase();
    if u.extract && ARCHIVES.iter().any(|a| lower.ends_with(a)) {
        let mut cmd = if lower.ends_with(".zip") {
            let mut c = tokio::process::Command::new("unzip");
            c.kill_on_drop(true);
            c.arg("-o").arg("-q").arg("-d").arg(sandbox).arg(&dest);
            c
        } else {
            let mut c = tokio::process::Command::new("tar");
            c.kill_on_drop(true);
            c.arg("-C").arg(sandbox).arg("-xf").arg(&dest);
            c
        };
        let out = cmd
            .output()
            .await
            .map_err(|e| format!("cannot run the extractor: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "extracting {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn uris_parse_with_mesos_defaults() {
        let u = parse(&[
            json!({"value": "http://h/a/jre.tar.gz?x=1"}),
            json!({"value": "/opt/bin/tool", "executable": true, "output_file": "t"}),
        ])
        .expect("valid");
        assert!(u[0].extract && !u[0].executable);
        assert_eq!(u[0].file_name(), "jre.tar.gz");
        assert_eq!(u[1].file_name(), "t");
        for bad in [
            json!({"value": ""}),
            json!({"executable": true}),
            json!({"value": "ftp://h/x"}),
            json!({"value": "https://h/x"}),
            json!({"value": "http://h/x", "output_file": "../x"}),
            json!({"value": "http://h/x", "output_file": "stdout"}),
            json!({"value": "http://h/x", "output_file": "."}),
        ] {
            assert!(parse(std::slice::from_ref(&bad)).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn files_are_copied_extracted_and_made_executable() {
        let dir = std::env::temp_dir().join(format!("basalt-fetch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (src, sandbox) = (dir.join("src"), dir.join("sb"));
        std::fs::create_dir_all(src.join("pkg")).expect("dirs");
        std::fs::create_dir_all(&sandbox).expect("dirs");
        std::fs::write(src.join("pkg/hello.txt"), "hi").expect("write");
        std::fs::write(src.join("tool.sh"), "#!/bin/sh\necho ok\n").expect("write");
        let st = std::process::Command::new("tar")
            .arg("-C")
            .arg(&src)
            .arg("-czf")
            .arg(src.join("pkg.tgz"))
            .arg("pkg")
            .status()
            .expect("tar");
        assert!(st.success());
        let uris = parse(&[
            json!({"value": format!("file://{}", src.join("pkg.tgz").display())}),
            json!({"value": src.join("tool.sh").display().to_string(), "executable": true}),
        ])
        .expect("valid");
        fetch_all(&uris, &sandbox, &reqwest::Client::new())
            .await
            .expect("fetched");
        assert_eq!(
            std::fs::read_to_string(sandbox.join("pkg/hello.txt")).expect("extracted"),
            "hi"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(sandbox.join("tool.sh"))
            .expect("copied")
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111);
        let missing = parse(&[json!({"value": "/nonexistent/x"})]).expect("valid");
        let err = fetch_all(&missing, &sandbox, &reqwest::Client::new())
            .await
            .expect_err("missing");
        assert!(err.contains("/nonexistent/x"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
