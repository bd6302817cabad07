//! Where an image comes from, and reading OCI layouts and image archives into layers.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{ImageError, Result};
use crate::flatten::Layer;
use crate::oci::{self, Parsed, Platform};

/// An import source, as `wulf image import` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `docker://registry/repository[:tag|@digest]`
    Registry(String),
    /// `oci:dir[:tag]`, or a directory with an `oci-layout` file.
    OciLayout { dir: PathBuf, tag: Option<String> },
    /// `oci-archive:file[:tag]`, or a tar file with an `oci-layout` entry.
    OciArchive { file: PathBuf, tag: Option<String> },
    /// `docker-archive:file`, or a tar file with a `manifest.json` (`docker save`, `podman save`).
    DockerArchive { file: PathBuf },
    /// A directory holding a root filesystem.
    Chroot(PathBuf),
}

impl Source {
    /// Parses a source; plain paths are recognized by what they contain.
    pub fn parse(s: &str) -> Result<Source> {
        let split_tag = |rest: &str| -> (PathBuf, Option<String>) {
            match rest.rsplit_once(':') {
                Some((path, tag)) if !tag.contains('/') && !tag.is_empty() => {
                    (PathBuf::from(path), Some(tag.to_owned()))
                }
                _ => (PathBuf::from(rest), None),
            }
        };
        if let Some(rest) = s.strip_prefix("docker://") {
            if rest.is_empty() {
                return Err(ImageError::BadReference {
                    reference: String::new(),
                    source: oci_client::ParseError::NameEmpty,
                });
            }
            return Ok(Source::Registry(rest.to_owned()));
        }
        if let Some(rest) = s.strip_prefix("oci-archive:") {
            let (file, tag) = split_tag(rest);
            return Ok(Source::OciArchive { file, tag });
        }
        if let Some(rest) = s.strip_prefix("oci:") {
            let (dir, tag) = split_tag(rest);
            return Ok(Source::OciLayout { dir, tag });
        }
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            return Ok(Source::DockerArchive { file: rest.into() });
        }
        let path = PathBuf::from(s.strip_prefix("file://").unwrap_or(s));
        let meta = std::fs::metadata(&path).map_err(|source| ImageError::UnreadableSource {
            input: s.to_owned(),
            source,
        })?;
        if meta.is_dir() {
            if path.join("oci-layout").is_file() {
                return Ok(Source::OciLayout {
                    dir: path,
                    tag: None,
                });
            }
            return Ok(Source::Chroot(path));
        }
        let mut archive = tar::Archive::new(File::open(&path).map_err(ImageError::at(&path))?);
        let entries = archive.entries().map_err(ImageError::at(&path))?;
        for entry in entries {
            let entry = entry.map_err(|source| ImageError::BadArchive {
                archive: path.display().to_string(),
                problem: "not a tar archive",
                source,
            })?;
            match entry.path_bytes().as_ref() {
                b"oci-layout" | b"./oci-layout" => {
                    return Ok(Source::OciArchive {
                        file: path,
                        tag: None,
                    });
                }
                b"manifest.json" | b"./manifest.json" => {
                    return Ok(Source::DockerArchive { file: path });
                }
                _ => {}
            }
        }
        Err(ImageError::NotAnImage {
            path,
            reason: "is a tar file with neither oci-layout nor manifest.json: not an image archive",
        })
    }

    /// The image name used when none is given: the last path component, as Warewulf does.
    pub fn default_name(&self) -> String {
        let base = |p: &Path| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let strip = |name: String| {
            for ext in [".tar.gz", ".tgz", ".tar"] {
                if let Some(stem) = name.strip_suffix(ext) {
                    return stem.to_owned();
                }
            }
            name
        };
        match self {
            Source::Registry(r) => {
                let r = r.split('@').next().unwrap_or(r);
                r.rsplit('/').next().unwrap_or(r).to_owned()
            }
            Source::OciLayout { dir, tag } => match tag {
                Some(tag) => format!("{}:{tag}", base(dir)),
                None => base(dir),
            },
            Source::OciArchive { file, tag } => match tag {
                Some(tag) => format!("{}:{tag}", strip(base(file))),
                None => strip(base(file)),
            },
            Source::DockerArchive { file } => strip(base(file)),
            Source::Chroot(dir) => base(dir),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tagged =
            |f: &mut fmt::Formatter<'_>, kind: &str, p: &Path, tag: &Option<String>| match tag {
                Some(t) => write!(f, "{kind}:{}:{t}", p.display()),
                None => write!(f, "{kind}:{}", p.display()),
            };
        match self {
            Source::Registry(r) => write!(f, "docker://{r}"),
            Source::OciLayout { dir, tag } => tagged(f, "oci", dir, tag),
            Source::OciArchive { file, tag } => tagged(f, "oci-archive", file, tag),
            Source::DockerArchive { file } => write!(f, "docker-archive:{}", file.display()),
            Source::Chroot(dir) => write!(f, "{}", dir.display()),
        }
    }
}

