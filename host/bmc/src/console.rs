//! Console logs: a node's serial console, captured through its BMC into rotating files
//! (`<dir>/<node>.log`, then `.log.1` ... `.log.<keep>`), and read back.
//!
//! A console program (`ipmitool sol activate`) wants a terminal, so it runs on a pseudo
//! terminal whose other end is read here. A BMC gives one console session at a time, so the
//! one being logged is also shared: viewers ([`Viewers`]) see its output as it is logged, and
//! what they type goes to its terminal.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
use wulf_core::bmc::ConsoleCommand;

/// A console log being written, rotated by size.
#[derive(Debug)]
pub struct ConsoleLog {
    path: PathBuf,
    file: File,
    written: u64,
    max_bytes: u64,
    keep: usize,
}

/// Where `node`'s console log lives in `dir`.
pub fn log_path(dir: &Path, node: &str) -> PathBuf {
    dir.join(format!("{node}.log"))
}

/// The socket through which `wulf serve` shares `node`'s logged console.
pub fn socket_path(dir: &Path, node: &str) -> PathBuf {
    dir.join(format!("{node}.sock"))
}

/// A node's console logs, oldest first (rotated ones, then the current one).
pub fn log_files(dir: &Path, node: &str) -> Vec<PathBuf> {
    let current = log_path(dir, node);
    let mut rotated: Vec<(usize, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let n = name
                .strip_prefix(&format!("{node}.log."))?
                .parse::<usize>()
                .ok()?;
            Some((n, entry.path()))
        })
        .collect();
    rotated.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    if current.exists() {
        files.push(current);
    }
    files
}

impl ConsoleLog {
    /// Opens (appends to) `node`'s log in `dir`.
    pub fn open(
        dir: &Path,
        node: &str,
        max_bytes: u64,
        keep: usize,
    ) -> std::io::Result<ConsoleLog> {
        std::fs::create_dir_all(dir)?;
        let path = log_path(dir, node);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&path)?;
        let written = file.metadata()?.len();
        Ok(ConsoleLog {
            path,
            file,
            written,
            max_bytes: max_bytes.max(1),
            keep,
        })
    }

    /// Appends console output (carriage returns dropped), rotating first when the file is full.
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let text: Vec<u8> = bytes.iter().copied().filter(|&b| b != b'\r').collect();
        if self.written > 0 && self.written + text.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(&text)?;
        self.written += text.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let numbered = |n: usize| PathBuf::from(format!("{}.{n}", self.path.display()));
        if self.keep == 0 {
            self.file.set_len(0)?;
        } else {
            let _ = std::fs::remove_file(numbered(self.keep));
            for n in (1..self.keep).rev() {
                let _ = std::fs::rename(numbered(n), numbered(n + 1));
            }
            std::fs::rename(&self.path, numbered(1))?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o640)
                .open(&self.path)?;
        }
        self.written = 0;
        Ok(())
    }
}

/// A console program running on a pseudo terminal.
#[derive(Debug)]
pub struct ConsoleSession {
    child: Child,
    output: File,
}

impl ConsoleSession {
    /// Starts `command` with a pseudo terminal as its standard input, output and error.
    pub fn start(command: &ConsoleCommand) -> std::io::Result<ConsoleSession> {
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
        grantpt(&master)?;
        unlockpt(&master)?;
        let name = ptsname(&master, Vec::new())?;
        let terminal = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
            .open(Path::new(std::ffi::OsStr::from_bytes(name.as_bytes())))?;
        let mut process = Command::new(&command.program);
        process
            .args(&command.args)
            .stdin(Stdio::from(terminal.try_clone()?))
            .stdout(Stdio::from(terminal.try_clone()?))
            .stderr(Stdio::from(terminal));
        for (key, value) in &command.env {
            process.env(key, value.expose());
        }
        let child = process.spawn()?;
        Ok(ConsoleSession {
            child,
            output: File::from(master),
        })
    }

    /// Where input to the console program goes (its terminal).
    pub fn input(&self) -> std::io::Result<File> {
        self.output.try_clone()
    }

