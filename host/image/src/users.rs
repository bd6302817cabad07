//! `image syncuser`: the host's users and groups in an image, as Warewulf's `wwctl image
//! syncuser` does. A name both have keeps the host's id in the image, and the image's files
//! owned by the old id are given the new one; the host's users and groups the image lacks are
//! added (locked, in `shadow`/`gshadow` when the image has them). An id the image gives to a
//! name the host does not have is a conflict: reported, and nothing is written.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use serde::Serialize;

use crate::error::{ImageError, Result};

/// One difference between the host and the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// `user` or `group`.
    pub kind: &'static str,
    pub name: String,
    /// The image's id; `None`: the image lacks it (it is added).
    pub image: Option<u32>,
    pub host: u32,
}

/// What a sync would do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub changes: Vec<Change>,
    /// Why it cannot be done: ids the image gives to names the host lacks.
    pub conflicts: Vec<String>,
}

/// `name -> (id, line)` of a passwd or group file (id in field 3).
fn accounts(text: &str) -> BTreeMap<String, (u32, String)> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?.to_owned();
            let id = fields.nth(1)?.parse().ok()?;
            Some((name, (id, line.to_owned())))
        })
        .collect()
}

fn read(root: &Path, file: &str) -> Result<String> {
    let path = root.join(file);
    match fs::read_to_string(&path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(ImageError::at(&path)(e)),
    }
}

/// The `etc/passwd` and `etc/group` texts of one system (a missing file is empty).
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    pub passwd: String,
    pub group: String,
}

impl Accounts {
    /// The accounts of the system whose root is `root`.
    pub fn read(root: &Path) -> Result<Accounts> {
        Ok(Accounts {
            passwd: read(root, "etc/passwd")?,
            group: read(root, "etc/group")?,
        })
    }
}

/// Compares an image's accounts with the host's.
pub fn plan(image: &Accounts, host: &Accounts) -> Plan {
    let mut plan = Plan::default();
    for (kind, ours, theirs) in [
        ("group", &image.group, &host.group),
        ("user", &image.passwd, &host.passwd),
    ] {
        let ours = accounts(ours);
        let theirs = accounts(theirs);
        for (name, (id, _)) in &theirs {
            match ours.get(name) {
                Some((same, _)) if same == id => {}
                other => plan.changes.push(Change {
                    kind,
                    name: name.clone(),
                    image: other.map(|(id, _)| *id),
                    host: *id,
                }),
            }
        }
        for (name, (id, _)) in &ours {
            if theirs.contains_key(name) {
                continue;
            }
            if let Some((holder, _)) = theirs.iter().find(|(_, (host_id, _))| host_id == id) {
                plan.conflicts.push(format!(
                    "the image's {kind} `{name}` has id {id}, which is the host's `{holder}`"
                ));
            }
        }
    }
    plan
}

/// Rewrites the accounts of the image at `image` as `plan` says (adding `host`'s lines it
/// lacks) and re-owns its files; how many were re-owned.
pub fn apply(image: &Path, host: &Accounts, plan: &Plan) -> Result<usize> {
    if !plan.conflicts.is_empty() {
        return Err(ImageError::Io {
            context: "syncuser".into(),
            source: std::io::Error::other(plan.conflicts.join("; ")),
        });
    }
    let map = |kind: &str| -> HashMap<u32, u32> {
        plan.changes
            .iter()
            .filter(|c| c.kind == kind)
            .filter_map(|c| Some((c.image?, c.host)))
            .collect()
    };
    let (uids, gids) = (map("user"), map("group"));
    for (kind, file, shadow, locked, host_text) in [
        ("group", "etc/group", "etc/gshadow", "!::", &host.group),
        ("user", "etc/passwd", "etc/shadow", "!:::::::", &host.passwd),
    ] {
        let host_lines = accounts(host_text);
        let text = read(image, file)?;
        let mut out = String::new();
        for line in text.lines() {
            let mut fields: Vec<String> = line.split(':').map(str::to_owned).collect();
            if let Some(change) = plan
                .changes
                .iter()
                .find(|c| c.kind == kind && fields.first() == Some(&c.name))
            {
                fields[2] = change.host.to_string();
            }
            // A user's primary group follows its group.
            if kind == "user"
                && let Some(gid) = fields.get(3).and_then(|g| g.parse::<u32>().ok())
                && let Some(new) = gids.get(&gid)
            {
                fields[3] = new.to_string();
            }
            out.push_str(&fields.join(":"));
            out.push('\n');
        }
        let mut shadow_add = String::new();
        for change in plan
            .changes
            .iter()
            .filter(|c| c.kind == kind && c.image.is_none())
        {
            if let Some((_, line)) = host_lines.get(&change.name) {
                out.push_str(line);
                out.push('\n');
                shadow_add.push_str(&format!("{}:{locked}\n", change.name));
            }
        }
        let path = image.join(file);
        wulf_core::atomic_file::write_atomic(&path, out.as_bytes())
            .map_err(ImageError::at(&path))?;
        let shadow_path = image.join(shadow);
        if !shadow_add.is_empty() && shadow_path.is_file() {
            let mut text = read(image, shadow)?;
            text.push_str(&shadow_add);
            wulf_core::atomic_file::write_atomic_mode(&shadow_path, text.as_bytes(), 0o640)
                .map_err(ImageError::at(&shadow_path))?;
        }
    }
    reown(image, &uids, &gids)
}

