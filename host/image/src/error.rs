//! What can go wrong with an image, said so that the admin knows what to fix.
//!
//! Each variant names its subject (the image, the source, the layer, the entry) in its fields;
//! an underlying error is chained with `#[source]`, never repeated in the message.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    // What the admin typed: names, sources, references, credentials.
    #[error(
        "image name {name:?} is not valid: use letters, digits, `_`, `-`, `.` and `:` (not starting with `.`)"
    )]
    BadName { name: String },
    /// `docker://<reference>` that is not a registry reference (empty, upper case, ...).
    #[error(
        "docker://{reference} is not a valid image reference; expected registry/repository[:tag|@sha256:digest], e.g. docker://registry.example.org/rocky:9"
    )]
    BadReference {
        reference: String,
        #[source]
        source: oci_client::ParseError,
    },
    /// A plain path given as a source that cannot be looked at.
    #[error(
        "{input}: cannot read it (a source is docker://registry/repo:tag, oci:<dir>[:tag], oci-archive:<file>[:tag], docker-archive:<file> or a directory)"
    )]
    UnreadableSource {
        input: String,
        #[source]
        source: io::Error,
    },
    /// A directory or tar file given as a source that holds no image.
    #[error("{} {reason}", .path.display())]
    NotAnImage { path: PathBuf, reason: &'static str },
    #[error("a password is needed for user {user}: set WULF_OCI_PASSWORD or answer the prompt")]
    NoPassword { user: String },

    /// The registry refused or could not be reached; `what` is "the manifest of <image>", ...
    #[error("cannot fetch {what} from {registry}")]
    Registry {
        what: String,
        registry: String,
        #[source]
        source: Box<oci_client::errors::OciDistributionError>,
    },

    // How an image source is put together: index, manifests, config.
    /// A manifest, index or image config that is not the JSON it should be; `kind` says which.
    #[error("{what} is not a valid {kind}")]
    BadManifest {
        what: String,
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A valid document of the wrong kind (a manifest where an index belongs, or the reverse).
    #[error("{what} is not {expected}")]
    WrongKind {
        what: String,
        expected: &'static str,
    },
    #[error("{what}: the manifest has {layers} layers but the config lists {diff_ids} diff_ids")]
    LayerCount {
        what: String,
        layers: usize,
        diff_ids: usize,
    },
    #[error(
        "{what} has no image for platform {platform}; it has: {}. Choose one with --platform",
        list_or(.available, "none with a platform")
    )]
    NoSuchPlatform {
        what: String,
        platform: String,
        /// The platforms there are, as `os/arch[/variant]`.
        available: Vec<String>,
    },
    #[error("{what} has no image tagged {tag:?}; its tags: {}", list_or(.tags, "none"))]
    NoSuchTag {
        what: String,
        tag: String,
        tags: Vec<String>,
    },
    /// No image was named and the source does not hold exactly one.
    #[error("{what} {}", holdings(*.count, .tags))]
    NotOneImage {
        what: String,
        count: usize,
        /// The tags that would name one.
        tags: Vec<String>,
    },
    #[error("{what}: bad path {path:?} in manifest.json")]
    BadArchivePath { what: String, path: String },

    // Digests.
    /// A digest wulf cannot use; `reason` says why ("is malformed", ...).
    #[error("{what}: digest {digest:?} {reason}")]
    BadDigest {
        what: String,
        digest: String,
        reason: &'static str,
    },
    /// Content whose digest is not the one `claimed_by` gives for it.
    #[error(
        "{what}: {subject}'s digest is {actual}, but {claimed_by} says {expected}: {subject} is corrupt"
    )]
    DigestMismatch {
        what: String,
        /// "the blob", "the uncompressed layer", ...
        subject: &'static str,
        /// "the manifest", "the image config", ...
        claimed_by: &'static str,
        actual: String,
        expected: String,
    },

    // Layers, archives and the rootfs tar.
    /// A layer or archive that cannot be read as what it should be; `problem` says how.
    #[error("{archive}: {problem}")]
    BadArchive {
        archive: String,
        problem: &'static str,
        #[source]
        source: io::Error,
    },
    /// One entry of a layer, archive, directory or rootfs that wulf refuses; the entry and
    /// why are in the source.
    #[error("{archive}")]
    BadEntry {
        archive: String,
        #[source]
        source: EntryError,
    },
    #[error("{what}: expected {expected} bytes, the archive ends after {got}")]
    Truncated {
        what: String,
        expected: u64,
        got: u64,
    },
    #[error("/{} line {line}: bad pattern {pattern:?}", crate::pack::EXCLUDES_FILE)]
    BadExclude {
        line: usize,
        pattern: String,
        #[source]
        source: globset::Error,
    },

    // The store.
    #[error("no image named `{0}`: `wulf image list` shows the images there are")]
    NotFound(String),
    #[error("image `{0}` already exists: use --force to replace it")]
    Exists(String),
    /// An `image.toml` that does not parse.
    #[error("{} is not a valid image record", .path.display())]
    BadMeta {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("cannot serialize image {image}")]
    Serialize {
        image: String,
        #[source]
        source: toml::ser::Error,
    },

    // Files read out of an image (`include_from` in templates).
    #[error("{path:?}: give an absolute path inside the image, without `..`")]
    BadImagePath { path: String },
    #[error("{path} is not a file in image `{image}` (or a link to one)")]
    NotAFile { image: String, path: String },
    /// The network drivers for a two-stage boot could not be gathered.
    #[error("stage one's network drivers: {message}")]
    Stage1 { message: String },
    #[error(
        "{path} in image `{image}` has {size} bytes; include_from reads files up to {} MiB",
        crate::store::ImageFiles::MAX_BYTES >> 20
    )]
    FileTooLarge {
        image: String,
        path: String,
        size: u64,
    },

    #[error(
        "image `{image}` was replaced while the command ran (another exec or an import): nothing was written; run it again"
    )]
    ChangedMeanwhile { image: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Plugin(#[from] wulf_core::ExtensionError),
}

/// What is wrong with one entry of a layer, an archive, a directory or a rootfs tar. It comes
/// as the source of [`ImageError::BadEntry`], which names the archive.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("path {path:?} has a `..` component")]
    DotDot { path: String },
    #[error("file name {name:?} is not UTF-8")]
    NotUtf8 { name: OsString },
    #[error("{path:?}: link without a target")]
    NoLinkTarget { path: String },
    #[error(
        "{path:?} is a GNU sparse file, which wulf does not read; rebuild the layer without --sparse"
    )]
    Sparse { path: String },
    #[error("{path:?} has unsupported tar entry type {kind:?}")]
    UnsupportedType { path: String, kind: tar::EntryType },
    /// A header field (`mode`, `uid`, `gid`) that does not parse.
    #[error("{path:?}: bad {field}")]
    BadHeader {
        path: String,
        field: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "entry {path} would be written through the symlink {link} -> {target}; refusing to follow it"
    )]
    ThroughSymlink {
        path: String,
        link: String,
        target: String,
    },
    #[error("entry {path} is inside {parent}, which is not a directory")]
    InsideNonDirectory { path: String, parent: String },
    /// A hard link whose target path is refused.
    #[error("hard link {path}")]
    HardLink {
        path: String,
        #[source]
        source: Box<EntryError>,
    },
    #[error("hard link {path} points to the root")]
    HardLinkToRoot { path: String },
    /// A hard link to something that is not a file there is; `reason` says what it is.
    #[error("hard link {path} points to {target}, which {reason}")]
    HardLinkTarget {
        path: String,
        target: String,
        reason: &'static str,
    },
}

