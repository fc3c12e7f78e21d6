//! Signed repository metadata for the package universe, after The Update
//! Framework (TUF) 1.0, simplified: ed25519 keys only, no delegations, no
//! consistent snapshots.
//!
//! A repository publishes `N.root.json` for every root version, plus
//! `timestamp.json`, `snapshot.json` and `targets.json`. A client pins one
//! root key on first contact ([`Trust::from_pinned_key`]) and then calls
//! [`refresh`], which walks the root chain and verifies the other three roles;
//! [`Targets::verify`] checks each downloaded file against the result.
//!
//! Time is always passed in (`now`) so that callers and tests control it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The spec version written into new metadata.
pub const SPEC_VERSION: &str = "1.0";

/// A long-offline client may have many roots to walk, but a bound keeps a
/// server holding old root keys from keeping a refresh busy forever; the next
/// refresh continues where this one stopped.
pub const MAX_ROOT_ROTATIONS: u64 = 1024;

const ED25519: &str = "ed25519";

#[derive(Debug, thiserror::Error)]
pub enum TufError {
    #[error("fetching {file} failed: {message}")]
    Fetch { file: String, message: String },
    #[error("{file} is missing on the server")]
    Missing { file: String },
    #[error("{file} is larger than the {limit}-byte limit")]
    TooLarge { file: String, limit: u64 },
    #[error("malformed {file}: {reason}")]
    Malformed { file: String, reason: String },
    #[error("{file} has _type {found:?}, expected {expected:?} (wrong file served?)")]
    WrongType {
        file: String,
        expected: String,
        found: String,
    },
    #[error("{file} has spec_version {spec_version:?}; only 1.x is supported")]
    UnsupportedSpecVersion { file: String, spec_version: String },
    #[error("{file} has an unreadable expiry time {value:?} (want e.g. 2027-01-01T00:00:00Z)")]
    BadExpiry { file: String, value: String },
    #[error("{file} expired at {expires}")]
    Expired { file: String, expires: String },
    #[error("{file}: no signatures from trusted keys (the {role} keys of {authority})")]
    NoTrustedSignatures {
        file: String,
        role: Role,
        authority: String,
    },
    #[error("{file}: the signature by {role} key {keyid} does not verify (tampered?)")]
    InvalidSignature {
        file: String,
        role: Role,
        keyid: String,
    },
    #[error(
        "{file} version {version} has {valid} valid {} of the {required} that {authority} requires",
        signature_word(.valid)
    )]
    ThresholdNotMet {
        file: String,
        version: u64,
        valid: usize,
        required: u32,
        authority: String,
    },
    #[error("{file} is not signed by the pinned key {keyid}")]
    NotSignedByPinnedKey { file: String, keyid: String },
    #[error("the pinned key {keyid} is not one of the root keys in {file}")]
    PinnedKeyNotInRoot { file: String, keyid: String },
    #[error("{file} version {version} is older than version {seen} seen before (rollback?)")]
    Rollback {
        file: String,
        version: u64,
        seen: u64,
    },
    #[error("{file} has version {found}, but {by} says {expected}")]
    VersionMismatch {
        file: String,
        found: u64,
        expected: u64,
        by: String,
    },
    #[error("{file} does not list {entry}")]
    MissingMeta { file: String, entry: String },
    #[error("{file} is {actual} bytes, {by} says {expected}")]
    LengthMismatch {
        file: String,
        actual: u64,
        expected: u64,
        by: String,
    },
    #[error("{file} sha256 mismatch (tampered?)")]
    HashMismatch { file: String },
    #[error("{name} is not listed in targets.json")]
    NotATarget { name: String },
    #[error("unknown key type {keytype:?} with scheme {scheme:?}; only ed25519 is supported")]
    UnknownKeyType { keytype: String, scheme: String },
    #[error("invalid ed25519 key: {reason}")]
    InvalidKey { reason: String },
    #[error("{file}: key {keyid} is unusable: {reason}")]
    RootKey {
        file: String,
        keyid: String,
        reason: String,
    },
    #[error("{file}: key {keyid} is listed under an id that is not the sha256 of the key")]
    KeyIdMismatch { file: String, keyid: String },
    #[error("{file}: role {role} has threshold 0; it must be at least 1")]
    ZeroThreshold { file: String, role: Role },
    #[error("{file}: role {role} needs {threshold} signatures but lists only {keys} keys")]
    UnreachableThreshold {
        file: String,
        role: Role,
        threshold: u32,
        keys: usize,
    },
    #[error("{file}: role {role} lists key {keyid}, which is not in keys")]
    UnknownRoleKey {
        file: String,
        role: Role,
        keyid: String,
    },
    #[error("the key file has no private key (is it a public key file?)")]
    NotAPrivateKey,
    #[error("the key file's public key does not belong to its private key")]
    KeyMismatch,
    #[error("cannot generate a key: no system randomness: {reason}")]
    Random { reason: String },
    #[error("cannot serialize metadata: {reason}")]
    Serialize { reason: String },
}

fn signature_word(n: &usize) -> &'static str {
    if *n == 1 { "signature" } else { "signatures" }
}

/// The four top-level roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Root,
    Targets,
    Snapshot,
    Timestamp,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Root => "root",
            Role::Targets => "targets",
            Role::Snapshot => "snapshot",
            Role::Timestamp => "timestamp",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// ---------------------------------------------------------------------------
// Canonical JSON and hashing

/// Canonical JSON: object keys sorted bytewise, no whitespace, strings escaped
/// as serde_json escapes them. Written by hand so that signatures do not
/// change if another crate turns on serde_json's `preserve_order`.
pub fn canonical_json(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write_canonical(value, out);
            }
            out.push(b'}');
        }
    }
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x00..=0x1f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            // Multi-byte UTF-8 passes through unchanged, as serde_json does.
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

// ---------------------------------------------------------------------------
// Keys

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyVal {
    pub public: String,
}

/// An ed25519 public key as it appears in root.json and in public key files.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PublicKey {
    pub keytype: String,
    pub scheme: String,
    pub keyval: KeyVal,
}

/// Both public and private key files parse into this; extra fields are
/// ignored so a private key file can serve as a public one.
#[derive(Deserialize)]
struct KeyFile {
    keytype: String,
    scheme: String,
    keyval: KeyFileVal,
}

#[derive(Deserialize)]
struct KeyFileVal {
    public: String,
    #[serde(default)]
    private: Option<String>,
}

const KEY_FILE: &str = "key file";

fn parse_key_file(bytes: &[u8]) -> Result<KeyFile, TufError> {
    let file: KeyFile = serde_json::from_slice(bytes).map_err(|e| malformed(KEY_FILE, e))?;
    check_key_type(&file.keytype, &file.scheme)?;
    Ok(file)
}

fn check_key_type(keytype: &str, scheme: &str) -> Result<(), TufError> {
    if keytype == ED25519 && scheme == ED25519 {
        Ok(())
    } else {
        Err(TufError::UnknownKeyType {
            keytype: keytype.to_owned(),
            scheme: scheme.to_owned(),
        })
    }
}

fn decode_32(hex_str: &str, what: &str) -> Result<[u8; 32], TufError> {
    let bytes = hex::decode(hex_str).map_err(|e| TufError::InvalidKey {
        reason: format!("{what} is not hex: {e}"),
    })?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| TufError::InvalidKey {
        reason: format!("{what} is {} bytes, expected 32", bytes.len()),
    })
}

impl PublicKey {
    pub fn ed25519(public: &[u8; 32]) -> PublicKey {
        PublicKey {
            keytype: ED25519.to_owned(),
            scheme: ED25519.to_owned(),
            keyval: KeyVal {
                public: hex::encode(public),
            },
        }
    }

    /// Hex sha256 of the key's canonical JSON, as TUF defines key ids.
    pub fn key_id(&self) -> String {
        let value = serde_json::json!({
            "keytype": self.keytype,
            "scheme": self.scheme,
            "keyval": { "public": self.keyval.public },
        });
        sha256_hex(&canonical_json(&value))
    }

    /// Reads a public key file, or a private key file of which only the
    /// public half is kept, so an operator can pin with either.
    pub fn from_json(bytes: &[u8]) -> Result<PublicKey, TufError> {
        let file = parse_key_file(bytes)?;
        let public = decode_32(&file.keyval.public, "public key")?;
        let key = PublicKey::ed25519(&public);
        key.verifying_key()?;
        Ok(key)
    }

    fn verifying_key(&self) -> Result<VerifyingKey, TufError> {
        check_key_type(&self.keytype, &self.scheme)?;
        let bytes = decode_32(&self.keyval.public, "public key")?;
        VerifyingKey::from_bytes(&bytes).map_err(|e| TufError::InvalidKey {
            reason: e.to_string(),
        })
    }
}

/// An ed25519 signing key.
#[derive(Clone)]
pub struct KeyPair {
    key: SigningKey,
}

