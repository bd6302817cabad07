//! Kernel modules for the network, loaded as udev and modprobe would: every device's
//! `modalias` under `/sys/bus` matched against the aliases of the modules stage one carries,
//! dependencies first, again until nothing new appears (a PCI driver's load makes the virtio
//! devices whose drivers come next).
//!
//! `wulf` writes the index with the modules (`<dir>/modules.index`), from the image's
//! `modules.dep` and `modules.alias`:
//!
//! ```text
//! module virtio_net kernel/drivers/net/virtio_net.ko virtio virtio_ring failover net_failover
//! alias virtio:d00000001v* virtio_net
//! ```
//!
//! A module line names the file (relative to `<dir>`) and the modules to load before it, in
//! order.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub file: String,
    pub deps: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Index {
    pub modules: HashMap<String, Module>,
    /// (pattern, module), in the file's order.
    pub aliases: Vec<(String, String)>,
}

impl Index {
    pub fn parse(text: &str) -> Result<Index, String> {
        let mut index = Index::default();
        for (n, line) in text.lines().enumerate() {
            let mut words = line.split_whitespace();
            match words.next() {
                None => {}
                Some(w) if w.starts_with('#') => {}
                Some("module") => {
                    let (Some(name), Some(file)) = (words.next(), words.next()) else {
                        return Err(format!("line {}: `module NAME FILE [DEPS...]`", n + 1));
                    };
                    index.modules.insert(
                        name.to_owned(),
                        Module {
                            file: file.to_owned(),
                            deps: words.map(str::to_owned).collect(),
                        },
                    );
                }
                Some("alias") => {
                    let (Some(pattern), Some(name)) = (words.next(), words.next()) else {
                        return Err(format!("line {}: `alias PATTERN MODULE`", n + 1));
                    };
                    index.aliases.push((pattern.to_owned(), name.to_owned()));
                }
                Some(other) => return Err(format!("line {}: unknown word {other:?}", n + 1)),
            }
        }
        Ok(index)
    }

    /// The modules whose aliases match `modalias`.
    pub fn matching<'a>(&'a self, modalias: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.aliases
            .iter()
            .filter(move |(pattern, _)| glob(pattern.as_bytes(), modalias.as_bytes()))
            .map(|(_, name)| name.as_str())
    }
}

/// `fnmatch(3)` without flags: `*`, `?` and `[...]` (with ranges and `!`/`^`), as
/// `modules.alias` patterns use them.
pub fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    backtrack = Some((p, t));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class(&pattern[p..], text[t])
                        && matched
                    {
                        p += next;
                        t += 1;
                        continue;
                    }
                }
                c if c == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        match backtrack {
            Some((star, at)) => {
                p = star + 1;
                t = at + 1;
                backtrack = Some((star, at + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Whether `c` is in the class `[...]` at the start of `pattern`, and the class's length.
fn class(pattern: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pattern.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < pattern.len() {
        if pattern[i] == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|&e| e != b']') {
            if (pattern[i]..=pattern[i + 2]).contains(&c) {
                matched = true;
            }
            i += 3;
        } else {
            if pattern[i] == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

/// Every device's `modalias` under `sysfs`'s buses.
pub fn modaliases(sysfs: &Path) -> Vec<String> {
    let mut found = BTreeSet::new();
    let Ok(buses) = std::fs::read_dir(sysfs.join("bus")) else {
        return Vec::new();
    };
    for bus in buses.flatten() {
        let Ok(devices) = std::fs::read_dir(bus.path().join("devices")) else {
            continue;
        };
        for device in devices.flatten() {
            if let Ok(alias) = std::fs::read_to_string(device.path().join("modalias")) {
                let alias = alias.trim();
                if !alias.is_empty() {
                    found.insert(alias.to_owned());
                }
            }
        }
    }
    found.into_iter().collect()
}

/// Loads modules from `dir` for the devices present.
pub struct Loader {
    dir: PathBuf,
    index: Index,
    /// Modules loaded (or found loaded, or failed: tried once).
    tried: BTreeSet<String>,
}

impl Loader {
    /// The index in `dir`; `None` when stage one carries no modules.
    pub fn open(dir: &Path) -> io::Result<Option<Loader>> {
        let text = match std::fs::read_to_string(dir.join("modules.index")) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let index = Index::parse(&text).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", dir.join("modules.index").display()),
            )
        })?;
        Ok(Some(Loader {
            dir: dir.to_owned(),
            index,
            tried: BTreeSet::new(),
        }))
    }

    /// One pass over the devices: the modules loaded by it (those that failed are printed).
    pub fn pass(&mut self, sysfs: &Path) -> Vec<String> {
        let mut loaded = Vec::new();
        for alias in modaliases(sysfs) {
            let wanted: Vec<String> = self.index.matching(&alias).map(str::to_owned).collect();
            for name in wanted {
                self.load(&name, &mut loaded);
            }
        }
        loaded
    }

    fn load(&mut self, name: &str, loaded: &mut Vec<String>) {
        if !self.tried.insert(name.to_owned()) {
            return;
        }
        let Some(module) = self.index.modules.get(name).cloned() else {
            return;
        };
        for dep in &module.deps {
            self.load(dep, loaded);
        }
        let path = self.dir.join(&module.file);
        let result = std::fs::File::open(&path)
            .and_then(|file| rustix::system::finit_module(&file, c"", 0).map_err(io::Error::from));
        match result {
            Ok(()) => loaded.push(name.to_owned()),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::EXIST.raw_os_error()) => {}
            Err(e) => eprintln!("wulf-stage1: module {name} ({}): {e}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_fnmatch() {
        assert!(glob(b"virtio:d00000001v*", b"virtio:d00000001v00001AF4"));
        assert!(!glob(b"virtio:d00000001v*", b"virtio:d00000002v00001AF4"));
        assert!(glob(
            b"pci:v00008086d0000100Esv*sd*bc*sc*i*",
            b"pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00"
        ));
        assert!(glob(
            b"usb:v0B95p1790d*dc*dsc*dp*ic*isc*ip*in*",
            b"usb:v0B95p1790d0100dc00dsc00dp00icFFisc00ip00in00"
        ));
        assert!(glob(
            b"pci:v*d*sv*sd*bc02sc00i*",
            b"pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"
        ));
        assert!(!glob(
            b"pci:v*d*sv*sd*bc02sc00i*",
            b"pci:v00001AF4d00001000sv00001AF4sd00000001bc01sc00i00"
        ));
        assert!(glob(b"acpi*:PNP0[Cc]0[Cc]:*", b"acpi:PNP0C0C:"));
        assert!(glob(b"a[0-9]b", b"a7b"));
        assert!(!glob(b"a[!0-9]b", b"a7b"));
        assert!(glob(b"a?c", b"abc"));
        assert!(glob(b"*", b""));
        assert!(!glob(b"abc", b"abcd"));
    }

    #[test]
    fn the_index_parses_and_names_bad_lines() {
        let index = Index::parse(
            "# made by wulf\nmodule virtio_net net/virtio_net.ko virtio failover\n\
             module virtio virtio.ko\nalias virtio:d00000001v* virtio_net\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(index.modules["virtio_net"].deps, ["virtio", "failover"]);
        assert_eq!(
            index
                .matching("virtio:d00000001v00001AF4")
                .collect::<Vec<_>>(),
            ["virtio_net"]
        );
        assert_eq!(
            Index::parse("module lonely\n"),
            Err("line 1: `module NAME FILE [DEPS...]`".into())
        );
        assert_eq!(
            Index::parse("options x y\n"),
            Err("line 1: unknown word \"options\"".into())
        );
    }
}
