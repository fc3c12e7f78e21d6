//! From a package and the operator's options to the Marathon app Cosmos would produce:
//! defaults taken from `config.json`, merged with the options, validated against the schema,
//! `resource` added to the context, the template rendered, and the labels that tie the app
//! back to its package written last so a template cannot forge them.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value, json};

use crate::mustache::{Template, TemplateError};
use crate::package::{Package, PackageError};

pub const LABEL_NAME: &str = "DCOS_PACKAGE_NAME";
pub const LABEL_VERSION: &str = "DCOS_PACKAGE_VERSION";
pub const LABEL_SOURCE: &str = "DCOS_PACKAGE_SOURCE";
pub const LABEL_OPTIONS: &str = "DCOS_PACKAGE_OPTIONS";
pub const LABEL_DEFINITION: &str = "DCOS_PACKAGE_DEFINITION";
pub const LABEL_FRAMEWORK_NAME: &str = "DCOS_PACKAGE_FRAMEWORK_NAME";

/// How the stored definition is wrapped, so a reader knows which shape it holds.
pub const PACKAGE_MEDIA_V4: &str =
    "application/vnd.dcos.universe.package+json;charset=utf-8;version=v4";

/// One way the options fail the schema, located by JSON pointer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Violation {
    /// Where in the options (`/service/cpus`; empty for the top level).
    pub path: String,
    pub keyword: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{0} takes no options (it has no config.json)")]
    OptionsNotAllowed(String),
    #[error("options fail the package's schema: {}", describe(.0))]
    JsonSchemaMismatch(Vec<Violation>),
    #[error("options must be a JSON object")]
    OptionsNotObject,
    #[error("{0} has no Marathon template: there is nothing to run")]
    NoTemplate(String),
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error("marathon.json.mustache: {0}")]
    Template(#[from] TemplateError),
    #[error("the template renders to invalid JSON ({0})")]
    NotJson(String),
    #[error("the template must render to a JSON object")]
    NotObject,
    #[error("the rendered app's labels must map strings to strings")]
    BadLabels,
    #[error("app id {0:?} is not a valid Marathon path")]
    BadAppId(String),
}

fn describe(v: &[Violation]) -> String {
    v.iter()
        .map(|e| {
            let at = if e.path.is_empty() { "/" } else { &e.path };
            format!("{at}: {}", e.message)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Defaults of every property that declares one, recursing into nested objects so a
/// `service.name` default appears even when `service` has none of its own (Cosmos).
pub fn defaults(schema: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return out;
    };
    for (name, prop) in props {
        if let Some(d) = prop.get("default") {
            out.insert(name.clone(), d.clone());
        } else if prop.get("properties").is_some() {
            out.insert(name.clone(), Value::Object(defaults(prop)));
        }
    }
    out
}

/// Deep merge; `b` wins, objects merge key by key.
pub fn merge(a: &mut Map<String, Value>, b: &Map<String, Value>) {
    for (k, vb) in b {
        match (a.get_mut(k), vb) {
            (Some(Value::Object(va)), Value::Object(vb)) => merge(va, vb),
            _ => {
                a.insert(k.clone(), vb.clone());
            }
        }
    }
}

/// Defaults merged with the operator's options, checked against the schema.
pub fn resolve_options(pkg: &Package, options: Option<&Value>) -> Result<Value, RenderError> {
    let user = match options {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => return Err(RenderError::OptionsNotObject),
    };
    let Some(schema) = pkg.config() else {
        if user.is_some_and(|u| !u.is_empty()) {
            return Err(RenderError::OptionsNotAllowed(pkg.name().to_string()));
        }
        return Ok(Value::Object(Map::new()));
    };
    let mut merged = defaults(schema);
    if let Some(u) = user {
        merge(&mut merged, u);
    }
    if merged.is_empty() {
        // Nothing to check (Cosmos validates only a non-empty set of options).
        return Ok(Value::Object(merged));
    }
    let merged = Value::Object(merged);
    let validator = jsonschema::draft4::new(schema).map_err(|e| {
        RenderError::Package(PackageError::Invalid(format!(
            "config.json ({}): {e}",
            pkg.name()
        )))
    })?;
    let violations: Vec<Violation> = validator
        .iter_errors(&merged)
        .map(|e| Violation {
            path: e.instance_path().to_string(),
            keyword: keyword_of(&e.schema_path().to_string()),
            message: e.to_string(),
        })
        .collect();
    if !violations.is_empty() {
        return Err(RenderError::JsonSchemaMismatch(violations));
    }
    Ok(merged)
}

fn keyword_of(schema_path: &str) -> String {
    schema_path.rsplit('/').next().unwrap_or("").to_string()
}

/// What `/package/render` returns and `/package/install` posts to init.
#[derive(Debug)]
pub struct Rendered {
    pub app: Value,
    /// Defaults merged with the options, as `/cosmos/service/describe` shows them.
    pub resolved_options: Value,
}

/// Renders the package's app. `source` is the repository URI it came from; `app_id`
/// overrides the template's id.
pub fn render(
    pkg: &Package,
    source: &str,
    options: Option<&Value>,
    app_id: Option<&str>,
) -> Result<Rendered, RenderError> {
    let resolved = resolve_options(pkg, options)?;
    let template = pkg
        .template()?
        .ok_or_else(|| RenderError::NoTemplate(pkg.name().to_string()))?;
    let mut ctx = resolved.as_object().cloned().unwrap_or_default();
    if let Some(r) = pkg.resource().and_then(Value::as_object) {
        let mut res = Map::new();
        res.insert("resource".into(), Value::Object(r.clone()));
        merge(&mut ctx, &res);
    }
    let text = Template::parse(&template)?.render(&Value::Object(ctx))?;
    let parsed: Value = serde_json::from_str(&text).map_err(|e| {
        let line = text.lines().nth(e.line().saturating_sub(1)).unwrap_or("");
        RenderError::NotJson(format!("{e}; rendered line: {}", line.trim()))
    })?;
    let Value::Object(mut app) = parsed else {
        return Err(RenderError::NotObject);
    };
    if let Some(id) = app_id {
        if !valid_app_id(id) {
            return Err(RenderError::BadAppId(id.to_string()));
        }
        app.insert("id".into(), Value::String(absolute(id)));
    }
    let mut labels = match app.remove("labels") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) if m.values().all(Value::is_string) => m,
        Some(_) => return Err(RenderError::BadLabels),
    };
    let user_options = match options {
        None | Some(Value::Null) => json!({}),
        Some(o) => o.clone(),
    };
    let envelope = json!({
        "metadata": {"Content-Type": PACKAGE_MEDIA_V4},
        "data": pkg.to_value(),
    });
    for (k, v) in [
        (LABEL_NAME, pkg.name().to_string()),
        (LABEL_VERSION, pkg.version().to_string()),
        (LABEL_SOURCE, source.to_string()),
        (LABEL_OPTIONS, B64.encode(user_options.to_string())),
        (LABEL_DEFINITION, B64.encode(envelope.to_string())),
    ] {
        labels.insert(k.into(), Value::String(v));
    }
    app.insert("labels".into(), Value::Object(labels));
    Ok(Rendered {
        app: Value::Object(app),
        resolved_options: resolved,
    })
}

