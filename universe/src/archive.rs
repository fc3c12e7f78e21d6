//! Package archives: a `.tar.gz` of a package's Universe files. They are read into memory,
//! never extracted to disk, and everything a hostile archive could use to escape or exhaust
//! the reader is refused with a message naming the entry.

use flate2::{Compression, read::GzDecoder, write::GzEncoder};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path};
use std::rc::Rc;

/// Limits that no real Universe package comes near (the largest have a few hundred KiB of
/// JSON), so that a decompression bomb stops at a few MiB instead of filling memory.
pub const MAX_FILE_BYTES: u64 = 4 << 20;
pub const MAX_TOTAL_BYTES: u64 = 16 << 20;
pub const MAX_ENTRIES: usize = 512;

/// The files a package directory or archive may hold; anything else is ignored on packing.
pub const PACKAGE_FILES: &[&str] = &[
    "package.json",
    "config.json",
    "marathon.json.mustache",
    "resource.json",
    "command.json",
    "README.md",
];

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive entry {0:?}: absolute paths are not allowed")]
    Absolute(String),
    #[error("archive entry {0:?}: `..` leaves the package")]
    ParentDir(String),
    #[error("archive entry {0:?}: {1} entries are not allowed (only files and directories)")]
    EntryType(String, &'static str),
    #[error("archive entry {0:?} is larger than {MAX_FILE_BYTES} bytes (decompression bomb?)")]
    FileTooLarge(String),
    #[error("archive unpacks to more than {MAX_TOTAL_BYTES} bytes (decompression bomb?)")]
    TooLarge,
    #[error("archive has more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    #[error("archive entry {0:?} appears twice")]
    Duplicate(String),
    #[error("not a valid .tar.gz: {0}")]
    Corrupt(String),
    #[error("reading {0}: {1}")]
    Io(String, std::io::Error),
}

/// Reads a package archive into `path -> bytes`. A single top-level directory (as `tar czf
/// x.tar.gz hello-world/` makes) is stripped, so both layouts load the same.
pub fn read_tar_gz(bytes: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, ArchiveError> {
    // The total cap applies to the decompressed stream itself, so padding and headers count.
    let hit = Rc::new(Cell::new(false));
    let capped = Capped {
        inner: GzDecoder::new(bytes),
        left: MAX_TOTAL_BYTES,
        hit: hit.clone(),
    };
    let mut archive = tar::Archive::new(capped);
    let corrupt_or_bomb = |e: &std::io::Error| {
        // Hitting the cap ends the stream early, which tar reports as a truncated archive.
        if hit.get() {
            ArchiveError::TooLarge
        } else {
            ArchiveError::Corrupt(e.to_string())
        }
    };
    let mut files = BTreeMap::new();
    let mut total: u64 = 0;
    let entries = archive
        .entries()
        .map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
    for (n, entry) in entries.enumerate() {
        if n >= MAX_ENTRIES {
            return Err(ArchiveError::TooManyEntries);
        }
        let mut entry = entry.map_err(|e| corrupt_or_bomb(&e))?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = clean_path(&raw)?;
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Directory => continue,
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            tar::EntryType::Symlink => return Err(ArchiveError::EntryType(raw, "symlink")),
            tar::EntryType::Link => return Err(ArchiveError::EntryType(raw, "hard link")),
            // pax/GNU long-name headers are folded into the next entry by `tar`.
            tar::EntryType::XHeader | tar::EntryType::XGlobalHeader => continue,
            _ => return Err(ArchiveError::EntryType(raw, "special")),
        }
        let Some(name) = name else { continue };
        let mut data = Vec::new();
        (&mut entry)
            .take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut data)
            .map_err(|e| corrupt_or_bomb(&e))?;
        if data.len() as u64 > MAX_FILE_BYTES {
            return Err(ArchiveError::FileTooLarge(raw));
        }
        total += data.len() as u64;
        if total > MAX_TOTAL_BYTES {
            return Err(ArchiveError::TooLarge);
        }
        if files.insert(name, data).is_some() {
            return Err(ArchiveError::Duplicate(raw));
        }
    }
    Ok(strip_single_dir(files))
}