impl fmt::Debug for KeyPair {
    // Never print the private half, e.g. into logs via `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    pub fn generate() -> Result<KeyPair, TufError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| TufError::Random {
            reason: e.to_string(),
        })?;
        Ok(KeyPair {
            key: SigningKey::from_bytes(&seed),
        })
    }

    pub fn public(&self) -> PublicKey {
        PublicKey::ed25519(&self.key.verifying_key().to_bytes())
    }

    pub fn key_id(&self) -> String {
        self.public().key_id()
    }

    /// The private key file: the public key plus the 32-byte seed.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "keytype": ED25519,
            "scheme": ED25519,
            "keyval": {
                "public": hex::encode(self.key.verifying_key().to_bytes()),
                "private": hex::encode(self.key.to_bytes()),
            },
        })
    }

    /// Reads a private key file. The private part may be the 32-byte seed or,
    /// as some TUF tools write it, the 64-byte seed followed by the public key.
    pub fn from_json(bytes: &[u8]) -> Result<KeyPair, TufError> {
        let file = parse_key_file(bytes)?;
        let private = file.keyval.private.ok_or(TufError::NotAPrivateKey)?;
        let raw = hex::decode(&private).map_err(|e| TufError::InvalidKey {
            reason: format!("private key is not hex: {e}"),
        })?;
        let seed: [u8; 32] = match raw.len() {
            32 | 64 => raw
                .get(..32)
                .and_then(|s| <[u8; 32]>::try_from(s).ok())
                .ok_or_else(|| TufError::InvalidKey {
                    reason: "private key is truncated".to_owned(),
                })?,
            n => {
                return Err(TufError::InvalidKey {
                    reason: format!("private key is {n} bytes, expected 32"),
                });
            }
        };
        let key = SigningKey::from_bytes(&seed);
        let public = decode_32(&file.keyval.public, "public key")?;
        // A mismatched pair would sign with a key nobody trusts; say so now
        // instead of failing later on the client.
        if key.verifying_key().to_bytes() != public {
            return Err(TufError::KeyMismatch);
        }
        Ok(KeyPair { key })
    }

    fn sign_bytes(&self, message: &[u8]) -> Signature {
        Signature {
            keyid: self.key_id(),
            sig: hex::encode(self.key.sign(message).to_bytes()),
        }
    }
}

