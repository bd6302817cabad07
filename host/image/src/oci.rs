//! The parts of the OCI image spec (and Docker's v2 schema 2, which has the same shape) that
//! an import reads: index, manifest, config. Registries and layouts share this code.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{ImageError, Result};

pub const ACCEPTED_MANIFESTS: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: Option<String>,
    pub digest: String,
    #[serde(default)]
    pub size: Option<i64>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub platform: Option<PlatformJson>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PlatformJson {
    pub architecture: String,
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// An image manifest: a config and layers.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// An image config; only what an import needs.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub architecture: Option<String>,
    #[serde(default)]
    pub os: Option<String>,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub rootfs: Option<RootFs>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

impl Config {
    /// The `diff_id` of each of `layers` layers (none when the config lists none), refusing a
    /// config that disagrees with the manifest on how many layers there are.
    pub fn diff_ids(&self, layers: usize, what: &str) -> Result<Vec<String>> {
        let ids = self
            .rootfs
            .as_ref()
            .map(|r| r.diff_ids.clone())
            .unwrap_or_default();
        if !ids.is_empty() && ids.len() != layers {
            return Err(ImageError::LayerCount {
                what: what.to_owned(),
                layers,
                diff_ids: ids.len(),
            });
        }
        Ok(ids)
    }
}

/// What a manifest blob turned out to be.
#[derive(Debug)]
pub enum Parsed {
    Index(Vec<Descriptor>),
    Image(Manifest),
}

pub fn parse_manifest(bytes: &[u8], what: &str) -> Result<Parsed> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(default)]
        manifests: Option<Vec<Descriptor>>,
    }
    let bad_manifest = |source| ImageError::BadManifest {
        what: what.to_owned(),
        kind: "manifest",
        source,
    };
    let probe: Probe = serde_json::from_slice(bytes).map_err(bad_manifest)?;
    if let Some(manifests) = probe.manifests {
        return Ok(Parsed::Index(manifests));
    }
    Ok(Parsed::Image(
        serde_json::from_slice(bytes).map_err(bad_manifest)?,
    ))
}

pub fn parse_config(bytes: &[u8], what: &str) -> Result<Config> {
    serde_json::from_slice(bytes).map_err(|source| ImageError::BadManifest {
        what: what.to_owned(),
        kind: "image config",
        source,
    })
}

/// Checks that `bytes` have the `sha256:` digest `expected`.
pub fn verify(bytes: &[u8], expected: &str, what: &str) -> Result<()> {
    let Some(hex_digest) = expected.strip_prefix("sha256:") else {
        return Err(ImageError::BadDigest {
            what: what.to_owned(),
            digest: expected.to_owned(),
            reason: "uses an algorithm wulf does not check (only sha256)",
        });
    };
    let actual = hex::encode(Sha256::digest(bytes));
    if actual != hex_digest {
        return Err(ImageError::DigestMismatch {
            what: what.to_owned(),
            subject: "the content",
            claimed_by: "its reference",
            actual: format!("sha256:{actual}"),
            expected: expected.to_owned(),
        });
    }
    Ok(())
}

/// `os/arch[/variant]`, as `--platform` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The host's own platform, in Go's names.
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: None,
        }
    }

    fn matches(&self, p: &PlatformJson) -> bool {
        p.os == self.os
            && p.architecture == self.architecture
            && match (&self.variant, &p.variant) {
                (Some(want), Some(have)) => want == have,
                (Some(_), None) => false,
                (None, _) => true,
            }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: (*os).into(),
                architecture: (*arch).into(),
                variant: None,
            }),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => {
                Ok(Platform {
                    os: (*os).into(),
                    architecture: (*arch).into(),
                    variant: Some((*variant).into()),
                })
            }
            _ => Err(format!(
                "platform {s:?} is not os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8"
            )),
        }
    }
}

/// Picks the manifest for `platform` from an index.
pub fn select_platform<'a>(
    manifests: &'a [Descriptor],
    platform: &Platform,
    what: &str,
) -> Result<&'a Descriptor> {
    if let Some(found) = manifests
        .iter()
        .find(|m| m.platform.as_ref().is_some_and(|p| platform.matches(p)))
    {
        return Ok(found);
    }
    let available = manifests
        .iter()
        .filter_map(|m| m.platform.as_ref())
        .filter(|p| p.os != "unknown")
        .map(|p| match &p.variant {
            Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
            None => format!("{}/{}", p.os, p.architecture),
        })
        .collect();
    Err(ImageError::NoSuchPlatform {
        what: what.to_owned(),
        platform: platform.to_string(),
        available,
    })
}

/// Picks a manifest from an OCI layout's `index.json`: by tag when given, else the only one.
pub fn select_tag<'a>(
    manifests: &'a [Descriptor],
    tag: Option<&str>,
    what: &str,
) -> Result<&'a Descriptor> {
    let tags = || {
        manifests
            .iter()
            .filter_map(|m| m.annotations.get(REF_NAME).cloned())
            .collect()
    };
    match tag {
        Some(tag) => manifests
            .iter()
            .find(|m| m.annotations.get(REF_NAME).is_some_and(|t| t == tag))
            .ok_or_else(|| ImageError::NoSuchTag {
                what: what.to_owned(),
                tag: tag.to_owned(),
                tags: tags(),
            }),
        None => match manifests {
            [only] => Ok(only),
            _ => Err(ImageError::NotOneImage {
                what: what.to_owned(),
                count: manifests.len(),
                tags: tags(),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_and_match_variants() {
        let p: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert!("linux".parse::<Platform>().unwrap_err().contains("os/arch"));
        let index = br#"{"manifests":[
            {"digest":"sha256:a","platform":{"os":"linux","architecture":"amd64"}},
            {"digest":"sha256:b","platform":{"os":"linux","architecture":"arm64","variant":"v8"}}]}"#;
        let Parsed::Index(m) = parse_manifest(index, "test").unwrap() else {
            panic!("not an index")
        };
        assert_eq!(select_platform(&m, &p, "x").unwrap().digest, "sha256:b");
        let any_arm: Platform = "linux/arm64".parse().unwrap();
        assert_eq!(
            select_platform(&m, &any_arm, "x").unwrap().digest,
            "sha256:b"
        );
        let err = select_platform(&m, &"linux/riscv64".parse().unwrap(), "x").unwrap_err();
        assert!(
            err.to_string().contains("linux/amd64, linux/arm64/v8"),
            "{err}"
        );
    }

    #[test]
    fn digests_are_verified() {
        let empty = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        verify(b"", empty, "blob").unwrap();
        assert!(
            verify(b"x", empty, "blob")
                .unwrap_err()
                .to_string()
                .contains("corrupt")
        );
        assert!(
            verify(b"", "md5:00", "blob")
                .unwrap_err()
                .to_string()
                .contains("only sha256")
        );
    }
}
