//! `customize`: the site's small changes to an image, made while it is built instead of in a
//! chroot: files added or replaced (with mode and owner), symlinks, and root's password hash
//! written into `/etc/shadow`.

use std::collections::BTreeMap;

use wulf_sdk::{Action, Entry, EntryKind, File, FileEntry, ImageTransform, PluginError};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Config {
    #[serde(default)]
    root_password_hash: Option<String>,
    #[serde(default)]
    files: Vec<FileConfig>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    path: String,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    symlink: Option<String>,
    #[serde(default)]
    mode: Option<u32>,
    #[serde(default)]
    uid: u32,
    #[serde(default)]
    gid: u32,
}

pub struct Customize {
    root_hash: Option<String>,
    /// Files not yet placed, by path; what is left at the end is added.
    files: BTreeMap<String, FileEntry>,
    shadow_seen: bool,
}

fn invalid(message: String) -> PluginError {
    PluginError::Config(message)
}

impl ImageTransform for Customize {
    fn begin(_image: &str) -> Result<Self, PluginError> {
        let config: Config = wulf_sdk::config()?;
        if let Some(hash) = &config.root_password_hash {
            let locked = hash.starts_with('!') || hash == "*";
            let crypt = hash.starts_with('$') && hash.matches('$').count() >= 3;
            if !(locked || crypt) || hash.contains(':') || hash.contains('\n') {
                return Err(invalid(format!(
                    "root-password-hash {hash:?} is not a crypt(3) hash: make one with `openssl passwd -6`, or use \"!\" to lock root"
                )));
            }
        }
        let mut files = BTreeMap::new();
        for (i, f) in config.files.into_iter().enumerate() {
            if !f.path.starts_with('/') || f.path.split('/').any(|p| p == "..") {
                return Err(invalid(format!(
                    "files[{i}].path {:?} must be absolute, without `..`",
                    f.path
                )));
            }
            let entry = match (f.content, f.symlink) {
                (Some(content), None) => {
                    File::text(f.path.clone(), content).mode(f.mode.unwrap_or(0o644))
                }
                (None, Some(target)) => File::symlink(f.path.clone(), target),
                _ => {
                    return Err(invalid(format!(
                        "files[{i}] ({}) needs exactly one of `content` and `symlink`",
                        f.path
                    )));
                }
            };
            files.insert(f.path, entry.owner(f.uid, f.gid).build());
        }
        Ok(Customize {
            root_hash: config.root_password_hash,
            files,
            shadow_seen: false,
        })
    }

    fn filter(&mut self, entry: &Entry) -> Result<Action, PluginError> {
        if let Some(file) = self.files.remove(&entry.path) {
            if entry.kind == EntryKind::Directory {
                return Err(PluginError::InvalidInput(format!(
                    "{} is a directory in the image; a file cannot replace it",
                    entry.path
                )));
            }
            return Ok(Action::Replace(file));
        }
        if entry.path == "/etc/shadow" && self.root_hash.is_some() {
            self.shadow_seen = true;
            return Ok(if entry.kind == EntryKind::Regular {
                Action::WantContent
            } else {
                Action::Keep
            });
        }
        Ok(Action::Keep)
    }

    fn rewrite(&mut self, entry: &Entry, content: Vec<u8>) -> Result<Action, PluginError> {
        let Some(hash) = &self.root_hash else {
            return Ok(Action::Keep);
        };
        let text = String::from_utf8(content)
            .map_err(|_| PluginError::InvalidInput("/etc/shadow is not UTF-8".into()))?;
        let mut found = false;
        let lines: Vec<String> = text
            .lines()
            .map(|line| {
                let mut fields: Vec<&str> = line.split(':').collect();
                if fields.first() == Some(&"root") && fields.len() >= 2 {
                    found = true;
                    fields[1] = hash;
                }
                fields.join(":")
            })
            .collect();
        if !found {
            return Err(PluginError::InvalidInput(
                "/etc/shadow has no root entry".into(),
            ));
        }
        wulf_sdk::log::info("set root's password hash in /etc/shadow");
        Ok(Action::Replace(
            File::text(entry.path.clone(), lines.join("\n") + "\n")
                .mode(entry.mode)
                .owner(entry.uid, entry.gid)
                .build(),
        ))
    }

    fn finish(&mut self) -> Result<Vec<FileEntry>, PluginError> {
        if self.root_hash.is_some() && !self.shadow_seen {
            return Err(PluginError::InvalidInput(
                "root-password-hash is set but the image has no /etc/shadow".into(),
            ));
        }
        Ok(std::mem::take(&mut self.files).into_values().collect())
    }
}

wulf_sdk::register_image_transform!(Customize);

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::Regular,
            mode: 0o640,
            uid: 0,
            gid: 42,
            mtime: 0,
            size: 10,
        }
    }

    #[test]
    fn sets_roots_hash_replaces_and_adds_files() {
        wulf_sdk::testing::set_config(serde_json::json!({
            "root-password-hash": "$6$salt$hash",
            "files": [
                {"path": "/etc/motd", "content": "managed\n"},
                {"path": "/etc/new.conf", "content": "x=1\n", "mode": 0o600, "uid": 5},
                {"path": "/usr/bin/vi", "symlink": "busybox"},
            ],
        }));
        let mut t = Customize::begin("img").unwrap_or_else(|e| panic!("{e:?}"));
        assert!(
            matches!(t.filter(&entry("/etc/motd")), Ok(Action::Replace(f)) if f.text() == Some("managed\n"))
        );
        assert!(matches!(
            t.filter(&entry("/etc/shadow")),
            Ok(Action::WantContent)
        ));
        let shadow = b"root:*:19000:0:99999:7:::\nuser:!:19000::::::\n".to_vec();
        let Ok(Action::Replace(f)) = t.rewrite(&entry("/etc/shadow"), shadow) else {
            panic!("not replaced")
        };
        assert_eq!(
            f.text(),
            Some("root:$6$salt$hash:19000:0:99999:7:::\nuser:!:19000::::::\n")
        );
        assert_eq!((f.mode, f.gid), (0o640, 42));
        let added = t.finish().unwrap_or_else(|e| panic!("{e:?}"));
        let paths: Vec<_> = added.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["/etc/new.conf", "/usr/bin/vi"]);
        assert_eq!((added[0].mode, added[0].uid), (0o600, 5));
    }

    #[test]
    fn bad_config_is_refused_with_the_field() {
        for (config, needle) in [
            (
                serde_json::json!({"root-password-hash": "secret"}),
                "not a crypt(3) hash",
            ),
            (
                serde_json::json!({"files": [{"path": "etc/x", "content": ""}]}),
                "files[0].path",
            ),
            (
                serde_json::json!({"files": [{"path": "/etc/x"}]}),
                "exactly one of",
            ),
        ] {
            wulf_sdk::testing::set_config(config);
            let err = Customize::begin("img")
                .err()
                .map(|e| format!("{e:?}"))
                .unwrap_or_default();
            assert!(err.contains(needle), "{err}");
        }
    }
}
