//! The CLI against a remote `wulf serve`: `--server https://host:9874 --token ...` (or
//! `WULF_SERVER`/`WULF_TOKEN`, or `~/.config/wulf/client.toml`) sends the commands the API
//! covers to it instead of opening a local state directory. The server applies the same site
//! rules; this only carries requests and renders the answers as the local commands do.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use reqwest::Method;
use reqwest::blocking::Client;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Where the client configuration lives: `$XDG_CONFIG_HOME/wulf/client.toml`.
fn client_file() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|dir| dir.join("wulf/client.toml"))
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFile {
    server: Option<String>,
    token: Option<String>,
    cacert: Option<PathBuf>,
}

/// A remote API and the token to use it with.
pub(crate) struct Remote {
    base: String,
    token: String,
    client: Client,
}

impl Remote {
    /// The remote the flags (or the client file) name, if any: a `--server` with a scheme.
    /// `--server HOST:PORT` without one is `node status`'s boot server, not a remote.
    pub(crate) fn from_flags(
        server: Option<&str>,
        token: Option<&str>,
        cacert: Option<&Path>,
    ) -> anyhow::Result<Option<Remote>> {
        let file = match (server, client_file()) {
            (None, Some(path)) if path.is_file() => {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                toml::from_str::<ClientFile>(&text)
                    .with_context(|| format!("{} is not a wulf client file", path.display()))?
            }
            _ => ClientFile::default(),
        };
        let Some(server) = server.map(str::to_owned).or(file.server) else {
            return Ok(None);
        };
        if !server.starts_with("http://") && !server.starts_with("https://") {
            return Ok(None);
        }
        let token = token.map(str::to_owned).or(file.token).context(
            "--server needs a token: --token, WULF_TOKEN or `token` in ~/.config/wulf/client.toml (make one with `wulf token create` on the server)",
        )?;
        let mut builder = Client::builder()
            .timeout(Duration::from_secs(600))
            .connect_timeout(Duration::from_secs(10));
        if let Some(path) = cacert.map(Path::to_path_buf).or(file.cacert) {
            let pem = std::fs::read(&path)
                .with_context(|| format!("--cacert {}: cannot read it", path.display()))?;
            let certificate = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("--cacert {}: not a PEM certificate", path.display()))?;
            builder = builder.add_root_certificate(certificate);
        }
        Ok(Some(Remote {
            base: server.trim_end_matches('/').to_owned(),
            token,
            client: builder.build()?,
        }))
    }

    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    pub(crate) fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(Method::GET, path, None::<&()>)
    }

    /// One request to `/api/v1<path>`; the API's error, with its field, on failure.
    pub(crate) fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<T> {
        let url = format!("{}/api/v1{path}", self.base);
        let mut request = self.client.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().map_err(|error| {
            let chain = wulf_site::error_chain(&error);
            anyhow::anyhow!("cannot reach the wulf API at {}: {chain}", self.base)
        })?;
        let status = response.status();
        let bytes = response.bytes()?;
        if !status.is_success() {
            let error: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let message = error["error"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            match error["field"].as_str() {
                Some(field) => bail!("{message} (field `{field}`; the server answered {status})"),
                None => bail!("{message} (the server answered {status})"),
            }
        }
        let bytes = if bytes.is_empty() {
            &b"null"[..]
        } else {
            &bytes[..]
        };
        serde_json::from_slice(bytes)
            .with_context(|| format!("{url}: an answer this wulf cannot read"))
    }
}
