//! Console logs: a node's serial console, captured through its BMC into rotating files
//! (`<dir>/<node>.log`, then `.log.1` ... `.log.<keep>`), and read back.
//!
//! A console program (`ipmitool sol activate`) wants a terminal, so it runs on a pseudo
//! terminal whose other end is read here.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

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

    /// Copies the console into `log` until the program ends (or its terminal closes).
    pub fn copy_to(&mut self, log: &mut ConsoleLog) -> std::io::Result<()> {
        let mut buf = [0u8; 8192];
        loop {
            match self.output.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => log.write(&buf[..n])?,
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
        session.copy_to(&mut log).unwrap_or_else(|e| panic!("{e}"));
        let text = std::fs::read_to_string(log_path(dir.path(), "n1")).unwrap_or_default();
        assert_eq!(text, "on a terminal, secret=x\n");
    }
}
