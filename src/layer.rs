//! The deterministic layer writer: a [`Tree`] becomes a tar stream (sorted
//! paths, ustar headers with PAX records for long names, no user or group
//! names, times clamped by the tree), hashed for the diff_id, compressed in
//! fixed 4 MiB chunks on a shared thread pool and hashed again for the blob
//! digest. Chunks are independent gzip members (or zstd frames), so the bytes
//! are the same whatever the number of threads, and memory stays flat: a
//! fixed number of chunks is in flight across the whole build, however many
//! layers are written at once.
//!
//! The tar writer is hand-written, not the `tar` crate's `Builder`: the bytes
//! of every header are part of the layer digest, and the writer fixes each
//! field (ustar magic, zero uid/gid names, PAX records only where a name
//! needs one, clamped times), while `Builder` chooses GNU or ustar headers,
//! long-name extensions and metadata from the host file on its own and
//! may change them between versions, changing every digest.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};

use sha2::{Digest, Sha256};

use crate::image::spec::Compression;
use crate::inputs::{Data, Kind, Tree};

/// Bytes of uncompressed tar per independently compressed chunk.
pub const CHUNK: usize = 4 << 20;
/// gzip level: 6, as `gzip -6`, the baseline users compare sizes with.
/// libdeflate at 6 is both faster and smaller than zlib (and zlib-rs) at 6.
const GZIP_LEVEL: i32 = 6;
/// Chunks in flight across the build, beyond one per compression thread.
const SPARE_CHUNKS: usize = 2;
const ZSTD_LEVEL: i32 = 3;

/// Recorded in every layer's annotations: the bytes of a compressed layer
/// depend on it, so a change here is a change of digests.
pub fn compressor_id(c: Compression) -> String {
    match c {
        Compression::Gzip => format!("libdeflate-1/gzip-{GZIP_LEVEL}/members-4MiB"),
        Compression::Zstd => format!(
            "zstd-{}/level-{ZSTD_LEVEL}/frames-4MiB",
            zstd::zstd_safe::version_number()
        ),
        Compression::None => "none".into(),
    }
}

pub fn media_type(c: Compression) -> &'static str {
    match c {
        Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        Compression::None => "application/vnd.oci.image.layer.v1.tar",
    }
}

struct Job {
    data: Vec<u8>,
    codec: Compression,
    reply: SyncSender<io::Result<Vec<u8>>>,
}

/// Compression threads shared by every layer of a build, and the permits
/// that bound how many chunks are in flight (so memory does not grow with
/// the number of layers written at once).
pub struct Pool {
    tx: Option<mpsc::Sender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    permits: Mutex<usize>,
    freed: Condvar,
}

impl Pool {
    pub fn new(size: usize) -> Pool {
        let size = size.max(1);
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..size)
            .map(|_| {
                let rx = Arc::clone(&rx);
                std::thread::spawn(move || {
                    let mut gzip = Gzip::new();
                    loop {
                        let job = {
                            let Ok(guard) = rx.lock() else { return };
                            match guard.recv() {
                                Ok(j) => j,
                                Err(_) => return,
                            }
                        };
                        let out = match job.codec {
                            Compression::Gzip => gzip.compress(&job.data),
                            c => compress_chunk(&job.data, c),
                        };
                        let _ = job.reply.send(out);
                    }
                })
            })
            .collect();
        Pool {
            tx: Some(tx),
            threads,
            permits: Mutex::new(size + SPARE_CHUNKS),
            freed: Condvar::new(),
        }
    }

    fn submit(&self, data: Vec<u8>, codec: Compression) -> Receiver<io::Result<Vec<u8>>> {
        let (reply, rx) = mpsc::sync_channel(1);
        if let Some(tx) = &self.tx {
            let _ = tx.send(Job { data, codec, reply });
        }
        rx
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.tx.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A libdeflate compressor writing one gzip member per chunk.
pub struct Gzip(libdeflater::Compressor);

impl Gzip {
    pub fn new() -> Gzip {
        let level = libdeflater::CompressionLvl::new(GZIP_LEVEL).expect("level 6 is valid");
        Gzip(libdeflater::Compressor::new(level))
    }

    pub fn compress(&mut self, data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = vec![0u8; self.0.gzip_compress_bound(data.len())];
        let n = self
            .0
            .gzip_compress(data, &mut out)
            .map_err(|e| io::Error::other(format!("gzip: {e:?}")))?;
        out.truncate(n);
        out.shrink_to_fit();
        Ok(out)
    }
}

pub fn compress_chunk(data: &[u8], codec: Compression) -> io::Result<Vec<u8>> {
    match codec {
        Compression::Gzip => Gzip::new().compress(data),
        Compression::Zstd => zstd::bulk::compress(data, ZSTD_LEVEL),
        Compression::None => Ok(data.to_vec()),
    }
}

/// What a finished blob is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlobInfo {
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: String,
    /// `sha256:<hex>` of the blob as stored.
    pub digest: String,
    pub size: u64,
    pub uncompressed_size: u64,
}

