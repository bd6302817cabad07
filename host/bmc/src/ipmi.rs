//! IPMI through `ipmitool`, its command line rendered from a template as Warewulf does
//! (`ipmi.template` names a file in `<state>/bmc/`; the built-in `ipmitool.tmpl` otherwise).
//!
//! The rendered line is split into arguments (shell quoting rules) and run without a shell;
//! every value is quoted, so a field cannot add arguments. The password goes to `ipmitool`
//! in `IPMITOOL_PASSWORD` (its `-E`), never on a command line where `ps` would show it.

use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use minijinja::{Environment, UndefinedBehavior};
use wulf_core::bmc::{Bmc, BmcError, BmcReply, BmcTarget, ConsoleCommand, PowerAction, PowerState};
use wulf_core::secret::Secret;

/// The template used when a record names none.
pub const DEFAULT_TEMPLATE: &str = "ipmitool.tmpl";
const BUILT_IN: &str = include_str!("ipmitool.tmpl");
/// IPMI over LAN's port.
const DEFAULT_PORT: u16 = 623;
/// Where ipmitool's password goes (`ipmitool -E`).
const PASSWORD_ENV: &str = "IPMITOOL_PASSWORD";

/// The IPMI driver.
#[derive(Debug, Clone)]
pub struct IpmiTool {
    /// Site templates (`<state>/bmc`).
    templates: PathBuf,
}

impl IpmiTool {
    pub fn new(templates: impl Into<PathBuf>) -> IpmiTool {
        IpmiTool {
            templates: templates.into(),
        }
    }

    /// The command line for `cmd` (Warewulf's names: PowerOn, ..., Console) as arguments.
    pub fn command_line(&self, target: &BmcTarget, cmd: &str) -> Result<Vec<String>, BmcError> {
        let name = target.template.as_deref().unwrap_or(DEFAULT_TEMPLATE);
        let source = self.template_source(name)?;
        let rendered = render(&source, target, cmd)
            .map_err(|e| BmcError::Driver(format!("BMC template {name}: {e}")))?;
        let args = shlex::split(rendered.trim()).ok_or_else(|| {
            BmcError::Driver(format!(
                "BMC template {name} renders an unbalanced quote for {cmd}: {rendered:?}"
            ))
        })?;
        if args.is_empty() {
            return Err(BmcError::Driver(format!(
                "BMC template {name} renders nothing for {cmd}"
            )));
        }
        Ok(args)
    }

    fn template_source(&self, name: &str) -> Result<String, BmcError> {
        if name.contains('/') || name.starts_with('.') {
            return Err(BmcError::Driver(format!(
                "ipmi.template {name:?} must be a file name in {}",
                self.templates.display()
            )));
        }
        let path = self.templates.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && name == DEFAULT_TEMPLATE => {
                Ok(BUILT_IN.to_owned())
            }
            Err(e) => Err(BmcError::Driver(format!(
                "BMC template {}: {e}",
                path.display()
            ))),
        }
    }

    /// Runs the command for `cmd` and returns its standard output.
    fn run(&self, target: &BmcTarget, cmd: &str, timeout: Duration) -> Result<String, BmcError> {
        let args = self.command_line(target, cmd)?;
        let mut command = self.command(&args, target);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let reachable = || rmcp_ping(target.address, port(target), Duration::from_secs(1));
        let output = match run_bounded(command, &args[0], timeout) {
            Err(BmcError::Timeout(after)) if !reachable() => {
                return Err(BmcError::Unreachable(format!(
                    "no answer within {} s, nor to an RMCP ping at {}:{}",
                    after.as_secs_f64(),
                    target.address,
                    port(target)
                )));
            }
            other => other?,
        };
        if output.success {
            return Ok(output.stdout);
        }
        Err(classify(&output.stdout, &output.stderr, reachable))
    }

    fn command(&self, args: &[String], target: &BmcTarget) -> Command {
        let mut command = Command::new(&args[0]);
        command.args(&args[1..]).env_remove(PASSWORD_ENV);
        if let Some(password) = &target.password {
            command.env(PASSWORD_ENV, password.expose());
        }
        command
    }
}

fn port(target: &BmcTarget) -> u16 {
    target.port.unwrap_or(DEFAULT_PORT)
}

fn render(source: &str, target: &BmcTarget, cmd: &str) -> Result<String, minijinja::Error> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    // Every value is one shell word, however it is spelled.
    env.set_formatter(|out, _state, value| {
        let text = value.to_string();
        let quoted = shlex::try_quote(&text).map_err(|_| {
            minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                "a value contains a NUL byte",
            )
        })?;
        out.write_str(&quoted)
            .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string()))
    });
    let context = minijinja::context! {
        cmd => cmd,
        ipaddr => target.address.to_string(),
        port => port(target),
        username => target.username.as_deref().unwrap_or(""),
        has_password => target.password.is_some(),
        interface => target.interface.as_str(),
        escape_char => target.escape_char.as_str(),
        tags => minijinja::Value::from(minijinja::value::Serde(&target.tags)),
        node => target.node.as_str(),
    };
    env.render_str(source, context)
}