/// Gives every entry under `root` (links themselves, not followed) its new owner.
fn reown(root: &Path, uids: &HashMap<u32, u32>, gids: &HashMap<u32, u32>) -> Result<usize> {
    if uids.is_empty() && gids.is_empty() {
        return Ok(0);
    }
    let mut count = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).map_err(ImageError::at(&path))?;
        let uid = uids.get(&meta.uid()).copied();
        let gid = gids.get(&meta.gid()).copied();
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::lchown(&path, uid, gid).map_err(ImageError::at(&path))?;
            count += 1;
        }
        if meta.is_dir() {
            for entry in fs::read_dir(&path).map_err(ImageError::at(&path))? {
                stack.push(entry.map_err(ImageError::at(&path))?.path());
            }
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(passwd: &str, group: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        fs::create_dir_all(dir.path().join("etc")).unwrap_or_else(|e| panic!("{e}"));
        fs::write(dir.path().join("etc/passwd"), passwd).unwrap_or_else(|e| panic!("{e}"));
        fs::write(dir.path().join("etc/group"), group).unwrap_or_else(|e| panic!("{e}"));
        dir
    }

    #[test]
    fn plans_changes_additions_and_conflicts() {
        let host = root(
            "root:x:0:0::/root:/bin/sh\nalice:x:1000:100::/home/alice:/bin/sh\n",
            "root:x:0:\nusers:x:100:\n",
        );
        let image = root(
            "root:x:0:0::/root:/bin/sh\nalice:x:2000:1234::/home/alice:/bin/sh\n",
            "root:x:0:\nusers:x:1234:\nlocal:x:100:\n",
        );
        let read = |root: &tempfile::TempDir| {
            Accounts::read(root.path()).unwrap_or_else(|e| panic!("{e}"))
        };
        let plan = plan(&read(&image), &read(&host));
        assert_eq!(
            plan.changes,
            [
                Change {
                    kind: "group",
                    name: "users".into(),
                    image: Some(1234),
                    host: 100
                },
                Change {
                    kind: "user",
                    name: "alice".into(),
                    image: Some(2000),
                    host: 1000
                },
            ]
        );
        assert_eq!(
            plan.conflicts,
            ["the image's group `local` has id 100, which is the host's `users`"]
        );
        assert!(apply(image.path(), &read(&host), &plan).is_err());
    }

    #[test]
    fn applies_ids_primary_groups_and_additions() {
        let host = root(
            "root:x:0:0::/root:/bin/sh\nbob:x:1001:100::/home/bob:/bin/sh\n",
            "root:x:0:\nusers:x:100:\n",
        );
        let image = root(
            "root:x:0:0::/root:/bin/sh\nkeep:x:5:1234::/:/bin/sh\n",
            "root:x:0:\nusers:x:1234:\n",
        );
        let read = |root: &tempfile::TempDir| {
            Accounts::read(root.path()).unwrap_or_else(|e| panic!("{e}"))
        };
        let plan = plan(&read(&image), &read(&host));
        apply(image.path(), &read(&host), &plan).unwrap_or_else(|e| panic!("{e}"));
        let group = fs::read_to_string(image.path().join("etc/group")).unwrap_or_default();
        assert_eq!(group, "root:x:0:\nusers:x:100:\n");
        let passwd = fs::read_to_string(image.path().join("etc/passwd")).unwrap_or_default();
        assert_eq!(
            passwd,
            "root:x:0:0::/root:/bin/sh\nkeep:x:5:100::/:/bin/sh\nbob:x:1001:100::/home/bob:/bin/sh\n"
        );
    }
}