/// The package definition an installed app carries in its labels.
pub fn definition_from_labels(labels: &Map<String, Value>) -> Option<Value> {
    let raw = labels.get(LABEL_DEFINITION)?.as_str()?;
    let bytes = B64.decode(raw).ok()?;
    let env: Value = serde_json::from_slice(&bytes).ok()?;
    env.get("data").cloned()
}

/// The options an installed app was installed with.
pub fn options_from_labels(labels: &Map<String, Value>) -> Option<Value> {
    let raw = labels.get(LABEL_OPTIONS)?.as_str()?;
    serde_json::from_slice(&B64.decode(raw).ok()?).ok()
}

fn absolute(id: &str) -> String {
    if id.starts_with('/') {
        id.to_string()
    } else {
        format!("/{id}")
    }
}

/// Marathon's path rule: segments of lowercase letters, digits, `-` and `.`, starting and
/// ending with a letter or digit (`.` and `..` aside).
pub fn valid_app_id(id: &str) -> bool {
    let trimmed = id.trim_start_matches('/');
    !trimmed.is_empty()
        && trimmed.split('/').all(|seg| {
            let b = seg.as_bytes();
            !b.is_empty()
                && b.iter().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.'
                })
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn pkg(config: &str, template: &str, resource: Option<&str>) -> Package {
        let mut f = BTreeMap::new();
        f.insert(
            "package.json".to_string(),
            br#"{"packagingVersion":"4.0","name":"web","version":"2.1.0","maintainer":"m",
               "description":"d","tags":[]}"#
                .to_vec(),
        );
        f.insert("config.json".to_string(), config.as_bytes().to_vec());
        f.insert(
            "marathon.json.mustache".to_string(),
            template.as_bytes().to_vec(),
        );
        if let Some(r) = resource {
            f.insert("resource.json".to_string(), r.as_bytes().to_vec());
        }
        Package::from_files(&f, 0).expect("package")
    }

    const CONFIG: &str = r#"{"type":"object","properties":{
        "service":{"type":"object","properties":{
            "name":{"type":"string","default":"web"},
            "cpus":{"type":"number","minimum":0.1,"default":0.5},
            "env":{"type":"object","default":{"A":"1"}}},
          "required":["name"]},
        "port":{"type":"integer","default":0}},"additionalProperties":false}"#;

    const TEMPLATE: &str = r#"{"id":"/{{service.name}}","cpus":{{service.cpus}},
        "env":{{#asJson}}service.env{{/asJson}},
        "cmd":"run {{resource.assets.uris.bin}}",
        "labels":{"DCOS_SERVICE_NAME":"{{service.name}}","DCOS_PACKAGE_NAME":"forged"}}"#;

    #[test]
    fn nested_defaults_options_and_resource() {
        let p = pkg(
            CONFIG,
            TEMPLATE,
            Some(r#"{"assets":{"uris":{"bin":"http://h/b"}}}"#),
        );
        let r = render(
            &p,
            "http://repo/repo.json",
            Some(&json!({"service": {"cpus": 1.5, "env": {"B": "2"}}})),
            None,
        )
        .expect("renders");
        let app = r.app;
        assert_eq!(app["id"], "/web");
        assert_eq!(app["cpus"], 1.5);
        // An object option replaces the default object's keys it names, keeps the rest.
        assert_eq!(app["env"], json!({"A": "1", "B": "2"}));
        assert_eq!(app["cmd"], "run http://h/b");
        let labels = app["labels"].as_object().expect("labels");
        assert_eq!(labels["DCOS_SERVICE_NAME"], "web");
        assert_eq!(labels[LABEL_NAME], "web", "the package's labels win");
        assert_eq!(labels[LABEL_VERSION], "2.1.0");
        assert_eq!(labels[LABEL_SOURCE], "http://repo/repo.json");
        assert_eq!(
            options_from_labels(labels),
            Some(json!({"service": {"cpus": 1.5, "env": {"B": "2"}}}))
        );
        assert_eq!(
            definition_from_labels(labels).expect("definition")["name"],
            "web"
        );
        assert_eq!(r.resolved_options["port"], 0);
    }

    #[test]
    fn app_id_overrides_the_template() {
        let p = pkg(CONFIG, TEMPLATE, None);
        let r = render(&p, "s", None, Some("team/web-2")).expect("renders");
        assert_eq!(r.app["id"], "/team/web-2");
        assert!(matches!(
            render(&p, "s", None, Some("Bad_Id")),
            Err(RenderError::BadAppId(_))
        ));
    }

    #[test]
    fn schema_failures_name_the_path() {
        let p = pkg(CONFIG, TEMPLATE, None);
        let err =
            render(&p, "s", Some(&json!({"service": {"cpus": 0.01}})), None).expect_err("minimum");
        let RenderError::JsonSchemaMismatch(v) = &err else {
            panic!("{err}")
        };
        assert_eq!(v[0].path, "/service/cpus");
        assert_eq!(v[0].keyword, "minimum");
        assert!(err.to_string().contains("/service/cpus"), "{err}");
        let err = render(&p, "s", Some(&json!({"extra": 1})), None).expect_err("additional");
        assert!(err.to_string().contains("extra"), "{err}");
        assert!(matches!(
            render(&p, "s", Some(&json!([1])), None),
            Err(RenderError::OptionsNotObject)
        ));
    }

    #[test]
    fn options_without_a_schema_are_refused() {
        let mut f = BTreeMap::new();
        f.insert(
            "package.json".to_string(),
            br#"{"packagingVersion":"3.0","name":"plain","version":"1","maintainer":"m",
               "description":"d","tags":[]}"#
                .to_vec(),
        );
        f.insert(
            "marathon.json.mustache".to_string(),
            br#"{"id":"/plain","cmd":"true"}"#.to_vec(),
        );
        let p = Package::from_files(&f, 0).expect("package");
        assert!(matches!(
            render(&p, "s", Some(&json!({"a": 1})), None),
            Err(RenderError::OptionsNotAllowed(_))
        ));
        assert!(render(&p, "s", Some(&json!({})), None).is_ok());
    }

    #[test]
    fn broken_templates_are_errors() {
        let p = pkg(CONFIG, r#"{"id": {{service.name}} }"#, None);
        let err = render(&p, "s", None, None).expect_err("not json");
        assert!(
            err.to_string().contains("invalid JSON") && err.to_string().contains("web"),
            "{err}"
        );
        let p = pkg(CONFIG, r#"["{{service.name}}"]"#, None);
        assert!(matches!(
            render(&p, "s", None, None),
            Err(RenderError::NotObject)
        ));
        let p = pkg(CONFIG, r#"{"id":"/a","labels":{"n":1}}"#, None);
        assert!(matches!(
            render(&p, "s", None, None),
            Err(RenderError::BadLabels)
        ));
    }

    #[test]
    fn a_quote_in_an_option_cannot_escape_its_string() {
        let p = pkg(CONFIG, TEMPLATE, None);
        let r = render(
            &p,
            "s",
            Some(&json!({"service": {"name": "x\",\"cpus\":99,\"y"}})),
            None,
        );
        // The id is no valid Marathon path, but the JSON structure held.
        let app = r.expect("renders").app;
        assert_eq!(app["cpus"], 0.5);
    }
}
