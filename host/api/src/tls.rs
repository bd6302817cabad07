//! The API's TLS: the configured PEM certificate and key, or a self-signed pair made once in
//! `<state>/api/` (root-only) for this host's names and the listening address. Clients pin it
//! (`curl --cacert <state>/api/tls.crt`) or the site replaces it with its own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use wulf_site::Site;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no {what} in PEM form")]
    Missing { path: PathBuf, what: &'static str },
    #[error("cannot make a self-signed certificate: {0}")]
    Generate(String),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the certificate and key do not go together")]
    Config(#[source] rustls::Error),
    #[error("{0}")]
    Task(String),
}

/// Where a generated certificate and key are kept.
pub(crate) fn generated_paths(site: &Site) -> (PathBuf, PathBuf) {
    let dir = site.state().root().join("api");
    (dir.join("tls.crt"), dir.join("tls.key"))
}

pub(crate) fn acceptor(site: &Site, addr: SocketAddr) -> Result<TlsAcceptor, TlsError> {
    let api = site.config().api.clone();
    let (cert, key) = match (api.tls_cert, api.tls_key) {
        (Some(cert), Some(key)) => (cert, key),
        _ => {
            let (cert, key) = generated_paths(site);
            if !cert.is_file() || !key.is_file() {
                generate(&cert, &key, addr)?;
                tracing::info!(certificate = %cert.display(), "made a self-signed certificate for the API");
            }
            (cert, key)
        }
    };
    let chain = read_pem(&cert, "certificate", |r| {
        rustls_pemfile::certs(r).collect::<Result<Vec<_>, _>>()
    })?;
    if chain.is_empty() {
        return Err(TlsError::Missing {
            path: cert,
            what: "certificate",
        });
    }
    let private =
        read_pem(&key, "private key", rustls_pemfile::private_key)?.ok_or(TlsError::Missing {
            path: key,
            what: "private key",
        })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(TlsError::Config)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read_pem<T>(
    path: &Path,
    what: &'static str,
    parse: impl FnOnce(&mut dyn std::io::BufRead) -> std::io::Result<T>,
) -> Result<T, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&mut bytes.as_slice()).map_err(|_| TlsError::Missing {
        path: path.to_path_buf(),
        what,
    })
}

/// A self-signed certificate for `localhost`, this host's name, loopback and `addr`.
fn generate(cert: &Path, key: &Path, addr: SocketAddr) -> Result<(), TlsError> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() {
            names.push(host.to_owned());
        }
    }
    if !addr.ip().is_unspecified() && !addr.ip().is_loopback() {
        names.push(addr.ip().to_string());
    }
    let made =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    let write = |path: &Path, text: String, mode: u32| {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        wulf_core::atomic_file::write_atomic_mode(path, text.as_bytes(), mode).map_err(|source| {
            TlsError::Write {
                path: path.to_path_buf(),
                source,
            }
        })
    };
    write(key, made.signing_key.serialize_pem(), 0o600)?;
    write(cert, made.cert.pem(), 0o644)
}
