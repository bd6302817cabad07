//! Compression of built archives on every core.
//!
//! gzip is compressed the way pigz does it: the input is cut into blocks, each block is
//! deflated on its own thread with the previous 32 KiB as its dictionary and ends with a sync
//! flush, and the raw deflate streams are concatenated into one gzip member. The result is a
//! single ordinary gzip stream that the kernel, iPXE's `imgextract` and `gzip -d` all read.
//! zstd uses libzstd's own worker threads.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Compression as Level, FlushCompress, Status};
use serde::{Deserialize, Serialize};

/// Input per gzip block. pigz uses 128 KiB; larger blocks cost less per block with 2 cores.
const BLOCK: usize = 256 * 1024;
/// The deflate window: each block is primed with this much of the input before it.
const DICT: usize = 32 * 1024;

/// How a built archive is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Every kernel and iPXE can read it.
    #[default]
    Gzip,
    /// Smaller and faster; kernels >= 5.9 (`CONFIG_RD_ZSTD`).
    Zstd,
    /// No compression.
    None,
}

impl Compression {
    /// The file-name suffix of an archive compressed this way.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Gzip => "img.gz",
            Compression::Zstd => "img.zst",
            Compression::None => "img",
        }
    }

    /// The level used when none is given: gzip's and zstd's own defaults.
    pub fn default_level(self) -> u32 {
        match self {
            Compression::Gzip => 6,
            Compression::Zstd => 3,
            Compression::None => 0,
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::None => "none",
        })
    }
}

impl FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gzip" | "gz" => Ok(Compression::Gzip),
            "zstd" | "zst" => Ok(Compression::Zstd),
            "none" => Ok(Compression::None),
            other => Err(format!(
                "unknown compression `{other}`: use gzip, zstd or none"
            )),
        }
    }
}

/// A writer that compresses into `out`; [`Compressor::finish`] returns `out`.
pub enum Compressor<W: Write + Send> {
    Gzip(ParallelGzip<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    None(W),
}

impl<W: Write + Send> fmt::Debug for Compressor<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Compressor")
    }
}

impl<W: Write + Send + 'static> Compressor<W> {
    /// `threads` of 0 means one per core.
    pub fn new(out: W, compression: Compression, level: u32, threads: usize) -> io::Result<Self> {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        Ok(match compression {
            Compression::Gzip => Compressor::Gzip(ParallelGzip::new(out, level.min(9), threads)),
            Compression::Zstd => {
                let mut encoder = zstd::stream::write::Encoder::new(out, level as i32)?;
                if threads > 1 {
                    encoder.multithread(threads as u32)?;
                }
                encoder.include_checksum(true)?;
                Compressor::Zstd(encoder)
            }
            Compression::None => Compressor::None(out),
        })
    }

    pub fn finish(self) -> io::Result<W> {
        match self {
            Compressor::Gzip(gz) => gz.finish(),
            Compressor::Zstd(z) => z.finish(),
            Compressor::None(mut w) => {
                w.flush()?;
                Ok(w)
            }
        }
    }
}

impl<W: Write + Send + 'static> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Gzip(gz) => gz.write(buf),
            Compressor::Zstd(z) => z.write(buf),
            Compressor::None(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Gzip(_) => Ok(()),
            Compressor::Zstd(z) => z.flush(),
            Compressor::None(w) => w.flush(),
        }
    }
}

struct Job {
    seq: u64,
    dict: Option<Arc<Vec<u8>>>,
    data: Arc<Vec<u8>>,
    last: bool,
}

struct Done {
    seq: u64,
    deflated: io::Result<Vec<u8>>,
    crc: crc32fast::Hasher,
    len: usize,
}

