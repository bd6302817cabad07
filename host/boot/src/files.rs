//! Large files over HTTP, with `HEAD`, a single `Range`, strong `ETag`s from content hashes
//! and `Last-Modified`/`If-Modified-Since`. A blob may be several files sent back to back (a
//! node's overlay archive is its shared segments followed by its own); ranges span them.
//!
//! The response carries no body bytes: it carries the open files and byte ranges
//! ([`SendFile`]), and the connection ([`crate::conn`]) hands them to `sendfile(2)`, so the
//! kernel copies from the page cache to the socket and memory stays flat whatever the image
//! size and however many nodes boot at once. The files are opened here, before the headers
//! are written: a file replaced meanwhile (a rebuild renames over it) is still sent whole,
//! from the copy that was opened.
//!
//! Transfers of one file share one descriptor ([`OpenFiles`]; sendfile reads at an explicit
//! offset), so 10,000 nodes fetching the same image hold one descriptor for it, not 10,000.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use wulf_core::BootFile;

/// The body of a file response: (file, offset, length) pieces, in order.
#[derive(Debug)]
pub struct SendFile {
    pub pieces: Vec<(Arc<File>, u64, u64)>,
}

struct Part {
    file: Arc<File>,
    len: u64,
}

/// Files being sent, by path: a request for a file already open shares its descriptor while
/// the path still names that same file (device, inode, size and mtime unchanged).
#[derive(Debug, Default)]
pub struct OpenFiles {
    open: Mutex<HashMap<PathBuf, Weak<File>>>,
}

/// What tells one version of a file from another.
fn identity(meta: &std::fs::Metadata) -> (u64, u64, u64, i64, i64) {
    (
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
    )
}

impl OpenFiles {
    /// `path` opened (or the open one shared), with its metadata.
    fn open(&self, path: &Path) -> std::io::Result<(Arc<File>, std::fs::Metadata)> {
        let current = std::fs::metadata(path)?;
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(file) = open.get(path).and_then(Weak::upgrade)
            && let Ok(meta) = file.metadata()
            && identity(&meta) == identity(&current)
        {
            return Ok((file, meta));
        }
        let file = Arc::new(File::open(path)?);
        let meta = file.metadata()?;
        if open.len() >= 1024 {
            open.retain(|_, f| f.strong_count() > 0);
        }
        open.insert(path.to_owned(), Arc::downgrade(&file));
        Ok((file, meta))
    }
}

/// Parses a single `bytes=` range against `len`; `None` for no usable range header (serve the
/// whole), `Err` for an unsatisfiable one.
fn parse_range(value: &str, len: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        // Several ranges: sending the whole representation is allowed (RFC 9110 14.2).
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let (start, end) = (start.trim(), end.trim());
    let range = if start.is_empty() {
        let suffix: u64 = end.parse().ok()?;
        if suffix == 0 {
            return Some(Err(()));
        }
        (len.saturating_sub(suffix), len.checked_sub(1)?)
    } else {
        let start: u64 = start.parse().ok()?;
        let end: u64 = if end.is_empty() {
            len.saturating_sub(1)
        } else {
            end.parse::<u64>().ok()?.min(len.saturating_sub(1))
        };
        if start >= len || end < start {
            return Some(Err(()));
        }
        (start, end)
    };
    Some(Ok(range))
}

fn etag_matches(value: &str, etag: &str) -> bool {
    value
        .split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == etag)
}

