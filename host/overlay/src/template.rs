//! `.ww` templates, rendered with minijinja: strict undefined (a typo is an error with its
//! line, not an empty string), no HTML escaping, bounded work (fuel).
//!
//! Warewulf's output directives are functions here. They leave markers in the output that
//! [`split`] turns into files afterwards, so one compiled template serves every node:
//! - `{{ file("name") }}`: what follows goes to another file (relative to the template's
//!   directory, or absolute);
//! - `{{ softlink("target") }}`: the current file becomes a symlink;
//! - `{{ abort() }}`: the current file is not written;
//! - `{{ include("/etc/munge/munge.key") }}`: a file of the host, as text;
//! - `{{ include_from(node.image, "/etc/passwd") }}`: a file of an image, as text.

use std::path::Path;

use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior, Value};

const MARK: char = '\u{1}';
/// Instructions per render: generous for real templates, finite for a runaway loop.
const FUEL: u64 = 50_000_000;

/// One file a template produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rendered {
    File { path: String, content: String },
    Symlink { path: String, target: String },
}

/// Reads a text file of an image: `(image, path) -> content`.
pub type ImageReader = std::sync::Arc<dyn Fn(&str, &str) -> Result<String, String> + Send + Sync>;

/// The first line of a template translated from Warewulf's Go templates
/// ([`crate::go_template`]). Such a template is rendered as Warewulf renders: a field or key
/// that does not exist is empty, not an error. The comment ends on the line the template's
/// own first line starts, so line numbers match the Go source.
pub const WAREWULF_COMPAT: &str =
    "{# wulf: translated from a Warewulf template; missing fields render empty #}";

/// Compiled templates, by name: wulf's own in a strict environment, those translated from
/// Warewulf in a lenient one.
pub struct Templates {
    strict: Environment<'static>,
    compat: Environment<'static>,
    /// Names of the templates compiled in `compat`.
    compat_names: std::collections::HashSet<String>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Templates")
    }
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

fn environment(undefined: UndefinedBehavior) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(undefined);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_fuel(Some(FUEL));
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    env.add_function("file", |name: String| format!("{MARK}file:{name}{MARK}"));
    env.add_function("softlink", |target: String| {
        format!("{MARK}link:{target}{MARK}")
    });
    env.add_function("abort", || format!("{MARK}abort{MARK}"));
    env.add_function("nobackup", String::new);
    env.add_function("include", |path: String| -> Result<String, Error> {
        std::fs::read_to_string(&path).map_err(|e| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!("include({path:?}): {e}"),
            )
        })
    });
    env.add_filter("basename", |path: String| {
        Path::new(&path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    env.add_filter("dirname", |path: String| {
        Path::new(&path)
            .parent()
            .map(|n| n.display().to_string())
            .unwrap_or_default()
    });
    env.add_filter("prefix", |netmask: String| -> Result<u32, Error> {
        netmask_prefix(&netmask).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!("{netmask:?} is not a netmask"),
            )
        })
    });
    env.add_filter("systemd_escape", systemd_escape);
    env.add_filter("pairs", pairs);
    env
}

/// Values printed as Go prints them: `true`, not `True`; nothing for none.
fn go_formatter(
    out: &mut minijinja::Output<'_>,
    state: &mut minijinja::State<'_, '_>,
    value: &Value,
) -> Result<(), Error> {
    match value.kind() {
        minijinja::value::ValueKind::Bool => {
            let text = if value.is_true() { "true" } else { "false" };
            out.write_str(text).map_err(Error::from)
        }
        minijinja::value::ValueKind::None | minijinja::value::ValueKind::Undefined => Ok(()),
        _ => minijinja::escape_formatter(out, state, value),
    }
}

/// `x|pairs`: `(key, value)` of a map in key order, `(index, item)` of a list, as Go's
/// `range $k, $v := x` walks them; nothing for none or an undefined value.
fn pairs(value: Value) -> Result<Value, Error> {
    if value.is_undefined() || value.is_none() {
        return Ok(Value::from(Vec::<Value>::new()));
    }
    let mut out = Vec::new();
    match value.kind() {
        minijinja::value::ValueKind::Map => {
            let mut keys: Vec<Value> = value.try_iter()?.collect();
            keys.sort();
            for key in keys {
                let item = value.get_item(&key)?;
                out.push(Value::from(vec![key, item]));
            }
        }
        minijinja::value::ValueKind::Seq | minijinja::value::ValueKind::Iterable => {
            for (i, item) in value.try_iter()?.enumerate() {
                out.push(Value::from(vec![Value::from(i), item]));
            }
        }
        _ => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("pairs: {value} is neither a map nor a list"),
            ));
        }
    }
    Ok(Value::from(out))
}