// ---------------------------------------------------------------------------
// Metadata

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Signature {
    pub keyid: String,
    pub sig: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Signed<T> {
    pub signed: T,
    pub signatures: Vec<Signature>,
}

impl<T: Serialize> Signed<T> {
    /// The file content to publish. Layout does not matter to verifiers, who
    /// check signatures over the canonical form.
    pub fn to_json_bytes(&self) -> Result<Vec<u8>, TufError> {
        serde_json::to_vec_pretty(self).map_err(|e| TufError::Serialize {
            reason: e.to_string(),
        })
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoleKeys {
    pub keyids: Vec<String>,
    pub threshold: u32,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Roles {
    pub root: RoleKeys,
    pub targets: RoleKeys,
    pub snapshot: RoleKeys,
    pub timestamp: RoleKeys,
}

impl Roles {
    pub fn get(&self, role: Role) -> &RoleKeys {
        match role {
            Role::Root => &self.root,
            Role::Targets => &self.targets,
            Role::Snapshot => &self.snapshot,
            Role::Timestamp => &self.timestamp,
        }
    }

    fn get_mut(&mut self, role: Role) -> &mut RoleKeys {
        match role {
            Role::Root => &mut self.root,
            Role::Targets => &mut self.targets,
            Role::Snapshot => &mut self.snapshot,
            Role::Timestamp => &mut self.timestamp,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Root {
    #[serde(rename = "_type")]
    pub type_: String,
    pub spec_version: String,
    pub version: u64,
    pub expires: String,
    pub keys: BTreeMap<String, PublicKey>,
    pub roles: Roles,
}

impl Root {
    /// A root with no keys; add each role with [`Root::with_role`]. Until
    /// all four are set their threshold is 0, which verification refuses.
    pub fn new(version: u64, expires: SystemTime) -> Root {
        Root {
            type_: Role::Root.name().to_owned(),
            spec_version: SPEC_VERSION.to_owned(),
            version,
            expires: format_time(expires),
            keys: BTreeMap::new(),
            roles: Roles::default(),
        }
    }

    pub fn with_role(mut self, role: Role, keys: &[PublicKey], threshold: u32) -> Root {
        let mut keyids: Vec<String> = keys.iter().map(PublicKey::key_id).collect();
        keyids.sort();
        keyids.dedup();
        for key in keys {
            self.keys.insert(key.key_id(), key.clone());
        }
        *self.roles.get_mut(role) = RoleKeys { keyids, threshold };
        self
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hashes {
    pub sha256: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TargetFile {
    pub length: u64,
    pub hashes: Hashes,
}

impl TargetFile {
    pub fn of(bytes: &[u8]) -> TargetFile {
        TargetFile {
            length: bytes.len() as u64,
            hashes: Hashes {
                sha256: sha256_hex(bytes),
            },
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Targets {
    #[serde(rename = "_type")]
    pub type_: String,
    pub spec_version: String,
    pub version: u64,
    pub expires: String,
    pub targets: BTreeMap<String, TargetFile>,
}

impl Targets {
    pub fn new(
        version: u64,
        expires: SystemTime,
        targets: BTreeMap<String, TargetFile>,
    ) -> Targets {
        Targets {
            type_: Role::Targets.name().to_owned(),
            spec_version: SPEC_VERSION.to_owned(),
            version,
            expires: format_time(expires),
            targets,
        }
    }

    pub fn get(&self, name: &str) -> Option<&TargetFile> {
        self.targets.get(name)
    }

    /// Check a downloaded target: listed, exact length, sha256.
    pub fn verify(&self, name: &str, bytes: &[u8]) -> Result<(), TufError> {
        let expected = self.get(name).ok_or_else(|| TufError::NotATarget {
            name: name.to_owned(),
        })?;
        check_length_and_hash(
            name,
            bytes,
            Some(expected.length),
            Some(&expected.hashes),
            "targets.json",
        )
    }
}

/// How one metadata file lists another. Length and hashes are optional, as
/// in TUF; when present they are checked.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MetaFile {
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashes: Option<Hashes>,
}

impl MetaFile {
    /// Lists only the version.
    pub fn new(version: u64) -> MetaFile {
        MetaFile {
            version,
            length: None,
            hashes: None,
        }
    }

    /// Lists version, length and sha256 of the published file `bytes`.
    pub fn of(version: u64, bytes: &[u8]) -> MetaFile {
        let file = TargetFile::of(bytes);
        MetaFile {
            version,
            length: Some(file.length),
            hashes: Some(file.hashes),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Snapshot {
    #[serde(rename = "_type")]
    pub type_: String,
    pub spec_version: String,
    pub version: u64,
    pub expires: String,
    pub meta: BTreeMap<String, MetaFile>,
}

impl Snapshot {
    pub fn new(version: u64, expires: SystemTime, targets_json: MetaFile) -> Snapshot {
        Snapshot {
            type_: Role::Snapshot.name().to_owned(),
            spec_version: SPEC_VERSION.to_owned(),
            version,
            expires: format_time(expires),
            meta: BTreeMap::from([(TARGETS_FILE.to_owned(), targets_json)]),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Timestamp {
    #[serde(rename = "_type")]
    pub type_: String,
    pub spec_version: String,
    pub version: u64,
    pub expires: String,
    pub meta: BTreeMap<String, MetaFile>,
}

impl Timestamp {
    pub fn new(version: u64, expires: SystemTime, snapshot_json: MetaFile) -> Timestamp {
        Timestamp {
            type_: Role::Timestamp.name().to_owned(),
            spec_version: SPEC_VERSION.to_owned(),
            version,
            expires: format_time(expires),
            meta: BTreeMap::from([(SNAPSHOT_FILE.to_owned(), snapshot_json)]),
        }
    }
}

/// The fields every role shares, so one routine can check them.
trait Metadata: DeserializeOwned {
    const ROLE: Role;
    fn spec_version(&self) -> &str;
    fn version(&self) -> u64;
}

macro_rules! impl_metadata {
    ($ty:ty, $role:expr) => {
        impl Metadata for $ty {
            const ROLE: Role = $role;
            fn spec_version(&self) -> &str {
                &self.spec_version
            }
            fn version(&self) -> u64 {
                self.version
            }
        }
    };
}

impl_metadata!(Root, Role::Root);
impl_metadata!(Targets, Role::Targets);
impl_metadata!(Snapshot, Role::Snapshot);
impl_metadata!(Timestamp, Role::Timestamp);

/// Signs the canonical form of `signed` with each key; signatures come out
/// sorted by key id so that re-signing the same content gives the same file.
pub fn sign<T: Serialize>(signed: T, keys: &[&KeyPair]) -> Result<Signed<T>, TufError> {
    let value = serde_json::to_value(&signed).map_err(|e| TufError::Serialize {
        reason: e.to_string(),
    })?;
    let message = canonical_json(&value);
    let mut signatures: Vec<Signature> = keys.iter().map(|k| k.sign_bytes(&message)).collect();
    signatures.sort_by(|a, b| a.keyid.cmp(&b.keyid));
    signatures.dedup_by(|a, b| a.keyid == b.keyid);
    Ok(Signed { signed, signatures })
}

// ---------------------------------------------------------------------------
// Time

/// Formats as RFC 3339 UTC seconds. Clamped to what the format can express,
/// because humantime panics on times before 1970 and fails past 9999.
fn format_time(t: SystemTime) -> String {
    const LATEST: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        .min(LATEST);
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

fn parse_expires(file: &str, value: &str) -> Result<SystemTime, TufError> {
    let bad = || TufError::BadExpiry {
        file: file.to_owned(),
        value: value.to_owned(),
    };
    // TUF fixes the form to YYYY-MM-DDTHH:MM:SSZ; holding to it keeps odd
    // strings away from the date parser.
    let b = value.as_bytes();
    if b.len() != 20 || !value.is_ascii() || b[10] != b'T' || b[19] != b'Z' {
        return Err(bad());
    }
    humantime::parse_rfc3339(value).map_err(|_| bad())
}

fn check_expiry(file: &str, expires: &str, now: SystemTime) -> Result<(), TufError> {
    if parse_expires(file, expires)? <= now {
        return Err(TufError::Expired {
            file: file.to_owned(),
            expires: expires.to_owned(),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Verification

const ROOT_FILE: &str = "root.json";
const TIMESTAMP_FILE: &str = "timestamp.json";
const SNAPSHOT_FILE: &str = "snapshot.json";
const TARGETS_FILE: &str = "targets.json";

fn malformed(file: &str, e: impl fmt::Display) -> TufError {
    TufError::Malformed {
        file: file.to_owned(),
        reason: e.to_string(),
    }
}

/// A metadata file whose signatures are not yet checked.
struct Parsed<T> {
    signed: T,
    /// The canonical form of `signed` exactly as received, fields we do not
    /// model included, because that is what the signers signed.
    canonical: Vec<u8>,
    signatures: Vec<Signature>,
}

fn parse<T: Metadata>(file: &str, bytes: &[u8]) -> Result<Parsed<T>, TufError> {
    let raw: Signed<Value> = serde_json::from_slice(bytes).map_err(|e| malformed(file, e))?;
    if !raw.signed.is_object() {
        return Err(malformed(file, "\"signed\" is not a JSON object"));
    }
    // Checked before anything else so that a file served under the wrong
    // name is reported as such, even when one key signs several roles.
    let found = raw.signed.get("_type").and_then(Value::as_str);
    if found != Some(T::ROLE.name()) {
        return Err(TufError::WrongType {
            file: file.to_owned(),
            expected: T::ROLE.name().to_owned(),
            found: found.unwrap_or("(none)").to_owned(),
        });
    }
    let canonical = canonical_json(&raw.signed);
    let signed: T = serde_json::from_value(raw.signed).map_err(|e| malformed(file, e))?;
    if signed.spec_version().split('.').next() != Some("1") {
        return Err(TufError::UnsupportedSpecVersion {
            file: file.to_owned(),
            spec_version: signed.spec_version().to_owned(),
        });
    }
    Ok(Parsed {
        signed,
        canonical,
        signatures: raw.signatures,
    })
}

/// Counts the distinct keys of `role_keys` that validly signed `message`.
/// Returns the count and the first trusted key whose signature failed.
fn count_valid(
    message: &[u8],
    signatures: &[Signature],
    role_keys: &RoleKeys,
    keys: &BTreeMap<String, PublicKey>,
) -> (usize, Option<String>) {
    let mut counted: BTreeSet<&str> = BTreeSet::new();
    let mut first_bad = None;
    for sig in signatures {
        // Only keys the role names count, each once however often it signs;
        // skipping early also bounds the work a hostile file can cause.
        if counted.contains(sig.keyid.as_str()) || !role_keys.keyids.contains(&sig.keyid) {
            continue;
        }
        let Some(key) = keys.get(&sig.keyid) else {
            continue;
        };
        let ok = key.verifying_key().ok().is_some_and(|vk| {
            hex::decode(&sig.sig)
                .ok()
                .and_then(|raw| ed25519_dalek::Signature::from_slice(&raw).ok())
                .is_some_and(|s| vk.verify_strict(message, &s).is_ok())
        });
        if ok {
            counted.insert(sig.keyid.as_str());
        } else if first_bad.is_none() {
            first_bad = Some(sig.keyid.clone());
        }
    }
    (counted.len(), first_bad)
}

fn check_signatures<T: Metadata>(
    file: &str,
    parsed: &Parsed<T>,
    role: Role,
    authority_root: &Root,
    authority: &str,
) -> Result<(), TufError> {
    let role_keys = authority_root.roles.get(role);
    let (valid, first_bad) = count_valid(
        &parsed.canonical,
        &parsed.signatures,
        role_keys,
        &authority_root.keys,
    );
    let required = role_keys.threshold;
    // Refuse threshold 0 here too, not only in validate_root: a hand-edited
    // trust file must not make every file acceptable.
    if valid >= required as usize && required >= 1 {
        return Ok(());
    }
    Err(match (valid, first_bad) {
        (0, Some(keyid)) => TufError::InvalidSignature {
            file: file.to_owned(),
            role,
            keyid,
        },
        (0, None) => TufError::NoTrustedSignatures {
            file: file.to_owned(),
            role,
            authority: authority.to_owned(),
        },
        _ => TufError::ThresholdNotMet {
            file: file.to_owned(),
            version: parsed.signed.version(),
            valid,
            required,
            authority: authority.to_owned(),
        },
    })
}

/// Structural checks on a root, so that signature counting can rely on
/// every listed key being usable and every threshold reachable.
fn validate_root(file: &str, root: &Root) -> Result<(), TufError> {
    for (keyid, key) in &root.keys {
        if key.key_id() != *keyid {
            return Err(TufError::KeyIdMismatch {
                file: file.to_owned(),
                keyid: keyid.clone(),
            });
        }
        key.verifying_key().map_err(|e| TufError::RootKey {
            file: file.to_owned(),
            keyid: keyid.clone(),
            reason: e.to_string(),
        })?;
    }
    for role in [Role::Root, Role::Targets, Role::Snapshot, Role::Timestamp] {
        let rk = root.roles.get(role);
        if rk.threshold == 0 {
            return Err(TufError::ZeroThreshold {
                file: file.to_owned(),
                role,
            });
        }
        if let Some(unknown) = rk.keyids.iter().find(|id| !root.keys.contains_key(*id)) {
            return Err(TufError::UnknownRoleKey {
                file: file.to_owned(),
                role,
                keyid: unknown.clone(),
            });
        }
        let distinct = rk.keyids.iter().collect::<BTreeSet<_>>().len();
        if distinct < rk.threshold as usize {
            return Err(TufError::UnreachableThreshold {
                file: file.to_owned(),
                role,
                threshold: rk.threshold,
                keys: distinct,
            });
        }
    }
    Ok(())
}

fn self_authority(root: &Root) -> String {
    format!("root version {} itself", root.version)
}

fn check_length_and_hash(
    file: &str,
    bytes: &[u8],
    length: Option<u64>,
    hashes: Option<&Hashes>,
    by: &str,
) -> Result<(), TufError> {
    if let Some(expected) = length
        && bytes.len() as u64 != expected
    {
        return Err(TufError::LengthMismatch {
            file: file.to_owned(),
            actual: bytes.len() as u64,
            expected,
            by: by.to_owned(),
        });
    }
    if let Some(hashes) = hashes
        && !sha256_hex(bytes).eq_ignore_ascii_case(&hashes.sha256)
    {
        return Err(TufError::HashMismatch {
            file: file.to_owned(),
        });
    }
    Ok(())
}

/// What a client remembers about one repository between refreshes
/// (persisted as JSON by the caller).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Trust {
    pub root: Signed<Root>,
    pub timestamp_version: u64,
    pub snapshot_version: u64,
    pub targets_version: u64,
}

impl Trust {
    /// First contact: `root_bytes` is the repository's `1.root.json`; it must
    /// be signed by `pinned` and meet its own root threshold, and `pinned`
    /// must be one of its root keys.
    ///
    /// `now` is not used to refuse an expired first root: the refresh that
    /// follows walks to the newest root and checks that one's expiry, so a
    /// repository whose first root has long expired can still be added.
    pub fn from_pinned_key(
        pinned: &PublicKey,
        root_bytes: &[u8],
        _now: SystemTime,
    ) -> Result<Trust, TufError> {
        let file = ROOT_FILE;
        let parsed: Parsed<Root> = parse(file, root_bytes)?;
        let root = &parsed.signed;
        validate_root(file, root)?;
        let pinned_id = pinned.key_id();
        if !root.roles.root.keyids.contains(&pinned_id) {
            return Err(TufError::PinnedKeyNotInRoot {
                file: file.to_owned(),
                keyid: pinned_id,
            });
        }
        // Without this, root keys the operator never vouched for could meet
        // the threshold on their own.
        let pinned_only = RoleKeys {
            keyids: vec![pinned_id.clone()],
            threshold: 1,
        };
        if count_valid(
            &parsed.canonical,
            &parsed.signatures,
            &pinned_only,
            &root.keys,
        )
        .0 == 0
        {
            return Err(TufError::NotSignedByPinnedKey {
                file: file.to_owned(),
                keyid: pinned_id,
            });
        }
        check_signatures(file, &parsed, Role::Root, root, &self_authority(root))?;
        Ok(Trust {
            root: Signed {
                signed: parsed.signed,
                signatures: parsed.signatures,
            },
            timestamp_version: 0,
            snapshot_version: 0,
            targets_version: 0,
        })
    }
}

/// The verified result of a refresh.
#[derive(Clone, Debug)]
pub struct Verified {
    pub targets: Targets,
    /// The trust to persist: the newest root and the versions just seen.
    pub trust: Trust,
}

async fn fetch_limited<F, Fut>(
    fetch: &mut F,
    file: &str,
    limit: u64,
) -> Result<Option<Vec<u8>>, TufError>
where
    F: FnMut(&str, u64) -> Fut,
    Fut: Future<Output = Result<Option<Vec<u8>>, String>>,
{
    let bytes = fetch(file, limit)
        .await
        .map_err(|message| TufError::Fetch {
            file: file.to_owned(),
            message,
        })?;
    // The fetcher is asked to stop early, but a buggy one must not let an
    // oversized file through.
    if let Some(b) = &bytes
        && b.len() as u64 > limit
    {
        return Err(TufError::TooLarge {
            file: file.to_owned(),
            limit,
        });
    }
    Ok(bytes)
}

async fn fetch_required<F, Fut>(fetch: &mut F, file: &str, limit: u64) -> Result<Vec<u8>, TufError>
where
    F: FnMut(&str, u64) -> Fut,
    Fut: Future<Output = Result<Option<Vec<u8>>, String>>,
{
    fetch_limited(fetch, file, limit)
        .await?
        .ok_or_else(|| TufError::Missing {
            file: file.to_owned(),
        })
}

/// The byte limit for a file that `meta` may give the exact length of.
fn meta_limit(file: &str, meta: &MetaFile, max_meta_len: u64) -> Result<u64, TufError> {
    match meta.length {
        Some(len) if len > max_meta_len => Err(TufError::TooLarge {
            file: file.to_owned(),
            limit: max_meta_len,
        }),
        Some(len) => Ok(len),
        None => Ok(max_meta_len),
    }
}

fn listed<'a>(
    meta: &'a BTreeMap<String, MetaFile>,
    file: &str,
    entry: &str,
) -> Result<&'a MetaFile, TufError> {
    meta.get(entry).ok_or_else(|| TufError::MissingMeta {
        file: file.to_owned(),
        entry: entry.to_owned(),
    })
}

fn check_not_older(file: &str, version: u64, seen: u64) -> Result<(), TufError> {
    if version < seen {
        return Err(TufError::Rollback {
            file: file.to_owned(),
            version,
            seen,
        });
    }
    Ok(())
}

fn check_listed_version(file: &str, found: u64, expected: u64, by: &str) -> Result<(), TufError> {
    if found != expected {
        return Err(TufError::VersionMismatch {
            file: file.to_owned(),
            found,
            expected,
            by: by.to_owned(),
        });
    }
    Ok(())
}

fn key_set(rk: &RoleKeys) -> BTreeSet<&String> {
    rk.keyids.iter().collect()
}

/// Verifies `N+1.root.json` against the trusted root N.
fn verify_next_root(trusted: &Root, file: &str, bytes: &[u8]) -> Result<Signed<Root>, TufError> {
    let parsed: Parsed<Root> = parse(file, bytes)?;
    check_signatures(
        file,
        &parsed,
        Role::Root,
        trusted,
        &format!("root version {}", trusted.version),
    )?;
    validate_root(file, &parsed.signed)?;
    check_signatures(
        file,
        &parsed,
        Role::Root,
        &parsed.signed,
        &self_authority(&parsed.signed),
    )?;
    let expected = trusted.version.saturating_add(1);
    check_listed_version(file, parsed.signed.version, expected, "its file name")?;
    Ok(Signed {
        signed: parsed.signed,
        signatures: parsed.signatures,
    })
}

/// The TUF client workflow: root rotation, then timestamp, snapshot and
/// targets, each checked against the one before. `fetch(name, max_len)`
/// returns `Ok(None)` for a missing file; `max_len` lets it stop reading
/// early so a hostile server cannot exhaust memory. Nothing is persisted
/// here: the caller stores `Verified::trust` once everything passed.
pub async fn refresh<F, Fut>(
    trust: &Trust,
    now: SystemTime,
    max_meta_len: u64,
    mut fetch: F,
) -> Result<Verified, TufError>
where
    F: FnMut(&str, u64) -> Fut,
    Fut: Future<Output = Result<Option<Vec<u8>>, String>>,
{
    let initial = &trust.root.signed;
    // The stored trust is the caller's file; a damaged one must not weaken
    // the checks below.
    validate_root(ROOT_FILE, initial)?;

    // 1. Root rotation.
    let mut root = trust.root.clone();
    for _ in 0..MAX_ROOT_ROTATIONS {
        let Some(next) = root.signed.version.checked_add(1) else {
            break;
        };
        let file = format!("{next}.root.json");
        let Some(bytes) = fetch_limited(&mut fetch, &file, max_meta_len).await? else {
            break;
        };
        root = verify_next_root(&root.signed, &file, &bytes)?;
    }
    let root_label = format!("root.json version {}", root.signed.version);
    check_expiry(&root_label, &root.signed.expires, now)?;
    let authority = format!("root version {}", root.signed.version);

    // TUF 5.3.11: after the timestamp or snapshot keys are rotated, versions
    // signed by the old keys no longer bind the client; forgetting them is
    // how a repository recovers from a fast-forward attack with a stolen key.
    let mut seen_timestamp = trust.timestamp_version;
    let mut seen_snapshot = trust.snapshot_version;
    let mut seen_targets = trust.targets_version;
    let new_roles = &root.signed.roles;
    if key_set(&initial.roles.timestamp) != key_set(&new_roles.timestamp)
        || key_set(&initial.roles.snapshot) != key_set(&new_roles.snapshot)
    {
        seen_timestamp = 0;
        seen_snapshot = 0;
    }
    if key_set(&initial.roles.targets) != key_set(&new_roles.targets) {
        seen_targets = 0;
    }

    // 2. Timestamp.
    let bytes = fetch_required(&mut fetch, TIMESTAMP_FILE, max_meta_len).await?;
    let timestamp: Parsed<Timestamp> = parse(TIMESTAMP_FILE, &bytes)?;
    check_signatures(
        TIMESTAMP_FILE,
        &timestamp,
        Role::Timestamp,
        &root.signed,
        &authority,
    )?;
    let timestamp = timestamp.signed;
    check_not_older(TIMESTAMP_FILE, timestamp.version, seen_timestamp)?;
    check_expiry(TIMESTAMP_FILE, &timestamp.expires, now)?;
    let snapshot_meta = listed(&timestamp.meta, TIMESTAMP_FILE, SNAPSHOT_FILE)?;

    // 3. Snapshot.
    let limit = meta_limit(SNAPSHOT_FILE, snapshot_meta, max_meta_len)?;
    let bytes = fetch_required(&mut fetch, SNAPSHOT_FILE, limit).await?;
    check_length_and_hash(
        SNAPSHOT_FILE,
        &bytes,
        snapshot_meta.length,
        snapshot_meta.hashes.as_ref(),
        TIMESTAMP_FILE,
    )?;
    let snapshot: Parsed<Snapshot> = parse(SNAPSHOT_FILE, &bytes)?;
    check_signatures(
        SNAPSHOT_FILE,
        &snapshot,
        Role::Snapshot,
        &root.signed,
        &authority,
    )?;
    let snapshot = snapshot.signed;
    check_listed_version(
        SNAPSHOT_FILE,
        snapshot.version,
        snapshot_meta.version,
        TIMESTAMP_FILE,
    )?;
    check_not_older(SNAPSHOT_FILE, snapshot.version, seen_snapshot)?;
    check_expiry(SNAPSHOT_FILE, &snapshot.expires, now)?;
    let targets_meta = listed(&snapshot.meta, SNAPSHOT_FILE, TARGETS_FILE)?;

    // 4. Targets.
    let limit = meta_limit(TARGETS_FILE, targets_meta, max_meta_len)?;
    let bytes = fetch_required(&mut fetch, TARGETS_FILE, limit).await?;
    check_length_and_hash(
        TARGETS_FILE,
        &bytes,
        targets_meta.length,
        targets_meta.hashes.as_ref(),
        SNAPSHOT_FILE,
    )?;
    let targets: Parsed<Targets> = parse(TARGETS_FILE, &bytes)?;
    check_signatures(
        TARGETS_FILE,
        &targets,
        Role::Targets,
        &root.signed,
        &authority,
    )?;
    let targets = targets.signed;
    check_listed_version(
        TARGETS_FILE,
        targets.version,
        targets_meta.version,
        SNAPSHOT_FILE,
    )?;
    check_not_older(TARGETS_FILE, targets.version, seen_targets)?;
    check_expiry(TARGETS_FILE, &targets.expires, now)?;

    Ok(Verified {
        trust: Trust {
            root,
            timestamp_version: timestamp.version,
            snapshot_version: snapshot.version,
            targets_version: targets.version,
        },
        targets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    const MAX: u64 = 64 * 1024;
    const REPO_JSON: &[u8] = br#"{"packages":[{"name":"hello-world","version":"0.1"}]}"#;
    const PACKAGE: &[u8] = b"\x1f\x8b pretend this is a tarball";

    fn at(s: &str) -> SystemTime {
        humantime::parse_rfc3339(s).expect("test time")
    }

    fn now() -> SystemTime {
        at("2026-06-01T00:00:00Z")
    }

    fn future() -> SystemTime {
        at("2027-01-01T00:00:00Z")
    }

    fn past() -> SystemTime {
        at("2026-01-01T00:00:00Z")
    }

    /// The fetch closures here never wait, so polling once always finishes.
    fn block_on<F: Future>(f: F) -> F::Output {
        let mut f = pin!(f);
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    fn key() -> KeyPair {
        KeyPair::generate().expect("generate key")
    }

    fn keys(n: usize) -> Vec<KeyPair> {
        (0..n).map(|_| key()).collect()
    }

    fn pubs(keys: &[KeyPair]) -> Vec<PublicKey> {
        keys.iter().map(KeyPair::public).collect()
    }

    /// Signs with the first `threshold` keys, as a well-behaved publisher would.
    fn signers(keys: &[KeyPair], threshold: u32) -> Vec<&KeyPair> {
        keys.iter().take(threshold as usize).collect()
    }

    struct Keys {
        root: Vec<KeyPair>,
        root_t: u32,
        targets: Vec<KeyPair>,
        snapshot: Vec<KeyPair>,
        timestamp: Vec<KeyPair>,
        timestamp_t: u32,
    }

    impl Keys {
        fn single() -> Keys {
            Keys {
                root: keys(1),
                root_t: 1,
                targets: keys(1),
                snapshot: keys(1),
                timestamp: keys(1),
                timestamp_t: 1,
            }
        }

        fn root(&self, version: u64, expires: SystemTime) -> Root {
            Root::new(version, expires)
                .with_role(Role::Root, &pubs(&self.root), self.root_t)
                .with_role(Role::Targets, &pubs(&self.targets), 1)
                .with_role(Role::Snapshot, &pubs(&self.snapshot), 1)
                .with_role(Role::Timestamp, &pubs(&self.timestamp), self.timestamp_t)
        }
    }

    struct Repo {
        keys: Keys,
        files: HashMap<String, Vec<u8>>,
    }

    fn bytes<T: Serialize>(signed: &Signed<T>) -> Vec<u8> {
        signed.to_json_bytes().expect("serialize")
    }

    impl Repo {
        fn new() -> Repo {
            Repo::with_keys(Keys::single(), future())
        }

        /// Version 1 of root and of every role, all signed properly.
        fn with_keys(keys: Keys, root_expires: SystemTime) -> Repo {
            let mut repo = Repo {
                keys,
                files: HashMap::new(),
            };
            let root = repo.keys.root(1, root_expires);
            let signed = sign(root, &signers(&repo.keys.root, repo.keys.root_t)).expect("sign");
            repo.put("1.root.json", &signed);
            repo.publish(1, 1, 1);
            repo
        }

        fn put<T: Serialize>(&mut self, name: &str, signed: &Signed<T>) {
            self.files.insert(name.to_owned(), bytes(signed));
        }

        fn put_targets(&mut self, version: u64, expires: SystemTime) {
            let targets = Targets::new(
                version,
                expires,
                BTreeMap::from([
                    ("repo.json".to_owned(), TargetFile::of(REPO_JSON)),
                    (
                        "packages/hello-world/0.tar.gz".to_owned(),
                        TargetFile::of(PACKAGE),
                    ),
                ]),
            );
            let signed = sign(targets, &signers(&self.keys.targets, 1)).expect("sign");
            self.put(TARGETS_FILE, &signed);
        }

        fn put_snapshot(&mut self, version: u64, targets_version: u64, expires: SystemTime) {
            let snapshot = Snapshot::new(version, expires, MetaFile::new(targets_version));
            let signed = sign(snapshot, &signers(&self.keys.snapshot, 1)).expect("sign");
            self.put(SNAPSHOT_FILE, &signed);
        }

        fn timestamp(&self, version: u64, snapshot_version: u64, expires: SystemTime) -> Timestamp {
            let snapshot = &self.files[SNAPSHOT_FILE];
            Timestamp::new(version, expires, MetaFile::of(snapshot_version, snapshot))
        }

        fn put_timestamp(&mut self, version: u64, snapshot_version: u64, expires: SystemTime) {
            let timestamp = self.timestamp(version, snapshot_version, expires);
            let signed = sign(
                timestamp,
                &signers(&self.keys.timestamp, self.keys.timestamp_t),
            )
            .expect("sign");
            self.put(TIMESTAMP_FILE, &signed);
        }

        fn publish(&mut self, timestamp: u64, snapshot: u64, targets: u64) {
            self.put_targets(targets, future());
            self.put_snapshot(snapshot, targets, future());
            self.put_timestamp(timestamp, snapshot, future());
        }

        /// Publishes root `version` for `new` keys, signed by `sign_with`,
        /// and re-signs all metadata with the new keys.
        fn rotate(&mut self, new: Keys, version: u64, expires: SystemTime, sign_with: &[&KeyPair]) {
            let root = new.root(version, expires);
            let signed = sign(root, sign_with).expect("sign");
            self.put(&format!("{version}.root.json"), &signed);
            self.keys = new;
        }

        fn trust(&self) -> Trust {
            Trust::from_pinned_key(
                &self.keys.root[0].public(),
                &self.files["1.root.json"],
                now(),
            )
            .expect("first contact")
        }

        fn refresh(&self, trust: &Trust) -> Result<Verified, TufError> {
            refresh_at(&self.files, trust, now(), MAX).0
        }
    }

    /// Serves `files` like a well-behaved HTTP fetcher that stops reading at
    /// max_len + 1 bytes, and records what was asked for.
    fn refresh_at(
        files: &HashMap<String, Vec<u8>>,
        trust: &Trust,
        now: SystemTime,
        max: u64,
    ) -> (Result<Verified, TufError>, Vec<(String, u64)>) {
        let mut asked = Vec::new();
        let result = block_on(refresh(trust, now, max, |name: &str, max_len: u64| {
            asked.push((name.to_owned(), max_len));
            let keep = usize::try_from(max_len.saturating_add(1)).unwrap_or(usize::MAX);
            let r: Result<Option<Vec<u8>>, String> = Ok(files
                .get(name)
                .map(|b| b.iter().take(keep).copied().collect()));
            std::future::ready(r)
        }));
        (result, asked)
    }

    #[test]
    fn happy_path() {
        let repo = Repo::new();
        let trust = repo.trust();
        let verified = repo.refresh(&trust).expect("refresh");
        assert_eq!(verified.trust.root.signed.version, 1);
        assert_eq!(verified.trust.timestamp_version, 1);
        assert_eq!(verified.trust.snapshot_version, 1);
        assert_eq!(verified.trust.targets_version, 1);
        verified
            .targets
            .verify("repo.json", REPO_JSON)
            .expect("repo.json verifies");
        verified
            .targets
            .verify("packages/hello-world/0.tar.gz", PACKAGE)
            .expect("package verifies");
        assert_eq!(
            verified.targets.get("repo.json"),
            Some(&TargetFile::of(REPO_JSON))
        );

        // The caller persists trust as JSON; it must work after a round trip.
        let stored = serde_json::to_vec(&verified.trust).expect("serialize trust");
        let restored: Trust = serde_json::from_slice(&stored).expect("parse trust");
        let again = repo.refresh(&restored).expect("second refresh");
        assert_eq!(again.trust.timestamp_version, 1);
    }

    #[test]
    fn root_rotation_to_new_keys() {
        // Old roots may expire; only the final one has to be current.
        let mut repo = Repo::with_keys(Keys::single(), past());
        let trust = repo.trust();
        let v2 = Keys::single();
        let old_root = repo.keys.root[0].clone();
        let new_root = v2.root[0].clone();
        repo.rotate(v2, 2, past(), &[&old_root, &new_root]);
        let v3 = Keys::single();
        let newest_root = v3.root[0].clone();
        repo.rotate(v3, 3, future(), &[&new_root, &newest_root]);
        repo.publish(1, 1, 1);

        let verified = repo.refresh(&trust).expect("refresh through rotations");
        assert_eq!(verified.trust.root.signed.version, 3);
        assert!(
            verified
                .trust
                .root
                .signed
                .roles
                .root
                .keyids
                .contains(&newest_root.key_id())
        );
        verified
            .targets
            .verify("repo.json", REPO_JSON)
            .expect("repo.json verifies");

        // The stored trust now continues from version 3.
        let (again, asked) = refresh_at(&repo.files, &verified.trust, now(), MAX);
        again.expect("refresh from v3");
        assert_eq!(asked[0].0, "4.root.json");
    }

    #[test]
    fn rotation_below_old_threshold_refused() {
        let mut first = Keys::single();
        first.root = keys(3);
        first.root_t = 2;
        let mut repo = Repo::with_keys(first, future());
        let trust = repo.trust();
        let v2 = Keys::single();
        let old = repo.keys.root[0].clone();
        let new = v2.root[0].clone();
        repo.rotate(v2, 2, future(), &[&old, &new]);
        repo.publish(1, 1, 1);

        let err = repo.refresh(&trust).expect_err("one old signature of two");
        assert!(matches!(
            err,
            TufError::ThresholdNotMet {
                valid: 1,
                required: 2,
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "2.root.json version 2 has 1 valid signature of the 2 that root version 1 requires"
        );
    }

    #[test]
    fn rotation_without_new_keys_signature_refused() {
        let mut repo = Repo::new();
        let trust = repo.trust();
        let v2 = Keys::single();
        let old = repo.keys.root[0].clone();
        repo.rotate(v2, 2, future(), &[&old]);
        let err = repo.refresh(&trust).expect_err("new root must sign itself");
        assert!(
            matches!(err, TufError::NoTrustedSignatures { ref file, .. } if file == "2.root.json")
        );
        assert_eq!(
            err.to_string(),
            "2.root.json: no signatures from trusted keys (the root keys of root version 2 itself)"
        );
    }

    #[test]
    fn rotation_must_be_next_version() {
        let mut repo = Repo::new();
        let trust = repo.trust();
        let old = repo.keys.root[0].clone();
        let root = repo.keys.root(3, future());
        let signed = sign(root, &[&old]).expect("sign");
        repo.put("2.root.json", &signed);
        let err = repo.refresh(&trust).expect_err("version skip");
        assert!(matches!(
            err,
            TufError::VersionMismatch {
                found: 3,
                expected: 2,
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "2.root.json has version 3, but its file name says 2"
        );
    }

    #[test]
    fn two_of_three_root_with_one_signature_refused() {
        let mut ks = Keys::single();
        ks.root = keys(3);
        ks.root_t = 2;
        let root = ks.root(1, future());
        let signed = sign(root, &[&ks.root[0]]).expect("sign");
        let err = Trust::from_pinned_key(&ks.root[0].public(), &bytes(&signed), now())
            .expect_err("below threshold");
        assert!(matches!(
            err,
            TufError::ThresholdNotMet {
                valid: 1,
                required: 2,
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "root.json version 1 has 1 valid signature of the 2 that root version 1 itself requires"
        );
    }

    #[test]
    fn pinned_key_must_be_a_root_key_and_sign() {
        let repo = Repo::new();
        let stranger = key();
        let err = Trust::from_pinned_key(&stranger.public(), &repo.files["1.root.json"], now())
            .expect_err("stranger pinned");
        assert!(matches!(err, TufError::PinnedKeyNotInRoot { .. }));

        // Two root keys, threshold 1, signed only by the one not pinned.
        let mut ks = Keys::single();
        ks.root = keys(2);
        let root = ks.root(1, future());
        let signed = sign(root, &[&ks.root[1]]).expect("sign");
        let err = Trust::from_pinned_key(&ks.root[0].public(), &bytes(&signed), now())
            .expect_err("pinned key did not sign");
        assert!(matches!(err, TufError::NotSignedByPinnedKey { .. }));
    }

    #[test]
    fn zero_threshold_refused() {
        let ks = Keys::single();
        let root = ks
            .root(1, future())
            .with_role(Role::Timestamp, &pubs(&ks.timestamp), 0);
        let signed = sign(root, &[&ks.root[0]]).expect("sign");
        let err = Trust::from_pinned_key(&ks.root[0].public(), &bytes(&signed), now())
            .expect_err("threshold 0");
        assert!(matches!(
            err,
            TufError::ZeroThreshold {
                role: Role::Timestamp,
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "root.json: role timestamp has threshold 0; it must be at least 1"
        );

        // A root whose threshold cannot be met by its keys is refused too.
        let root = ks
            .root(1, future())
            .with_role(Role::Targets, &pubs(&ks.targets), 2);
        let signed = sign(root, &[&ks.root[0]]).expect("sign");
        let err = Trust::from_pinned_key(&ks.root[0].public(), &bytes(&signed), now())
            .expect_err("unreachable threshold");
        assert!(matches!(
            err,
            TufError::UnreachableThreshold {
                role: Role::Targets,
                threshold: 2,
                keys: 1,
                ..
            }
        ));
    }

    #[test]
    fn root_structure_checked() {
        // A key filed under an id that is not its hash.
        let ks = Keys::single();
        let mut root = ks.root(1, future());
        let timestamp_id = ks.timestamp[0].key_id();
        let key = root.keys.remove(&timestamp_id).expect("timestamp key");
        root.keys.insert("00".repeat(32), key);
        let signed = sign(root, &[&ks.root[0]]).expect("sign");
        let err = Trust::from_pinned_key(&ks.root[0].public(), &bytes(&signed), now())
            .expect_err("bad key id");
        assert!(matches!(err, TufError::KeyIdMismatch { .. }));

        // A stored trust damaged by hand must not turn thresholds off.
        let repo = Repo::new();
        let mut trust = repo.trust();
        trust.root.signed.roles.timestamp.threshold = 0;
        let err = repo.refresh(&trust).expect_err("damaged trust");
        assert!(matches!(err, TufError::ZeroThreshold { .. }));
    }

    #[test]
    fn changed_target_byte_refused() {
        let repo = Repo::new();
        let verified = repo.refresh(&repo.trust()).expect("refresh");
        let mut tampered = REPO_JSON.to_vec();
        tampered[3] ^= 1;
        let err = verified
            .targets
            .verify("repo.json", &tampered)
            .expect_err("tampered");
        assert!(matches!(err, TufError::HashMismatch { ref file } if file == "repo.json"));
        assert_eq!(err.to_string(), "repo.json sha256 mismatch (tampered?)");
    }

    #[test]
    fn wrong_target_length_refused() {
        let repo = Repo::new();
        let verified = repo.refresh(&repo.trust()).expect("refresh");
        let longer = [REPO_JSON, b" "].concat();
        let err = verified
            .targets
            .verify("repo.json", &longer)
            .expect_err("longer");
        assert!(matches!(err, TufError::LengthMismatch { .. }));
        assert_eq!(
            err.to_string(),
            format!(
                "repo.json is {} bytes, targets.json says {}",
                REPO_JSON.len() + 1,
                REPO_JSON.len()
            )
        );
        let err = verified
            .targets
            .verify("other.json", REPO_JSON)
            .expect_err("not a target");
        assert!(matches!(err, TufError::NotATarget { .. }));
    }

    #[test]
    fn expired_timestamp_refused() {
        let mut repo = Repo::new();
        repo.put_timestamp(2, 1, at("2026-05-05T01:00:00Z"));
        let err = repo.refresh(&repo.trust()).expect_err("expired");
        assert!(matches!(err, TufError::Expired { ref file, .. } if file == "timestamp.json"));
        assert_eq!(
            err.to_string(),
            "timestamp.json expired at 2026-05-05T01:00:00Z"
        );
    }

    #[test]
    fn expired_root_refused() {
        let repo = Repo::with_keys(Keys::single(), past());
        let err = repo.refresh(&repo.trust()).expect_err("expired root");
        assert!(matches!(err, TufError::Expired { .. }));
        assert_eq!(
            err.to_string(),
            "root.json version 1 expired at 2026-01-01T00:00:00Z"
        );
    }

    #[test]
    fn unreadable_expiry_refused() {
        let mut repo = Repo::new();
        let mut targets = Targets::new(1, future(), BTreeMap::new());
        targets.expires = "next tuesday".to_owned();
        let signed = sign(targets, &[&repo.keys.targets[0]]).expect("sign");
        repo.put(TARGETS_FILE, &signed);
        let err = repo.refresh(&repo.trust()).expect_err("bad expiry");
        assert!(matches!(err, TufError::BadExpiry { ref file, .. } if file == "targets.json"));
    }

    #[test]
    fn snapshot_rollback_refused() {
        let mut repo = Repo::new();
        repo.publish(1, 5, 1);
        let trust = repo.refresh(&repo.trust()).expect("refresh").trust;
        assert_eq!(trust.snapshot_version, 5);
        repo.publish(2, 3, 1);
        let err = repo.refresh(&trust).expect_err("rollback");
        assert!(matches!(
            err,
            TufError::Rollback {
                version: 3,
                seen: 5,
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "snapshot.json version 3 is older than version 5 seen before (rollback?)"
        );
    }

    #[test]
    fn timestamp_rollback_refused() {
        let mut repo = Repo::new();
        repo.publish(5, 1, 1);
        let trust = repo.refresh(&repo.trust()).expect("refresh").trust;
        repo.publish(4, 1, 1);
        let err = repo.refresh(&trust).expect_err("rollback");
        assert!(
            matches!(err, TufError::Rollback { ref file, version: 4, seen: 5 } if file == "timestamp.json")
        );
    }

    #[test]
    fn targets_rollback_refused() {
        let mut repo = Repo::new();
        repo.publish(1, 1, 7);
        let trust = repo.refresh(&repo.trust()).expect("refresh").trust;
        repo.publish(2, 2, 6);
        let err = repo.refresh(&trust).expect_err("rollback");
        assert!(
            matches!(err, TufError::Rollback { ref file, version: 6, seen: 7 } if file == "targets.json")
        );
    }

    #[test]
    fn timestamp_key_rotation_forgets_old_versions() {
        let mut repo = Repo::new();
        repo.publish(100, 1, 1);
        let trust = repo.refresh(&repo.trust()).expect("refresh").trust;
        let root_key = repo.keys.root[0].clone();

        // Same keys in root v2: the high-water mark still holds.
        let same = Keys {
            root: vec![root_key.clone()],
            root_t: 1,
            targets: repo.keys.targets.clone(),
            snapshot: repo.keys.snapshot.clone(),
            timestamp: repo.keys.timestamp.clone(),
            timestamp_t: 1,
        };
        repo.rotate(same, 2, future(), &[&root_key]);
        repo.publish(1, 1, 1);
        let err = repo.refresh(&trust).expect_err("still a rollback");
        assert!(matches!(
            err,
            TufError::Rollback {
                version: 1,
                seen: 100,
                ..
            }
        ));

        // A new timestamp key in root v3 lets the repository start over.
        let rotated = Keys {
            root: vec![root_key.clone()],
            root_t: 1,
            targets: repo.keys.targets.clone(),
            snapshot: repo.keys.snapshot.clone(),
            timestamp: keys(1),
            timestamp_t: 1,
        };
        repo.rotate(rotated, 3, future(), &[&root_key]);
        repo.publish(1, 1, 1);
        let verified = repo.refresh(&trust).expect("recovered");
        assert_eq!(verified.trust.timestamp_version, 1);
        assert_eq!(verified.trust.root.signed.version, 3);
    }

    #[test]
    fn snapshot_must_match_timestamp() {
        let mut repo = Repo::new();
        // The timestamp lists snapshot version 2, the file says 1.
        repo.put_timestamp(1, 2, future());
        let err = repo.refresh(&repo.trust()).expect_err("version mismatch");
        assert!(matches!(
            err,
            TufError::VersionMismatch {
                found: 1,
                expected: 2,
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "snapshot.json has version 1, but timestamp.json says 2"
        );

        // Same length, one byte different: caught by the hash in timestamp.json.
        let mut repo = Repo::new();
        let snapshot = repo.files.get_mut(SNAPSHOT_FILE).expect("snapshot");
        let space = snapshot.iter().position(|&b| b == b' ').expect("a space");
        snapshot[space] = b'\t';
        let err = repo.refresh(&repo.trust()).expect_err("tampered snapshot");
        assert!(matches!(err, TufError::HashMismatch { ref file } if file == "snapshot.json"));

        // One byte short.
        let mut repo = Repo::new();
        let snapshot = repo.files.get_mut(SNAPSHOT_FILE).expect("snapshot");
        snapshot.pop();
        let err = repo.refresh(&repo.trust()).expect_err("short snapshot");
        assert!(matches!(err, TufError::LengthMismatch { ref by, .. } if by == "timestamp.json"));
    }

    #[test]
    fn targets_served_as_timestamp_refused() {
        let mut repo = Repo::new();
        let targets = repo.files[TARGETS_FILE].clone();
        repo.files.insert(TIMESTAMP_FILE.to_owned(), targets);
        let err = repo.refresh(&repo.trust()).expect_err("wrong type");
        assert!(matches!(
            err,
            TufError::WrongType { ref expected, ref found, .. } if expected == "timestamp" && found == "targets"
        ));
    }

    #[test]
    fn untrusted_signatures_ignored() {
        let mut repo = Repo::new();
        let stranger = key();
        let timestamp = repo.timestamp(1, 1, future());

        // An extra signature by an unknown key changes nothing.
        let signed = sign(timestamp.clone(), &[&repo.keys.timestamp[0], &stranger]).expect("sign");
        repo.put(TIMESTAMP_FILE, &signed);
        repo.refresh(&repo.trust())
            .expect("stranger's signature ignored");

        // Only the stranger's signature: nothing trusted.
        let signed = sign(timestamp.clone(), &[&stranger]).expect("sign");
        repo.put(TIMESTAMP_FILE, &signed);
        let err = repo.refresh(&repo.trust()).expect_err("untrusted");
        assert!(matches!(
            err,
            TufError::NoTrustedSignatures {
                role: Role::Timestamp,
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "timestamp.json: no signatures from trusted keys (the timestamp keys of root version 1)"
        );

        // A key that root trusts for another role does not count either.
        let signed = sign(timestamp.clone(), &[&repo.keys.targets[0]]).expect("sign");
        repo.put(TIMESTAMP_FILE, &signed);
        let err = repo.refresh(&repo.trust()).expect_err("wrong role");
        assert!(matches!(err, TufError::NoTrustedSignatures { .. }));

        // The stranger's signature filed under the trusted key id.
        let mut signed = sign(timestamp, &[&stranger]).expect("sign");
        signed.signatures[0].keyid = repo.keys.timestamp[0].key_id();
        repo.put(TIMESTAMP_FILE, &signed);
        let err = repo.refresh(&repo.trust()).expect_err("forged");
        assert!(matches!(err, TufError::InvalidSignature { .. }));
    }

    #[test]
    fn changed_signed_content_refused() {
        let mut repo = Repo::new();
        let mut raw: Value = serde_json::from_slice(&repo.files[TARGETS_FILE]).expect("json");
        raw["signed"]["targets"]["repo.json"]["length"] = Value::from(1);
        repo.files.insert(
            TARGETS_FILE.to_owned(),
            serde_json::to_vec(&raw).expect("json"),
        );
        let err = repo.refresh(&repo.trust()).expect_err("tampered targets");
        assert!(
            matches!(err, TufError::InvalidSignature { ref file, .. } if file == "targets.json")
        );
    }

    #[test]
    fn duplicate_signatures_count_once() {
        let mut ks = Keys::single();
        ks.timestamp = keys(2);
        ks.timestamp_t = 2;
        let mut repo = Repo::with_keys(ks, future());
        repo.refresh(&repo.trust())
            .expect("two timestamp signatures");

        let timestamp = repo.timestamp(1, 1, future());
        let mut signed = sign(timestamp, &[&repo.keys.timestamp[0]]).expect("sign");
        signed.signatures.push(signed.signatures[0].clone());
        repo.put(TIMESTAMP_FILE, &signed);
        let err = repo.refresh(&repo.trust()).expect_err("one key twice");
        assert!(matches!(
            err,
            TufError::ThresholdNotMet {
                valid: 1,
                required: 2,
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "timestamp.json version 1 has 1 valid signature of the 2 that root version 1 requires"
        );
    }

    #[test]
    fn malformed_input_is_an_error() {
        let mut repo = Repo::new();
        let trust = repo.trust();
        repo.files
            .insert(TIMESTAMP_FILE.to_owned(), b"{not json".to_vec());
        let err = repo.refresh(&trust).expect_err("malformed");
        assert!(matches!(err, TufError::Malformed { ref file, .. } if file == "timestamp.json"));
        assert!(err.to_string().starts_with("malformed timestamp.json: "));

        repo.files.insert(
            TIMESTAMP_FILE.to_owned(),
            br#"{"signed": [1, 2], "signatures": []}"#.to_vec(),
        );
        let err = repo.refresh(&trust).expect_err("signed not an object");
        assert!(matches!(err, TufError::Malformed { .. }));

        repo.files.insert(
            TIMESTAMP_FILE.to_owned(),
            br#"{"signed": {"_type": "timestamp", "version": "x"}, "signatures": [{"keyid": 1}]}"#
                .to_vec(),
        );
        let err = repo.refresh(&trust).expect_err("wrong shapes");
        assert!(matches!(err, TufError::Malformed { .. }));

        repo.files
            .insert("2.root.json".to_owned(), vec![0xff, 0xfe, 0x00]);
        let err = repo.refresh(&trust).expect_err("binary root");
        assert!(matches!(err, TufError::Malformed { ref file, .. } if file == "2.root.json"));

        let root = &repo.files["1.root.json"];
        let err =
            Trust::from_pinned_key(&repo.keys.root[0].public(), &root[..root.len() / 2], now())
                .expect_err("truncated root");
        assert!(matches!(err, TufError::Malformed { .. }));

        assert!(matches!(
            KeyPair::from_json(b"\xff"),
            Err(TufError::Malformed { .. })
        ));
        assert!(matches!(
            PublicKey::from_json(br#"{"keytype": "ed25519"}"#),
            Err(TufError::Malformed { .. })
        ));
        assert!(matches!(
            PublicKey::from_json(
                br#"{"keytype":"ed25519","scheme":"ed25519","keyval":{"public":"zz"}}"#
            ),
            Err(TufError::InvalidKey { .. })
        ));
    }

    #[test]
    fn missing_file_and_fetch_error() {
        let mut repo = Repo::new();
        let trust = repo.trust();
        repo.files.remove(SNAPSHOT_FILE);
        let err = repo.refresh(&trust).expect_err("missing");
        assert!(matches!(err, TufError::Missing { ref file } if file == "snapshot.json"));
        assert_eq!(err.to_string(), "snapshot.json is missing on the server");

        let err = block_on(refresh(&trust, now(), MAX, |name: &str, _max: u64| {
            std::future::ready(if name == TIMESTAMP_FILE {
                Err("connection reset".to_owned())
            } else {
                Ok(None)
            })
        }))
        .expect_err("fetch error");
        assert!(matches!(err, TufError::Fetch { .. }));
        assert_eq!(
            err.to_string(),
            "fetching timestamp.json failed: connection reset"
        );
    }

    #[test]
    fn fetch_limits_are_passed_and_enforced() {
        let mut repo = Repo::new();
        let trust = repo.trust();
        let (result, asked) = refresh_at(&repo.files, &trust, now(), MAX);
        result.expect("refresh");
        let snapshot_len = repo.files[SNAPSHOT_FILE].len() as u64;
        assert_eq!(
            asked,
            vec![
                ("2.root.json".to_owned(), MAX),
                (TIMESTAMP_FILE.to_owned(), MAX),
                (SNAPSHOT_FILE.to_owned(), snapshot_len),
                (TARGETS_FILE.to_owned(), MAX),
            ]
        );

        // Padding keeps the file valid JSON, so only the size can refuse it.
        let mut padded = repo.files[TIMESTAMP_FILE].clone();
        padded.resize(MAX as usize + 10, b' ');
        repo.files.insert(TIMESTAMP_FILE.to_owned(), padded.clone());
        let err = repo.refresh(&trust).expect_err("too large");
        assert!(
            matches!(err, TufError::TooLarge { ref file, limit: MAX } if file == "timestamp.json")
        );
        assert_eq!(
            err.to_string(),
            format!("timestamp.json is larger than the {MAX}-byte limit")
        );

        // A fetcher that ignores the limit is still caught.
        let err = block_on(refresh(&trust, now(), MAX, |name: &str, _max: u64| {
            std::future::ready(Ok((name == TIMESTAMP_FILE).then(|| padded.clone())))
        }))
        .expect_err("too large");
        assert!(matches!(err, TufError::TooLarge { .. }));

        // A snapshot that the timestamp says is larger than the limit is not
        // fetched at all.
        let mut repo = Repo::new();
        let mut timestamp = repo.timestamp(1, 1, future());
        if let Some(meta) = timestamp.meta.get_mut(SNAPSHOT_FILE) {
            meta.length = Some(MAX + 1);
        }
        let signed = sign(timestamp, &[&repo.keys.timestamp[0]]).expect("sign");
        repo.put(TIMESTAMP_FILE, &signed);
        let (result, asked) = refresh_at(&repo.files, &repo.trust(), now(), MAX);
        assert!(
            matches!(result, Err(TufError::TooLarge { ref file, limit: MAX }) if file == "snapshot.json")
        );
        assert!(!asked.iter().any(|(name, _)| name == SNAPSHOT_FILE));
    }

    #[test]
    fn canonical_json_sorts_and_escapes() {
        let mut inner_a = serde_json::Map::new();
        inner_a.insert("y".to_owned(), serde_json::json!([{"n": true, "m": null}]));
        inner_a.insert("x".to_owned(), Value::from(1));
        let mut a = serde_json::Map::new();
        a.insert("b".to_owned(), Value::from("s"));
        a.insert("a".to_owned(), Value::Object(inner_a));

        let mut inner_b = serde_json::Map::new();
        inner_b.insert("x".to_owned(), Value::from(1));
        inner_b.insert("y".to_owned(), serde_json::json!([{"m": null, "n": true}]));
        let mut b = serde_json::Map::new();
        b.insert("a".to_owned(), Value::Object(inner_b));
        b.insert("b".to_owned(), Value::from("s"));

        let expected = br#"{"a":{"x":1,"y":[{"m":null,"n":true}]},"b":"s"}"#;
        assert_eq!(canonical_json(&Value::Object(a)), expected.to_vec());
        assert_eq!(canonical_json(&Value::Object(b)), expected.to_vec());

        let tricky = "q\"b\\s/\u{8}\u{c}\n\r\t\u{1}\u{1f}\u{7f} é ✓ 𝄞";
        let value = serde_json::json!({ tricky: [tricky, -3, 1.5, false] });
        let ours = String::from_utf8(canonical_json(&value)).expect("utf-8");
        let theirs = serde_json::to_string(&value).expect("serde_json");
        assert_eq!(ours, theirs);
        // Canonical output reads back to the same value.
        let back: Value = serde_json::from_str(&ours).expect("parse");
        assert_eq!(back, value);
    }

    #[test]
    fn key_files_round_trip() {
        let pair = key();
        let private_file = serde_json::to_vec(&pair.to_json()).expect("json");
        let loaded = KeyPair::from_json(&private_file).expect("load private key");
        assert_eq!(loaded.key_id(), pair.key_id());
        assert_eq!(loaded.public(), pair.public());

        // A key loaded from file signs exactly as the original does.
        let signed = sign(Root::new(1, future()), &[&loaded]).expect("sign");
        let again = sign(Root::new(1, future()), &[&pair]).expect("sign");
        assert_eq!(signed.signatures, again.signatures);

        let public_file = serde_json::to_vec(&pair.public()).expect("json");
        assert_eq!(
            PublicKey::from_json(&public_file).expect("public"),
            pair.public()
        );
        assert_eq!(
            PublicKey::from_json(&private_file).expect("public from private"),
            pair.public()
        );
        assert!(matches!(
            KeyPair::from_json(&public_file),
            Err(TufError::NotAPrivateKey)
        ));

        // The key id is the sha256 of the public key's canonical JSON.
        let canonical = canonical_json(&serde_json::to_value(pair.public()).expect("json"));
        assert_eq!(pair.key_id(), sha256_hex(&canonical));
        assert_eq!(pair.key_id().len(), 64);

        let mut mismatched = pair.to_json();
        mismatched["keyval"]["public"] = Value::from(key().public().keyval.public);
        let err = KeyPair::from_json(&serde_json::to_vec(&mismatched).expect("json"))
            .expect_err("mismatch");
        assert!(matches!(err, TufError::KeyMismatch));

        let rsa = br#"{"keytype":"rsa","scheme":"rsassa-pss-sha256","keyval":{"public":"00"}}"#;
        let err = PublicKey::from_json(rsa).expect_err("rsa");
        assert!(matches!(err, TufError::UnknownKeyType { .. }));
        assert!(err.to_string().starts_with("unknown key type"));

        // Debug output must not leak the private key.
        let private_hex = pair.to_json()["keyval"]["private"]
            .as_str()
            .expect("private")
            .to_owned();
        assert!(!format!("{pair:?}").contains(&private_hex));
    }

    #[test]
    fn sign_sorts_and_dedupes_signatures() {
        let (a, b, c) = (key(), key(), key());
        let signed = sign(Root::new(1, future()), &[&c, &a, &b, &a]).expect("sign");
        let ids: Vec<&str> = signed.signatures.iter().map(|s| s.keyid.as_str()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(ids, sorted);
        assert_eq!(ids.len(), 3);
    }

    #[test]
    fn expiry_times_are_formatted_and_clamped() {
        let root = Root::new(1, at("2027-01-01T00:00:00Z"));
        assert_eq!(root.expires, "2027-01-01T00:00:00Z");
        assert_eq!(
            Root::new(1, UNIX_EPOCH - Duration::from_secs(5)).expires,
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(
            Root::new(1, UNIX_EPOCH + Duration::from_secs(u64::MAX / 4)).expires,
            "9999-12-31T23:59:59Z"
        );
        assert!(matches!(
            parse_expires("x", "2027-01-01T00:00:00.5Z"),
            Err(TufError::BadExpiry { .. })
        ));
        assert!(matches!(
            parse_expires("x", "2027-13-01T00:00:00Z"),
            Err(TufError::BadExpiry { .. })
        ));
        assert!(matches!(
            parse_expires("x", "2027-01-01T00:00:0éZ"),
            Err(TufError::BadExpiry { .. })
        ));
    }
}