    /// Copies the console into `log`, and to `viewers`, until the program ends (or its
    /// terminal closes).
    pub fn copy_to(&mut self, log: &mut ConsoleLog, viewers: &Viewers) -> std::io::Result<()> {
        let mut buf = [0u8; 8192];
        loop {
            match self.output.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    viewers.send(&buf[..n]);
                    log.write(&buf[..n])?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // The terminal's other side closes with EIO when the program exits.
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => {
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A handle that stops the program from another thread.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            pid: self.child.id(),
        }
    }

    /// Stops the program.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stops a console program from another thread (the thread copying its output then ends).
#[derive(Debug, Clone, Copy)]
pub struct Stopper {
    pid: u32,
}

impl Stopper {
    pub fn stop(self) {
        let pid = i32::try_from(self.pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
}

/// The clients watching a logged console (`wulf node console` while `wulf serve` logs it).
#[derive(Debug, Default)]
pub struct Viewers {
    streams: Mutex<Vec<UnixStream>>,
    /// wulf's last word on the console (attached, unavailable and why), for newcomers.
    status: Mutex<String>,
}

impl Viewers {
    /// A viewer that stops reading for this long is dropped, so it cannot stall the log.
    const STALL: Duration = Duration::from_secs(2);

    /// A new viewer, told first where the console stands.
    pub fn add(&self, mut stream: UnixStream) -> std::io::Result<()> {
        stream.set_write_timeout(Some(Self::STALL))?;
        let status = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if !status.is_empty() {
            stream.write_all(status.as_bytes())?;
        }
        self.streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(stream);
        Ok(())
    }

    /// Sends console output to every viewer; a viewer that is gone or stalled is dropped.
    pub fn send(&self, bytes: &[u8]) {
        self.streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain_mut(|stream| stream.write_all(bytes).is_ok());
    }

    /// A line of wulf's own (the console attached, dropped, refused), to every viewer.
    pub fn note(&self, what: &str) {
        let line = format!("\r\n[wulf: {what}]\r\n");
        self.send(line.as_bytes());
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = line;
    }

    /// Ends every viewer's connection (their input threads see it end too).
    pub fn close(&self) {
        for stream in self
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A logged console shared over a Unix socket that only its owner may use: viewers see its
/// output from when they connect, and what they type goes to the console's terminal.
#[derive(Debug, Default)]
pub struct ConsoleShare {
    pub viewers: Viewers,
    /// The terminal of the console program running now, if one is.
    input: Mutex<Option<File>>,
}

impl ConsoleShare {
    /// Listens at `path`, mode 0600 (a socket a killed server left there is replaced).
    pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    }

    /// Takes viewers on `listener` until `stop`.
    pub fn serve(self: &Arc<Self>, listener: &UnixListener, stop: &AtomicBool) {
        while !stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((stream, _)) => {
                    let reader = stream
                        .set_nonblocking(false)
                        .and_then(|()| stream.try_clone());
                    let added = reader.and_then(|reader| self.viewers.add(stream).map(|()| reader));
                    if let Ok(reader) = added {
                        let share = Arc::clone(self);
                        let _ = std::thread::Builder::new()
                            .name("console viewer".into())
                            .spawn(move || share.forward_input(reader));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => {
                    tracing::warn!("console viewers: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }

    /// Where viewers' keys go from now on: `session`'s terminal, or nowhere.
    pub fn type_into(&self, session: Option<&ConsoleSession>) {
        *self.input.lock().unwrap_or_else(|p| p.into_inner()) =
            session.and_then(|s| s.input().ok());
    }

    /// What a viewer types, to the console's terminal, until the viewer leaves.
    fn forward_input(&self, mut viewer: UnixStream) {
        let mut buf = [0u8; 1024];
        loop {
            match viewer.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let mut input = self.input.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(terminal) = input.as_mut() {
                        let _ = terminal.write_all(&buf[..n]);
                    }
                }
            }
        }
    }
}

impl ConsoleLog {
    /// Writes a line of wulf's own between console output (attached, detached, why).
    pub fn note(&mut self, what: &str) -> std::io::Result<()> {
        let when = httpdate::fmt_http_date(std::time::SystemTime::now());
        self.write(format!("\n[wulf {when}: {what}]\n").as_bytes())
    }
}

impl Drop for ConsoleSession {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_rotate_by_size_and_read_back_oldest_first() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut log = ConsoleLog::open(dir.path(), "n1", 10, 2).unwrap_or_else(|e| panic!("{e}"));
        for line in ["aaaaaa\r\n", "bbbbbb\r\n", "cccccc\r\n", "dddddd\r\n"] {
            log.write(line.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        }
        let files = log_files(dir.path(), "n1");
        let text: String = files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap_or_default())
            .collect();
        // Two rotated files kept plus the current one: the oldest line is gone.
        assert_eq!(files.len(), 3, "{files:?}");
        assert_eq!(text, "bbbbbb\ncccccc\ndddddd\n");
    }

    #[test]
    fn a_console_program_runs_on_a_terminal_and_its_output_is_logged() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let command = ConsoleCommand {
            program: "sh".into(),
            args: vec![
                "-c".into(),
                "test -t 0 && echo \"on a terminal, secret=$SECRET\"".into(),
            ],
            env: vec![("SECRET".into(), wulf_core::secret::Secret::new("x"))],
            escape: "~.".into(),
        };
        let mut session = ConsoleSession::start(&command).unwrap_or_else(|e| panic!("{e}"));
        let mut log =
            ConsoleLog::open(dir.path(), "n1", 1 << 20, 1).unwrap_or_else(|e| panic!("{e}"));
        let (viewer, mut watching) = UnixStream::pair().unwrap_or_else(|e| panic!("{e}"));
        let viewers = Viewers::default();
        viewers.add(viewer).unwrap_or_else(|e| panic!("{e}"));
        session
            .copy_to(&mut log, &viewers)
            .unwrap_or_else(|e| panic!("{e}"));
        let text = std::fs::read_to_string(log_path(dir.path(), "n1")).unwrap_or_default();
        assert_eq!(text, "on a terminal, secret=x\n");
        drop(viewers);
        let mut seen = String::new();
        watching
            .read_to_string(&mut seen)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(seen, "on a terminal, secret=x\r\n");
    }
}
