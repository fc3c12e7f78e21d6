//! The Mesos `/files` API over sandboxes: browse, read (with Mesos offset semantics) and
//! download. Only paths that resolve inside the work dir's sandboxes are served.

use basalt_api::state::{FileChunk, FileEntry};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Largest `/files/read` answer, in bytes.
pub(crate) const MAX_READ: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub(crate) enum FilesError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0} is outside the agent's sandboxes")]
    Forbidden(String),
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Resolves `requested` (absolute, or relative to the sandboxes root) with symlinks
/// followed, and refuses anything that ends up outside `root`. Blocking.
pub(crate) fn resolve(root: &Path, requested: &str) -> Result<PathBuf, FilesError> {
    if requested.trim().is_empty() {
        return Err(FilesError::BadRequest(
            "the 'path' parameter is required".into(),
        ));
    }
    let root = root
        .canonicalize()
        .map_err(|_| FilesError::NotFound(root.display().to_string()))?;
    let joined = root.join(requested);
    let resolved = joined.canonicalize().map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => FilesError::NotFound(requested.to_owned()),
        _ => FilesError::Io {
            path: requested.to_owned(),
            source: e,
        },
    })?;
    if !resolved.starts_with(&root) {
        return Err(FilesError::Forbidden(requested.to_owned()));
    }
    Ok(resolved)
}

fn mode_string(m: &std::fs::Metadata) -> String {
    let mode = m.mode();
    let kind = if m.is_dir() {
        'd'
    } else if m.file_type().is_symlink() {
        'l'
    } else {
        '-'
    };
    let mut s = String::with_capacity(10);
    s.push(kind);
    for shift in [6u32, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// Lists a sandbox directory. Blocking.
pub(crate) fn browse(root: &Path, requested: &str) -> Result<Vec<FileEntry>, FilesError> {
    let dir = resolve(root, requested)?;
    let io_err = |e| FilesError::Io {
        path: requested.to_owned(),
        source: e,
    };
    if !dir.is_dir() {
        return Err(FilesError::BadRequest(format!(
            "{requested} is not a directory"
        )));
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let Ok(m) = entry.metadata() else { continue };
        out.push(FileEntry {
            path: entry.path().display().to_string(),
            nlink: m.nlink(),
            size: m.size(),
            mtime: m.mtime() as f64,
            mode: mode_string(&m),
            uid: m.uid().to_string(),
            gid: m.gid().to_string(),
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Mesos `/files/read`: `offset = -1` answers only the size; `length` defaults to the rest
/// of the file, both capped at `MAX_READ`. Blocking.
pub(crate) fn read(
    root: &Path,
    requested: &str,
    offset: i64,
    length: Option<i64>,
) -> Result<FileChunk, FilesError> {
    if offset < -1 {
        return Err(FilesError::BadRequest(format!(
            "offset {offset} is negative"
        )));
    }
    if length.is_some_and(|l| l < -1) {
        return Err(FilesError::BadRequest("length must not be negative".into()));
    }
    let path = resolve(root, requested)?;
    let io_err = |e| FilesError::Io {
        path: requested.to_owned(),
        source: e,
    };
    let mut file = std::fs::File::open(&path).map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    if meta.is_dir() {
        return Err(FilesError::BadRequest(format!(
            "{requested} is a directory"
        )));
    }
    let size = meta.len();
    if offset == -1 {
        return Ok(FileChunk {
            data: String::new(),
            offset: size,
        });
    }
    let offset = offset as u64;
    let want = match length {
        Some(l) if l >= 0 => (l as u64).min(MAX_READ),
        _ => MAX_READ,
    };
    let n = size.saturating_sub(offset).min(want);
    let mut buf = vec![0u8; n as usize];
    if n > 0 {
        use std::io::{Read, Seek, SeekFrom};
        file.seek(SeekFrom::Start(offset)).map_err(io_err)?;
        let mut got = 0;
        while got < buf.len() {
            match file.read(&mut buf[got..]).map_err(io_err)? {
                0 => break,
                k => got += k,
            }
        }
        buf.truncate(got);
    }
    Ok(FileChunk {
        data: String::from_utf8_lossy(&buf).into_owned(),
        offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandboxes() -> (PathBuf, PathBuf) {
        let base = std::env::temp_dir().join(format!("basalt-files-{}", uuid::Uuid::new_v4()));
        let root = base.join("slaves");
        std::fs::create_dir_all(root.join("a/runs/r1")).expect("dirs");
        std::fs::write(root.join("a/runs/r1/stdout"), "hello world").expect("file");
        std::fs::write(base.join("secret"), "no").expect("file");
        (base, root)
    }

    #[test]
    fn escapes_by_dotdot_or_symlink_are_refused() {
        let (base, root) = sandboxes();
        assert!(matches!(
            resolve(&root, "a/../../secret"),
            Err(FilesError::Forbidden(_))
        ));
        let abs = base.join("secret").display().to_string();
        assert!(matches!(
            resolve(&root, &abs),
            Err(FilesError::Forbidden(_))
        ));
        std::os::unix::fs::symlink(base.join("secret"), root.join("a/runs/r1/link"))
            .expect("symlink");
        assert!(matches!(
            resolve(&root, "a/runs/r1/link"),
            Err(FilesError::Forbidden(_))
        ));
        assert!(matches!(
            resolve(&root, "a/nope"),
            Err(FilesError::NotFound(_))
        ));
        assert!(resolve(&root, &root.join("a/runs/r1/stdout").display().to_string()).is_ok());
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn reads_follow_mesos_offsets() {
        let (base, root) = sandboxes();
        let p = root.join("a/runs/r1/stdout").display().to_string();
        assert_eq!(read(&root, &p, -1, None).expect("size").offset, 11);
        let c = read(&root, &p, 6, None).expect("tail");
        assert_eq!((c.data.as_str(), c.offset), ("world", 6));
        assert_eq!(read(&root, &p, 0, Some(5)).expect("head").data, "hello");
        assert_eq!(read(&root, &p, 100, None).expect("past the end").data, "");
        assert!(matches!(
            read(&root, &p, -2, None),
            Err(FilesError::BadRequest(_))
        ));
        assert!(matches!(
            read(&root, &root.display().to_string(), 0, None),
            Err(FilesError::BadRequest(_))
        ));
        let listed = browse(&root, "a/runs/r1").expect("listing");
        assert_eq!(listed.len(), 1);
        assert!(listed[0].mode.starts_with("-rw"));
        let _ = std::fs::remove_dir_all(&base);
    }
}
