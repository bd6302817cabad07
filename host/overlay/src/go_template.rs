//! Warewulf's `.ww` templates (Go `text/template` with Sprig and Warewulf's functions)
//! translated into wulf's minijinja templates with the same output.
//!
//! The translation is by construct, not by text: the Go template is lexed and parsed, every
//! field path is resolved against Warewulf's template data (`.Id`, `.NetDevs`, `.Kernel.Args`,
//! `.AllNodes`, the server's `.Ipaddr`, ...) and written as the field wulf gives templates
//! (`node.id`, `node.network_devices`, ...). Go's whitespace trimming (`{{-`, `-}}`) is done
//! here, the trimmed whitespace moved inside the tag so line numbers stay those of the Go
//! source. What has no faithful translation (a `define`, an unknown field, a `printf` width,
//! most of Sprig) is a [`Remark`] in `problems`: the caller must not install such a file as a
//! template. What translates with a visible difference is a remark in `notes`.
//!
//! The output starts with [`WAREWULF_COMPAT`]: as in Warewulf, a missing field renders empty.

use crate::template::WAREWULF_COMPAT;

/// One remark on a translation, at a line of the Go source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remark {
    pub line: usize,
    pub text: String,
}

/// A translated template and what was said about it.
#[derive(Debug, Clone, Default)]
pub struct Translation {
    pub text: String,
    /// Translated, with a difference the user should know of.
    pub notes: Vec<Remark>,
    /// Not translatable: the text is not a faithful template.
    pub problems: Vec<Remark>,
}

/// Where the template came from, for what Warewulf resolves at render time.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The template's path in the Warewulf overlay (`.BuildSource`).
    pub source: &'a str,
    /// Warewulf's configuration directory, against which `Include` resolves relative paths.
    pub sysconf: &'a str,
}

/// Translates one Go template.
pub fn translate(go: &str, origin: Origin<'_>) -> Translation {
    let mut t = Translator {
        origin,
        out: String::from(WAREWULF_COMPAT),
        notes: Vec::new(),
        problems: Vec::new(),
        scopes: vec![Scope::root()],
        blocks: Vec::new(),
        loops: 0,
        line: 1,
        counter: 0,
    };
    t.run(go);
    if let Some(open) = t.blocks.last() {
        let line = open.line;
        t.problem(line, "a block is not closed with {{ end }}");
    }
    Translation {
        text: t.out,
        notes: t.notes,
        problems: t.problems,
    }
}

/// What a Go expression holds, as far as the field paths need to know.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ty {
    /// Warewulf's `TemplateStruct`: the node's fields promoted, the server's, the build's.
    Root,
    Node,
    NetDev,
    Ipmi,
    Kernel,
    /// `.Kernel.Args`: a list Warewulf prints space-separated.
    Args,
    /// A map of strings (`Tags`).
    Tags,
    /// `.NetDevs`: names to network devices.
    NetDevs,
    /// `.AllNodes`.
    Nodes,
    /// A list of strings (`Profiles`, overlay lists).
    Strings,
    /// Maps whose keys are the user's (`Resources`, `Disks`, `FileSystems`).
    Free,
    /// A section of warewulf.conf (`.Warewulf`).
    Conf,
    /// A string, a number, a boolean: no fields.
    Scalar,
    /// Not known (a function's result): fields are translated by name.
    Unknown,
}

/// An expression in minijinja syntax and what it holds.
#[derive(Debug, Clone)]
struct Expr {
    text: String,
    ty: Ty,
    /// A string literal's value, for functions that need it at translation time.
    literal: Option<String>,
}

impl Expr {
    fn new(text: impl Into<String>, ty: Ty) -> Expr {
        Expr {
            text: text.into(),
            ty,
            literal: None,
        }
    }
}

/// Go's `.` and variables at one level of nesting.
#[derive(Debug, Clone)]
struct Scope {
    dot: Expr,
    vars: Vec<(String, Expr)>,
}

impl Scope {
    fn root() -> Scope {
        Scope {
            dot: Expr::new("node", Ty::Root),
            vars: vec![("$".into(), Expr::new("node", Ty::Root))],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    If,
    Range,
    With,
}

#[derive(Debug)]
struct Block {
    kind: BlockKind,
    line: usize,
    /// `else if` chains close with one `endif` per `if` they opened.
    extra_ifs: usize,
}

struct Translator<'a> {
    origin: Origin<'a>,
    out: String,
    notes: Vec<Remark>,
    problems: Vec<Remark>,
    scopes: Vec<Scope>,
    blocks: Vec<Block>,
    loops: usize,
    line: usize,
    counter: usize,
}

/// A lexed token of an action.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// `.Name` (one segment; `.A.B` is two).
    Field(String),
    Dot,
    /// `$name`, or `$` alone.
    Var(String),
    Ident(String),
    Str(String),
    Number(String),
    LParen,
    RParen,
    Pipe,
    Declare,
    Assign,
    Comma,
}

/// A token and whether whitespace came before it (`.A .B` are two arguments, `.A.B` one path).
type Spaced = (Tok, bool);

