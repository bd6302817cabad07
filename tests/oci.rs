//! Test images built by hand as OCI layouts (no tool of ours involved), and a real OCI
//! registry (Debian's `docker-registry`) on loopback to push them to with `skopeo`.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::require_command;

/// One entry of a test layer.
#[derive(Debug, Clone)]
pub enum Item {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        mode: u32,
        uid: u64,
        gid: u64,
        content: Vec<u8>,
    },
    Symlink {
        path: String,
        target: String,
    },
    Hardlink {
        path: String,
        target: String,
    },
    CharDevice {
        path: String,
        major: u32,
        minor: u32,
    },
    Fifo {
        path: String,
    },
    /// A file whose name goes into the header unchecked (for hostile layers: `../x`).
    RawPath {
        path: String,
        content: Vec<u8>,
    },
}

impl Item {
    pub fn dir(path: &str) -> Item {
        Item::Dir {
            path: path.into(),
            mode: 0o755,
        }
    }
    pub fn file(path: &str, content: &str) -> Item {
        Item::File {
            path: path.into(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            content: content.as_bytes().to_vec(),
        }
    }
    pub fn owned(path: &str, mode: u32, uid: u64, gid: u64, content: &str) -> Item {
        Item::File {
            path: path.into(),
            mode,
            uid,
            gid,
            content: content.as_bytes().to_vec(),
        }
    }
    pub fn symlink(path: &str, target: &str) -> Item {
        Item::Symlink {
            path: path.into(),
            target: target.into(),
        }
    }
    pub fn hardlink(path: &str, target: &str) -> Item {
        Item::Hardlink {
            path: path.into(),
            target: target.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    Gzip,
    Zstd,
    None,
}

/// Writes a tar stream of `items` the way image builders do (ustar/GNU headers, `./`-less).
pub fn tar_of(items: &[Item]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for item in items {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        let r = match item {
            Item::Dir { path, mode } => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                b.append_data(&mut h, path, std::io::empty())
            }
            Item::File {
                path,
                mode,
                uid,
                gid,
                content,
            } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_uid(*uid);
                h.set_gid(*gid);
                h.set_size(content.len() as u64);
                b.append_data(&mut h, path, &content[..])
            }
            Item::Symlink { path, target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                b.append_link(&mut h, path, target)
            }
            Item::Hardlink { path, target } => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o755);
                b.append_link(&mut h, path, target)
            }
            Item::CharDevice { path, major, minor } => {
                h.set_entry_type(tar::EntryType::Char);
                h.set_mode(0o666);
                h.set_device_major(*major).unwrap_or_else(|e| panic!("{e}"));
                h.set_device_minor(*minor).unwrap_or_else(|e| panic!("{e}"));
                b.append_data(&mut h, path, std::io::empty())
            }
            Item::Fifo { path } => {
                h.set_entry_type(tar::EntryType::Fifo);
                h.set_mode(0o600);
                b.append_data(&mut h, path, std::io::empty())
            }
            Item::RawPath { path, content } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(content.len() as u64);
                let name = &mut h.as_old_mut().name;
                name.fill(0);
                name[..path.len()].copy_from_slice(path.as_bytes());
                h.set_cksum();
                b.append(&h, &content[..])
            }
        };
        r.unwrap_or_else(|e| panic!("tar {item:?}: {e}"));
    }
    b.into_inner().unwrap_or_else(|e| panic!("tar: {e}"))
}

/// Writes `items` as a directory tree (owners and device nodes kept when root), by GNU tar.
pub fn write_tree(dir: &Path, items: &[Item]) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let tar = dir.with_extension("tree.tar");
    std::fs::write(&tar, tar_of(items)).unwrap_or_else(|e| panic!("{}: {e}", tar.display()));
    run(Command::new("tar")
        .arg("-xpf")
        .arg(&tar)
        .arg("--same-owner")
        .arg("-C")
        .arg(dir));
    let _ = std::fs::remove_file(&tar);
}