impl ImageError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> ImageError {
        let context = context.into();
        move |source| ImageError::Io { context, source }
    }

    pub fn at(path: &Path) -> impl FnOnce(io::Error) -> ImageError {
        ImageError::io(path.display().to_string())
    }
}

/// `a, b, c`, or `none` when there are none.
fn list_or(items: &[String], none: &str) -> String {
    if items.is_empty() {
        none.to_owned()
    } else {
        items.join(", ")
    }
}

/// How many images a source holds, and how to pick one.
fn holdings(count: usize, tags: &[String]) -> String {
    match count {
        0 => "holds no image".to_owned(),
        _ if !tags.is_empty() => format!(
            "holds {count} images: name one with `:<tag>` ({})",
            tags.join(", ")
        ),
        _ => format!("holds {count} images; wulf imports archives of one image"),
    }
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use wulf_core::provision::error_chain;

    use super::*;
    use crate::oci::{self, Parsed};
    use crate::rootfs::normalize;

    /// Causes are chained, not repeated: the one-line rendering reads as one sentence.
    #[test]
    fn entries_name_their_archive_and_chain_why() {
        let through = ImageError::BadEntry {
            archive: "layer 2".into(),
            source: EntryError::ThroughSymlink {
                path: "etc/passwd".into(),
                link: "etc".into(),
                target: "/host/etc".into(),
            },
        };
        assert_eq!(
            error_chain(&through),
            "layer 2: entry etc/passwd would be written through the symlink etc -> /host/etc; refusing to follow it"
        );
        let escaping = ImageError::BadEntry {
            archive: "layer 1".into(),
            source: EntryError::HardLink {
                path: "bin/x".into(),
                source: Box::new(normalize("../../etc/shadow").unwrap_err()),
            },
        };
        assert_eq!(
            error_chain(&escaping),
            r#"layer 1: hard link bin/x: path "../../etc/shadow" has a `..` component"#
        );
    }

    #[test]
    fn choosing_an_image_says_what_there_is() {
        let index = br#"{"manifests":[
            {"digest":"sha256:a","annotations":{"org.opencontainers.image.ref.name":"v1"}},
            {"digest":"sha256:b"}]}"#;
        let Parsed::Index(m) = oci::parse_manifest(index, "layout").unwrap() else {
            panic!("not an index")
        };
        let missing = oci::select_tag(&m, Some("v2"), "layout").unwrap_err();
        assert_eq!(
            missing.to_string(),
            r#"layout has no image tagged "v2"; its tags: v1"#
        );
        let several = oci::select_tag(&m, None, "layout").unwrap_err();
        assert_eq!(
            several.to_string(),
            "layout holds 2 images: name one with `:<tag>` (v1)"
        );
        let none = oci::select_tag(&[], None, "layout").unwrap_err();
        assert_eq!(none.to_string(), "layout holds no image");
    }

    #[test]
    fn wrapped_errors_are_sources() {
        let bad = oci::parse_manifest(b"{", "manifest of reg/x:1").unwrap_err();
        assert_eq!(
            bad.to_string(),
            "manifest of reg/x:1 is not a valid manifest"
        );
        assert!(std::error::Error::source(&bad).is_some());

        let reference = crate::Source::parse("docker://").unwrap_err();
        assert!(
            error_chain(&reference).ends_with(": repository name must have at least one component"),
            "{reference}"
        );

        let refused = ImageError::Registry {
            what: "the manifest of reg/x:1".into(),
            registry: "reg".into(),
            source: Box::new(oci_client::errors::OciDistributionError::ServerError {
                code: 404,
                url: "https://reg/v2/x/manifests/1".into(),
                message: "manifest unknown".into(),
            }),
        };
        assert_eq!(
            error_chain(&refused),
            "cannot fetch the manifest of reg/x:1 from reg: Server error: url https://reg/v2/x/manifests/1, code: 404, message: manifest unknown"
        );
    }
}
