//! Mustache as Cosmos renders `marathon.json.mustache`: the template's output must be JSON, so
//! values are written JSON-escaped (a quote in an option cannot break out of its string), no
//! HTML escaping, and `{{#asJson}}path{{/asJson}}` writes a value as a JSON document.
//!
//! Why not the `mustache` crate: it HTML-escapes every `{{var}}` with no way to turn that off
//! (Cosmos turns it off), and it panics on a variable tag naming an object — input that comes
//! from package authors and operators, which must get an error, not a crash.

use serde_json::Value;
use std::fmt::Write as _;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TemplateError {
    #[error("line {line}: unclosed tag (no `{close}` after `{open}`)")]
    Unclosed {
        line: usize,
        open: String,
        close: String,
    },
    #[error("line {line}: section `{name}` is never closed")]
    UnclosedSection { line: usize, name: String },
    #[error("line {line}: `{{{{/{got}}}}}` closes `{expected}`")]
    MismatchedClose {
        line: usize,
        expected: String,
        got: String,
    },
    #[error("line {line}: bad delimiter change `{text}`")]
    BadDelimiters { line: usize, text: String },
    #[error("line {line}: partials (`{{{{> {name}}}}}`) are not supported in package templates")]
    Partial { line: usize, name: String },
    #[error("line {line}: empty tag")]
    EmptyTag { line: usize },
    #[error("line {line}: sections nest deeper than {MAX_DEPTH}")]
    TooDeep { line: usize },
    #[error("the template renders to more than {MAX_OUTPUT} bytes")]
    TooLarge,
}

/// Real templates nest sections two or three deep; the cap keeps a hostile one from
/// exhausting the stack of the process that parses it.
pub const MAX_DEPTH: usize = 64;
/// A Marathon app definition is a few KiB; loops over option arrays must not grow without
/// bound.
pub const MAX_OUTPUT: usize = 8 << 20;

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Var(String),
    Section {
        name: String,
        inverted: bool,
        children: Vec<Node>,
        /// The section's source text, which a lambda (asJson) receives.
        raw: String,
    },
}

/// A parsed template, ready to render against any number of contexts.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
}

impl Template {
    pub fn parse(src: &str) -> Result<Template, TemplateError> {
        let mut open = "{{".to_string();
        let mut close = "}}".to_string();
        // Stack of (name, line, children-so-far, inverted, raw start offset).
        let mut stack: Vec<(String, usize, Vec<Node>, bool, usize)> = Vec::new();
        let mut nodes: Vec<Node> = Vec::new();
        let mut pos = 0;
        // Lines are counted as the parser moves, so a long template costs one pass.
        let (mut counted_to, mut counted_line) = (0usize, 1usize);
        let mut line_of = |at: usize| {
            counted_line += src[counted_to..at].matches('\n').count();
            counted_to = at;
            counted_line
        };
        while pos < src.len() {
            let Some(rel) = src[pos..].find(open.as_str()) else {
                push_text(current(&mut stack, &mut nodes), &src[pos..]);
                break;
            };
            let tag_start = pos + rel;
            push_text(current(&mut stack, &mut nodes), &src[pos..tag_start]);
            let mut inner_start = tag_start + open.len();
            let mut end_delim = close.clone();
            // `{{{name}}}` ends with `}}}` under the default delimiters.
            let triple = open == "{{" && src[inner_start..].starts_with('{');
            if triple {
                inner_start += 1;
                end_delim = "}}}".to_string();
            }
            let Some(rel_end) = src[inner_start..].find(end_delim.as_str()) else {
                return Err(TemplateError::Unclosed {
                    line: line_of(tag_start),
                    open: open.clone(),
                    close: end_delim,
                });
            };
            let inner = &src[inner_start..inner_start + rel_end];
            let after = inner_start + rel_end + end_delim.len();
            let line = line_of(tag_start);
            if stack.len() >= MAX_DEPTH {
                return Err(TemplateError::TooDeep { line });
            }
            let body = inner.trim();
            if triple {
                current(&mut stack, &mut nodes).push(Node::Var(name_of(body, line)?));
                pos = after;
                continue;
            }
            let (sigil, rest) = match body.chars().next() {
                Some(c @ ('#' | '^' | '/' | '!' | '&' | '>' | '=')) => (Some(c), &body[1..]),
                _ => (None, body),
            };
            match sigil {
                Some('!') => {}
                Some('=') => {
                    let spec = rest.strip_suffix('=').unwrap_or("").trim();
                    let mut parts = spec.split_whitespace();
                    match (parts.next(), parts.next(), parts.next()) {
                        (Some(o), Some(c), None) if !o.contains('=') && !c.contains('=') => {
                            open = o.to_string();
                            close = c.to_string();
                        }
                        _ => {
                            return Err(TemplateError::BadDelimiters {
                                line,
                                text: inner.to_string(),
                            });
                        }
                    }
                }
                Some('>') => {
                    return Err(TemplateError::Partial {
                        line,
                        name: rest.trim().to_string(),
                    });
                }
                Some('#') | Some('^') => {
                    stack.push((
                        name_of(rest, line)?,
                        line,
                        Vec::new(),
                        sigil == Some('^'),
                        after,
                    ));
                }
                Some('/') => {
                    let got = name_of(rest, line)?;
                    let Some((name, _, children, inverted, raw_start)) = stack.pop() else {
                        return Err(TemplateError::MismatchedClose {
                            line,
                            expected: "(nothing open)".into(),
                            got,
                        });
                    };
                    if name != got {
                        return Err(TemplateError::MismatchedClose {
                            line,
                            expected: name,
                            got,
                        });
                    }
                    let raw = src[raw_start..tag_start].to_string();
                    current(&mut stack, &mut nodes).push(Node::Section {
                        name,
                        inverted,
                        children,
                        raw,
                    });
                }
                // `&` (unescaped) is the same as a plain variable: nothing is HTML-escaped.
                _ => {
                    current(&mut stack, &mut nodes).push(Node::Var(name_of(rest, line)?));
                }
            }
            pos = after;
        }
        if let Some((name, line, ..)) = stack.pop() {
            return Err(TemplateError::UnclosedSection { line, name });
        }
        Ok(Template { nodes })
    }