/// An image's layers and identity, ready to flatten.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub layers: Vec<Layer>,
    /// The manifest's digest, when the source has one.
    pub digest: Option<String>,
    pub platform: Option<String>,
}

pub(crate) fn platform_of(config: &oci::Config) -> Option<String> {
    let (os, arch) = (config.os.as_ref()?, config.architecture.as_ref()?);
    Some(match &config.variant {
        Some(v) => format!("{os}/{arch}/{v}"),
        None => format!("{os}/{arch}"),
    })
}

/// Reads an OCI layout directory.
pub fn read_layout(
    dir: &Path,
    tag: Option<&str>,
    platform: &Platform,
    what: &str,
) -> Result<Resolved> {
    let index_path = dir.join("index.json");
    let index = std::fs::read(&index_path)
        .map_err(ImageError::io(format!("{what}: cannot read index.json")))?;
    let Parsed::Index(manifests) = oci::parse_manifest(&index, &format!("{what}/index.json"))?
    else {
        return Err(ImageError::WrongKind {
            what: format!("{what}: index.json"),
            expected: "an image index",
        });
    };
    let blob = |digest: &str| -> Result<(PathBuf, Vec<u8>)> {
        let path = blob_path(dir, digest, what)?;
        let bytes =
            std::fs::read(&path).map_err(ImageError::io(format!("{what}: blob {digest}")))?;
        oci::verify(&bytes, digest, &format!("{what}: blob {digest}"))?;
        Ok((path, bytes))
    };
    let mut chosen = oci::select_tag(&manifests, tag, what)?.clone();
    let mut digest = chosen.digest.clone();
    loop {
        let (_, bytes) = blob(&chosen.digest)?;
        match oci::parse_manifest(&bytes, &format!("{what}: manifest {}", chosen.digest))? {
            Parsed::Index(inner) => {
                chosen = oci::select_platform(&inner, platform, what)?.clone();
                digest = chosen.digest.clone();
            }
            Parsed::Image(manifest) => {
                let (_, config) = blob(&manifest.config.digest)?;
                let config = oci::parse_config(&config, &format!("{what}: config"))?;
                let layers = layers_of(&manifest, &config, |d| blob_path(dir, d, what), what)?;
                return Ok(Resolved {
                    layers,
                    digest: Some(digest),
                    platform: platform_of(&config),
                });
            }
        }
    }
}

fn layers_of(
    manifest: &oci::Manifest,
    config: &oci::Config,
    path_of: impl Fn(&str) -> Result<PathBuf>,
    what: &str,
) -> Result<Vec<Layer>> {
    let diff_ids = config.diff_ids(manifest.layers.len(), what)?;
    manifest
        .layers
        .iter()
        .enumerate()
        .map(|(i, desc)| {
            Ok(Layer {
                blob: path_of(&desc.digest)?,
                digest: Some(desc.digest.clone()),
                diff_id: diff_ids.get(i).cloned(),
            })
        })
        .collect()
}

