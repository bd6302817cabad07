//! `wulf image ...`: import, build and manage node images.

use std::io::IsTerminal as _;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use wulf_image::store::ImageMeta;
use wulf_image::{Compression, ImportOptions, Platform, Progress, RegistryOptions, Source};
use wulf_site::BuildSettings;

use crate::context::Context;
use crate::table;

#[derive(Debug, Subcommand)]
pub(crate) enum ImageCommand {
    /// Import an image: docker://registry/repo:tag, oci:<dir>[:tag], oci-archive:<file>[:tag],
    /// docker-archive:<file>, or a chroot directory. Builds it unless --no-build
    #[command(alias = "pull")]
    Import {
        source: String,
        /// Image name [default: the last component of the source, with its tag]
        name: Option<String>,
        /// Replace an existing image of that name
        #[arg(long)]
        force: bool,
        /// os/arch[/variant] to pick from a multi-platform image [default: the host's]
        #[arg(long)]
        platform: Option<Platform>,
        /// Talk plain HTTP to the registry
        #[arg(long)]
        insecure_http: bool,
        /// Registry user; the password comes from WULF_OCI_PASSWORD or a prompt
        #[arg(long, env = "WULF_OCI_USERNAME")]
        username: Option<String>,
        /// Do not build the initramfs after importing
        #[arg(long)]
        no_build: bool,
        #[arg(long)]
        json: bool,
    },
    /// Build images into compressed initramfs archives
    Build {
        /// Images to build
        names: Vec<String>,
        /// Build every image
        #[arg(long, conflicts_with = "names")]
        all: bool,
        /// gzip (default: every kernel and iPXE read it), zstd (kernels >= 5.9) or none; remembered
        #[arg(long)]
        compression: Option<Compression>,
        /// Compression level [default: gzip 6, zstd 3]; remembered
        #[arg(long)]
        level: Option<u32>,
        /// Image-transform plugins to run, in order (repeat or comma-separate); remembered.
        /// `--transform ''` clears the list
        #[arg(long = "transform", value_delimiter = ',')]
        transforms: Option<Vec<String>>,
        /// Set every entry's mtime (Unix seconds) for reproducible archives; remembered
        #[arg(long)]
        mtime: Option<u64>,
        /// Compression threads [default: one per core]
        #[arg(long, default_value_t = 0)]
        threads: usize,
        #[arg(long)]
        json: bool,
    },
    /// List images: size, default kernel, build time, nodes using them
    #[command(alias = "ls")]
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one image
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// List the kernels found in images
    Kernels {
        /// Only this image
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Delete an image (refused while a node or profile uses it)
    #[command(alias = "rm")]
    Delete {
        name: String,
        /// Accepted for wwctl scripts: `delete` does not ask (an image in use is refused)
        #[arg(short = 'y', long = "yes")]
        _yes: bool,
    },
    /// Run a command inside an image (root only): its own mount, PID, UTS and IPC namespaces,
    /// /proc, /sys, /dev, /run and the host's resolv.conf. When the command succeeds and changed
    /// the image, the image is packed and built again before it replaces the old one
    Exec {
        name: String,
        #[command(flatten)]
        run: RunArgs,
        /// The command and its arguments
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// An interactive shell inside an image (root only); changes are kept when it exits 0
    Shell {
        name: String,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Compare an image's users and groups with this host's; with --write, give the image the
    /// host's ids (re-owning its files) and add the host's users and groups it lacks
    Syncuser {
        name: String,
        /// Change the image (root only); without it, only report
        #[arg(long)]
        write: bool,
        /// With --write: keep the change but do not build the initramfs
        #[arg(long)]
        no_build: bool,
        #[arg(long)]
        json: bool,
    },
    /// Copy an image under a new name
    #[command(alias = "cp")]
    Copy { from: String, to: String },
    /// Rename an image, and the nodes and profiles that use it
    #[command(alias = "mv")]
    Rename { from: String, to: String },
}

pub(crate) fn run(ctx: &Context, command: ImageCommand) -> anyhow::Result<()> {
    let site = &ctx.site;
    match command {
        ImageCommand::Import {
            source,
            name,
            force,
            platform,
            insecure_http,
            username,
            no_build,
            json,
        } => {
            let source = Source::parse(&source)?;
            let name = name.unwrap_or_else(|| source.default_name());
            let password = match &username {
                Some(user) => Some(password(user)?),
                None => None,
            };
            let options = ImportOptions {
                force,
                platform,
                registry: RegistryOptions {
                    insecure_http,
                    username,
                    password,
                },
            };
            let progress: Arc<dyn Progress> = Arc::new(Bars::new(json));
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let started = std::time::Instant::now();
            let build = (!no_build).then_some(0);
            let meta =
                runtime.block_on(site.import_image(&source, &name, &options, build, progress))?;
            print_imported(&source.to_string(), &meta, started.elapsed(), json);
            Ok(())
        }
        ImageCommand::Exec { name, run, command } => exec(ctx, &name, run, &command),
        ImageCommand::Syncuser {
            name,
            write,
            no_build,
            json,
        } => syncuser(ctx, &name, write, !no_build, json),
        ImageCommand::Shell { name, run } => {
            let shell = [
                "/bin/sh",
                "-c",
                "exec \"$(command -v bash || echo /bin/sh)\" -l",
            ];
            exec(ctx, &name, run, &shell.map(String::from))
        }
        ImageCommand::Build {
            names,
            all,
            compression,
            level,
            transforms,
            mtime,
            threads,
            json,
        } => {
            let names = if all {
                site.image_names()?
            } else if names.is_empty() {
                bail!("name the images to build, or use --all");
            } else {
                names
            };
            let settings = BuildSettings {
                compression,
                level,
                transforms,
                mtime,
            };
            let mut built = Vec::new();
            for name in &names {
                built.push(build_one(ctx, name, &settings, threads, json)?);
            }
            if json {
                table::print_json(&json!(
                    built.iter().map(|m| image_json(m, &[])).collect::<Vec<_>>()
                ));
            }
            Ok(())
        }
        ImageCommand::List { json } => {
            print_images(&site.list_images()?, json);
            Ok(())
        }
        ImageCommand::Show { name, json } => {
            let shown = site.show_image(&name)?;
            let (meta, used) = (&shown.meta, &shown.users);
            let store = site.image_store();
            if json {
                table::print_json(&image_json(meta, used));
                return Ok(());
            }
            let mut rows = vec![
                ("name", meta.name.clone()),
                ("source", meta.source.clone()),
                ("digest", meta.digest.clone().unwrap_or_default()),
                ("platform", meta.platform.clone().unwrap_or_default()),
                ("imported", timestamp(meta.imported_at)),
                ("rootfs", store.rootfs(&name).display().to_string()),
                ("entries", meta.entries.to_string()),
                ("size", human_bytes(meta.bytes)),
                (
                    "kernel",
                    meta.default_kernel()
                        .map(|k| format!("{} ({})", k.version, k.path))
                        .unwrap_or_default(),
                ),
                ("compression", meta.settings.compression.to_string()),
                ("transforms", meta.settings.transforms.join(",")),
            ];
            match (&meta.build, store.initramfs_path(meta)) {
                (Some(build), Some(path)) => {
                    rows.push(("initramfs", path.display().to_string()));
                    rows.push((
                        "initramfs size",
                        format!(
                            "{} ({} uncompressed)",
                            human_bytes(build.size),
                            human_bytes(build.uncompressed)
                        ),
                    ));
                    rows.push(("sha256", build.sha256.clone()));
                    rows.push(("built", timestamp(build.built_at)));
                }
                _ => rows.push(("initramfs", "not built: run `wulf image build`".into())),
            }
            rows.push(("nodes", used.join(",")));
            table::print(
                &["field", "value"],
                rows.into_iter()
                    .map(|(k, v)| vec![k.to_string(), v])
                    .collect(),
            );
            Ok(())
        }
        ImageCommand::Kernels { name, json } => {
            let kernels = site.kernels(name.as_deref())?;
            let mut rows = Vec::new();
            let mut list = Vec::new();
            for k in &kernels {
                list.push(json!({"image": k.image, "path": k.kernel.path, "version": k.kernel.version, "size": k.kernel.size, "default": k.default, "nodes": k.nodes}));
                rows.push(vec![
                    k.image.clone(),
                    k.kernel.path.clone(),
                    k.kernel.version.clone(),
                    if k.default {
                        "yes".into()
                    } else {
                        String::new()
                    },
                    k.nodes.len().to_string(),
                ]);
            }
            if json {
                table::print_json(&json!(list));
            } else {
                table::print(&["image", "kernel", "version", "default", "nodes"], rows);
            }
            Ok(())
        }
        ImageCommand::Delete { name, .. } => {
            site.delete_image(&name)?;
            println!("deleted image `{name}`");
            Ok(())
        }
        ImageCommand::Copy { from, to } => {
            site.copy_image(&from, &to)?;
            println!("copied image `{from}` to `{to}`");
            Ok(())
        }
        ImageCommand::Rename { from, to } => {
            let changed = site.rename_image(&from, &to)?;
            println!("renamed image `{from}` to `{to}`");
            if !changed.is_empty() {
                println!("now using `{to}`: {}", changed.join(", "));
            }
            Ok(())
        }
    }
}

/// How a command runs inside an image.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// Make a host path visible inside the image: SRC[:DST] (repeatable)
    #[arg(long = "bind", value_name = "SRC[:DST]")]
    binds: Vec<wulf_image::exec::Bind>,
    /// The network inside: the host's (package managers reach their mirrors), or none
    #[arg(long, value_enum, default_value_t = NetworkArg::Host)]
    network: NetworkArg,
    /// Keep the changes but do not build the initramfs (the image serves nothing until built)
    #[arg(long)]
    no_build: bool,
    /// Compression threads for the build [default: one per core]
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum NetworkArg {
    Host,
    None,
}

/// `image exec|shell`: runs, reports what became of the image, and exits as the command did.
fn exec(ctx: &Context, name: &str, run: RunArgs, command: &[String]) -> anyhow::Result<()> {
    let options = wulf_image::exec::RunOptions {
        binds: run.binds,
        network: match run.network {
            NetworkArg::Host => wulf_image::exec::Network::Host,
            NetworkArg::None => wulf_image::exec::Network::None,
        },
    };
    let progress = Bars::new(false);
    let outcome = ctx.site.exec_image(
        name,
        command,
        &options,
        !run.no_build,
        run.threads,
        &progress,
    )?;
    match (&outcome.meta, outcome.code) {
        (Some(meta), _) => match &meta.build {
            Some(build) => eprintln!(
                "image `{name}` changed: packed and built again ({} entries, {})",
                build.entries,
                human_bytes(build.size)
            ),
            None => eprintln!(
                "image `{name}` changed and was packed; build it before nodes boot it: wulf image build {name}"
            ),
        },
        (None, 0) => eprintln!("image `{name}` unchanged"),
        (None, code) => eprintln!("the command exited with {code}: image `{name}` unchanged"),
    }
    if outcome.code != 0 {
        std::process::exit(outcome.code);
    }
    Ok(())
}

fn syncuser(ctx: &Context, name: &str, write: bool, build: bool, json: bool) -> anyhow::Result<()> {
    let progress = Bars::new(json);
    let report = ctx.site.syncuser_image(name, write, build, 0, &progress)?;
    let plan = &report.plan;
    if json {
        table::print_json(&json!({
            "changes": plan.changes,
            "conflicts": plan.conflicts,
            "written": report.meta.is_some(),
            "reowned": report.reowned,
        }));
    } else {
        let rows = plan
            .changes
            .iter()
            .map(|c| {
                vec![
                    c.kind.to_owned(),
                    c.name.clone(),
                    c.image.map(|i| i.to_string()).unwrap_or_default(),
                    c.host.to_string(),
                    if c.image.is_some() {
                        "change".to_owned()
                    } else {
                        "add".to_owned()
                    },
                ]
            })
            .collect();
        table::print(&["kind", "name", "image id", "host id", "action"], rows);
        match (&report.meta, report.reowned) {
            (Some(_), Some(n)) => println!("image `{name}` written: {n} file(s) re-owned"),
            _ if plan.changes.is_empty() => println!("image `{name}` agrees with this host"),
            _ if !write && plan.conflicts.is_empty() => {
                println!("nothing written: run again with --write")
            }
            _ => {}
        }
    }
    if !plan.conflicts.is_empty() {
        anyhow::bail!(
            "image `{name}` conflicts with this host, nothing written: {}",
            plan.conflicts.join("; ")
        );
    }
    Ok(())
}

/// Images as `image list` shows them.
fn print_images(images: &[wulf_site::ImageUse], json: bool) {
    if json {
        let list: Vec<_> = images
            .iter()
            .map(|i| image_json(&i.meta, &i.users))
            .collect();
        table::print_json(&json!(list));
        return;
    }
    let rows = images
        .iter()
        .map(|image| {
            let m = &image.meta;
            vec![
                m.name.clone(),
                image.nodes().to_string(),
                m.default_kernel()
                    .map(|k| k.version.clone())
                    .unwrap_or_default(),
                m.build
                    .as_ref()
                    .map(|b| timestamp(b.built_at))
                    .unwrap_or_default(),
                human_bytes(m.bytes),
                m.build
                    .as_ref()
                    .map(|b| human_bytes(b.size))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    table::print(
        &["image", "nodes", "kernel", "built", "size", "initramfs"],
        rows,
    );
}

fn build_one(
    ctx: &Context,
    name: &str,
    settings: &BuildSettings,
    threads: usize,
    quiet: bool,
) -> anyhow::Result<ImageMeta> {
    let progress = Bars::new(quiet);
    let started = std::time::Instant::now();
    let meta = ctx.site.build_image(name, settings, threads, &progress)?;
    if !quiet && let Some(build) = &meta.build {
        print_built(name, build, started.elapsed());
    }
    Ok(meta)
}

/// What an import made, as `image import` says it (here or through a server).
fn print_imported(source: &str, meta: &ImageMeta, took: std::time::Duration, json: bool) {
    if json {
        table::print_json(&image_json(meta, &[]));
        return;
    }
    println!(
        "imported {source} as image `{}`: {} entries, {}",
        meta.name,
        meta.entries,
        human_bytes(meta.bytes)
    );
    if let Some(build) = &meta.build {
        print_built(&meta.name, build, took);
    }
}

fn print_built(name: &str, build: &wulf_image::store::Build, took: std::time::Duration) {
    println!(
        "built image `{name}`: {} entries, {} -> {} {} in {:.1} s",
        build.entries,
        human_bytes(build.uncompressed),
        human_bytes(build.size),
        build.compression,
        took.as_secs_f64()
    );
}

fn image_json(meta: &ImageMeta, users: &[String]) -> serde_json::Value {
    json!({
        "name": meta.name,
        "source": meta.source,
        "digest": meta.digest,
        "platform": meta.platform,
        "imported_at": meta.imported_at,
        "entries": meta.entries,
        "size": meta.bytes,
        "kernels": meta.kernels,
        "default_kernel": meta.default_kernel().map(|k| &k.version),
        "settings": meta.settings,
        "build": meta.build,
        "used_by": users,
    })
}

fn password(user: &str) -> anyhow::Result<String> {
    if let Ok(password) = std::env::var("WULF_OCI_PASSWORD") {
        return Ok(password);
    }
    if !std::io::stdin().is_terminal() {
        bail!("a password is needed for registry user {user}: set WULF_OCI_PASSWORD");
    }
    rpassword::prompt_password(format!("password for {user}: ")).context("reading the password")
}

pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `2026-11-22 10:04 UTC` from Unix seconds.
pub(crate) fn timestamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Progress bars on stderr; invisible when stderr is not a terminal or `quiet` is set.
pub(crate) struct Bars {
    quiet: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl Bars {
    pub(crate) fn new(quiet: bool) -> Self {
        Bars {
            quiet: quiet || !std::io::stderr().is_terminal(),
            bar: Mutex::new(None),
        }
    }
}

impl Progress for Bars {
    fn start(&self, step: &str, total: Option<u64>) {
        if self.quiet {
            return;
        }
        let bytes = step.contains("download") || step.contains("layers");
        let bar = match total {
            Some(total) => ProgressBar::new(total),
            None => ProgressBar::new_spinner(),
        };
        let template = match (total.is_some(), bytes) {
            (true, true) => "{msg:20} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            (true, false) => "{msg:20} [{bar:30}] {pos}/{len} eta {eta}",
            (false, _) => "{msg:20} {spinner} {pos}",
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(step.to_string());
        if let Ok(mut slot) = self.bar.lock() {
            *slot = Some(bar);
        }
    }

    fn advance(&self, amount: u64) {
        if let Ok(slot) = self.bar.lock()
            && let Some(bar) = slot.as_ref()
        {
            bar.inc(amount);
        }
    }

    fn finish(&self) {
        if let Ok(mut slot) = self.bar.lock()
            && let Some(bar) = slot.take()
        {
            bar.finish_and_clear();
        }
    }
}

/// `image list|import|build` against a remote server; the image is built there.
pub(crate) fn run_remote(
    remote: &crate::remote::Remote,
    command: ImageCommand,
) -> anyhow::Result<()> {
    use reqwest::Method;
    match command {
        ImageCommand::List { json } => {
            let answer: serde_json::Value = remote.get("/images")?;
            let images = answer["images"]
                .as_array()
                .map(|all| {
                    all.iter()
                        .map(|i| {
                            Ok(wulf_site::ImageUse {
                                meta: serde_json::from_value(i["image"].clone())?,
                                users: serde_json::from_value(i["users"].clone())?,
                            })
                        })
                        .collect::<anyhow::Result<Vec<_>>>()
                })
                .transpose()?
                .unwrap_or_default();
            print_images(&images, json);
            Ok(())
        }
        ImageCommand::Import {
            source,
            name,
            force,
            platform,
            insecure_http,
            username,
            no_build,
            json,
        } => {
            if username.is_some() {
                bail!(
                    "--username: registry credentials are not sent through --server; import on the wulf host"
                );
            }
            let started = std::time::Instant::now();
            let job: serde_json::Value = remote.send(
                Method::POST,
                "/images",
                Some(&json!({
                    "source": source,
                    "name": name,
                    "force": force,
                    "platform": platform.map(|p| p.to_string()),
                    "insecure_http": insecure_http,
                    "no_build": no_build,
                })),
            )?;
            let meta = follow_job(remote, &job, json)?;
            print_imported(&source, &meta, started.elapsed(), json);
            Ok(())
        }
        ImageCommand::Build {
            names,
            all,
            compression,
            level,
            transforms,
            mtime,
            threads: _,
            json,
        } => {
            if all
                || compression.is_some()
                || level.is_some()
                || transforms.is_some()
                || mtime.is_some()
            {
                bail!(
                    "through --server, `image build NAME...` builds with each image's own settings; --all, --compression, --level, --transform and --mtime work on the wulf host"
                );
            }
            if names.is_empty() {
                bail!("name the images to build");
            }
            let mut built = Vec::new();
            for name in &names {
                let started = std::time::Instant::now();
                let job: serde_json::Value =
                    remote.send(Method::POST, &format!("/images/{name}/build"), None::<&()>)?;
                let meta = follow_job(remote, &job, json)?;
                if !json && let Some(build) = &meta.build {
                    print_built(name, build, started.elapsed());
                }
                built.push(meta);
            }
            if json {
                table::print_json(&json!(
                    built.iter().map(|m| image_json(m, &[])).collect::<Vec<_>>()
                ));
            }
            Ok(())
        }
        _ => Err(crate::not_remote(
            "image show|kernels|delete|exec|shell|syncuser|copy|rename",
        )),
    }
}

/// Follows a server's job with the same progress bars as local work, to its result.
fn follow_job(
    remote: &crate::remote::Remote,
    job: &serde_json::Value,
    quiet: bool,
) -> anyhow::Result<ImageMeta> {
    let bars = Bars::new(quiet);
    let path = format!("/jobs/{}", job["id"]);
    let (mut step, mut done) = (String::new(), 0u64);
    loop {
        let job: serde_json::Value = remote.get(&path)?;
        let now_step = job["step"].as_str().unwrap_or_default();
        if now_step != step {
            step = now_step.to_owned();
            done = 0;
            bars.start(&step, job["total"].as_u64());
        }
        let now_done = job["done"].as_u64().unwrap_or(0);
        bars.advance(now_done.saturating_sub(done));
        done = now_done;
        match job["state"].as_str() {
            Some("succeeded") => {
                bars.finish();
                return Ok(serde_json::from_value(job["result"].clone())?);
            }
            Some("failed") => {
                bars.finish();
                bail!("{}", job["error"].as_str().unwrap_or("the job failed"));
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(250)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_sizes_read_well() {
        assert_eq!(timestamp(0), "1970-01-01 00:00 UTC");
        assert_eq!(timestamp(1_795_000_000), "2026-11-18 11:06 UTC");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 * 1024 * 1024 + 512 * 1024), "3.5 MiB");
    }
}