/// A `Write` sink that hashes, chunks, compresses and writes a layer blob.
pub struct BlobWriter<'p> {
    pool: &'p Pool,
    codec: Compression,
    buf: Vec<u8>,
    diff: Sha256,
    digest: Sha256,
    out: File,
    out_path: PathBuf,
    pending: VecDeque<Receiver<io::Result<Vec<u8>>>>,
    size: u64,
    uncompressed: u64,
}

impl<'p> BlobWriter<'p> {
    pub fn create(
        pool: &'p Pool,
        codec: Compression,
        out_path: &Path,
    ) -> io::Result<BlobWriter<'p>> {
        Ok(BlobWriter {
            pool,
            codec,
            buf: Vec::with_capacity(CHUNK),
            diff: Sha256::new(),
            digest: Sha256::new(),
            out: File::create(out_path)?,
            out_path: out_path.to_path_buf(),
            pending: VecDeque::new(),
            size: 0,
            uncompressed: 0,
        })
    }

    fn ship(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.diff.update(&chunk);
        self.uncompressed += chunk.len() as u64;
        if self.codec == Compression::None {
            return self.emit(&chunk);
        }
        // a permit per chunk in flight; while waiting for one, collect our
        // own finished chunks (each returns its permit), so writers sharing
        // the pool never wait on each other for ever
        loop {
            {
                let mut free = self.pool.permits.lock().expect("permits");
                if *free > 0 {
                    *free -= 1;
                    break;
                }
                if self.pending.is_empty() {
                    drop(self.pool.freed.wait(free).expect("permits"));
                    continue;
                }
            }
            self.take_one()?;
        }
        self.pending.push_back(self.pool.submit(chunk, self.codec));
        Ok(())
    }

    fn take_one(&mut self) -> io::Result<()> {
        if let Some(rx) = self.pending.pop_front() {
            let bytes = rx
                .recv()
                .map_err(|_| io::Error::other("compression thread died"));
            *self.pool.permits.lock().expect("permits") += 1;
            self.pool.freed.notify_one();
            self.emit(&bytes??)?;
        }
        Ok(())
    }

    fn emit(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.digest.update(bytes);
        self.size += bytes.len() as u64;
        self.out.write_all(bytes)
    }

    /// Flushes, fsyncs and returns the blob's identity.
    pub fn finish(mut self) -> io::Result<(BlobInfo, PathBuf)> {
        self.ship()?;
        while !self.pending.is_empty() {
            self.take_one()?;
        }
        self.out.sync_all()?;
        let info = BlobInfo {
            diff_id: format!("sha256:{}", hex::encode(self.diff.finalize_reset())),
            digest: format!("sha256:{}", hex::encode(self.digest.finalize_reset())),
            size: self.size,
            uncompressed_size: self.uncompressed,
        };
        Ok((info, self.out_path.clone()))
    }
}

