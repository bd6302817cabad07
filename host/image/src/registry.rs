//! Pulling an image from a registry with `oci-client`: manifests are fetched raw and parsed by
//! [`crate::oci`], layers are streamed to the blob cache with their digests checked, never held
//! in memory.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use tokio::io::AsyncWrite;

use crate::Progress;
use crate::error::{ImageError, Result};
use crate::flatten::Layer;
use crate::oci::{self, Parsed, Platform};
use crate::source::Resolved;

/// How to reach a registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Plain HTTP instead of HTTPS.
    pub insecure_http: bool,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// Fetches `reference` for `platform`, storing layer blobs in `blobs` (by digest, shared
/// between images).
pub async fn pull(
    reference: &str,
    platform: &Platform,
    options: &RegistryOptions,
    blobs: &Path,
    progress: Arc<dyn Progress>,
) -> Result<Resolved> {
    let image: Reference = reference
        .parse()
        .map_err(|source| ImageError::BadReference {
            reference: reference.to_owned(),
            source,
        })?;
    let registry_error = |what: String, source| ImageError::Registry {
        what,
        registry: image.resolve_registry().to_owned(),
        source: Box::new(source),
    };
    let client = Client::new(ClientConfig {
        protocol: if options.insecure_http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        platform_resolver: None,
        ..Default::default()
    });
    let auth = match (&options.username, &options.password) {
        (Some(user), Some(pass)) => RegistryAuth::Basic(user.clone(), pass.clone()),
        (Some(user), None) => {
            return Err(ImageError::NoPassword { user: user.clone() });
        }
        _ => RegistryAuth::Anonymous,
    };

    let (bytes, mut digest) = client
        .pull_manifest_raw(&image, &auth, oci::ACCEPTED_MANIFESTS)
        .await
        .map_err(|e| registry_error(format!("the manifest of {image}"), e))?;
    if let Some(pinned) = image.digest() {
        oci::verify(&bytes, pinned, &format!("manifest of {image}"))?;
    }
    let manifest = match oci::parse_manifest(&bytes, &format!("manifest of {image}"))? {
        Parsed::Image(m) => m,
        Parsed::Index(manifests) => {
            let chosen = oci::select_platform(&manifests, platform, &format!("{image}"))?;
            let by_digest = Reference::with_digest(
                image.registry().to_owned(),
                image.repository().to_owned(),
                chosen.digest.clone(),
            );
            let (bytes, _) = client
                .pull_manifest_raw(&by_digest, &auth, oci::ACCEPTED_MANIFESTS)
                .await
                .map_err(|e| registry_error(format!("the {platform} manifest of {image}"), e))?;
            oci::verify(
                &bytes,
                &chosen.digest,
                &format!("{platform} manifest of {image}"),
            )?;
            digest = chosen.digest.clone();
            match oci::parse_manifest(&bytes, &format!("{platform} manifest of {image}"))? {
                Parsed::Image(m) => m,
                Parsed::Index(_) => {
                    return Err(ImageError::WrongKind {
                        what: format!("{image}: the {platform} entry"),
                        expected: "an image manifest (nested indexes are not supported)",
                    });
                }
            }
        }
    };

    let mut config_bytes = Vec::new();
    client
        .pull_blob(&image, manifest.config.digest.as_str(), &mut config_bytes)
        .await
        .map_err(|e| registry_error(format!("the config of {image}"), e))?;
    let config = oci::parse_config(&config_bytes, &format!("config of {image}"))?;
    let diff_ids = config.diff_ids(manifest.layers.len(), &image.to_string())?;

    std::fs::create_dir_all(blobs).map_err(ImageError::at(blobs))?;
    let total: i64 = manifest.layers.iter().filter_map(|l| l.size).sum();
    progress.start("downloading layers", Some(total.max(0) as u64));
    let mut layers = Vec::new();
    for (i, desc) in manifest.layers.iter().enumerate() {
        let path = cached_blob(blobs, &desc.digest).ok_or_else(|| ImageError::BadDigest {
            what: format!("layer {} of {image}", i + 1),
            digest: desc.digest.clone(),
            reason: "is not a sha256 digest",
        })?;
        if !path.exists() {
            let partial = path.with_extension(format!("partial-{}", std::process::id()));
            let file = tokio::fs::File::create(&partial)
                .await
                .map_err(ImageError::at(&partial))?;
            let mut writer = ProgressWriter {
                inner: file,
                progress: Arc::clone(&progress),
            };
            let pulled = client
                .pull_blob(&image, desc.digest.as_str(), &mut writer)
                .await;
            let synced = match &pulled {
                Ok(()) => {
                    use tokio::io::AsyncWriteExt as _;
                    let file = &mut writer.inner;
                    match file.flush().await {
                        Ok(()) => file.sync_all().await,
                        Err(e) => Err(e),
                    }
                }
                Err(_) => Ok(()),
            };
            if let Err(e) = synced {
                let _ = std::fs::remove_file(&partial);
                return Err(ImageError::Io {
                    context: partial.display().to_string(),
                    source: e,
                });
            }
            if let Err(e) = pulled {
                let _ = std::fs::remove_file(&partial);
                return Err(registry_error(
                    format!("layer {} ({}) of {image}", i + 1, desc.digest),
                    e,
                ));
            }
            std::fs::rename(&partial, &path).map_err(ImageError::at(&path))?;
        } else if let Some(size) = desc.size {
            progress.advance(size.max(0) as u64);
        }
        layers.push(Layer {
            blob: path,
            digest: Some(desc.digest.clone()),
            diff_id: diff_ids.get(i).cloned(),
        });
    }
    progress.finish();
    Ok(Resolved {
        layers,
        digest: Some(digest),
        platform: crate::source::platform_of(&config),
    })
}

/// Where the blob with `digest` is cached; `None` unless it is a well-formed sha256 digest.
fn cached_blob(blobs: &Path, digest: &str) -> Option<PathBuf> {
    match digest.split_once(':') {
        Some(("sha256", hex)) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some(blobs.join(hex))
        }
        _ => None,
    }
}

struct ProgressWriter<W> {
    inner: W,
    progress: Arc<dyn Progress>,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for ProgressWriter<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            self.progress.advance(n as u64);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
