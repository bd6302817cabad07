//! Shared by the black-box tests: the real `wulf` binary, fixture plugins, scratch state
//! directories.

pub mod chromium;
pub mod debian;
pub mod netns;
pub mod nginx;
pub mod oci;
pub mod polyglot;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `wulf` binary of this workspace, built once per test run with the same profile as the
/// tests, so the tests never run a stale binary.
pub fn wulf_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
        // <target>/<profile>/deps/suite-<hash>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .unwrap_or_else(|| panic!("odd test path {exe:?}"));
        let target_dir = profile_dir
            .parent()
            .unwrap_or_else(|| panic!("odd test path {exe:?}"));
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev",
            Some(other) => other,
            None => "dev",
        };
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "-p",
                "wulf",
                "--bin",
                "wulf",
                "--profile",
                profile,
                "--target-dir",
            ])
            .arg(target_dir)
            .arg("--manifest-path")
            .arg(workspace().join("Cargo.toml"))
            .status()
            .unwrap_or_else(|e| panic!("running cargo: {e}"));
        assert!(status.success(), "building the wulf binary failed");
        profile_dir.join("wulf")
    })
}

/// `wulf-agent` as the `wulf` binary embeds it and ships it to nodes: the static build its
/// build script made.
pub fn agent_bin() -> PathBuf {
    wulf_bin();
    wulf_plugin_build::static_binary(&workspace(), "wulf-agent", "agent")
}

/// A fixture plugin's component.
pub fn fixture_wasm(package: &str) -> PathBuf {
    Path::new(env!("WULF_FIXTURE_WASM_DIR")).join(format!("{}.wasm", package.replace('-', "_")))
}