impl Translator<'_> {
    fn problem(&mut self, line: usize, text: impl Into<String>) {
        self.problems.push(Remark {
            line,
            text: text.into(),
        });
    }

    fn note(&mut self, text: impl Into<String>) {
        let line = self.line;
        self.notes.push(Remark {
            line,
            text: text.into(),
        });
    }

    fn fail(&mut self, text: impl Into<String>) {
        let line = self.line;
        self.problem(line, text);
    }

    fn fresh(&mut self, stem: &str) -> String {
        self.counter += 1;
        format!("{stem}{}", self.counter)
    }

    /// Text outside actions, with a raw block when it holds minijinja's own delimiters.
    fn text(&mut self, text: &str) {
        if text.contains("{%") || text.contains("{#") || text.contains("{{") || text.ends_with('{')
        {
            self.out.push_str("{% raw %}");
            self.out.push_str(text);
            self.out.push_str("{% endraw %}");
        } else {
            self.out.push_str(text);
        }
    }

    fn run(&mut self, go: &str) {
        let mut rest = go;
        let mut trim_next = false;
        while !rest.is_empty() {
            let (mut text, after) = match rest.find("{{") {
                Some(i) => (&rest[..i], Some(&rest[i + 2..])),
                None => (rest, None),
            };
            let mut moved = String::new();
            if trim_next {
                let kept = text.trim_start_matches([' ', '\t', '\r', '\n']);
                moved.push_str(&text[..text.len() - kept.len()]);
                text = kept;
            }
            let Some(after) = after else {
                self.text(text);
                // Whitespace trimmed at the very end: nothing to carry it.
                self.line += moved.matches('\n').count() + text.matches('\n').count();
                break;
            };
            let trim_left = after.starts_with("- ")
                || after.starts_with("-\t")
                || after.starts_with("-\n")
                || after.starts_with("-\r");
            let mut inside_ws = moved;
            if trim_left {
                let kept = text.trim_end_matches([' ', '\t', '\r', '\n']);
                inside_ws.push_str(&text[kept.len()..]);
                text = kept;
            }
            self.text(text);
            self.line += text.matches('\n').count() + inside_ws.matches('\n').count();
            let body_start = if trim_left { &after[1..] } else { after };
            // Comments may hold `}}`; they end at `*/`.
            let trimmed = body_start.trim_start();
            let (body, tail, trim_right) = if trimmed.starts_with("/*") {
                match trimmed.find("*/") {
                    Some(end) => {
                        let after_comment = &trimmed[end + 2..];
                        let (trim_right, close) = match after_comment.strip_prefix(" -}}") {
                            Some(t) => (true, Some(t)),
                            None => (false, after_comment.strip_prefix("}}")),
                        };
                        match close {
                            Some(tail) => (
                                &body_start[..body_start.len() - after_comment.len()],
                                tail,
                                trim_right,
                            ),
                            None => {
                                self.fail("a comment is not closed with */}}");
                                self.out.push_str(rest);
                                return;
                            }
                        }
                    }
                    None => {
                        self.fail("a comment is not closed with */}}");
                        self.out.push_str(rest);
                        return;
                    }
                }
            } else {
                match find_close(body_start) {
                    Some((end, trim_right, len)) => {
                        (&body_start[..end], &body_start[end + len..], trim_right)
                    }
                    None => {
                        self.fail("an action is not closed with }}");
                        self.out.push_str(rest);
                        return;
                    }
                }
            };
            self.action(body, &inside_ws);
            self.line += body.matches('\n').count();
            trim_next = trim_right;
            rest = tail;
        }
    }

    /// One `{{ ... }}`: `ws` is whitespace trimmed around it, kept inside the tag.
    fn action(&mut self, body: &str, ws: &str) {
        let trimmed = body.trim();
        if let Some(comment) = trimmed.strip_prefix("/*") {
            let comment = comment.strip_suffix("*/").unwrap_or(comment);
            self.out.push_str(&format!(
                "{{#{ws}{} #}}",
                comment.replace("#}", "# }").trim_end()
            ));
            return;
        }
        let tokens = match lex(trimmed) {
            Ok(t) => t,
            Err(e) => {
                self.fail(e);
                return self.keep_lines(ws, body);
            }
        };
        let keyword = match tokens.first() {
            Some((Tok::Ident(k), _)) => k.as_str(),
            _ => "",
        };
        let rest = tokens.get(1..).unwrap_or_default();
        match keyword {
            "if" => {
                let cond = self.pipeline_expr(rest);
                self.open(BlockKind::If);
                self.tag(ws, &format!("if {}", cond.text));
            }
            "else" => self.else_(rest, ws),
            "end" => self.end(ws),
            "range" => self.range(rest, ws),
            "with" => {
                let value = self.pipeline_expr(rest);
                let name = self.fresh("with");
                self.open(BlockKind::With);
                self.scopes.push(Scope {
                    dot: Expr::new(name.clone(), value.ty),
                    vars: Vec::new(),
                });
                self.tag(
                    ws,
                    &format!("with {name} = {} %}}{{% if {name}", value.text),
                );
            }
            "break" | "continue" => {
                self.fail(format!(
                    "{{{{ {keyword} }}}}: minijinja here has no loop controls; restructure the loop with an if"
                ));
                self.keep_lines(ws, body);
            }
            "define" | "template" | "block" => {
                self.fail(format!(
                    "{{{{ {keyword} }}}}: named templates are not translated; inline the template's text"
                ));
                self.keep_lines(ws, body);
            }
            _ => self.statement(&tokens, ws, body),
        }
    }

    /// Keeps the line count when an action produced nothing.
    fn keep_lines(&mut self, ws: &str, body: &str) {
        let newlines = ws.matches('\n').count() + body.matches('\n').count();
        if newlines > 0 {
            self.out
                .push_str(&format!("{{#{} #}}", "\n".repeat(newlines)));
        }
    }

    fn tag(&mut self, ws: &str, inner: &str) {
        self.out.push_str(&format!("{{%{ws} {inner} %}}"));
    }

    fn open(&mut self, kind: BlockKind) {
        let line = self.line;
        self.blocks.push(Block {
            kind,
            line,
            extra_ifs: 0,
        });
    }

    fn else_(&mut self, rest: &[Spaced], ws: &str) {
        let Some(block) = self.blocks.last() else {
            self.fail("{{ else }} outside if, range or with");
            return;
        };
        let kind = block.kind;
        match (kind, rest.first()) {
            (BlockKind::If, Some((Tok::Ident(k), _))) if k == "if" => {
                let cond = self.pipeline_expr(&rest[1..]);
                self.tag(ws, &format!("elif {}", cond.text));
            }
            (BlockKind::If | BlockKind::Range, None) => {
                if kind == BlockKind::Range {
                    // The loop's names are gone in its else.
                    self.scopes.pop();
                    self.scopes
                        .push(self.scopes.last().cloned().unwrap_or_else(Scope::root));
                }
                self.tag(ws, "else");
            }
            (BlockKind::With, None) => {
                // Dot is the enclosing one again in a with's else.
                let outer = self
                    .scopes
                    .len()
                    .checked_sub(2)
                    .map(|i| self.scopes[i].dot.clone());
                if let (Some(outer), Some(scope)) = (outer, self.scopes.last_mut()) {
                    scope.dot = outer;
                }
                self.tag(ws, "else");
            }
            (BlockKind::With, Some((Tok::Ident(k), _))) if k == "with" => {
                // `else with X`: an inner with in the else branch.
                let value = self.pipeline_expr(&rest[1..]);
                let name = self.fresh("with");
                if let Some(b) = self.blocks.last_mut() {
                    b.extra_ifs += 1;
                }
                if let Some(scope) = self.scopes.last_mut() {
                    scope.dot = Expr::new(name.clone(), value.ty);
                }
                self.tag(
                    ws,
                    &format!("else %}}{{% with {name} = {} %}}{{% if {name}", value.text),
                );
            }
            _ => self.fail("this form of {{ else ... }} is not translated"),
        }
    }

    fn end(&mut self, ws: &str) {
        let Some(block) = self.blocks.pop() else {
            self.fail("{{ end }} without an open block");
            return;
        };
        match block.kind {
            BlockKind::If => self.tag(ws, "endif"),
            BlockKind::Range => {
                self.scopes.pop();
                self.loops -= 1;
                self.tag(ws, "endfor");
            }
            BlockKind::With => {
                self.scopes.pop();
                let mut inner = String::from("endif %}{% endwith");
                for _ in 0..block.extra_ifs {
                    inner.push_str(" %}{% endif %}{% endwith");
                }
                self.tag(ws, &inner);
            }
        }
    }

    fn range(&mut self, rest: &[Spaced], ws: &str) {
        // `range $k, $v := X`, `range $v := X`, `range X`.
        let (names, expr_tokens): (Vec<String>, &[Spaced]) =
            match rest.iter().position(|(t, _)| *t == Tok::Declare) {
                Some(at) => (
                    rest[..at]
                        .iter()
                        .filter_map(|(t, _)| match t {
                            Tok::Var(v) => Some(v.clone()),
                            _ => None,
                        })
                        .collect(),
                    &rest[at + 1..],
                ),
                None => (Vec::new(), rest),
            };
        let over = self.pipeline_expr(expr_tokens);
        let (key_ty, value_ty) = match over.ty {
            Ty::NetDevs => (Ty::Scalar, Ty::NetDev),
            Ty::Tags => (Ty::Scalar, Ty::Scalar),
            Ty::Nodes => (Ty::Scalar, Ty::Node),
            Ty::Strings | Ty::Args => (Ty::Scalar, Ty::Scalar),
            Ty::Free => (Ty::Scalar, Ty::Free),
            _ => (Ty::Unknown, Ty::Unknown),
        };
        let item = self.fresh("item");
        let (key, value) = match names.as_slice() {
            [] => (self.fresh("key"), item.clone()),
            [v] => (self.fresh("key"), jinja_var(v)),
            [k, v, ..] => (jinja_var(k), jinja_var(v)),
        };
        let mut scope = self.scopes.last().cloned().unwrap_or_else(Scope::root);
        scope.dot = Expr::new(value.clone(), value_ty.clone());
        match names.as_slice() {
            [] => {}
            [v] => scope
                .vars
                .push((v.clone(), Expr::new(value.clone(), value_ty))),
            [k, v, ..] => {
                scope.vars.push((k.clone(), Expr::new(key.clone(), key_ty)));
                scope
                    .vars
                    .push((v.clone(), Expr::new(value.clone(), value_ty)));
            }
        }
        self.scopes.push(scope);
        self.open(BlockKind::Range);
        self.loops += 1;
        self.tag(ws, &format!("for {key}, {value} in {}|pairs", over.text));
    }

    /// A pipeline as an action of its own: printed, or a variable declared.
    fn statement(&mut self, tokens: &[Spaced], ws: &str, body: &str) {
        let declare = tokens.iter().position(|(t, _)| *t == Tok::Declare);
        let assign = tokens.iter().position(|(t, _)| *t == Tok::Assign);
        if let (Some(at), Some((Tok::Var(name), _))) = (declare.or(assign), tokens.first()) {
            if at != 1 {
                self.fail("only one variable may be declared here");
                return self.keep_lines(ws, body);
            }
            if assign.is_some() && self.loops > 0 {
                self.fail(format!(
                    "`{name} = ...` inside a range changes a variable of the enclosing scope, which minijinja cannot; compute it before the loop"
                ));
                return self.keep_lines(ws, body);
            }
            let value = self.pipeline_expr(&tokens[at + 1..]);
            let var = jinja_var(name);
            if let Some(scope) = self.scopes.last_mut() {
                scope
                    .vars
                    .push((name.clone(), Expr::new(var.clone(), value.ty)));
            }
            self.tag(ws, &format!("set {var} = {}", value.text));
            return;
        }
        let value = self.pipeline_expr(tokens);
        let text = if value.ty == Ty::Args {
            format!("{}|join(\" \")", value.text)
        } else {
            value.text
        };
        self.out.push_str(&format!("{{{{{ws} {text} }}}}"));
    }

    /// `cmd | cmd | ...`: each stage gets the previous value as its last argument.
    fn pipeline_expr(&mut self, tokens: &[Spaced]) -> Expr {
        let mut stages = tokens.split(|(t, _)| *t == Tok::Pipe);
        let mut value = match stages.next() {
            Some(first) if !first.is_empty() => self.command(first, None),
            _ => {
                self.fail("an empty pipeline");
                return Expr::new("\"\"", Ty::Scalar);
            }
        };
        for stage in stages {
            value = self.command(stage, Some(value));
        }
        value
    }

    /// One command: an operand, or a function and its arguments.
    fn command(&mut self, tokens: &[Spaced], piped: Option<Expr>) -> Expr {
        let Some((first, _)) = tokens.first() else {
            self.fail("an empty command in a pipeline");
            return Expr::new("\"\"", Ty::Scalar);
        };
        if let Tok::Ident(name) = first
            && !matches!(name.as_str(), "true" | "false" | "nil")
        {
            let mut args = self.operands(&tokens[1..]);
            args.extend(piped);
            return self.call(name, args);
        }
        let mut args = self.operands(tokens);
        if piped.is_some() || args.len() != 1 {
            self.fail("a value cannot take arguments");
        }
        args.pop().unwrap_or_else(|| Expr::new("\"\"", Ty::Scalar))
    }

    /// Operands, each with the field path that follows it.
    fn operands(&mut self, tokens: &[Spaced]) -> Vec<Expr> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < tokens.len() {
            let (tok, _) = &tokens[i];
            i += 1;
            let mut expr = match tok {
                Tok::Field(name) => {
                    let dot = self.dot();
                    self.field(dot, name)
                }
                Tok::Dot => self.dot(),
                Tok::Var(name) => self.var(name),
                Tok::Str(s) => Expr {
                    text: quote(s),
                    ty: Ty::Scalar,
                    literal: Some(s.clone()),
                },
                Tok::Number(n) => Expr::new(n.clone(), Ty::Scalar),
                Tok::Ident(id) => match id.as_str() {
                    "true" | "false" => Expr::new(id.clone(), Ty::Scalar),
                    "nil" => Expr::new("none", Ty::Scalar),
                    // A function as an argument takes no arguments of its own.
                    other => self.call(other, Vec::new()),
                },
                Tok::LParen => {
                    let mut depth = 1;
                    let start = i;
                    while i < tokens.len() && depth > 0 {
                        match tokens[i].0 {
                            Tok::LParen => depth += 1,
                            Tok::RParen => depth -= 1,
                            _ => {}
                        }
                        i += 1;
                    }
                    if depth != 0 {
                        self.fail("an unclosed parenthesis");
                        return out;
                    }
                    let inner = self.pipeline_expr(&tokens[start..i - 1]);
                    Expr::new(format!("({})", inner.text), inner.ty)
                }
                other => {
                    self.fail(format!("unexpected {other:?}"));
                    return out;
                }
            };
            // `.A.B`, `$x.A`, `(...).A`: fields glued to the operand.
            while let Some((Tok::Field(name), false)) = tokens.get(i) {
                expr = self.field(expr, name);
                i += 1;
            }
            out.push(expr);
        }
        out
    }

    fn dot(&self) -> Expr {
        self.scopes
            .last()
            .map(|s| s.dot.clone())
            .unwrap_or_else(|| Expr::new("node", Ty::Root))
    }

    fn var(&mut self, name: &str) -> Expr {
        for scope in self.scopes.iter().rev() {
            if let Some((_, e)) = scope.vars.iter().rev().find(|(n, _)| n == name) {
                return e.clone();
            }
        }
        self.fail(format!("undefined variable {name}"));
        Expr::new("none", Ty::Unknown)
    }

    /// `base.Name`, resolved against what `base` holds.
    fn field(&mut self, base: Expr, name: &str) -> Expr {
        let member = |field: &str, ty: Ty| Expr::new(format!("{}.{field}", base.text), ty);
        let key = |ty: Ty| Expr::new(format!("{}[{}]", base.text, quote(name)), ty);
        match base.ty {
            Ty::Root => match name {
                "Id" | "Hostname" => Expr::new("node.id", Ty::Scalar),
                "ThisNode" => Expr::new("node", Ty::Node),
                "AllNodes" => Expr::new("cluster.nodes", Ty::Nodes),
                "BuildHost" => Expr::new("server.hostname", Ty::Scalar),
                "BuildTimeUnix" => Expr::new("build.time", Ty::Scalar),
                "BuildTime" => {
                    self.note(
                        "`.BuildTime` is the build's time in seconds since 1970 (build.time), not Warewulf's MM-DD-YYYY HH:MM:SS",
                    );
                    Expr::new("build.time", Ty::Scalar)
                }
                "BuildSource" => Expr::new(quote(self.origin.source), Ty::Scalar),
                "Overlay" => Expr::new("overlay", Ty::Scalar),
                "Ipaddr" => Expr::new("server.ipaddr", Ty::Scalar),
                "Netmask" => Expr::new("server.netmask", Ty::Scalar),
                "Network" => Expr::new("server.network", Ty::Scalar),
                "Ipaddr6" => Expr::new("server.ipaddr6", Ty::Scalar),
                "PrefixLen6" => Expr::new("server.prefixlen6", Ty::Scalar),
                "IpCIDR" => Expr::new(
                    "(server.ipaddr ~ \"/\" ~ (server.netmask|prefix))",
                    Ty::Scalar,
                ),
                "NetworkCIDR" => Expr::new(
                    "(server.network ~ \"/\" ~ (server.netmask|prefix))",
                    Ty::Scalar,
                ),
                "Warewulf" => Expr::new("server", Ty::Conf),
                "Dhcp" | "Nfs" | "Ssh" | "Tftp" | "Paths" | "Ipv6" | "Api" => {
                    self.fail(format!(
                        "`.{name}`: wulf's templates do not see warewulf.conf's {name} section; write the value into the template or a tag"
                    ));
                    Expr::new("none", Ty::Unknown)
                }
                "Container" | "ContainerName" => Expr::new("node.image", Ty::Scalar),
                _ => self.field(Expr::new("node", Ty::Node), name),
            },
            Ty::Conf => match name {
                "Port" => Expr::new("server.port", Ty::Scalar),
                _ => {
                    self.fail(format!(
                        "`.Warewulf.{name}`: wulf's templates do not see warewulf.conf; write the value into the template"
                    ));
                    Expr::new("none", Ty::Unknown)
                }
            },
            Ty::Node => match node_field(name) {
                Some((field, ty)) => member(field, ty),
                None => self.unknown(base, name, "a node"),
            },
            Ty::NetDev => match name {
                "Type" => member("type", Ty::Scalar),
                "OnBoot" | "Onboot" => member("onboot", Ty::Scalar),
                "Device" => member("device", Ty::Scalar),
                "Hwaddr" => member("hwaddr", Ty::Scalar),
                "Ipaddr" => member("ipaddr", Ty::Scalar),
                "Netmask" => member("netmask", Ty::Scalar),
                "Gateway" => member("gateway", Ty::Scalar),
                "Ipaddr6" => member("ipaddr6", Ty::Scalar),
                "Prefixlen6" | "PrefixLen6" => member("prefixlen6", Ty::Scalar),
                "Gateway6" => member("gateway6", Ty::Scalar),
                "MTU" | "Mtu" => member("mtu", Ty::Scalar),
                "Tags" => member("tags", Ty::Tags),
                "IpCIDR" => Expr::new(
                    format!("({0}.ipaddr ~ \"/\" ~ ({0}.netmask|prefix))", base.text),
                    Ty::Scalar,
                ),
                _ => self.unknown(base, name, "a network device"),
            },
            Ty::Ipmi => match name {
                "Ipaddr" => member("ipaddr", Ty::Scalar),
                "Netmask" => member("netmask", Ty::Scalar),
                "Gateway" => member("gateway", Ty::Scalar),
                "Port" => member("port", Ty::Scalar),
                "UserName" | "Username" => member("username", Ty::Scalar),
                "Password" => member("password", Ty::Scalar),
                "Interface" => member("interface", Ty::Scalar),
                "Write" => member("write", Ty::Scalar),
                "EscapeChar" => member("escape_char", Ty::Scalar),
                "Template" => member("template", Ty::Scalar),
                "Tags" => member("tags", Ty::Tags),
                _ => self.unknown(base, name, "IPMI settings"),
            },
            Ty::Kernel => match name {
                "Version" | "Override" => member("version", Ty::Scalar),
                "Args" => member("args", Ty::Args),
                _ => self.unknown(base, name, "the kernel settings"),
            },
            Ty::NetDevs => key(Ty::NetDev),
            Ty::Tags | Ty::Free => key(if base.ty == Ty::Free {
                Ty::Free
            } else {
                Ty::Scalar
            }),
            Ty::Unknown => member(&snake(name), Ty::Unknown),
            Ty::Nodes | Ty::Strings | Ty::Args | Ty::Scalar => {
                self.fail(format!("`.{name}` of a value that has no fields"));
                Expr::new("none", Ty::Unknown)
            }
        }
    }

    fn unknown(&mut self, base: Expr, name: &str, what: &str) -> Expr {
        self.fail(format!(
            "`.{name}`: {what} has no such field in wulf ({}.{name})",
            base.text
        ));
        Expr::new("none", Ty::Unknown)
    }

    /// A function of Go's templates, Sprig's or Warewulf's.
    fn call(&mut self, name: &str, args: Vec<Expr>) -> Expr {
        let n = args.len();
        let a = |i: usize| args.get(i).map(|e| e.text.as_str()).unwrap_or("none");
        let scalar = |text: String| Expr::new(text, Ty::Scalar);
        let want = |me: &mut Self, count: usize| -> bool {
            if n == count {
                true
            } else {
                me.fail(format!("`{name}` takes {count} argument(s), got {n}"));
                false
            }
        };
        match name {
            "eq" if n >= 2 => scalar(format!(
                "({})",
                args[1..]
                    .iter()
                    .map(|b| format!("{} == {}", a(0), b.text))
                    .collect::<Vec<_>>()
                    .join(" or ")
            )),
            "ne" | "lt" | "le" | "gt" | "ge" if want(self, 2) => {
                let op = match name {
                    "ne" => "!=",
                    "lt" => "<",
                    "le" => "<=",
                    "gt" => ">",
                    _ => ">=",
                };
                scalar(format!("({} {op} {})", a(0), a(1)))
            }
            "and" | "or" if n >= 1 => scalar(format!(
                "({})",
                args.iter()
                    .map(|e| e.text.as_str())
                    .collect::<Vec<_>>()
                    .join(&format!(" {name} "))
            )),
            "not" if want(self, 1) => scalar(format!("(not {})", a(0))),
            "len" if want(self, 1) => scalar(format!("({}|length)", a(0))),
            "index" if n >= 2 => {
                let mut e = args[0].clone();
                for k in &args[1..] {
                    let ty = match e.ty {
                        Ty::NetDevs => Ty::NetDev,
                        Ty::Nodes => Ty::Node,
                        Ty::Free => Ty::Free,
                        Ty::Unknown => Ty::Unknown,
                        _ => Ty::Scalar,
                    };
                    e = Expr::new(format!("{}[{}]", e.text, k.text), ty);
                }
                e
            }
            "printf" if n >= 1 => self.printf(&args),
            "print" => scalar(format!(
                "({})",
                args.iter()
                    .map(|e| e.text.clone())
                    .collect::<Vec<_>>()
                    .join(" ~ ")
            )),
            "println" => scalar(format!(
                "({} ~ \"\\n\")",
                args.iter()
                    .map(|e| e.text.clone())
                    .collect::<Vec<_>>()
                    .join(" ~ \" \" ~ ")
            )),
            "upper" | "lower" | "title" | "trim" | "first" | "last" if want(self, 1) => {
                scalar(format!("({}|{name})", a(0)))
            }
            "toString" if want(self, 1) => scalar(format!("({}|string)", a(0))),
            "atoi" | "int" | "int64" if want(self, 1) => scalar(format!("({}|int)", a(0))),
            "toJson" | "mustToJson" if want(self, 1) => scalar(format!("({}|tojson)", a(0))),
            "default" if want(self, 2) => scalar(format!("({}|default({}, true))", a(1), a(0))),
            "empty" if want(self, 1) => scalar(format!("(not {})", a(0))),
            "coalesce" if n >= 1 => scalar(format!(
                "({})",
                args.iter()
                    .map(|e| e.text.as_str())
                    .collect::<Vec<_>>()
                    .join(" or ")
            )),
            "ternary" if want(self, 3) => scalar(format!("({} if {} else {})", a(0), a(2), a(1))),
            "quote" => scalar(format!(
                "({})",
                args.iter()
                    .map(|e| format!("'\"' ~ {} ~ '\"'", e.text))
                    .collect::<Vec<_>>()
                    .join(" ~ \" \" ~ ")
            )),
            "squote" => scalar(format!(
                "({})",
                args.iter()
                    .map(|e| format!("\"'\" ~ {} ~ \"'\"", e.text))
                    .collect::<Vec<_>>()
                    .join(" ~ \" \" ~ ")
            )),
            "cat" => scalar(format!(
                "({})",
                args.iter()
                    .map(|e| e.text.clone())
                    .collect::<Vec<_>>()
                    .join(" ~ \" \" ~ ")
            )),
            "join" if want(self, 2) => scalar(format!("({}|join({}))", a(1), a(0))),
            "splitList" if want(self, 2) => {
                Expr::new(format!("({}|split({}))", a(1), a(0)), Ty::Strings)
            }
            "replace" if want(self, 3) => scalar(format!("({}|replace({}, {}))", a(2), a(0), a(1))),
            "contains" if want(self, 2) => scalar(format!("({} in {})", a(0), a(1))),
            "has" if want(self, 2) => scalar(format!("({} in {})", a(0), a(1))),
            "hasPrefix" if want(self, 2) => scalar(format!("({} is startingwith({}))", a(1), a(0))),
            "hasSuffix" if want(self, 2) => scalar(format!("({} is endingwith({}))", a(1), a(0))),
            "trimPrefix" if want(self, 2) => scalar(format!(
                "(({1})[({0}|length):] if {1} is startingwith({0}) else {1})",
                a(0),
                a(1)
            )),
            "trimSuffix" if want(self, 2) => scalar(format!(
                "(({1})[:({1}|length) - ({0}|length)] if {1} is endingwith({0}) and {0} else {1})",
                a(0),
                a(1)
            )),
            "list" => Expr::new(
                format!(
                    "[{}]",
                    args.iter()
                        .map(|e| e.text.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Ty::Strings,
            ),
            "keys" if want(self, 1) => Expr::new(format!("({}|list)", a(0)), Ty::Strings),
            "inc" if want(self, 1) => scalar(format!("({} + 1)", a(0))),
            "dec" if want(self, 1) => scalar(format!("({} - 1)", a(0))),
            "add" | "add1" | "sub" | "mul" | "div" | "mod" => {
                if name == "add1" {
                    if want(self, 1) {
                        return scalar(format!("({} + 1)", a(0)));
                    }
                    return scalar("0".into());
                }
                if !want(self, 2) {
                    return scalar("0".into());
                }
                let op = match name {
                    "add" => "+",
                    "sub" => "-",
                    "mul" => "*",
                    "div" => "//",
                    _ => "%",
                };
                scalar(format!("({} {op} {})", a(0), a(1)))
            }
            "basename" | "base" if want(self, 1) => scalar(format!("({}|basename)", a(0))),
            "dir" if want(self, 1) => scalar(format!("({}|dirname)", a(0))),
            "SystemdEscape" if want(self, 1) => scalar(format!("({}|systemd_escape)", a(0))),
            "urlquery" if want(self, 1) => scalar(format!("({}|urlencode)", a(0))),
            "file" if want(self, 1) => scalar(format!("file({})", a(0))),
            "softlink" if want(self, 1) => scalar(format!("softlink({})", a(0))),
            "abort" if want(self, 0) => scalar("abort()".into()),
            "nobackup" if want(self, 0) => scalar("nobackup()".into()),
            "Include" if want(self, 1) => {
                let path = match &args[0].literal {
                    Some(p) if !p.starts_with('/') => quote(&format!(
                        "{}/{p}",
                        self.origin.sysconf.trim_end_matches('/')
                    )),
                    _ => a(0).to_owned(),
                };
                scalar(format!("(include({path})|trim(\"\\n\"))"))
            }
            "IncludeFrom" if want(self, 2) => scalar(format!("include_from({}, {})", a(0), a(1))),
            _ => {
                let hint = match name {
                    "IncludeBlock" | "ImportLink" | "UniqueField" | "IgnitionJson"
                    | "SystemdEscapePath" | "readlink" => "a Warewulf function wulf does not have",
                    "env" | "expandenv" => "templates have no access to the environment",
                    "now" | "date" | "dateInZone" | "htmlDate" => {
                        "templates see the build time as build.time, no clock"
                    }
                    "tpl" | "include" | "template" => "named templates are not translated",
                    _ => "no translation for this function",
                };
                self.fail(format!("`{name}` with {n} argument(s): {hint}"));
                Expr::new("none", Ty::Unknown)
            }
        }
    }

    /// `printf` with a literal format: `%s %v %d %q %%` become concatenation.
    fn printf(&mut self, args: &[Expr]) -> Expr {
        let Some(format) = args[0].literal.clone() else {
            self.fail("`printf` with a format that is not a string literal");
            return Expr::new("none", Ty::Unknown);
        };
        let mut parts: Vec<String> = Vec::new();
        let mut literal = String::new();
        let mut next = 1;
        let mut chars = format.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                literal.push(c);
                continue;
            }
            let verb = chars.next();
            if verb == Some('%') {
                literal.push('%');
                continue;
            }
            if !literal.is_empty() {
                parts.push(quote(&std::mem::take(&mut literal)));
            }
            let Some(arg) = args.get(next) else {
                self.fail("`printf` has more verbs than arguments");
                return Expr::new("none", Ty::Unknown);
            };
            next += 1;
            match verb {
                Some('s' | 'v' | 'd') => parts.push(format!("({})", arg.text)),
                Some('q') => parts.push(format!("({}|tojson)", arg.text)),
                other => {
                    self.fail(format!(
                        "`printf` verb %{}: only %s, %v, %d, %q and %% are translated",
                        other.map(String::from).unwrap_or_default()
                    ));
                    return Expr::new("none", Ty::Unknown);
                }
            }
        }
        if !literal.is_empty() {
            parts.push(quote(&literal));
        }
        if parts.is_empty() {
            parts.push("\"\"".into());
        }
        Expr::new(format!("({})", parts.join(" ~ ")), Ty::Scalar)
    }
}