pub fn compress(data: &[u8], how: LayerCompression) -> Vec<u8> {
    match how {
        LayerCompression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap_or_else(|e| panic!("{e}"));
            e.finish().unwrap_or_else(|e| panic!("{e}"))
        }
        LayerCompression::Zstd => zstd::encode_all(data, 3).unwrap_or_else(|e| panic!("{e}")),
        LayerCompression::None => data.to_vec(),
    }
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// An OCI image layout being written.
pub struct Layout {
    pub dir: PathBuf,
    layers: Vec<(String, String, u64, String)>,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap_or_else(|e| panic!("{e}"));
        Layout {
            dir: dir.to_owned(),
            layers: Vec::new(),
        }
    }

    fn blob(&self, data: &[u8]) -> String {
        let digest = sha256(data);
        let path = self.dir.join("blobs/sha256").join(&digest[7..]);
        std::fs::write(path, data).unwrap_or_else(|e| panic!("{e}"));
        digest
    }

    /// Adds a layer; returns its blob digest.
    pub fn layer(&mut self, items: &[Item], how: LayerCompression) -> String {
        let tar = tar_of(items);
        self.raw_layer(&tar, &compress(&tar, how), how)
    }

    /// Adds a layer whose blob is `blob` (possibly broken) with `tar`'s diff_id.
    pub fn raw_layer(&mut self, tar: &[u8], blob: &[u8], how: LayerCompression) -> String {
        let media = match how {
            LayerCompression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            LayerCompression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            LayerCompression::None => "application/vnd.oci.image.layer.v1.tar",
        };
        let digest = self.blob(blob);
        self.layers
            .push((digest.clone(), media.into(), blob.len() as u64, sha256(tar)));
        digest
    }

    /// Writes config, manifest and index with `tag`.
    pub fn finish(self, tag: &str) -> PathBuf {
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "created": "2023-11-14T22:13:20Z",
            "config": {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
            "rootfs": {"type": "layers", "diff_ids": self.layers.iter().map(|l| l.3.clone()).collect::<Vec<_>>()},
            "history": self.layers.iter().map(|_| serde_json::json!({"created_by": "wulf test"})).collect::<Vec<_>>(),
        });
        let config = serde_json::to_vec(&config).unwrap_or_default();
        let config_digest = self.blob(&config);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": self.layers.iter().map(|(d, m, s, _)| serde_json::json!({"mediaType": m, "digest": d, "size": s})).collect::<Vec<_>>(),
        });
        let manifest = serde_json::to_vec(&manifest).unwrap_or_default();
        let manifest_digest = self.blob(&manifest);
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }],
        });
        let write = |name: &str, data: &[u8]| {
            std::fs::write(self.dir.join(name), data).unwrap_or_else(|e| panic!("{e}"))
        };
        write(
            "index.json",
            &serde_json::to_vec(&index).unwrap_or_default(),
        );
        write("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
        self.dir
    }
}

/// Runs a command and panics with its output if it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CNCF distribution registry (`docker-registry`) on 127.0.0.1, stopped when dropped.
pub struct Registry {
    child: Child,
    pub addr: String,
    pub storage: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    pub fn start() -> Registry {
        require_command("docker-registry", "docker-registry");
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = format!("127.0.0.1:{port}");
        let storage = dir.path().join("data");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\nhttp: {{addr: {addr}}}\n",
                storage.display()
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting docker-registry: {e}"));
        let started = Instant::now();
        while TcpStream::connect(&addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "docker-registry did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            child,
            addr,
            storage,
            _dir: dir,
        }
    }

    /// Pushes an OCI layout's tag with skopeo, as a plain-HTTP push.
    pub fn push(&self, layout: &Path, tag: &str, repo: &str) {
        require_command("skopeo", "skopeo");
        run(Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            &format!("oci:{}:{tag}", layout.display()),
            &format!("docker://{}/{repo}", self.addr),
        ]));
    }

    /// The stored file of a blob.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = &digest[7..];
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

/// Turns a one-image layout into a multi-platform one: the tag now names an image index with
/// the original image as linux/amd64 and a copy of it (same layers, its own config) as
/// linux/arm64/v8, whose config carries `marker` so the two can be told apart.
pub fn make_multi_arch(layout: &Path, tag: &str) {
    let read = |digest: &str| {
        std::fs::read(layout.join("blobs/sha256").join(&digest[7..]))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let write = |data: &[u8]| {
        let digest = sha256(data);
        std::fs::write(layout.join("blobs/sha256").join(&digest[7..]), data)
            .unwrap_or_else(|e| panic!("{e}"));
        digest
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap_or_default())
            .unwrap_or_default();
    let amd64 = index["manifests"][0].clone();
    let amd64_digest = amd64["digest"].as_str().unwrap_or_default().to_string();
    let manifest: serde_json::Value =
        serde_json::from_slice(&read(&amd64_digest)).unwrap_or_default();
    let mut config: serde_json::Value = serde_json::from_slice(&read(
        manifest["config"]["digest"].as_str().unwrap_or_default(),
    ))
    .unwrap_or_default();
    config["architecture"] = "arm64".into();
    config["variant"] = "v8".into();
    let config = serde_json::to_vec(&config).unwrap_or_default();
    let mut arm = manifest.clone();
    arm["config"]["digest"] = write(&config).into();
    arm["config"]["size"] = config.len().into();
    let arm = serde_json::to_vec(&arm).unwrap_or_default();
    let arm_digest = write(&arm);
    let image_index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd64_digest, "size": amd64["size"], "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm_digest, "size": arm.len(), "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        ],
    });
    let image_index = serde_json::to_vec(&image_index).unwrap_or_default();
    let index_digest = write(&image_index);
    let top = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": index_digest,
            "size": image_index.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&top).unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
}