    /// Renders against `ctx` (the merged options with `resource`).
    pub fn render(&self, ctx: &Value) -> Result<String, TemplateError> {
        let mut out = String::new();
        let mut stack = vec![Frame {
            value: ctx,
            in_array: false,
        }];
        render_nodes(&self.nodes, &mut stack, &mut out);
        if out.len() > MAX_OUTPUT {
            return Err(TemplateError::TooLarge);
        }
        Ok(out)
    }
}

fn current<'a>(
    stack: &'a mut [(String, usize, Vec<Node>, bool, usize)],
    nodes: &'a mut Vec<Node>,
) -> &'a mut Vec<Node> {
    match stack.last_mut() {
        Some(top) => &mut top.2,
        None => nodes,
    }
}

fn push_text(into: &mut Vec<Node>, text: &str) {
    if !text.is_empty() {
        into.push(Node::Text(text.to_string()));
    }
}

fn name_of(s: &str, line: usize) -> Result<String, TemplateError> {
    let name = s.trim();
    if name.is_empty() {
        return Err(TemplateError::EmptyTag { line });
    }
    Ok(name.to_string())
}

#[derive(Clone, Copy)]
struct Frame<'a> {
    value: &'a Value,
    /// Strings iterated out of an array keep their quotes (Cosmos), so `{{.}}` inside
    /// `{{#list}}` writes a JSON string.
    in_array: bool,
}

fn lookup<'a>(stack: &[Frame<'a>], name: &str) -> Option<Frame<'a>> {
    if name == "." {
        return stack.last().copied();
    }
    let mut parts = name.split('.');
    let first = parts.next()?;
    let mut found = stack
        .iter()
        .rev()
        .find_map(|f| f.value.as_object().and_then(|m| m.get(first)))?;
    for part in parts {
        found = found.as_object()?.get(part)?;
    }
    Some(Frame {
        value: found,
        in_array: false,
    })
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => true,
    }
}

fn write_value(f: Frame<'_>, out: &mut String) {
    match f.value {
        Value::Null => {}
        Value::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        // Whole numbers print without a fraction (`1.0` as `1`), as Cosmos converts them.
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => {
                let _ = write!(out, "{i}");
            }
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                let _ = write!(out, "{}", f as i64);
            }
            _ => {
                let _ = write!(out, "{n}");
            }
        },
        Value::String(s) => {
            let quoted = Value::String(s.clone()).to_string();
            if f.in_array {
                out.push_str(&quoted);
            } else {
                out.push_str(&quoted[1..quoted.len() - 1]);
            }
        }
        other => out.push_str(&other.to_string()),
    }
}