impl Bmc for IpmiTool {
    fn power(
        &self,
        target: &BmcTarget,
        action: PowerAction,
        timeout: Duration,
    ) -> Result<BmcReply, BmcError> {
        let cmd = match action {
            PowerAction::On => "PowerOn",
            PowerAction::Off => "PowerOff",
            PowerAction::Cycle => "PowerCycle",
            PowerAction::Reset => "PowerReset",
            PowerAction::Soft => "PowerSoft",
            PowerAction::Status => "PowerStatus",
        };
        let stdout = self.run(target, cmd, timeout)?;
        let message = last_line(&stdout);
        let state = match action {
            PowerAction::Status => Some(power_state(&stdout).ok_or_else(|| {
                BmcError::Refused(format!("unexpected status answer: {message:?}"))
            })?),
            _ => None,
        };
        Ok(BmcReply { state, message })
    }

    fn next_boot_pxe(&self, target: &BmcTarget, timeout: Duration) -> Result<BmcReply, BmcError> {
        let stdout = self.run(target, "BootPxe", timeout)?;
        Ok(BmcReply {
            state: None,
            message: last_line(&stdout),
        })
    }

    fn console(&self, target: &BmcTarget, _timeout: Duration) -> Result<ConsoleCommand, BmcError> {
        let args = self.command_line(target, "Console")?;
        Ok(ConsoleCommand {
            program: PathBuf::from(&args[0]),
            args: args[1..].to_vec(),
            env: target
                .password
                .iter()
                .map(|p| (PASSWORD_ENV.to_owned(), Secret::clone(p)))
                .collect(),
            escape: format!("{}.", target.escape_char),
        })
    }
}

fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// `Chassis Power is on|off`.
fn power_state(stdout: &str) -> Option<PowerState> {
    stdout.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("Chassis Power is ")?;
        match rest.trim() {
            "on" => Some(PowerState::On),
            "off" => Some(PowerState::Off),
            _ => None,
        }
    })
}

/// Tells an authentication failure from an unreachable BMC from a refused command, by what
/// ipmitool says. `reachable` settles the one case where ipmitool says the same either way
/// (lanplus: "Unable to establish IPMI v2 / RMCP+ session").
fn classify(stdout: &str, stderr: &str, reachable: impl FnOnce() -> bool) -> BmcError {
    const AUTH: &[&str] = &[
        "Activate Session command failed",
        "RAKP 2 HMAC is invalid",
        "RAKP 2 message indicates an error",
        "Invalid user name",
        "unauthorized name",
        "Password verification",
        "insufficient resources for session",
    ];
    const UNREACHABLE: &[&str] = &[
        "Get Auth Capabilities",
        "Get Channel Authentication Capabilities",
        "No response from remote controller",
        "Connection refused",
        "No route to host",
        "Address lookup",
    ];
    let said = stderr
        .lines()
        .chain(stdout.lines())
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>();
    let summary = said.join("; ");
    if AUTH.iter().any(|m| stderr.contains(m)) {
        return BmcError::Auth(summary);
    }
    if UNREACHABLE.iter().any(|m| stderr.contains(m)) {
        return BmcError::Unreachable(summary);
    }
    if stderr.contains("Unable to establish") {
        return if reachable() {
            BmcError::Auth(format!("{summary} (the BMC answers an RMCP ping)"))
        } else {
            BmcError::Unreachable(format!("{summary} (no answer to an RMCP ping)"))
        };
    }
    if summary.is_empty() {
        return BmcError::Refused("ipmitool failed and said nothing".into());
    }
    BmcError::Refused(summary)
}

/// Whether something answers an RMCP (ASF) presence ping at the BMC's address.
fn rmcp_ping(address: Ipv4Addr, port: u16, wait: Duration) -> bool {
    // RMCP header (version 6, sequence 0xff: no RMCP ack, class ASF), then the ASF message:
    // IANA 4542, type 0x80 (presence ping), tag, reserved, no data.
    const PING: [u8; 12] = [
        0x06, 0x00, 0xff, 0x06, 0x00, 0x00, 0x11, 0xbe, 0x80, 0x57, 0x00, 0x00,
    ];
    let answer = || -> std::io::Result<bool> {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        socket.connect(SocketAddr::from((address, port)))?;
        socket.set_read_timeout(Some(wait))?;
        socket.send(&PING)?;
        let mut buf = [0u8; 64];
        let n = socket.recv(&mut buf)?;
        // A presence pong is ASF type 0x40.
        Ok(n >= 9 && buf[3] == 0x06 && buf[8] == 0x40)
    };
    answer().unwrap_or(false)
}