/// pigz-style parallel gzip. Memory is bounded: at most two blocks per thread are in flight.
pub struct ParallelGzip<W: Write> {
    out: W,
    level: u32,
    buffer: Vec<u8>,
    previous: Option<Arc<Vec<u8>>>,
    jobs: Option<mpsc::SyncSender<Job>>,
    results: mpsc::Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
    next_seq: u64,
    next_out: u64,
    pending: BTreeMap<u64, Done>,
    in_flight: usize,
    max_in_flight: usize,
    crc: crc32fast::Hasher,
    total: u64,
    header_written: bool,
}

impl<W: Write> ParallelGzip<W> {
    pub fn new(out: W, level: u32, threads: usize) -> Self {
        let threads = threads.max(1);
        let (job_tx, job_rx) = mpsc::sync_channel::<Job>(threads * 2);
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let workers = (0..threads)
            .map(|_| {
                let jobs = Arc::clone(&job_rx);
                let done = done_tx.clone();
                std::thread::spawn(move || {
                    loop {
                        let job = match jobs.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        let mut crc = crc32fast::Hasher::new();
                        crc.update(&job.data);
                        let deflated =
                            deflate_block(level, job.dict.as_deref(), &job.data, job.last);
                        let result = Done {
                            seq: job.seq,
                            deflated,
                            crc,
                            len: job.data.len(),
                        };
                        if done.send(result).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        ParallelGzip {
            out,
            level,
            buffer: Vec::with_capacity(BLOCK),
            previous: None,
            jobs: Some(job_tx),
            results: done_rx,
            workers,
            next_seq: 0,
            next_out: 0,
            pending: BTreeMap::new(),
            in_flight: 0,
            max_in_flight: threads * 2 + 1,
            crc: crc32fast::Hasher::new(),
            total: 0,
            header_written: false,
        }
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        if !self.header_written {
            // No name, no mtime: the same input always gives the same bytes.
            let xfl = match self.level {
                9 => 2,
                0 | 1 => 4,
                _ => 0,
            };
            self.out
                .write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 3])?;
            self.header_written = true;
        }
        while self.in_flight >= self.max_in_flight {
            self.collect_one()?;
        }
        let data = Arc::new(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(BLOCK),
        ));
        let dict = self.previous.take().map(|prev| {
            if prev.len() <= DICT {
                prev
            } else {
                Arc::new(prev[prev.len() - DICT..].to_vec())
            }
        });
        self.previous = Some(Arc::clone(&data));
        let job = Job {
            seq: self.next_seq,
            dict,
            data,
            last,
        };
        self.next_seq += 1;
        self.in_flight += 1;
        self.jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("gzip workers are gone"))?
            .send(job)
            .map_err(|_| io::Error::other("a gzip worker thread died"))?;
        Ok(())
    }

    /// Waits for one result and writes every block that is now in order.
    fn collect_one(&mut self) -> io::Result<()> {
        let done = self
            .results
            .recv()
            .map_err(|_| io::Error::other("a gzip worker thread died"))?;
        self.pending.insert(done.seq, done);
        while let Some(done) = self.pending.remove(&self.next_out) {
            self.in_flight -= 1;
            self.next_out += 1;
            self.out.write_all(&done.deflated?)?;
            self.crc.combine(&done.crc);
            self.total += done.len as u64;
        }
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        while self.in_flight > 0 {
            self.collect_one()?;
        }
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        let crc = self.crc.clone().finalize();
        self.out.write_all(&crc.to_le_bytes())?;
        self.out.write_all(&(self.total as u32).to_le_bytes())?;
        self.out.flush()?;
        // `self` has a Drop-free layout, so moving `out` out is fine through mem::replace.
        Ok(self.out)
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let len = buf.len();
        while !buf.is_empty() {
            let room = BLOCK - self.buffer.len();
            let take = room.min(buf.len());
            self.buffer.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            if self.buffer.len() == BLOCK {
                self.submit(false)?;
            }
        }
        Ok(len)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Raw deflate of one block: primed with `dict`, ending byte-aligned (sync flush) unless it
/// is the last block, which ends the stream.
fn deflate_block(
    level: u32,
    dict: Option<&Vec<u8>>,
    data: &[u8],
    last: bool,
) -> io::Result<Vec<u8>> {
    let mut deflate = Compress::new(Level::new(level), false);
    if let Some(dict) = dict {
        deflate
            .set_dictionary(dict)
            .map_err(|e| io::Error::other(format!("deflate dictionary: {e}")))?;
    }
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    let mut input = data;
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let before = deflate.total_in();
        let status = deflate
            .compress_vec(input, &mut out, flush)
            .map_err(|e| io::Error::other(format!("deflate: {e}")))?;
        input = &input[(deflate.total_in() - before) as usize..];
        let finished = match status {
            Status::StreamEnd => true,
            // A sync flush is complete once all input is consumed and there was output room
            // left over (zlib's rule: avail_out != 0 after the flush).
            Status::Ok | Status::BufError => {
                !last && input.is_empty() && out.len() < out.capacity()
            }
        };
        if finished {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivial: words with a slowly changing counter.
        let mut out = Vec::with_capacity(len);
        let mut i = 0u64;
        while out.len() < len {
            out.extend_from_slice(
                format!("line {i} of the sample, value {}\n", i * 7919 % 1013).as_bytes(),
            );
            i += 1;
        }
        out.truncate(len);
        out
    }

    fn roundtrip(compression: Compression, data: &[u8], threads: usize) -> Vec<u8> {
        let mut c = Compressor::new(
            Vec::new(),
            compression,
            compression.default_level(),
            threads,
        )
        .unwrap();
        // Odd write sizes cross block boundaries at arbitrary points.
        for chunk in data.chunks(100_003) {
            c.write_all(chunk).unwrap();
        }
        let packed = c.finish().unwrap();
        let mut out = Vec::new();
        match compression {
            Compression::Gzip => {
                let mut d = flate2::read::GzDecoder::new(&packed[..]);
                d.read_to_end(&mut out).unwrap();
                // One member, nothing after it.
                assert_eq!(d.into_inner().len(), 0);
            }
            Compression::Zstd => out = zstd::decode_all(&packed[..]).unwrap(),
            Compression::None => out = packed,
        }
        out
    }

    #[test]
    fn parallel_gzip_is_one_valid_gzip_stream() {
        for len in [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 12345] {
            let data = sample(len);
            assert_eq!(roundtrip(Compression::Gzip, &data, 3), data, "len {len}");
        }
    }

    #[test]
    fn zstd_and_none_round_trip() {
        let data = sample(2 * BLOCK + 7);
        assert_eq!(roundtrip(Compression::Zstd, &data, 2), data);
        assert_eq!(roundtrip(Compression::None, &data, 1), data);
    }

    #[test]
    fn gzip_output_does_not_depend_on_the_thread_count() {
        let data = sample(5 * BLOCK / 2);
        let pack = |threads| {
            let mut c = Compressor::new(Vec::new(), Compression::Gzip, 6, threads).unwrap();
            c.write_all(&data).unwrap();
            c.finish().unwrap()
        };
        assert_eq!(pack(1), pack(4));
    }

    #[test]
    fn the_dictionary_keeps_the_ratio_close_to_serial_gzip() {
        let data = sample(4 * BLOCK);
        let mut c = Compressor::new(Vec::new(), Compression::Gzip, 6, 2).unwrap();
        c.write_all(&data).unwrap();
        let parallel = c.finish().unwrap().len();
        let mut serial = flate2::write::GzEncoder::new(Vec::new(), Level::new(6));
        serial.write_all(&data).unwrap();
        let serial = serial.finish().unwrap().len();
        assert!(
            parallel * 100 <= serial * 102,
            "parallel {parallel} vs serial {serial}"
        );
    }

    #[test]
    fn compression_names_parse() {
        assert_eq!("zstd".parse::<Compression>(), Ok(Compression::Zstd));
        let err = "lz4".parse::<Compression>().unwrap_err();
        assert!(err.contains("use gzip, zstd or none"), "{err}");
    }
}