/// Serves `blob` for a request with `headers`; `head` sends headers only.
pub fn serve(files: &OpenFiles, blob: &BootFile, headers: &HeaderMap, head: bool) -> Response {
    let mut parts = Vec::with_capacity(blob.parts.len());
    let mut modified = SystemTime::UNIX_EPOCH;
    for path in &blob.parts {
        match files.open(path) {
            Ok((file, meta)) => {
                modified = modified.max(meta.modified().unwrap_or(SystemTime::UNIX_EPOCH));
                parts.push(Part {
                    file,
                    len: meta.len(),
                });
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "a file to serve is gone");
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the file is being rebuilt; retry\n",
                )
                    .into_response();
            }
        }
    }
    let len: u64 = parts.iter().map(|p| p.len).sum();
    let etag = format!("\"{}\"", blob.etag);
    let last_modified = httpdate::fmt_http_date(modified);

    let mut response_headers = HeaderMap::new();
    let set = |h: &mut HeaderMap, name, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    };
    set(&mut response_headers, header::ETAG, &etag);
    set(&mut response_headers, header::LAST_MODIFIED, &last_modified);
    set(&mut response_headers, header::ACCEPT_RANGES, "bytes");
    set(
        &mut response_headers,
        header::CONTENT_TYPE,
        "application/octet-stream",
    );
    set(&mut response_headers, header::CACHE_CONTROL, "no-cache");

    let header_str = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let not_modified = match header_str(header::IF_NONE_MATCH) {
        Some(tags) => etag_matches(tags, &etag),
        None => header_str(header::IF_MODIFIED_SINCE)
            .and_then(|d| httpdate::parse_http_date(d).ok())
            .is_some_and(|since| {
                httpdate::fmt_http_date(since) == last_modified || since > modified
            }),
    };
    if not_modified {
        return (StatusCode::NOT_MODIFIED, response_headers).into_response();
    }

    // If-Range with another validator means the client's copy is stale: send it all.
    let range_allowed =
        header_str(header::IF_RANGE).is_none_or(|v| v == etag || v == last_modified);
    let range = header_str(header::RANGE)
        .filter(|_| range_allowed)
        .and_then(|v| parse_range(v, len));
    let (status, start, end) = match range {
        Some(Ok((start, end))) => {
            set(
                &mut response_headers,
                header::CONTENT_RANGE,
                &format!("bytes {start}-{end}/{len}"),
            );
            (StatusCode::PARTIAL_CONTENT, start, end + 1)
        }
        Some(Err(())) => {
            set(
                &mut response_headers,
                header::CONTENT_RANGE,
                &format!("bytes */{len}"),
            );
            return (StatusCode::RANGE_NOT_SATISFIABLE, response_headers).into_response();
        }
        None => (StatusCode::OK, 0, len),
    };
    set(
        &mut response_headers,
        header::CONTENT_LENGTH,
        &(end - start).to_string(),
    );
    if head || end == start {
        return (status, response_headers).into_response();
    }

    // The pieces of every part the range touches.
    let mut pieces = Vec::new();
    let mut offset = 0;
    for part in parts {
        let (part_start, part_end) = (offset, offset + part.len);
        offset = part_end;
        if part_end <= start || part_start >= end {
            continue;
        }
        let from = start.saturating_sub(part_start);
        let to = end.min(part_end) - part_start;
        pieces.push((part.file, from, to - from));
    }
    let mut response = (status, response_headers).into_response();
    response
        .extensions_mut()
        .insert(Arc::new(SendFile { pieces }));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfers_of_one_file_share_a_descriptor_until_it_is_replaced() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("image");
        std::fs::write(&path, b"one").unwrap_or_else(|e| panic!("{e}"));
        let files = OpenFiles::default();
        let open = |files: &OpenFiles| files.open(&path).unwrap_or_else(|e| panic!("{e}")).0;
        let (a, b) = (open(&files), open(&files));
        assert!(Arc::ptr_eq(&a, &b));
        let next = dir.path().join("next");
        std::fs::write(&next, b"two!").unwrap_or_else(|e| panic!("{e}"));
        std::fs::rename(&next, &path).unwrap_or_else(|e| panic!("{e}"));
        let c = open(&files);
        assert!(!Arc::ptr_eq(&a, &c), "a replaced file is opened again");
        drop((a, b, c));
        assert!(open(&files).metadata().is_ok_and(|m| m.len() == 4));
    }

    #[test]
    fn ranges_parse_like_rfc_9110() {
        assert_eq!(parse_range("bytes=0-99", 1000), Some(Ok((0, 99))));
        assert_eq!(parse_range("bytes=900-", 1000), Some(Ok((900, 999))));
        assert_eq!(parse_range("bytes=-100", 1000), Some(Ok((900, 999))));
        assert_eq!(parse_range("bytes=500-5000", 1000), Some(Ok((500, 999))));
        assert_eq!(parse_range("bytes=1000-", 1000), Some(Err(())));
        assert_eq!(parse_range("bytes=5-1", 1000), Some(Err(())));
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), None);
        assert_eq!(parse_range("items=0-1", 1000), None);
    }
}
