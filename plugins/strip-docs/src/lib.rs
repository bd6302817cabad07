//! `strip-docs`: drops what a diskless node never reads (documentation, man and info pages,
//! lintian overrides, locales it does not use) from an image while it is built. The same set
//! Debian's minimal images exclude with dpkg `path-exclude`.

use wulf_sdk::{Action, Entry, EntryKind, ImageTransform, PluginError};

/// Whole trees that go.
const DROPPED: &[&str] = &[
    "/usr/share/doc",
    "/usr/share/man",
    "/usr/share/info",
    "/usr/share/groff",
    "/usr/share/lintian",
    "/usr/share/linda",
    "/usr/share/help",
    "/usr/share/gtk-doc",
];
/// Trees whose children are locales: kept only for the configured languages.
const LOCALE_TREES: &[&str] = &["/usr/share/locale", "/usr/share/i18n/locales"];

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Config {
    #[serde(default = "default_locales")]
    keep_locales: Vec<String>,
    #[serde(default = "yes")]
    keep_copyright: bool,
    #[serde(default)]
    drop: Vec<String>,
}

fn default_locales() -> Vec<String> {
    vec!["en".into()]
}

fn yes() -> bool {
    true
}

pub struct StripDocs {
    config: Config,
    dropped: u64,
    bytes: u64,
}

/// `path` is `prefix` or inside it.
fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

impl StripDocs {
    fn drops(&self, entry: &Entry) -> bool {
        let path = entry.path.as_str();
        if self
            .config
            .drop
            .iter()
            .any(|p| under(path, p.trim_end_matches('/')))
        {
            return true;
        }
        for tree in DROPPED {
            if under(path, tree) && path != *tree {
                // /usr/share/doc/<pkg>/copyright stays, and so does its directory.
                if self.config.keep_copyright && *tree == "/usr/share/doc" {
                    let rest = &path[tree.len() + 1..];
                    let mut parts = rest.split('/');
                    let (_pkg, file) = (parts.next(), parts.next());
                    let is_dir = entry.kind == EntryKind::Directory && file.is_none();
                    if is_dir || (file == Some("copyright") && parts.next().is_none()) {
                        return false;
                    }
                }
                return true;
            }
        }
        for tree in LOCALE_TREES {
            if let Some(rest) = path.strip_prefix(tree).and_then(|r| r.strip_prefix('/')) {
                let locale = rest.split('/').next().unwrap_or_default();
                // Plain files directly in the tree (locale.alias) stay.
                if !rest.contains('/') && entry.kind != EntryKind::Directory {
                    return false;
                }
                return !self.config.keep_locales.iter().any(|keep| {
                    locale == keep
                        || locale.starts_with(&format!("{keep}_"))
                        || locale.starts_with(&format!("{keep}@"))
                        || locale.starts_with(&format!("{keep}."))
                });
            }
        }
        false
    }
}

impl ImageTransform for StripDocs {
    fn begin(_image: &str) -> Result<Self, PluginError> {
        Ok(StripDocs {
            config: wulf_sdk::config()?,
            dropped: 0,
            bytes: 0,
        })
    }

    fn filter(&mut self, entry: &Entry) -> Result<Action, PluginError> {
        if self.drops(entry) {
            self.dropped += 1;
            self.bytes += entry.size;
            return Ok(Action::Drop);
        }
        Ok(Action::Keep)
    }

    fn finish(&mut self) -> Result<Vec<wulf_sdk::FileEntry>, PluginError> {
        wulf_sdk::log::info(&format!(
            "dropped {} entries, {} KiB of documentation and locales",
            self.dropped,
            self.bytes / 1024
        ));
        Ok(Vec::new())
    }
}

wulf_sdk::register_image_transform!(StripDocs);

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryKind) -> Entry {
        Entry {
            path: path.into(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            size: 10,
        }
    }

    fn keeps(t: &mut StripDocs, path: &str, kind: EntryKind) -> bool {
        matches!(t.filter(&entry(path, kind)), Ok(Action::Keep))
    }

    #[test]
    fn drops_documentation_but_keeps_copyrights_and_chosen_locales() {
        wulf_sdk::testing::set_config(
            serde_json::json!({"keep-locales": ["en", "de"], "drop": ["/var/cache/apt/"]}),
        );
        let mut t = StripDocs::begin("img").unwrap_or_else(|e| panic!("{e:?}"));
        use EntryKind::{Directory as D, Regular as F};
        assert!(keeps(&mut t, "/usr/share/doc", D));
        assert!(keeps(&mut t, "/usr/share/doc/bash", D));
        assert!(keeps(&mut t, "/usr/share/doc/bash/copyright", F));
        assert!(!keeps(&mut t, "/usr/share/doc/bash/README.gz", F));
        assert!(!keeps(&mut t, "/usr/share/doc/bash/examples", D));
        assert!(!keeps(&mut t, "/usr/share/man/man1/ls.1.gz", F));
        assert!(keeps(&mut t, "/usr/share/locale/locale.alias", F));
        assert!(keeps(&mut t, "/usr/share/locale/en_GB/LC_MESSAGES/x.mo", F));
        assert!(keeps(&mut t, "/usr/share/locale/de/LC_MESSAGES/x.mo", F));
        assert!(!keeps(&mut t, "/usr/share/locale/fr/LC_MESSAGES/x.mo", F));
        assert!(!keeps(&mut t, "/usr/share/locale/fr", D));
        assert!(!keeps(&mut t, "/var/cache/apt/pkgcache.bin", F));
        assert!(keeps(&mut t, "/usr/share/documentation-is-not-doc", F));
        assert!(keeps(&mut t, "/usr/bin/man", F));
    }

    #[test]
    fn unknown_config_keys_are_refused() {
        wulf_sdk::testing::set_config(serde_json::json!({"keep-locale": ["en"]}));
        let err = StripDocs::begin("img")
            .err()
            .map(|e| format!("{e:?}"))
            .unwrap_or_default();
        assert!(err.contains("keep-locale"), "{err}");
    }
}