/// A node's field as Warewulf names it: wulf's name and what it holds.
fn node_field(name: &str) -> Option<(&'static str, Ty)> {
    Some(match name {
        "Id" | "Hostname" => ("id", Ty::Scalar),
        "Comment" => ("comment", Ty::Scalar),
        "ClusterName" => ("cluster", Ty::Scalar),
        "ImageName" | "ContainerName" => ("image", Ty::Scalar),
        "Ipxe" => ("ipxe_template", Ty::Scalar),
        "RuntimeOverlay" => ("runtime_overlays", Ty::Strings),
        "SystemOverlay" => ("system_overlays", Ty::Strings),
        "Kernel" => ("kernel", Ty::Kernel),
        "Ipmi" => ("ipmi", Ty::Ipmi),
        "Init" => ("init", Ty::Scalar),
        "Root" => ("root", Ty::Scalar),
        "AssetKey" => ("asset_key", Ty::Scalar),
        "Discoverable" => ("discoverable", Ty::Scalar),
        "Profiles" => ("profiles", Ty::Strings),
        "PrimaryNetDev" => ("primary_network", Ty::Scalar),
        "NetDevs" => ("network_devices", Ty::NetDevs),
        "Tags" => ("tags", Ty::Tags),
        "Resources" => ("resources", Ty::Free),
        "Disks" => ("disks", Ty::Free),
        "FileSystems" => ("filesystems", Ty::Free),
        _ => return None,
    })
}