/// A reader that ends after `left` bytes and remembers that it did.
struct Capped<R> {
    inner: R,
    left: u64,
    hit: Rc<Cell<bool>>,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            // One probe byte tells a stream that ends exactly at the cap from a longer one.
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? > 0 {
                self.hit.set(true);
            }
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// `Some(relative path)` for a file inside the package, `None` for the root itself.
fn clean_path(raw: &str) -> Result<Option<String>, ArchiveError> {
    let mut parts = Vec::new();
    for c in Path::new(raw).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => return Err(ArchiveError::ParentDir(raw.to_string())),
            Component::RootDir | Component::Prefix(_) => {
                return Err(ArchiveError::Absolute(raw.to_string()));
            }
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

fn strip_single_dir(files: BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    let mut tops = files.keys().map(|k| k.split('/').next().unwrap_or(k));
    let Some(first) = tops.next().map(str::to_string) else {
        return files;
    };
    let nested = files.keys().all(|k| {
        k.strip_prefix(first.as_str())
            .is_some_and(|r| r.starts_with('/'))
    });
    if !nested {
        return files;
    }
    files
        .into_iter()
        .map(|(k, v)| (k[first.len() + 1..].to_string(), v))
        .collect()
}

/// Reads a package directory (the files of [`PACKAGE_FILES`] that exist). Symlinks are
/// refused here too: a package directory is what gets published.
pub fn read_dir(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>, ArchiveError> {
    let mut files = BTreeMap::new();
    for name in PACKAGE_FILES {
        let p = dir.join(name);
        let meta = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(ArchiveError::Io(p.display().to_string(), e)),
        };
        if meta.file_type().is_symlink() {
            return Err(ArchiveError::EntryType(p.display().to_string(), "symlink"));
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(ArchiveError::FileTooLarge(p.display().to_string()));
        }
        let data = std::fs::read(&p).map_err(|e| ArchiveError::Io(p.display().to_string(), e))?;
        files.insert((*name).to_string(), data);
    }
    Ok(files)
}

/// Packs files into a reproducible `.tar.gz` (sorted, mtime 0, mode 0644), so packing the
/// same package twice gives the same bytes and the same hash in the signed targets.
pub fn write_tar_gz(files: &BTreeMap<String, Vec<u8>>) -> Result<Vec<u8>, ArchiveError> {
    let io = |e| ArchiveError::Io("archive".into(), e);
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    for (name, data) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, name, data.as_slice())
            .map_err(io)?;
    }
    builder.into_inner().map_err(io)?.finish().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        for (name, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            // Written byte by byte so the builder's own path checks do not stop the
            // hostile names this test needs.
            let field = &mut h.as_old_mut().name;
            field[..name.len()].copy_from_slice(name.as_bytes());
            h.set_size(data.len() as u64);
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            if let Some(l) = link {
                h.set_link_name(l).expect("link");
            }
            h.set_cksum();
            b.append(&h, *data).expect("append");
        }
        b.into_inner().expect("tar").finish().expect("gz")
    }

    #[test]
    fn round_trip_is_reproducible() {
        let mut files = BTreeMap::new();
        files.insert("package.json".to_string(), b"{}".to_vec());
        files.insert("config.json".to_string(), b"{\"type\":\"object\"}".to_vec());
        let a = write_tar_gz(&files).expect("pack");
        let b = write_tar_gz(&files).expect("pack");
        assert_eq!(a, b);
        assert_eq!(read_tar_gz(&a).expect("read"), files);
    }

    #[test]
    fn a_single_top_directory_is_stripped() {
        let t = tar_with(&[
            ("hello/", tar::EntryType::Directory, b"", None),
            ("hello/package.json", tar::EntryType::Regular, b"{}", None),
        ]);
        let files = read_tar_gz(&t).expect("read");
        assert_eq!(files.keys().collect::<Vec<_>>(), vec!["package.json"]);
    }

    #[test]
    fn hostile_entries_are_refused() {
        let dotdot = tar_with(&[("../evil", tar::EntryType::Regular, b"x", None)]);
        assert!(matches!(
            read_tar_gz(&dotdot),
            Err(ArchiveError::ParentDir(_))
        ));
        let abs = tar_with(&[("/etc/passwd", tar::EntryType::Regular, b"x", None)]);
        assert!(matches!(read_tar_gz(&abs), Err(ArchiveError::Absolute(_))));
        let link = tar_with(&[(
            "package.json",
            tar::EntryType::Symlink,
            b"",
            Some("/etc/passwd"),
        )]);
        let err = read_tar_gz(&link).expect_err("symlink");
        assert!(err.to_string().contains("symlink"), "{err}");
        let hard = tar_with(&[("a", tar::EntryType::Link, b"", Some("../../x"))]);
        assert!(matches!(
            read_tar_gz(&hard),
            Err(ArchiveError::EntryType(_, "hard link"))
        ));
        let dev = tar_with(&[("dev", tar::EntryType::Char, b"", None)]);
        assert!(matches!(
            read_tar_gz(&dev),
            Err(ArchiveError::EntryType(_, "special"))
        ));
    }

    #[test]
    fn decompression_bombs_stop_at_the_limit() {
        // 64 MiB of zeros compresses to about 64 KiB.
        let zeros = vec![0u8; 64 << 20];
        let bomb = tar_with(&[("package.json", tar::EntryType::Regular, &zeros, None)]);
        assert!(bomb.len() < 1 << 20, "{}", bomb.len());
        let err = read_tar_gz(&bomb).expect_err("bomb");
        assert!(
            matches!(err, ArchiveError::FileTooLarge(_) | ArchiveError::TooLarge),
            "{err}"
        );
        let many: Vec<(String, Vec<u8>)> = (0..5)
            .map(|i| (format!("f{i}"), vec![0u8; 4 << 20]))
            .collect();
        let refs: Vec<_> = many
            .iter()
            .map(|(n, d)| (n.as_str(), tar::EntryType::Regular, d.as_slice(), None))
            .collect();
        let err = read_tar_gz(&tar_with(&refs)).expect_err("total");
        assert!(matches!(err, ArchiveError::TooLarge), "{err}");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(matches!(
            read_tar_gz(b"not gzip at all"),
            Err(ArchiveError::Corrupt(_))
        ));
    }
}
