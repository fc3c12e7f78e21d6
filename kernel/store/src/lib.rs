//! Basalt's cluster store: a small key-value interface with atomic batches, and the
//! embedded implementation on redb (a ZooKeeper implementation comes with HA).
//!
//! Owns: durability of whatever bytes components hand it, under keys they choose.
//! Never: interprets its values, or returns before a committed write is on disk.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open the store at {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("store I/O failed: {0}")]
    Io(String),
}

/// One change in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Put(String, Vec<u8>),
    Delete(String),
}

/// A durable key-value store. Calls block: run them off the async runtime.
pub trait Store: Send + Sync + 'static {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error>;
    /// Every key starting with `prefix`, in key order.
    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, Error>;
    /// Applies `writes` atomically and durably.
    fn apply(&self, writes: &[Write]) -> Result<(), Error>;
}

const TABLE: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("kv");

/// The embedded store: one redb file, every commit fsynced.
pub struct Embedded {
    db: redb::Database,
}

fn io<E: std::fmt::Display>(e: E) -> Error {
    Error::Io(e.to_string())
}

impl Embedded {
    pub fn open(path: &Path) -> Result<Self, Error> {
        let open_err = |e: &dyn std::fmt::Display| Error::Open {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| open_err(&e))?;
        }
        let db = redb::Database::create(path).map_err(|e| open_err(&e))?;
        // Create the table so reads on a fresh store see an empty one rather than an error.
        let tx = db.begin_write().map_err(|e| open_err(&e))?;
        tx.open_table(TABLE).map_err(|e| open_err(&e))?;
        tx.commit().map_err(|e| open_err(&e))?;
        Ok(Self { db })
    }
}

impl Store for Embedded {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read().map_err(io)?;
        let t = tx.open_table(TABLE).map_err(io)?;
        Ok(t.get(key).map_err(io)?.map(|v| v.value().to_vec()))
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, Error> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read().map_err(io)?;
        let t = tx.open_table(TABLE).map_err(io)?;
        let mut out = Vec::new();
        for item in t.range(prefix..).map_err(io)? {
            let (k, v) = item.map_err(io)?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn apply(&self, writes: &[Write]) -> Result<(), Error> {
        if writes.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write().map_err(io)?;
        {
            let mut t = tx.open_table(TABLE).map_err(io)?;
            for w in writes {
                match w {
                    Write::Put(k, v) => {
                        t.insert(k.as_str(), v.as_slice()).map_err(io)?;
                    }
                    Write::Delete(k) => {
                        t.remove(k.as_str()).map_err(io)?;
                    }
                }
            }
        }
        tx.commit().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("basalt-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d.join("store.redb")
    }

    #[test]
    fn batches_survive_reopen_and_prefix_lists_are_ordered() {
        let p = temp("reopen");
        {
            let s = Embedded::open(&p).expect("open");
            s.apply(&[
                Write::Put("a/2".into(), b"two".to_vec()),
                Write::Put("a/1".into(), b"one".to_vec()),
                Write::Put("b/1".into(), b"other".to_vec()),
            ])
            .expect("apply");
            s.apply(&[Write::Delete("a/2".into())]).expect("delete");
        }
        let s = Embedded::open(&p).expect("reopen");
        let l = s.list("a/").expect("list");
        assert_eq!(l, vec![("a/1".to_owned(), b"one".to_vec())]);
        assert_eq!(s.get("b/1").expect("get"), Some(b"other".to_vec()));
        assert_eq!(s.get("zzz").expect("get"), None);
    }
}