/// A plugin directory (a manifest from `manifest_from`, the component of `crate_name`) as an
/// author would hand it over to `wulf plugin install`.
pub fn plugin_dir(manifest_from: &Path, crate_name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(
        manifest_from.join("plugin.toml"),
        dir.path().join("plugin.toml"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(fixture_wasm(crate_name), dir.path().join("plugin.wasm"))
        .unwrap_or_else(|e| panic!("{e}"));
    dir
}

/// One row of the README's benchmark table, printed for `tests/benches/report` to collect:
/// what was measured, wulf's figure, the baseline's from the same run, their ratio and the
/// target. Tab-separated after a `report` tag, so the human-readable output stays as it is.
pub fn report(bench: &str, measure: &str, wulf: &str, baseline: &str, ratio: &str, target: &str) {
    let cell = |text: &str| text.replace(['\t', '\n'], " ").replace('|', "\\|");
    println!(
        "report\t{}\t{}\t{}\t{}\t{}\t{}",
        cell(bench),
        cell(measure),
        cell(wulf),
        cell(baseline),
        cell(ratio),
        cell(target)
    );
}

/// The `p` quantile (0 < p <= 1) of `samples` (sorted here): the smallest sample that at least
/// that share of them do not exceed; zero for none.
pub fn percentile(samples: &mut [std::time::Duration], p: f64) -> std::time::Duration {
    if samples.is_empty() {
        return std::time::Duration::ZERO;
    }
    samples.sort_unstable();
    let i = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[i]
}

/// The counter or gauge `name` in a Prometheus exposition `text`.
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// A fixture plugin's source directory (with its `plugin.toml`).
pub fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// A scratch state directory for one test, and the commands run against it.
pub struct Wulf {
    state: PathBuf,
    /// Removes the directory when dropped; `None` for [`Wulf::at`].
    _temp: Option<tempfile::TempDir>,
}

impl Default for Wulf {
    fn default() -> Self {
        Self::new()
    }
}

impl Wulf {
    /// A new state directory under the system's temporary directory.
    pub fn new() -> Self {
        Self::from(tempfile::tempdir())
    }

    /// A new state directory under `parent` (removed when dropped).
    pub fn new_in(parent: &Path) -> Self {
        Self::from(tempfile::tempdir_in(parent))
    }

    fn from(temp: std::io::Result<tempfile::TempDir>) -> Self {
        let temp = temp.unwrap_or_else(|e| panic!("tempdir: {e}"));
        Wulf {
            state: temp.path().to_path_buf(),
            _temp: Some(temp),
        }
    }

    /// Commands against an existing state directory, which is left alone when dropped.
    pub fn at(state: &Path) -> Self {
        Wulf {
            state: state.to_path_buf(),
            _temp: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.state
    }

    /// `wulf <args>` with this state directory and no inherited configuration.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(wulf_bin());
        cmd.args(args)
            .env("WULF_STATE_DIR", self.path())
            .env_remove("WULF_CONFIG")
            .env_remove("RUST_LOG");
        cmd
    }

    /// Runs `wulf <args>` under GNU time and fails unless it succeeds: its stdout, and its
    /// peak resident memory in KiB (what `ru_maxrss` says of the child).
    pub fn ok_with_peak_rss(&self, args: &[&str]) -> (String, u64) {
        require_command("/usr/bin/time", "time");
        let out = Command::new("/usr/bin/time")
            .args(["-f", "peak-rss-kib=%M"])
            .arg(wulf_bin())
            .args(args)
            .env("WULF_STATE_DIR", self.path())
            .env_remove("WULF_CONFIG")
            .env_remove("RUST_LOG")
            .output()
            .unwrap_or_else(|e| panic!("running /usr/bin/time: {e}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "wulf {args:?} failed: {stderr}");
        let peak = stderr
            .lines()
            .find_map(|l| l.strip_prefix("peak-rss-kib="))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no peak RSS from GNU time: {stderr}"));
        (String::from_utf8_lossy(&out.stdout).into_owned(), peak)
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("running wulf: {e}"))
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "wulf {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs and expects failure; returns stderr with the state path redacted.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "wulf {args:?} succeeded:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        self.redact(&String::from_utf8_lossy(&out.stderr))
    }

    /// Text with the state directory and the workspace replaced by placeholders.
    pub fn redact(&self, text: &str) -> String {
        let workspace = workspace().canonicalize().unwrap_or_else(|_| workspace());
        text.replace(&self.path().display().to_string(), "[STATE]")
            .replace(&workspace.display().to_string(), "[WORKSPACE]")
            .replace(env!("WULF_FIXTURE_WASM_DIR"), "[FIXTURES]")
    }

    /// Writes a file into the state directory.
    pub fn write(&self, relative: &str, contents: &str) {
        let path = self.path().join(relative);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir: {e}"));
        }
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {path:?}: {e}"));
    }
}

/// One apt-get at a time: tests run in parallel and dpkg has one lock.
static APT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Installs `package` unless `present()` already holds (checked again under the lock);
/// returns what apt-get said, for the failure message.
fn apt_install(package: &str, present: impl Fn() -> bool) -> String {
    let _guard = APT.lock().unwrap_or_else(|p| p.into_inner());
    if present() {
        return String::new();
    }
    let update = Command::new("apt-get").args(["-q", "update"]).output();
    let install = Command::new("apt-get")
        .args(["-q", "-y", "--no-install-recommends", "install", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output();
    format!(
        "apt-get update: {:?}, install: {:?}",
        update.map(|o| o.status),
        install.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
    )
}

/// Refreshes apt's package lists (a fresh machine may have none), under the apt lock.
pub fn apt_update() {
    let _guard = APT.lock().unwrap_or_else(|p| p.into_inner());
    let _ = Command::new("apt-get").args(["-q", "update"]).output();
}

/// Makes sure a command from a Debian package is there, installing the package with apt-get
/// when it is not. Fails loudly when it cannot be had: a test never passes by skipping.
pub fn require_command(command: &str, package: &str) {
    let present = || {
        Command::new("sh")
            .args(["-c", &format!("command -v {command}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if present() {
        return;
    }
    let said = apt_install(package, present);
    assert!(
        present(),
        "`{command}` is needed and could not be installed from Debian package `{package}` ({said})"
    );
}

/// Makes sure a file from a Debian package is there (ROMs, firmware), installing the package
/// with apt-get when it is not; fails loudly when it cannot be had.
pub fn require_file(path: &str, package: &str) {
    let present = || Path::new(path).exists();
    if present() {
        return;
    }
    let said = apt_install(package, present);
    assert!(
        present(),
        "{path} is needed and could not be installed from Debian package `{package}` ({said})"
    );
}

/// A running `wulf serve`, stopped when dropped.
pub struct Serving {
    child: std::process::Child,
    pub http: std::net::SocketAddr,
    /// `None` when TFTP is off.
    pub tftp: Option<std::net::SocketAddr>,
    /// The API's base URL (`http://127.0.0.1:PORT`); `None` when it is off.
    pub api: Option<String>,
}

impl Serving {
    /// The server's process id (for its memory use).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Wulf {
    /// Starts `wulf serve <args>` and waits for the addresses it reports (pass port 0 to let
    /// the kernel choose).
    pub fn serve(&self, args: &[&str]) -> Serving {
        self.serve_in(&[], args)
    }

    /// Like [`Wulf::serve`], with the server's log (stderr) written to `log`.
    pub fn serve_logged(&self, args: &[&str], log: &Path) -> Serving {
        let file = std::fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        self.spawn_server(&[], args, std::process::Stdio::from(file))
    }

    /// Like [`Wulf::serve_logged`], run under `prefix`.
    pub fn serve_logged_in(&self, prefix: &[&str], args: &[&str], log: &Path) -> Serving {
        let file = std::fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        self.spawn_server(prefix, args, std::process::Stdio::from(file))
    }

    /// Like [`Wulf::serve`], run under `prefix` (e.g. `ip netns exec <ns>`).
    pub fn serve_in(&self, prefix: &[&str], args: &[&str]) -> Serving {
        // WULF_SERVE_STDERR=<file> keeps the server's log, for debugging a test or a bench.
        let stderr = match std::env::var_os("WULF_SERVE_STDERR") {
            Some(path) => std::fs::File::create(&path)
                .map(std::process::Stdio::from)
                .unwrap_or_else(|e| panic!("WULF_SERVE_STDERR: {e}")),
            None => std::process::Stdio::null(),
        };
        self.spawn_server(prefix, args, stderr)
    }

    fn spawn_server(&self, prefix: &[&str], args: &[&str], stderr: std::process::Stdio) -> Serving {
        use std::io::BufRead;
        let mut full = vec!["serve"];
        full.extend_from_slice(args);
        // Tests run side by side: each API on a port of its own unless the test says.
        if !args.iter().any(|a| *a == "--api-addr" || *a == "--no-api") {
            full.extend_from_slice(&["--api-addr", "127.0.0.1:0"]);
        }
        let mut command = match prefix.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest)
                    .arg(wulf_bin())
                    .args(&full)
                    .env("WULF_STATE_DIR", self.path())
                    .env_remove("WULF_CONFIG")
                    .env_remove("RUST_LOG");
                c
            }
            None => self.command(&full),
        };
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning wulf serve: {e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let (mut http, mut tftp, mut api) = (None, None, None);
        // The TFTP line (on or off) is the last of the startup lines.
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.strip_prefix("wulf: HTTP on http://") {
                http = rest.split_whitespace().next().and_then(|a| a.parse().ok());
            } else if let Some(rest) = line.strip_prefix("wulf: API on ") {
                api = rest
                    .split_whitespace()
                    .next()
                    .and_then(|url| url.strip_suffix("/api/v1"))
                    .map(str::to_owned);
            } else if let Some(rest) = line.strip_prefix("wulf: TFTP on ") {
                tftp = rest.split(',').next().and_then(|a| a.parse().ok());
                break;
            } else if line.starts_with("wulf: TFTP off") {
                break;
            }
        }
        let http = http.unwrap_or_else(|| panic!("wulf serve did not report its HTTP address"));
        Serving {
            child,
            http,
            tftp,
            api,
        }
    }
}

/// Downloads and trees kept between test runs: `target/test-cache`.
pub fn test_cache() -> PathBuf {
    workspace().join("target/test-cache")
}

/// A TCP port on 127.0.0.1 nobody listens on (the kernel's choice, released again).
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free TCP port: {e}"))
}

/// A UDP port on 127.0.0.1 nobody has bound (the kernel's choice, released again).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free UDP port: {e}"))
}

/// Polls `check` every 200 ms until it gives a value; panics naming `what` (and `context()`)
/// when `within` passes first.
pub fn wait_for<T>(
    what: &str,
    within: std::time::Duration,
    context: impl Fn() -> String,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let started = std::time::Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        if started.elapsed() > within {
            panic!("{what}: not within {within:?}\n{}", context());
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The fastest of `runs` runs of `f`: the least disturbed by a shared, noisy machine.
pub fn best_of(runs: usize, mut f: impl FnMut()) -> std::time::Duration {
    (0..runs)
        .map(|_| {
            let started = std::time::Instant::now();
            f();
            started.elapsed()
        })
        .min()
        .unwrap_or_default()
}