impl Templates {
    pub fn new() -> Self {
        Templates {
            strict: environment(UndefinedBehavior::Strict),
            compat: {
                let mut env = environment(UndefinedBehavior::Chainable);
                env.set_formatter(go_formatter);
                env
            },
            compat_names: Default::default(),
        }
    }

    /// Lets templates read image files with `include_from(image, path)`.
    pub fn set_image_reader(&mut self, read: ImageReader) {
        for env in [&mut self.strict, &mut self.compat] {
            let read = read.clone();
            env.add_function("include_from", move |image: String, path: String| {
                read(&image, &path).map_err(|message| {
                    Error::new(
                        ErrorKind::InvalidOperation,
                        format!("include_from({image:?}, {path:?}): {message}"),
                    )
                })
            });
        }
    }

    /// Compiles a template under `name`; errors carry the line.
    /// A template starting with [`WAREWULF_COMPAT`] renders missing fields empty.
    pub fn add(&mut self, name: &str, source: String) -> Result<(), String> {
        let env = if source.starts_with(WAREWULF_COMPAT) {
            self.compat_names.insert(name.to_owned());
            &mut self.compat
        } else {
            &mut self.strict
        };
        env.add_template_owned(name.to_owned(), source)
            .map_err(|e| describe(&e))
    }

    /// Whether template `name` (compiled from `source`) reads the top-level `variable`
    /// (`cluster`, not `node.cluster`). A template that includes or imports others may read
    /// it through them: then any mention counts.
    pub fn reads(&self, name: &str, source: &str, variable: &str) -> bool {
        if ["include", "import", "extends"]
            .iter()
            .any(|tag| source.contains(tag))
        {
            return source.contains(variable);
        }
        let env = if self.compat_names.contains(name) {
            &self.compat
        } else {
            &self.strict
        };
        env.get_template(name)
            .map_or(true, |t| t.undeclared_variables(false).contains(variable))
    }

    /// Renders `name` for the file `path` (its output path, without `.ww`).
    pub fn render(&self, name: &str, path: &str, ctx: &Value) -> Result<Vec<Rendered>, String> {
        let env = if self.compat_names.contains(name) {
            &self.compat
        } else {
            &self.strict
        };
        let template = env.get_template(name).map_err(|e| describe(&e))?;
        let text = template.render(ctx).map_err(|e| describe(&e))?;
        Ok(split(path, &text))
    }
}

/// The error with its line, and the cause chain minijinja keeps.
fn describe(e: &Error) -> String {
    let mut out = match e.line() {
        Some(line) => format!(
            "line {line}: {}",
            e.detail().unwrap_or(&e.kind().to_string())
        ),
        None => e.to_string(),
    };
    if e.kind() == ErrorKind::UndefinedError {
        out.push_str(" (a variable or field that does not exist)");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(&format!(": {s}"));
        source = s.source();
    }
    out
}

/// Splits rendered text at the markers the directives left.
pub fn split(path: &str, text: &str) -> Vec<Rendered> {
    if !text.contains(MARK) {
        return vec![Rendered::File {
            path: path.to_owned(),
            content: text.to_owned(),
        }];
    }
    let dir = match path.rfind('/') {
        Some(i) => &path[..i],
        None => "",
    };
    let mut out = Vec::new();
    let mut current = path.to_owned();
    let mut content = String::new();
    let mut link: Option<String> = None;
    let mut aborted = false;
    let mut flush =
        |current: &str, content: &mut String, link: &mut Option<String>, aborted: &mut bool| {
            if !*aborted {
                match link.take() {
                    Some(target) => out.push(Rendered::Symlink {
                        path: current.to_owned(),
                        target,
                    }),
                    None => out.push(Rendered::File {
                        path: current.to_owned(),
                        content: std::mem::take(content),
                    }),
                }
            }
            content.clear();
            *link = None;
            *aborted = false;
        };
    let mut parts = text.split(MARK);
    content.push_str(parts.next().unwrap_or_default());
    let mut first = true;
    while let Some(directive) = parts.next() {
        let rest = parts.next().unwrap_or_default();
        if let Some(name) = directive.strip_prefix("file:") {
            // Text before the first file() that is only whitespace makes no file of its own.
            if !(first && content.trim().is_empty()) {
                flush(&current, &mut content, &mut link, &mut aborted);
            } else {
                content.clear();
            }
            current = if name.starts_with('/') {
                name.to_owned()
            } else {
                format!("{dir}/{name}")
            };
            first = false;
        } else if let Some(target) = directive.strip_prefix("link:") {
            link = Some(target.to_owned());
        } else if directive == "abort" {
            aborted = true;
        }
        content.push_str(
            rest.strip_prefix('\n')
                .filter(|_| directive.starts_with("file:"))
                .unwrap_or(rest),
        );
    }
    flush(&current, &mut content, &mut link, &mut aborted);
    out
}