fn blob_path(dir: &Path, digest: &str, what: &str) -> Result<PathBuf> {
    let (alg, hex) = digest
        .split_once(':')
        .filter(|(alg, hex)| {
            !alg.is_empty()
                && alg.bytes().all(|b| b.is_ascii_alphanumeric())
                && !hex.is_empty()
                && hex.bytes().all(|b| b.is_ascii_hexdigit())
        })
        .ok_or_else(|| ImageError::BadDigest {
            what: what.to_owned(),
            digest: digest.to_owned(),
            reason: "is malformed",
        })?;
    Ok(dir.join("blobs").join(alg).join(hex))
}

/// Unpacks an archive into `into` (the tar crate refuses entries escaping it).
pub fn unpack_archive(file: &Path, into: &Path) -> Result<()> {
    let reader = File::open(file).map_err(ImageError::at(file))?;
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(false);
    archive.set_preserve_ownerships(false);
    archive
        .unpack(into)
        .map_err(|source| ImageError::BadArchive {
            archive: file.display().to_string(),
            problem: "cannot unpack",
            source,
        })
}

/// Reads an unpacked `docker save` archive.
pub fn read_docker_archive(dir: &Path, what: &str) -> Result<Resolved> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        config: String,
        layers: Vec<String>,
    }
    let manifest = std::fs::read(dir.join("manifest.json"))
        .map_err(ImageError::io(format!("{what}: cannot read manifest.json")))?;
    let entries: Vec<Entry> =
        serde_json::from_slice(&manifest).map_err(|source| ImageError::BadManifest {
            what: format!("{what}: manifest.json"),
            kind: "manifest",
            source,
        })?;
    let [entry] = entries.as_slice() else {
        return Err(ImageError::NotOneImage {
            what: format!("{what}: manifest.json"),
            count: entries.len(),
            tags: Vec::new(),
        });
    };
    let inside = |rel: &str| -> Result<PathBuf> {
        match crate::rootfs::normalize(rel) {
            Ok(Some(clean)) => Ok(dir.join(clean)),
            _ => Err(ImageError::BadArchivePath {
                what: what.to_owned(),
                path: rel.to_owned(),
            }),
        }
    };
    let config_bytes = std::fs::read(inside(&entry.config)?)
        .map_err(ImageError::io(format!("{what}: config {}", entry.config)))?;
    let config = oci::parse_config(&config_bytes, &format!("{what}: config"))?;
    let diff_ids = config.diff_ids(entry.layers.len(), what)?;
    let layers = entry
        .layers
        .iter()
        .enumerate()
        .map(|(i, rel)| {
            Ok(Layer {
                blob: inside(rel)?,
                digest: None,
                diff_id: diff_ids.get(i).cloned(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Resolved {
        layers,
        digest: Some(format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&config_bytes))
        )),
        platform: platform_of(&config),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixed_sources_parse() {
        assert_eq!(
            Source::parse("docker://reg:5000/a/b:1").unwrap(),
            Source::Registry("reg:5000/a/b:1".into())
        );
        assert_eq!(
            Source::parse("oci:/tmp/layout:v1").unwrap(),
            Source::OciLayout {
                dir: "/tmp/layout".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            Source::parse("oci-archive:/tmp/a.tar").unwrap(),
            Source::OciArchive {
                file: "/tmp/a.tar".into(),
                tag: None
            }
        );
        let err = Source::parse("/does/not/exist").unwrap_err().to_string();
        assert!(err.contains("docker://registry/repo:tag"), "{err}");
    }

    #[test]
    fn default_names_follow_warewulf() {
        let name = |s: &str| Source::parse(s).unwrap().default_name();
        assert_eq!(
            name("docker://ghcr.io/warewulf/rockylinux:9"),
            "rockylinux:9"
        );
        assert_eq!(name("docker://reg/app@sha256:abc"), "app");
        assert_eq!(name("docker-archive:/x/busybox.tar"), "busybox");
        assert_eq!(name("oci:/x/layout:v2"), "layout:v2");
    }
}
