//! `/init` of a two-stage boot (see the library's documentation). Every step is printed on
//! the console with `wulf-stage1:` and reported to the server's `/status`.

use std::io::{self, Read, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::mount::{MountFlags, UnmountFlags};
use wulf_stage1::{Params, fetch, modules, net, unpack};

/// The new root, a tmpfs.
const NEWROOT: &str = "/newroot";
/// Where stage one's archive puts the network drivers and their index.
const MODULES: &str = "/wulf-stage1/modules";
/// Whole attempts (network, image, overlays) before the node reboots.
const ATTEMPTS: u32 = 5;

fn say(message: &str) {
    println!("wulf-stage1: {message}");
    let _ = io::stdout().flush();
}

/// Tells the server how a step went (best effort: stage one goes on without it).
fn report(params: &Params, step: &str, error: Option<&str>) {
    let body = match error {
        None => format!("ok {step}\n"),
        Some(e) => format!("error {step}: {e}\n"),
    };
    let target = format!(
        "/stage1/{}/report?assetkey={}",
        params.mac, params.asset_key
    );
    let result = wulf_agent::http::post(&params.server, &target, &body, Duration::from_secs(3))
        .and_then(|r| match r.status {
            200 => Ok(()),
            status => Err(io::Error::other(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&r.body).trim()
            ))),
        });
    if let Err(e) = result {
        say(&format!("could not report to {}: {e}", params.server));
    }
}

fn mount_kernel_filesystems() {
    for (fs, target) in [("proc", "/proc"), ("sysfs", "/sys"), ("devtmpfs", "/dev")] {
        let _ = std::fs::create_dir_all(target);
        match rustix::mount::mount(fs, target, fs, MountFlags::NOSUID, None) {
            Ok(()) | Err(rustix::io::Errno::BUSY) => {}
            Err(e) => say(&format!("mounting {fs} on {target}: {e}")),
        }
    }
}

/// Drivers loaded and the booting interface up with its address; its name.
fn bring_up_network(params: &Params) -> Result<String, String> {
    let sysfs = Path::new("/sys");
    let mut loader = modules::Loader::open(Path::new(MODULES))
        .map_err(|e| format!("reading the module index: {e}"))?;
    let interface = net::find_interface(sysfs, &params.mac, Duration::from_secs(30), || {
        if let Some(loader) = loader.as_mut() {
            let loaded = loader.pass(sysfs);
            if !loaded.is_empty() {
                say(&format!("loaded {}", loaded.join(", ")));
            }
        }
    })
    .ok_or_else(|| {
        format!(
            "no interface with address {} appeared in 30 s (its driver is not among the image's network drivers?)",
            params.mac
        )
    })?;
    let config = std::fs::read_to_string("/warewulf/config").unwrap_or_default();
    let vars = wulf_stage1::shell_variables(&config);
    let ip = wulf_stage1::address_for(&vars, params)?;
    net::loopback_up(sysfs).map_err(|e| format!("lo: {e}"))?;
    net::configure(sysfs, &interface, &ip).map_err(|e| e.to_string())?;
    if !net::wait_for_carrier(sysfs, &interface, Duration::from_secs(20)) {
        say(&format!(
            "{interface} has no carrier after 20 s; trying anyway"
        ));
    }
    say(&format!(
        "{interface} is up with {}/{}{}",
        ip.addr,
        ip.prefix,
        ip.gateway.map(|g| format!(" via {g}")).unwrap_or_default()
    ));
    Ok(interface)
}

/// A fresh, empty tmpfs on [`NEWROOT`].
fn fresh_root() -> Result<(), String> {
    let _ = rustix::mount::unmount(NEWROOT, UnmountFlags::DETACH);
    std::fs::create_dir_all(NEWROOT).map_err(|e| format!("{NEWROOT}: {e}"))?;
    rustix::mount::mount(
        "tmpfs",
        NEWROOT,
        "tmpfs",
        MountFlags::empty(),
        Some(c"mode=0755,size=95%"),
    )
    .map_err(|e| format!("mounting a tmpfs on {NEWROOT}: {e}"))
}

/// Passes bytes through, printing progress every few seconds.
struct Progress<R> {
    inner: R,
    total: u64,
    read: u64,
    started: Instant,
    last: Instant,
}

impl<R: Read> Read for Progress<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.last.elapsed() >= Duration::from_secs(5) {
            self.last = Instant::now();
            let secs = self.started.elapsed().as_secs_f64().max(0.001);
            say(&format!(
                "image: {} of {} MiB ({:.0} MiB/s)",
                self.read >> 20,
                self.total >> 20,
                self.read as f64 / secs / f64::from(1 << 20)
            ));
        }
        Ok(n)
    }
}

/// The image unpacked into [`NEWROOT`] and checked against its hash.
fn fetch_image(params: &Params) -> Result<(), String> {
    let options = fetch::Options {
        streams: params.streams,
        ..fetch::Options::default()
    };
    let started = Instant::now();
    let mut download = fetch::Download::start(&params.server, &params.target("image"), options)
        .map_err(|e| format!("fetching the image: {e}"))?;
    let total = download.probe().len;
    say(&format!(
        "image: {} MiB in {} streams, sha256 {}",
        total >> 20,
        params.streams,
        download.probe().etag.trim_matches('"')
    ));
    let stats = {
        let progress = Progress {
            inner: &mut download,
            total,
            read: 0,
            started,
            last: Instant::now(),
        };
        unpack::unpack(progress, Path::new(NEWROOT))
    };
    // A corrupt stream may fail to unpack before the hash is reached: the hash says which.
    let verified = download.verify().map_err(|e| format!("image: {e}"))?;
    let stats = stats.map_err(|e| format!("unpacking the image: {e}"))?;
    let secs = started.elapsed().as_secs_f64();
    say(&format!(
        "image: {} MiB fetched {} in {secs:.1} s ({:.0} MiB/s, {} ranges asked again); {} entries, {} MiB unpacked",
        total >> 20,
        if verified {
            "and verified"
        } else {
            "(the server gave no hash to verify)"
        },
        total as f64 / secs.max(0.001) / f64::from(1 << 20),
        download.retries(),
        stats.entries,
        stats.bytes >> 20
    ));
    Ok(())
}