/// What a bounded child run produced.
struct RunOutput {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs `command` to completion or kills it at `timeout`.
fn run_bounded(
    mut command: Command,
    program: &str,
    timeout: Duration,
) -> Result<RunOutput, BmcError> {
    let started = Instant::now();
    let mut child = command.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            BmcError::Driver(format!(
                "{program} is not installed (Debian: apt-get install {program})"
            ))
        } else {
            BmcError::Driver(format!("running {program}: {e}"))
        }
    })?;
    let reader = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = reader(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = reader(child.stderr.take().map(|p| Box::new(p) as _));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(BmcError::Timeout(timeout));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(BmcError::Driver(format!("waiting for {program}: {e}"))),
        }
    };
    Ok(RunOutput {
        success: status.success(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use wulf_core::node::Node;

    fn target() -> BmcTarget {
        let mut node = Node {
            id: "n1".into(),
            ..Node::default()
        };
        node.ipmi.ipaddr = Some(Ipv4Addr::new(10, 0, 0, 1));
        node.ipmi.username = Some("ad min".into());
        node.ipmi.password = Some(Secret::new("s3cret; rm -rf /"));
        node.ipmi.port = Some(6230);
        node.ipmi.interface = Some("lanplus".into());
        node.ipmi.tags.insert("cipher".into(), "3".into());
        BmcTarget::of(&node).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_default_template_quotes_values_and_keeps_the_password_off_the_line() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let tool = IpmiTool::new(dir.path());
        let args = tool
            .command_line(&target(), "PowerStatus")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            args,
            [
                "ipmitool", "-I", "lanplus", "-H", "10.0.0.1", "-p", "6230", "-U", "ad min", "-E",
                "-C", "3", "chassis", "power", "status"
            ]
        );
        assert!(!args.join(" ").contains("s3cret"));
        let console = tool
            .console(&target(), Duration::from_secs(1))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            console.args[console.args.len() - 4..],
            ["-e", "~", "sol", "activate"]
        );
        assert_eq!(console.escape, "~.");

        // Serial over LAN is IPMI 2.0: a node on `lan` gets its console over lanplus.
        let mut lan = target();
        lan.interface = "lan".into();
        let status = tool
            .command_line(&lan, "PowerStatus")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status[1..3], ["-I", "lan"]);
        let console = tool
            .console(&lan, Duration::from_secs(1))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(console.args[..2], ["-I", "lanplus"]);
    }

    #[test]
    fn a_site_template_is_read_from_the_template_directory() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            dir.path().join("mine.tmpl"),
            "ipmitool -H {{ ipaddr }} {% if cmd == 'PowerOn' %}power up{% endif %}",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut target = target();
        target.template = Some("mine.tmpl".into());
        let tool = IpmiTool::new(dir.path());
        let args = tool
            .command_line(&target, "PowerOn")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(args, ["ipmitool", "-H", "10.0.0.1", "power", "up"]);
        target.template = Some("../etc/passwd".into());
        assert!(matches!(
            tool.command_line(&target, "PowerOn"),
            Err(BmcError::Driver(_))
        ));
        target.template = Some("absent.tmpl".into());
        assert!(matches!(
            tool.command_line(&target, "PowerOn"),
            Err(BmcError::Driver(m)) if m.contains("absent.tmpl")
        ));
    }

    #[test]
    fn ipmitool_failures_are_told_apart() {
        let never = || panic!("no ping needed");
        assert!(matches!(
            classify(
                "",
                "Activate Session command failed\nError: Unable to establish LAN session",
                never
            ),
            BmcError::Auth(_)
        ));
        assert!(matches!(
            classify(
                "",
                "Get Auth Capabilities command failed\nError: Unable to establish LAN session",
                never
            ),
            BmcError::Unreachable(_)
        ));
        let lanplus = "Error: Unable to establish IPMI v2 / RMCP+ session";
        assert!(matches!(classify("", lanplus, || true), BmcError::Auth(_)));
        assert!(matches!(
            classify("", lanplus, || false),
            BmcError::Unreachable(_)
        ));
        assert!(matches!(
            classify(
                "",
                "Set Chassis Power Control to Reset failed: Invalid data field in request",
                never
            ),
            BmcError::Refused(m) if m.contains("Invalid data field")
        ));
        assert_eq!(power_state("Chassis Power is on\n"), Some(PowerState::On));
        assert_eq!(power_state("Chassis Power is off"), Some(PowerState::Off));
    }
}