impl Write for BlobWriter<'_> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            let room = CHUNK - self.buf.len();
            let take = room.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == CHUNK {
                self.ship()?;
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes a tar header (with a PAX record first when a field does not fit).
pub struct TarHeader<'a> {
    pub path: &'a str,
    pub kind: u8,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: u64,
    pub link: &'a str,
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0width$o}", v, width = field.len() - 1);
    field[..s.len()].copy_from_slice(s.as_bytes());
    field[s.len()] = 0;
}

fn fits_octal(v: u64, len: usize) -> bool {
    v < 1u64 << (3 * (len - 1))
}

fn pax_record(out: &mut Vec<u8>, key: &str, value: &str) {
    // the length prefix counts itself
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}").len() + body.len() != len {
        len = format!("{len}").len() + body.len();
    }
    out.extend_from_slice(format!("{len}{body}").as_bytes());
}

#[allow(clippy::too_many_arguments)] // the fields of a tar header
fn raw_header(
    path: &[u8],
    kind: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    link: &[u8],
) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = path.len().min(100);
    h[..n].copy_from_slice(&path[..n]);
    octal(&mut h[100..108], mode as u64);
    octal(&mut h[108..116], uid);
    octal(&mut h[116..124], gid);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[156] = kind;
    let n = link.len().min(100);
    h[157..157 + n].copy_from_slice(&link[..n]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| *b as u32).sum();
    let s = format!("{:06o}\0 ", sum);
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

pub fn write_header(w: &mut impl Write, t: &TarHeader) -> io::Result<()> {
    let mut pax = Vec::new();
    if t.path.len() > 100 {
        pax_record(&mut pax, "path", t.path);
    }
    if t.link.len() > 100 {
        pax_record(&mut pax, "linkpath", t.link);
    }
    if !fits_octal(t.size, 12) {
        pax_record(&mut pax, "size", &t.size.to_string());
    }
    if !fits_octal(t.uid as u64, 8) {
        pax_record(&mut pax, "uid", &t.uid.to_string());
    }
    if !fits_octal(t.gid as u64, 8) {
        pax_record(&mut pax, "gid", &t.gid.to_string());
    }
    if !pax.is_empty() {
        let name = format!(
            "PaxHeaders/{}",
            t.path.rsplit('/').find(|s| !s.is_empty()).unwrap_or("")
        );
        let h = raw_header(
            name.as_bytes(),
            b'x',
            0o644,
            0,
            0,
            pax.len() as u64,
            t.mtime,
            b"",
        );
        w.write_all(&h)?;
        w.write_all(&pax)?;
        pad(w, pax.len() as u64)?;
    }
    let clamp = |v: u64, len: usize| if fits_octal(v, len) { v } else { 0 };
    let h = raw_header(
        t.path.as_bytes(),
        t.kind,
        t.mode,
        clamp(t.uid as u64, 8),
        clamp(t.gid as u64, 8),
        clamp(t.size, 12),
        clamp(t.mtime, 12),
        t.link.as_bytes(),
    );
    w.write_all(&h)
}