/// `255.255.255.0` -> 24.
pub fn netmask_prefix(netmask: &str) -> Option<u32> {
    let addr: std::net::Ipv4Addr = netmask.parse().ok()?;
    let bits = u32::from(addr);
    let prefix = bits.leading_ones();
    (bits.checked_shl(prefix).unwrap_or(0) == 0).then_some(prefix)
}

/// `systemd-escape`: `/` becomes `-`, other unsafe bytes `\xNN`.
pub fn systemd_escape(s: String) -> String {
    let trimmed = s.trim_matches('/');
    let mut out = String::new();
    for (i, b) in trimmed.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b':' | b'_' | b'.' => out.push(b as char),
            other => out.push_str(&format!("\\x{other:02x}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::context;

    #[test]
    fn reading_the_cluster_is_told_from_reading_the_nodes_cluster_name() {
        let mut t = Templates::new();
        let cases = [
            ("name", "{{ node.cluster | default('hpc') }}\n", false),
            (
                "loop",
                "{% for n in cluster.nodes %}{{ n.id }}\n{% endfor %}",
                true,
            ),
            (
                "local",
                "{% set cluster = node.cluster %}{{ cluster }}\n",
                false,
            ),
            ("include", "{% include 'other' %}{{ node.cluster }}\n", true),
        ];
        for (name, source, _) in cases {
            t.add(name, source.to_owned())
                .unwrap_or_else(|e| panic!("{e}"));
        }
        for (name, source, reads) in cases {
            assert_eq!(t.reads(name, source, "cluster"), reads, "{source}");
        }
    }

    fn render(source: &str, ctx: Value) -> Result<Vec<Rendered>, String> {
        let mut t = Templates::new();
        t.add("t", source.to_string())?;
        t.render("t", "/etc/x", &ctx)
    }

    #[test]
    fn strict_undefined_names_the_line() {
        let err = render(
            "a\n{{ node.id }}\n{{ node.nope }}\n",
            context! { node => context!{ id => "n1" } },
        )
        .unwrap_err();
        assert!(
            err.starts_with("line 3:") && err.contains("does not exist"),
            "{err}"
        );
    }

    #[test]
    fn directives_make_several_files_links_and_aborts() {
        let out = render(
            "{{ file('a.conf') }}\nA\n{{ file('/etc/b') }}\n{{ softlink('/usr/lib/b') }}\n{{ file('c') }}\n{{ abort() }}C\n",
            Value::UNDEFINED,
        )
        .unwrap();
        assert_eq!(
            out,
            vec![
                Rendered::File {
                    path: "/etc/a.conf".into(),
                    content: "A\n".into()
                },
                Rendered::Symlink {
                    path: "/etc/b".into(),
                    target: "/usr/lib/b".into()
                },
            ]
        );
        assert_eq!(render("{{ abort() }}", Value::UNDEFINED).unwrap(), vec![]);
    }

    #[test]
    fn filters_for_config_files() {
        let out = render("{{ '255.255.240.0' | prefix }} {{ '/srv/my data' | systemd_escape }} {{ '/a/b.c' | basename }}", Value::UNDEFINED).unwrap();
        assert_eq!(
            out,
            vec![Rendered::File {
                path: "/etc/x".into(),
                content: "20 srv-my\\x20data b.c".into()
            }]
        );
        assert!(
            render("{{ '255.0.255.0' | prefix }}", Value::UNDEFINED)
                .unwrap_err()
                .contains("not a netmask")
        );
    }

    #[test]
    fn a_runaway_loop_runs_out_of_fuel() {
        let err = render(
            "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}",
            Value::UNDEFINED,
        )
        .unwrap_err();
        assert!(err.to_lowercase().contains("fuel"), "{err}");
    }
}