fn render_nodes<'a>(nodes: &'a [Node], stack: &mut Vec<Frame<'a>>, out: &mut String) {
    for node in nodes {
        if out.len() > MAX_OUTPUT {
            return;
        }
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Var(name) => {
                if let Some(f) = lookup(stack, name) {
                    write_value(f, out);
                }
            }
            Node::Section {
                name,
                inverted,
                children,
                raw,
            } => {
                let found = lookup(stack, name);
                if *inverted {
                    if !found.is_some_and(|f| truthy(f.value)) {
                        render_nodes(children, stack, out);
                    }
                    continue;
                }
                let Some(f) = found else {
                    if name == "asJson" {
                        // The lambda's text names the value to write as JSON.
                        if let Some(v) = lookup(stack, raw.trim()) {
                            out.push_str(&v.value.to_string());
                        }
                    }
                    continue;
                };
                match f.value {
                    Value::Array(items) => {
                        for item in items {
                            stack.push(Frame {
                                value: item,
                                in_array: true,
                            });
                            render_nodes(children, stack, out);
                            stack.pop();
                        }
                    }
                    v if truthy(v) => {
                        stack.push(f);
                        render_nodes(children, stack, out);
                        stack.pop();
                    }
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(t: &str, ctx: Value) -> String {
        Template::parse(t)
            .expect("parses")
            .render(&ctx)
            .expect("renders")
    }

    #[test]
    fn dotted_names_and_json_escaping() {
        let ctx = json!({"service": {"name": "a\"b", "cpus": 0.5, "n": 3}});
        assert_eq!(
            render(
                r#"{"id":"{{service.name}}","cpus":{{service.cpus}},"i":{{service.n}}}"#,
                ctx
            ),
            r#"{"id":"a\"b","cpus":0.5,"i":3}"#
        );
    }

    #[test]
    fn no_html_escaping() {
        assert_eq!(
            render("{{a}}|{{{a}}}|{{& a}}", json!({"a": "<&>"})),
            "<&>|<&>|<&>"
        );
    }

    #[test]
    fn sections_lists_and_inverted() {
        let ctx = json!({"on": true, "off": false, "empty": "", "l": ["x", "y"], "o": {"k": 1}});
        assert_eq!(
            render(
                "{{#on}}1{{/on}}{{#off}}2{{/off}}{{^off}}3{{/off}}{{#empty}}4{{/empty}}{{^missing}}5{{/missing}}",
                ctx.clone()
            ),
            "135"
        );
        // Strings from an array keep their quotes, as Cosmos renders them.
        assert_eq!(render("[{{#l}}{{.}},{{/l}}]", ctx.clone()), r#"["x","y",]"#);
        assert_eq!(render("{{#o}}{{k}}{{/o}}", ctx), "1");
    }

    #[test]
    fn outer_names_visible_inside_sections() {
        let ctx = json!({"top": "t", "o": {"inner": "i"}});
        assert_eq!(render("{{#o}}{{inner}}{{top}}{{/o}}", ctx), "it");
    }

    #[test]
    fn as_json_writes_documents() {
        let ctx = json!({"service": {"env": {"A": "1"}, "list": [1, 2]}});
        assert_eq!(
            render(
                r#"{"env":{{#asJson}}service.env{{/asJson}},"l":{{#asJson}} service.list {{/asJson}}}"#,
                ctx
            ),
            r#"{"env":{"A":"1"},"l":[1,2]}"#
        );
    }

    #[test]
    fn hostile_templates_are_errors_not_crashes() {
        let deep = "{{#a}}".repeat(300_000);
        assert!(matches!(
            Template::parse(&deep),
            Err(TemplateError::TooDeep { line: 1 })
        ));
        // 10 x 10 x 10 x ... over a 10-element list grows past the output cap.
        let t = Template::parse(&"{{#l}}".repeat(8).to_string().add_closes(8)).expect("parses");
        let ctx = json!({"l": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]});
        assert_eq!(t.render(&ctx), Err(TemplateError::TooLarge));
        assert_eq!(render("{{x}}", json!({"x": 2.0})), "2");
    }

    trait Closes {
        fn add_closes(self, n: usize) -> String;
    }
    impl Closes for String {
        fn add_closes(self, n: usize) -> String {
            format!("{self}xxxxxxxxxx{}", "{{/l}}".repeat(n))
        }
    }

    #[test]
    fn objects_render_as_json_not_panic() {
        assert_eq!(render("{{o}}", json!({"o": {"a": [1]}})), r#"{"a":[1]}"#);
    }

    #[test]
    fn comments_and_delimiters() {
        assert_eq!(
            render(
                "{{! note }}{{=<% %>=}}<%a%>{{a}}<%={{ }}=%>{{a}}",
                json!({"a": 1})
            ),
            "1{{a}}1"
        );
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(
            Template::parse("a\n{{#x}}\n{{/y}}").err(),
            Some(TemplateError::MismatchedClose {
                line: 3,
                expected: "x".into(),
                got: "y".into()
            })
        );
        assert!(matches!(
            Template::parse("{{#x}}"),
            Err(TemplateError::UnclosedSection { line: 1, .. })
        ));
        assert!(matches!(
            Template::parse("\n{{x"),
            Err(TemplateError::Unclosed { line: 2, .. })
        ));
        assert!(matches!(
            Template::parse("{{> p}}"),
            Err(TemplateError::Partial { .. })
        ));
        assert!(matches!(
            Template::parse("{{}}"),
            Err(TemplateError::EmptyTag { .. })
        ));
    }
}