pub fn pad(w: &mut impl Write, size: u64) -> io::Result<()> {
    let rem = (size % 512) as usize;
    if rem != 0 {
        w.write_all(&[0u8; 512][..512 - rem])?;
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("cannot write layer blob `{}`", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{}` changed while the layer was written (expected {expected} bytes, found {found}); build again", path.display())]
    Changed {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("cannot read `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Writes `tree` as a tar stream into `w`.
pub fn write_tree(tree: &Tree, w: &mut impl Write, out: &Path) -> Result<(), LayerError> {
    let werr = |source| LayerError::Write {
        path: out.to_path_buf(),
        source,
    };
    // the first path of each hard-link group holds the data
    let mut holders: BTreeMap<u64, &str> = BTreeMap::new();
    let mut copy_buf = vec![0u8; 1 << 20];
    for (path, e) in tree.entries() {
        match &e.kind {
            Kind::Dir => {
                let p = format!("{path}/");
                write_header(
                    w,
                    &TarHeader {
                        path: &p,
                        kind: b'5',
                        mode: e.mode,
                        uid: e.uid,
                        gid: e.gid,
                        size: 0,
                        mtime: e.mtime,
                        link: "",
                    },
                )
                .map_err(werr)?;
            }
            Kind::Symlink(target) => write_header(
                w,
                &TarHeader {
                    path,
                    kind: b'2',
                    mode: 0o777,
                    uid: e.uid,
                    gid: e.gid,
                    size: 0,
                    mtime: e.mtime,
                    link: target,
                },
            )
            .map_err(werr)?,
            Kind::File { data, size, group } => {
                if let Some(holder) = holders.get(group) {
                    write_header(
                        w,
                        &TarHeader {
                            path,
                            kind: b'1',
                            mode: e.mode,
                            uid: e.uid,
                            gid: e.gid,
                            size: 0,
                            mtime: e.mtime,
                            link: holder,
                        },
                    )
                    .map_err(werr)?;
                    continue;
                }
                holders.insert(*group, path);
                write_header(
                    w,
                    &TarHeader {
                        path,
                        kind: b'0',
                        mode: e.mode,
                        uid: e.uid,
                        gid: e.gid,
                        size: *size,
                        mtime: e.mtime,
                        link: "",
                    },
                )
                .map_err(werr)?;
                match data {
                    Data::Bytes(b) => w.write_all(b).map_err(werr)?,
                    Data::Path(p) => copy_exact(p, *size, w, &mut copy_buf, out)?,
                }
                pad(w, *size).map_err(werr)?;
            }
        }
    }
    w.write_all(&[0u8; 1024]).map_err(werr)
}

fn copy_exact(
    p: &Path,
    size: u64,
    w: &mut impl Write,
    buf: &mut [u8],
    out: &Path,
) -> Result<(), LayerError> {
    let rerr = |source| LayerError::Read {
        path: p.to_path_buf(),
        source,
    };
    let mut f = File::open(p).map_err(rerr)?;
    let mut left = size;
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = f.read(&mut buf[..want]).map_err(rerr)?;
        if n == 0 {
            return Err(LayerError::Changed {
                path: p.to_path_buf(),
                expected: size,
                found: size - left,
            });
        }
        w.write_all(&buf[..n]).map_err(|source| LayerError::Write {
            path: out.to_path_buf(),
            source,
        })?;
        left -= n as u64;
    }
    if f.read(&mut buf[..1]).map_err(rerr)? != 0 {
        let found = std::fs::metadata(p).map(|m| m.len()).unwrap_or(size + 1);
        return Err(LayerError::Changed {
            path: p.to_path_buf(),
            expected: size,
            found,
        });
    }
    Ok(())
}

/// Builds `tree` into a compressed blob at `out`.
pub fn build_blob(
    tree: &Tree,
    pool: &Pool,
    codec: Compression,
    out: &Path,
) -> Result<BlobInfo, LayerError> {
    let werr = |source| LayerError::Write {
        path: out.to_path_buf(),
        source,
    };
    let mut w = BlobWriter::create(pool, codec, out).map_err(werr)?;
    write_tree(tree, &mut w, out)?;
    let (info, _) = w.finish().map_err(werr)?;
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::{Entry, Origin, Skeleton};

    fn sample_tree() -> Tree {
        let o = Origin {
            source: "t".into(),
            entry: "e".into(),
        };
        let mut t = Tree::new(1_700_000_000, Skeleton::default());
        let file = |b: &[u8], mode| Entry {
            kind: Kind::File {
                data: Data::Bytes(b.into()),
                size: b.len() as u64,
                group: 0,
            },
            mode,
            uid: 0,
            gid: 0,
            mtime: 2_000_000_000,
        };
        t.insert("usr/bin/su", file(b"setuid", 0o4755), &o).unwrap();
        t.insert("etc/shadow", file(b"secret", 0o600), &o).unwrap();
        let long = format!("opt/{}/file", "x".repeat(150));
        t.insert(&long, file(b"long", 0o644), &o).unwrap();
        t.insert(
            "bin",
            Entry {
                kind: Kind::Symlink("usr/bin".into()),
                mode: 0o777,
                uid: 0,
                gid: 0,
                mtime: 0,
            },
            &o,
        )
        .unwrap();
        t
    }

    fn tar_bytes(t: &Tree) -> Vec<u8> {
        let mut v = Vec::new();
        write_tree(t, &mut v, Path::new("mem")).unwrap();
        v
    }

    #[test]
    fn tar_is_read_back_with_modes_links_long_names_and_clamped_times() {
        let bytes = tar_bytes(&sample_tree());
        let mut ar = tar::Archive::new(&bytes[..]);
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            seen.push((
                String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                h.mode().unwrap(),
                h.mtime().unwrap(),
                h.username_bytes().map(|b| b.to_vec()).unwrap_or_default(),
            ));
        }
        let names: Vec<_> = seen.iter().map(|s| s.0.clone()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "entries must be sorted");
        assert!(
            names.contains(&"etc/".to_string()),
            "parents are emitted: {names:?}"
        );
        assert!(
            names.iter().any(|n| n.len() > 150),
            "long name via PAX: {names:?}"
        );
        let su = seen.iter().find(|s| s.0 == "usr/bin/su").unwrap();
        assert_eq!(su.1, 0o4755);
        assert_eq!(su.2, 1_700_000_000, "mtime clamped to created");
        assert!(su.3.is_empty(), "no user name");
        assert_eq!(seen.iter().find(|s| s.0 == "etc/shadow").unwrap().1, 0o600);
    }

    #[test]
    fn hardlinks_point_at_the_first_path_of_their_group() {
        let o = Origin {
            source: "t".into(),
            entry: "e".into(),
        };
        let mut t = Tree::new(0, Skeleton::default());
        let e = Entry {
            kind: Kind::File {
                data: Data::Bytes(b"same".as_slice().into()),
                size: 4,
                group: 7,
            },
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
        };
        t.insert("z/orig", e.clone(), &o).unwrap();
        t.insert_hardlink("a/link", "z/orig", 0, &o).unwrap();
        let bytes = tar_bytes(&t);
        let mut ar = tar::Archive::new(&bytes[..]);
        let entries: Vec<_> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                    e.header().entry_type(),
                    e.link_name()
                        .unwrap()
                        .map(|l| l.to_string_lossy().into_owned()),
                )
            })
            .collect();
        let link = entries.iter().find(|e| e.0 == "z/orig").unwrap();
        assert_eq!(link.1, tar::EntryType::Link);
        assert_eq!(link.2.as_deref(), Some("a/link"));
    }

    #[test]
    fn chunked_gzip_is_independent_of_thread_count_and_readable() {
        let data: Vec<u8> = (0..(CHUNK * 2 + 12345))
            .map(|i| (i % 251) as u8 ^ (i / 7919) as u8)
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let mut infos = Vec::new();
        for threads in [1, 2, 3] {
            let pool = Pool::new(threads);
            let p = dir.path().join(format!("b{threads}"));
            let mut w = BlobWriter::create(&pool, Compression::Gzip, &p).unwrap();
            w.write_all(&data).unwrap();
            infos.push(w.finish().unwrap().0);
            let mut back = Vec::new();
            flate2::read::MultiGzDecoder::new(File::open(&p).unwrap())
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data);
        }
        assert_eq!(infos[0], infos[1]);
        assert_eq!(infos[1], infos[2]);
    }

    /// Fails when the deflate implementation or its settings change under
    /// us (a new libdeflate, another level): layer digests of every image
    /// would change with it, so such a change must be deliberate.
    #[test]
    fn golden_gzip_digest() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| format!("line {i} of the golden input\n").into_bytes())
            .collect();
        let gz = compress_chunk(&data, Compression::Gzip).unwrap();
        let digest = hex::encode(Sha256::digest(&gz));
        assert_eq!(
            digest,
            "4c1632ac5160a35ed5cbaede2861287166fbe6af586b8d15395fa52bcb5abcd1",
            "gzip bytes changed: {} bytes",
            gz.len()
        );
    }
}