/// `CamelCase` -> `camel_case`, for fields of values whose type is not known.
fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A Go variable's name in minijinja: `$node` -> `node_`, clear of the names wulf gives
/// templates.
fn jinja_var(go: &str) -> String {
    let bare = go.trim_start_matches('$');
    let bare = if bare.is_empty() { "root" } else { bare };
    format!("{bare}_")
}

/// A minijinja string literal.
fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// Where `}}` closes an action, not counting one inside a string: (offset, trims, length).
fn find_close(body: &str) -> Option<(usize, bool, usize)> {
    let bytes = body.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) => {
                if b == b'\\' && q != b'`' {
                    i += 1;
                } else if b == q {
                    quote = None;
                }
            }
            None => {
                if matches!(b, b'"' | b'`' | b'\'') {
                    quote = Some(b);
                } else if body[i..].starts_with(" -}}")
                    || body[i..].starts_with("\t-}}")
                    || body[i..].starts_with("\n-}}")
                {
                    return Some((i, true, 4));
                } else if body[i..].starts_with("}}") {
                    return Some((i, false, 2));
                }
            }
        }
        i += 1;
    }
    None
}

fn lex(body: &str) -> Result<Vec<Spaced>, String> {
    let chars: Vec<char> = body.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut spaced = true;
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            spaced = true;
            i += 1;
            continue;
        }
        let start = i;
        let tok = match c {
            '.' if chars
                .get(i + 1)
                .is_some_and(|c| c.is_alphabetic() || *c == '_') =>
            {
                i += 1;
                while i < chars.len() && ident(chars[i]) {
                    i += 1;
                }
                Tok::Field(chars[start + 1..i].iter().collect())
            }
            '.' => {
                i += 1;
                Tok::Dot
            }
            '$' => {
                i += 1;
                while i < chars.len() && ident(chars[i]) {
                    i += 1;
                }
                Tok::Var(chars[start..i].iter().collect())
            }
            '(' => {
                i += 1;
                Tok::LParen
            }
            ')' => {
                i += 1;
                Tok::RParen
            }
            '|' => {
                i += 1;
                Tok::Pipe
            }
            ',' => {
                i += 1;
                Tok::Comma
            }
            ':' if chars.get(i + 1) == Some(&'=') => {
                i += 2;
                Tok::Declare
            }
            '=' => {
                i += 1;
                Tok::Assign
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("an unterminated string".into()),
                        Some('"') => break,
                        Some('\\') => {
                            i += 1;
                            let e = chars.get(i).copied().unwrap_or('\\');
                            match e {
                                'n' => s.push('\n'),
                                't' => s.push('\t'),
                                'r' => s.push('\r'),
                                '\\' | '"' | '\'' => s.push(e),
                                other => {
                                    return Err(format!(
                                        "the escape \\{other} in a string is not translated"
                                    ));
                                }
                            }
                        }
                        Some(c) => s.push(*c),
                    }
                    i += 1;
                }
                i += 1;
                Tok::Str(s)
            }
            '`' => {
                i += 1;
                let from = i;
                while i < chars.len() && chars[i] != '`' {
                    i += 1;
                }
                if i == chars.len() {
                    return Err("an unterminated raw string".into());
                }
                i += 1;
                Tok::Str(chars[from..i - 1].iter().collect())
            }
            '\'' => {
                let c = chars.get(i + 1).copied().unwrap_or_default();
                if chars.get(i + 2) != Some(&'\'') {
                    return Err("a character constant that is not one plain character".into());
                }
                i += 3;
                Tok::Str(c.to_string())
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
                Tok::Number(chars[start..i].iter().collect())
            }
            c if ident(c) => {
                while i < chars.len() && ident(chars[i]) {
                    i += 1;
                }
                Tok::Ident(chars[start..i].iter().collect())
            }
            other => return Err(format!("unexpected {other:?} in an action")),
        };
        out.push((tok, spaced));
        spaced = false;
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
