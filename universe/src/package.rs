//! A package as the Universe repository JSON carries it: the fields of `package.json`, plus
//! `releaseVersion`, `config` (the options' JSON Schema), `marathon.v2AppMustacheTemplate`
//! (base64) and `resource`. Loaded from a package directory, an archive or a repository
//! index, and checked the same way from each.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

use crate::mustache::{Template, TemplateError};

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("{file}: not JSON: {err}")]
    NotJson { file: &'static str, err: String },
    #[error("package.json is missing")]
    NoPackageJson,
    #[error("{0}")]
    Invalid(String),
    #[error("marathon.json.mustache: {0}")]
    Template(#[from] TemplateError),
}

/// Media type of a Universe repository, and of the one we serve (v5 holds every shape).
pub const REPO_MEDIA_V5: &str = "application/vnd.dcos.universe.repo+json;charset=utf-8;version=v5";

#[derive(Debug, Clone, PartialEq)]
pub struct Package {
    def: Map<String, Value>,
}

fn invalid(msg: impl Into<String>) -> PackageError {
    PackageError::Invalid(msg.into())
}

fn parse_json(file: &'static str, bytes: &[u8]) -> Result<Value, PackageError> {
    serde_json::from_slice(bytes).map_err(|e| PackageError::NotJson {
        file,
        err: e.to_string(),
    })
}

impl Package {
    /// From the files of a package directory or archive. `release_version` is the index the
    /// Universe layout gives by directory number.
    pub fn from_files(
        files: &BTreeMap<String, Vec<u8>>,
        release_version: u64,
    ) -> Result<Package, PackageError> {
        let pkg = files
            .get("package.json")
            .ok_or(PackageError::NoPackageJson)?;
        let Value::Object(mut def) = parse_json("package.json", pkg)? else {
            return Err(invalid("package.json: must be a JSON object"));
        };
        def.insert("releaseVersion".into(), release_version.into());
        if let Some(c) = files.get("config.json") {
            def.insert("config".into(), parse_json("config.json", c)?);
        }
        if let Some(r) = files.get("resource.json") {
            def.insert("resource".into(), parse_json("resource.json", r)?);
        }
        if let Some(c) = files.get("command.json") {
            def.insert("command".into(), parse_json("command.json", c)?);
        }
        if let Some(t) = files.get("marathon.json.mustache") {
            def.insert(
                "marathon".into(),
                serde_json::json!({ "v2AppMustacheTemplate": B64.encode(t) }),
            );
        }
        let p = Package::from_index(Value::Object(def))?;
        p.check_deep()?;
        Ok(p)
    }

    /// From one entry of a repository index, with every check: what a publisher runs.
    pub fn from_value(v: Value) -> Result<Package, PackageError> {
        let p = Package::from_index(v)?;
        p.check_deep()?;
        Ok(p)
    }

    /// From one entry of a repository index, checking its metadata but not compiling its
    /// schema or template: a client reading an index of thousands needs only what search
    /// and describe show, and render checks the rest when the package is used (the
    /// compile was 90 % of reading a 10,000-package index).
    pub fn from_index(v: Value) -> Result<Package, PackageError> {
        let Value::Object(def) = v else {
            return Err(invalid("a package must be a JSON object"));
        };
        let p = Package { def };
        p.check()?;
        Ok(p)
    }

    /// The schema compiles and the template parses.
    pub fn check_deep(&self) -> Result<(), PackageError> {
        let name = self.name();
        if let Some(schema) = self.config() {
            jsonschema::draft4::new(schema).map_err(|e| {
                invalid(format!(
                    "config.json ({name}): not a valid JSON Schema: {e}"
                ))
            })?;
        }
        if let Some(t) = self.template()? {
            Template::parse(&t)?;
        }
        Ok(())
    }

    fn check(&self) -> Result<(), PackageError> {
        let name = self.name();
        if !valid_name(name) {
            return Err(invalid(format!(
                "package.json: name {name:?} must match ^[a-z][a-z0-9-]*[a-z0-9]$"
            )));
        }
        for field in ["version", "maintainer", "description"] {
            if !self.def.get(field).is_some_and(Value::is_string) {
                return Err(invalid(format!(
                    "package.json ({name}): \"{field}\" is required and must be a string"
                )));
            }
        }
        if !self
            .def
            .get("tags")
            .and_then(Value::as_array)
            .is_some_and(|t| t.iter().all(Value::is_string))
        {
            return Err(invalid(format!(
                "package.json ({name}): \"tags\" is required and must be a list of strings"
            )));
        }
        let pv = self.packaging_version();
        if !["2.0", "3.0", "4.0", "5.0"].contains(&pv) {
            return Err(invalid(format!(
                "package.json ({name}): packagingVersion {pv:?} is not one of 2.0, 3.0, 4.0, 5.0"
            )));
        }
        if self.def.contains_key("command") && (pv == "4.0" || pv == "5.0") {
            return Err(invalid(format!(
                "{name}: command.json is not allowed with packagingVersion {pv}"
            )));
        }
        if pv == "2.0" && self.def.get("marathon").is_none() {
            return Err(invalid(format!(
                "{name}: packagingVersion 2.0 requires marathon.json.mustache"
            )));
        }
        if self
            .def
            .get("releaseVersion")
            .and_then(Value::as_u64)
            .is_none()
        {
            return Err(invalid(format!(
                "{name}: releaseVersion must be an integer >= 0"
            )));
        }
        for (field, want_object) in [("config", true), ("resource", true)] {
            if let Some(v) = self.def.get(field)
                && want_object
                && !v.is_object()
            {
                return Err(invalid(format!("{name}: {field} must be a JSON object")));
            }
        }
        Ok(())
    }

    pub fn name(&self) -> &str {
        self.str("name").unwrap_or("")
    }
    pub fn version(&self) -> &str {
        self.str("version").unwrap_or("")
    }
    pub fn release_version(&self) -> u64 {
        self.def
            .get("releaseVersion")
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }
    pub fn packaging_version(&self) -> &str {
        self.str("packagingVersion").unwrap_or("")
    }
    pub fn description(&self) -> &str {
        self.str("description").unwrap_or("")
    }
    pub fn framework(&self) -> bool {
        self.def
            .get("framework")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
    pub fn selected(&self) -> bool {
        self.def
            .get("selected")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
    pub fn tags(&self) -> Vec<&str> {
        self.def
            .get("tags")
            .and_then(Value::as_array)
            .map(|t| t.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }
    pub fn config(&self) -> Option<&Value> {
        self.def.get("config")
    }
    pub fn resource(&self) -> Option<&Value> {
        self.def.get("resource")
    }
    pub fn str(&self, field: &str) -> Option<&str> {
        self.def.get(field).and_then(Value::as_str)
    }
    /// `resource.images` as Cosmos' search returns them.
    pub fn images(&self) -> Value {
        self.resource()
            .and_then(|r| r.get("images"))
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// The Marathon app template, decoded.
    pub fn template(&self) -> Result<Option<String>, PackageError> {
        let Some(m) = self.def.get("marathon") else {
            return Ok(None);
        };
        let b64 = m
            .get("v2AppMustacheTemplate")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                invalid(format!(
                    "{}: marathon.v2AppMustacheTemplate is missing",
                    self.name()
                ))
            })?;
        let bytes = B64.decode(b64).map_err(|e| {
            invalid(format!(
                "{}: marathon template is not base64: {e}",
                self.name()
            ))
        })?;
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| invalid(format!("{}: marathon template is not UTF-8", self.name())))
    }

    /// The definition as the repository JSON and `/package/describe` carry it.
    pub fn to_value(&self) -> Value {
        Value::Object(self.def.clone())
    }
}

pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-'
}

/// Orders versions the way people read them: numeric dot-separated parts compare as
/// numbers (`1.10.0` after `1.9.2`), anything else as text.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |s: &str| -> Vec<(u64, String)> {
        s.split(['.', '-'])
            .map(|p| (p.parse().unwrap_or(u64::MAX), p.to_string()))
            .collect()
    };
    parts(a).cmp(&parts(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn files(pkg: &str, extra: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        let mut f = BTreeMap::new();
        f.insert("package.json".to_string(), pkg.as_bytes().to_vec());
        for (k, v) in extra {
            f.insert((*k).to_string(), v.as_bytes().to_vec());
        }
        f
    }

    const PKG: &str = r#"{"packagingVersion":"4.0","name":"hello-world","version":"1.0.0",
        "maintainer":"x@y","description":"d","tags":["web"]}"#;

    #[test]
    fn loads_the_universe_files() {
        let p = Package::from_files(
            &files(
                PKG,
                &[
                    ("config.json", r#"{"type":"object"}"#),
                    ("marathon.json.mustache", r#"{"id":"x"}"#),
                    ("resource.json", r#"{"images":{"icon-small":"u"}}"#),
                ],
            ),
            3,
        )
        .expect("valid");
        assert_eq!(p.name(), "hello-world");
        assert_eq!(p.release_version(), 3);
        assert_eq!(p.template().expect("t").as_deref(), Some(r#"{"id":"x"}"#));
        assert_eq!(p.images()["icon-small"], "u");
        let again = Package::from_value(p.to_value()).expect("round trip");
        assert_eq!(again, p);
    }

    #[test]
    fn bad_packages_say_what_is_wrong() {
        let err = |pkg: &str, extra: &[(&str, &str)]| {
            Package::from_files(&files(pkg, extra), 0)
                .expect_err("invalid")
                .to_string()
        };
        assert!(err(&PKG.replace("hello-world", "Hello"), &[]).contains("must match"));
        assert!(err(&PKG.replace("\"maintainer\":\"x@y\",", ""), &[]).contains("\"maintainer\""));
        assert!(err(&PKG.replace("4.0", "9.0"), &[]).contains("packagingVersion"));
        assert!(err(PKG, &[("command.json", "{}")]).contains("command.json"));
        assert!(err(PKG, &[("config.json", "{nope")]).contains("config.json: not JSON"));
        assert!(
            err(PKG, &[("config.json", r#"{"type":"objekt"}"#)])
                .contains("not a valid JSON Schema")
        );
        assert!(err(PKG, &[("marathon.json.mustache", "{{#a}}")]).contains("never closed"));
        assert!(
            Package::from_files(&BTreeMap::new(), 0)
                .expect_err("empty")
                .to_string()
                .contains("package.json is missing")
        );
    }

    #[test]
    fn versions_compare_numerically() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_versions("1.10.0", "1.9.2"), Greater);
        assert_eq!(compare_versions("0.1", "0.1"), Equal);
    }
}