/// An overlay fetched whole and unpacked over the image; `required` says whether a missing
/// one is an error. The runtime overlay is asked from a privileged port (secure mode).
fn apply_overlay(params: &Params, what: &str, required: bool) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 1..=5 {
        match wulf_agent::http::get(
            &params.server,
            &params.target(what),
            &[],
            Duration::from_secs(60),
            what == "runtime",
        ) {
            Ok(response) if response.status == 200 => {
                let stats = unpack::unpack(&response.body[..], Path::new(NEWROOT))
                    .map_err(|e| format!("unpacking the {what} overlay: {e}"))?;
                say(&format!("{what} overlay: {} entries", stats.entries));
                return Ok(());
            }
            Ok(response) if response.status < 500 && response.status != 429 => {
                let reason = format!(
                    "HTTP {}: {}",
                    response.status,
                    String::from_utf8_lossy(&response.body).trim()
                );
                if required {
                    return Err(format!("the {what} overlay: {reason}"));
                }
                say(&format!("no {what} overlay ({reason}); going on"));
                return Ok(());
            }
            Ok(response) => last = format!("HTTP {}", response.status),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_secs(attempt));
    }
    if required {
        Err(format!("the {what} overlay: {last}"))
    } else {
        say(&format!("no {what} overlay ({last}); going on"));
        Ok(())
    }
}

/// Moves the kernel's filesystems into [`NEWROOT`], frees stage one's files, makes
/// [`NEWROOT`] the root and runs its `/init`.
fn switch_root() -> io::Error {
    let new = Path::new(NEWROOT);
    for fs in ["proc", "sys", "dev"] {
        let target = new.join(fs);
        let _ = std::fs::create_dir_all(&target);
        if let Err(e) = rustix::mount::mount_move(format!("/{fs}"), &target) {
            say(&format!("moving /{fs}: {e}"));
        }
    }
    // Stage one's own files are in RAM until removed.
    if let Ok(entries) = std::fs::read_dir("/") {
        for entry in entries.flatten() {
            let name = entry.file_name();
            if matches!(name.to_str(), Some("newroot" | "proc" | "sys" | "dev")) {
                continue;
            }
            let path = entry.path();
            let _ = if path.is_dir() && !path.is_symlink() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
    }
    if let Err(e) = std::env::set_current_dir(new) {
        return e;
    }
    if let Err(e) = rustix::mount::mount_move(".", "/") {
        return e.into();
    }
    if let Err(e) = rustix::process::chroot(".") {
        return e.into();
    }
    if let Err(e) = std::env::set_current_dir("/") {
        return e;
    }
    std::process::Command::new("/init")
        .args(std::env::args_os().skip(1))
        .exec()
}

fn attempt(params: &Params, network: &mut Option<String>) -> Result<(), String> {
    if network.is_none() {
        *network = Some(bring_up_network(params)?);
        report(params, "network", None);
    }
    fresh_root()?;
    fetch_image(params)?;
    report(params, "image", None);
    apply_overlay(params, "system", true)?;
    apply_overlay(params, "runtime", false)?;
    if !Path::new(NEWROOT).join("init").exists() {
        return Err("the system overlay gave no /init (is the wwinit overlay in the node's system overlays?)".into());
    }
    Ok(())
}

fn main() {
    say(&format!("wulf stage one {}", env!("CARGO_PKG_VERSION")));
    if std::process::id() != 1 {
        eprintln!("wulf-stage1 is a node's /init in a two-stage boot; it is not run by hand");
        std::process::exit(2);
    }
    mount_kernel_filesystems();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let params = match Params::from_cmdline(&cmdline) {
        Ok(params) => params,
        Err(e) => fail_for_good(&e),
    };
    let mut network = None;
    for n in 1..=ATTEMPTS {
        match attempt(&params, &mut network) {
            Ok(()) => {
                report(&params, "switch-root", None);
                say("switching root to the image");
                let error = switch_root();
                // The old root is gone by now: nothing left to try.
                fail_for_good(&format!("switching root: {error}"));
            }
            Err(e) => {
                say(&format!("attempt {n} of {ATTEMPTS} failed: {e}"));
                report(&params, "attempt", Some(&e));
                if n < ATTEMPTS {
                    let pause = Duration::from_secs(5 * u64::from(n));
                    say(&format!("trying again in {} s", pause.as_secs()));
                    std::thread::sleep(pause);
                }
            }
        }
    }
    fail_for_good(&format!("{ATTEMPTS} attempts failed"));
}

/// Prints why and reboots after a minute (PID 1 must not exit).
fn fail_for_good(reason: &str) -> ! {
    say(&format!("{reason}; rebooting in 60 s"));
    std::thread::sleep(Duration::from_secs(60));
    let _ = rustix::system::reboot(rustix::system::RebootCommand::Restart);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
