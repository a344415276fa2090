//! Tar (plain, gzip, xz, zstd) and zip archives as layer sources.
//!
//! Archives are read once, front to back; regular files are copied into a
//! flat staging folder under numbered names (never under their archive
//! names, so no archive path can reach the build machine's file system) and
//! their metadata goes into the [`Tree`].

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use super::{Data, Entry, InputError, Kind, Origin, Tree, image_path, strip};

/// An entry larger than this is refused as absurd rather than staged.
pub const MAX_ENTRY_SIZE: u64 = 64 << 30;

/// Numbered files holding the bytes of archive members until the layer is written.
pub struct Stage {
    dir: PathBuf,
    next: u64,
}

impl Stage {
    pub fn new(dir: PathBuf) -> Stage {
        Stage { dir, next: 0 }
    }

    /// Copies exactly `size` bytes from `r` into a new staged file.
    pub fn put(
        &mut self,
        r: &mut dyn Read,
        size: u64,
        source: &str,
        entry: &str,
    ) -> Result<PathBuf, InputError> {
        self.next += 1;
        let path = self.dir.join(self.next.to_string());
        let mut f = File::create(&path).map_err(|e| InputError::io(&path, e))?;
        let n = std::io::copy(&mut r.take(size), &mut f).map_err(|e| InputError::Corrupt {
            source_name: source.to_string(),
            reason: format!("entry `{entry}`: {e} (truncated or corrupt archive?)"),
        })?;
        if n != size {
            return Err(InputError::Corrupt {
                source_name: source.to_string(),
                reason: format!("entry `{entry}` is truncated: {n} of {size} bytes"),
            });
        }
        Ok(path)
    }
}

/// Where and how an archive's content lands in the image.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// The name used in messages (file name of the archive, or the package).
    pub source: String,
    pub strip_prefix: Option<String>,
    pub dest: String,
}

impl Placement {
    fn map(&self, name: &str, origin: &Origin) -> Result<Option<String>, InputError> {
        let Some(rel) = strip(name, self.strip_prefix.as_deref()) else {
            return Ok(None);
        };
        image_path(&self.dest, &rel)
            .map(Some)
            .map_err(|r| InputError::refused(origin, r))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Tar,
    TarGz,
    TarXz,
    TarZst,
    Zip,
    Deb,
    /// Not an archive: the file itself.
    Plain,
}

impl Format {
    pub fn from_name(name: &str) -> Format {
        let n = name.to_ascii_lowercase();
        if n.ends_with(".tar") {
            Format::Tar
        } else if n.ends_with(".tar.gz") || n.ends_with(".tgz") {
            Format::TarGz
        } else if n.ends_with(".tar.xz") || n.ends_with(".txz") {
            Format::TarXz
        } else if n.ends_with(".tar.zst") || n.ends_with(".tzst") {
            Format::TarZst
        } else if n.ends_with(".zip") || n.ends_with(".whl") || n.ends_with(".jar") {
            Format::Zip
        } else if n.ends_with(".deb") {
            Format::Deb
        } else {
            Format::Plain
        }
    }
}

fn corrupt(source: &str, e: impl std::fmt::Display) -> InputError {
    InputError::Corrupt {
        source_name: source.to_string(),
        reason: format!("{e} (truncated or corrupt archive?)"),
    }
}

/// Wraps `r` in the decompressor `format` calls for.
pub fn decompressor<'a>(
    r: impl Read + 'a,
    format: Format,
    source: &str,
) -> Result<Box<dyn Read + 'a>, InputError> {
    Ok(match format {
        Format::Tar => Box::new(r),
        Format::TarGz => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Format::TarXz => {
            // liblzma's decoder has no memory limit of its own: a crafted
            // header can ask for gigabytes of dictionary
            let stream =
                xz2::stream::Stream::new_stream_decoder(MAX_XZ_MEMORY, xz2::stream::CONCATENATED)
                    .map_err(|e| corrupt(source, e))?;
            Box::new(xz2::read::XzDecoder::new_stream(r, stream))
        }
        Format::TarZst => {
            Box::new(zstd::stream::read::Decoder::new(r).map_err(|e| corrupt(source, e))?)
        }
        _ => unreachable!("not a tar format"),
    })
}

/// The most memory the xz decoder may use (`xz -9` needs 65 MiB to decode).
pub const MAX_XZ_MEMORY: u64 = 512 << 20;

/// GNU long-name and long-link headers and PAX headers are held in memory
/// whole by the tar reader: none may be larger than this.
pub const MAX_EXTENSION_HEADER: u64 = 64 << 10;

/// A tar reader over `r` whose extension headers are bounded before the
/// tar crate reads them (see [`TarGuard`]).
pub fn tar_reader<R: Read>(r: R) -> tar::Archive<TarGuard<R>> {
    tar::Archive::new(TarGuard::new(r))
}

/// Watches a tar stream as the tar crate reads it, header by header, and
/// fails the read that brings the header of an extension (GNU `L`/`K`, PAX
/// `x`/`g`) larger than [`MAX_EXTENSION_HEADER`], before its data is read.
/// It reads nothing ahead: every byte it passes on is one the tar crate
/// asked for, and it follows sizes as the crate does (a PAX `size` record
/// replaces the next entry's size; GNU sparse headers may be extended).
pub struct TarGuard<R> {
    inner: R,
    state: GuardState,
    /// Where the current header starts, for messages.
    header_at: u64,
    pos: u64,
    pax_size: Option<u64>,
}

enum GuardState {
    Header {
        buf: Box<[u8; 512]>,
        filled: usize,
    },
    /// GNU sparse extension blocks, then `data` bytes of the entry.
    SparseExt {
        buf: Box<[u8; 512]>,
        filled: usize,
        data: u64,
    },
    /// Passing an entry's data (and padding); a PAX header's is kept.
    Data {
        left: u64,
        pax: Option<(Vec<u8>, usize)>,
    },
}

impl<R: Read> TarGuard<R> {
    pub fn new(inner: R) -> Self {
        TarGuard {
            inner,
            state: GuardState::Header {
                buf: Box::new([0; 512]),
                filled: 0,
            },
            header_at: 0,
            pos: 0,
            pax_size: None,
        }
    }

    fn header(&mut self, h: &[u8; 512]) -> std::io::Result<GuardState> {
        let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
        let fresh = || GuardState::Header {
            buf: Box::new([0; 512]),
            filled: 0,
        };
        if h.iter().all(|b| *b == 0) {
            return Ok(fresh());
        }
        let field = &h[124..136];
        let mut size = if field[0] & 0x80 != 0 {
            u64::from_be_bytes(field[4..12].try_into().expect("8 bytes"))
        } else {
            let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
            let text = std::str::from_utf8(&field[..end]).unwrap_or("?");
            u64::from_str_radix(text.trim(), 8)
                .map_err(|_| bad(format!("header at byte {}: bad size field", self.header_at)))?
        };
        let kind = h[156];
        let ustar = &h[257..263] == b"ustar\0" && &h[263..265] == b"00";
        let gnu = &h[257..263] == b"ustar " && &h[263..265] == b" \0";
        let extension = matches!(kind, b'L' | b'K' | b'x' | b'g');
        if extension && (ustar || gnu) && size > MAX_EXTENSION_HEADER {
            let what = match kind {
                b'L' => "GNU long-name",
                b'K' => "GNU long-link",
                _ => "PAX",
            };
            return Err(bad(format!(
                "the {what} header at byte {} is {size} bytes, over the {MAX_EXTENSION_HEADER}-byte limit",
                self.header_at
            )));
        }
        if !extension && let Some(p) = self.pax_size.take() {
            size = p;
        }
        let padded = size
            .checked_add(511)
            .map(|n| n & !511)
            .ok_or_else(|| bad("size overflow".into()))?;
        if kind == b'S' && gnu && h[482] != 0 {
            return Ok(GuardState::SparseExt {
                buf: Box::new([0; 512]),
                filled: 0,
                data: padded,
            });
        }
        let pax = (kind == b'x' && (ustar || gnu)).then(|| (Vec::new(), size as usize));
        Ok(if padded == 0 {
            if let Some((v, _)) = pax {
                self.pax_size = pax_size_of(&v);
            }
            fresh()
        } else {
            GuardState::Data { left: padded, pax }
        })
    }

    fn watch(&mut self, mut b: &[u8]) -> std::io::Result<()> {
        while !b.is_empty() {
            match &mut self.state {
                GuardState::Header { buf, filled } | GuardState::SparseExt { buf, filled, .. } => {
                    let take = (512 - *filled).min(b.len());
                    buf[*filled..*filled + take].copy_from_slice(&b[..take]);
                    *filled += take;
                    b = &b[take..];
                    self.pos += take as u64;
                    if *filled < 512 {
                        continue;
                    }
                    let block = std::mem::replace(buf, Box::new([0; 512]));
                    *filled = 0;
                    if let GuardState::SparseExt { data, .. } = self.state {
                        // one more extension block follows while `isextended` is set
                        if block[504] == 0 {
                            self.state = if data == 0 {
                                GuardState::Header {
                                    buf: Box::new([0; 512]),
                                    filled: 0,
                                }
                            } else {
                                GuardState::Data {
                                    left: data,
                                    pax: None,
                                }
                            };
                        }
                    } else {
                        self.state = self.header(&block)?;
                    }
                }
                GuardState::Data { left, pax } => {
                    let take = (*left).min(b.len() as u64) as usize;
                    if let Some((v, size)) = pax {
                        let keep = take.min(size.saturating_sub(v.len()));
                        v.extend_from_slice(&b[..keep]);
                    }
                    *left -= take as u64;
                    b = &b[take..];
                    self.pos += take as u64;
                    if *left == 0 {
                        if let Some((v, _)) = pax.take() {
                            self.pax_size = pax_size_of(&v);
                        }
                        self.header_at = self.pos;
                        self.state = GuardState::Header {
                            buf: Box::new([0; 512]),
                            filled: 0,
                        };
                    }
                }
            }
            if let GuardState::Header { filled: 0, .. } = self.state {
                self.header_at = self.pos;
            }
        }
        Ok(())
    }
}

/// The `size` record of a PAX header, parsed exactly as the tar crate
/// parses it (records split at newlines; a malformed one ends the search).
fn pax_size_of(data: &[u8]) -> Option<u64> {
    for line in data.split(|b| *b == b'\n') {
        if line.is_empty() {
            return None;
        }
        let sp = line.iter().position(|b| *b == b' ')?;
        let len: usize = std::str::from_utf8(&line[..sp]).ok()?.parse().ok()?;
        if line.len() + 1 != len {
            return None;
        }
        let kv = &line[sp + 1..];
        let eq = kv.iter().position(|b| *b == b'=')?;
        if &kv[..eq] == b"size" {
            return std::str::from_utf8(&kv[eq + 1..]).ok()?.parse().ok();
        }
    }
    None
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.watch(&buf[..n])?;
        Ok(n)
    }
}

/// Adds an archive file (any [`Format`] but `Plain` and `Deb`) to the tree.
pub fn add_file(
    tree: &mut Tree,
    stage: &mut Stage,
    file: &Path,
    format: Format,
    place: &Placement,
) -> Result<(), InputError> {
    match format {
        Format::Zip => add_zip(tree, stage, file, place),
        Format::Tar | Format::TarGz | Format::TarXz | Format::TarZst => {
            let f = File::open(file).map_err(|e| InputError::io(file, e))?;
            let r = decompressor(BufReader::with_capacity(1 << 20, f), format, &place.source)?;
            add_tar(tree, stage, r, place)
        }
        Format::Deb | Format::Plain => unreachable!("handled by the caller"),
    }
}

/// Adds every member of a tar stream.
pub fn add_tar(
    tree: &mut Tree,
    stage: &mut Stage,
    r: impl Read,
    place: &Placement,
) -> Result<(), InputError> {
    let mut ar = tar_reader(r);
    let entries = ar.entries().map_err(|e| corrupt(&place.source, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| corrupt(&place.source, e))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let origin = Origin {
            source: place.source.clone(),
            entry: name.clone(),
        };
        let Some(path) = place.map(&name, &origin)? else {
            continue;
        };
        let h = entry.header();
        let mode = h.mode().map_err(|e| corrupt(&place.source, e))?;
        let uid = h.uid().map_err(|e| corrupt(&place.source, e))?;
        let gid = h.gid().map_err(|e| corrupt(&place.source, e))?;
        let uid =
            u32::try_from(uid).map_err(|_| InputError::refused(&origin, "uid out of range"))?;
        let gid =
            u32::try_from(gid).map_err(|_| InputError::refused(&origin, "gid out of range"))?;
        let mtime = h.mtime().unwrap_or(0);
        let size = entry.size();
        let kind = h.entry_type();
        use tar::EntryType as T;
        match kind {
            T::Regular | T::Continuous => {
                if size > MAX_ENTRY_SIZE {
                    return Err(InputError::refused(
                        &origin,
                        format!("declared size {size} is absurd"),
                    ));
                }
                let data = stage.put(&mut entry, size, &place.source, &name)?;
                let group = tree.new_group();
                tree.insert(
                    &path,
                    Entry::new(
                        Kind::File {
                            data: Data::Path(data),
                            size,
                            group,
                        },
                        mode,
                        uid,
                        gid,
                        mtime,
                    ),
                    &origin,
                )?;
            }
            T::Directory => {
                tree.insert(&path, Entry::new(Kind::Dir, mode, uid, gid, mtime), &origin)?;
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .ok_or_else(|| InputError::refused(&origin, "symlink without a target"))?;
                if target.is_empty() || target.len() > super::MAX_PATH || target.contains('\0') {
                    return Err(InputError::refused(&origin, "bad symlink target"));
                }
                tree.insert(
                    &path,
                    Entry::new(Kind::Symlink(target), 0o777, uid, gid, mtime),
                    &origin,
                )?;
            }
            T::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .ok_or_else(|| InputError::refused(&origin, "hard link without a target"))?;
                let Some(target_path) = place.map(&target, &origin)? else {
                    return Err(InputError::refused(
                        &origin,
                        format!("hard link to `{target}`, outside the selected folder"),
                    ));
                };
                tree.insert_hardlink(&path, &target_path, mtime, &origin)?;
            }
            T::Char | T::Block | T::Fifo => {
                return Err(InputError::refused(
                    &origin,
                    "device nodes and FIFOs are not allowed in images",
                ));
            }
            T::XGlobalHeader => {}
            other => {
                return Err(InputError::refused(
                    &origin,
                    format!("unsupported tar entry type {:?}", other),
                ));
            }
        }
    }
    Ok(())
}

/// Adds every member of a zip archive (wheels use [`super::wheel`], which maps names first).
pub fn add_zip(
    tree: &mut Tree,
    stage: &mut Stage,
    file: &Path,
    place: &Placement,
) -> Result<(), InputError> {
    for_each_zip_entry(file, &place.source, |name, kind, mode, reader, size| {
        let origin = Origin {
            source: place.source.clone(),
            entry: name.to_string(),
        };
        let Some(path) = place.map(name, &origin)? else {
            return Ok(());
        };
        add_zip_entry(tree, stage, &path, &origin, kind, mode, reader, size)
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZipKind {
    File,
    Dir,
    Symlink,
}

#[allow(clippy::too_many_arguments)]
pub fn add_zip_entry(
    tree: &mut Tree,
    stage: &mut Stage,
    path: &str,
    origin: &Origin,
    kind: ZipKind,
    mode: u32,
    reader: &mut dyn Read,
    size: u64,
) -> Result<(), InputError> {
    let mtime = tree.created();
    match kind {
        ZipKind::Dir => tree.insert(path, Entry::root_owned(Kind::Dir, mode, mtime), origin),
        ZipKind::Symlink => {
            let mut target = String::new();
            reader
                .take(super::MAX_PATH as u64 + 1)
                .read_to_string(&mut target)
                .map_err(|e| corrupt(&origin.source, e))?;
            if target.is_empty() || target.len() > super::MAX_PATH || target.contains('\0') {
                return Err(InputError::refused(origin, "bad symlink target"));
            }
            tree.insert(
                path,
                Entry::root_owned(Kind::Symlink(target), 0o777, mtime),
                origin,
            )
        }
        ZipKind::File => {
            let data = stage.put(reader, size, &origin.source, &origin.entry)?;
            let group = tree.new_group();
            tree.insert(
                path,
                Entry::root_owned(
                    Kind::File {
                        data: Data::Path(data),
                        size,
                        group,
                    },
                    mode,
                    mtime,
                ),
                origin,
            )
        }
    }
}

/// Calls `f(name, kind, mode, reader, size)` for each zip member, in archive order.
pub fn for_each_zip_entry(
    file: &Path,
    source: &str,
    mut f: impl FnMut(&str, ZipKind, u32, &mut dyn Read, u64) -> Result<(), InputError>,
) -> Result<(), InputError> {
    let fh = File::open(file).map_err(|e| InputError::io(file, e))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(fh)).map_err(|e| InputError::Corrupt {
        source_name: source.to_string(),
        reason: format!("not a readable zip archive: {e}"),
    })?;
    for i in 0..zip.len() {
        let mut zf = zip.by_index(i).map_err(|e| corrupt(source, e))?;
        let name = String::from_utf8_lossy(zf.name_raw()).into_owned();
        let origin = Origin {
            source: source.to_string(),
            entry: name.clone(),
        };
        let unix = zf.unix_mode();
        let fmt = unix.map(|m| m & 0o170000).unwrap_or(0);
        let kind = if zf.is_dir() || fmt == 0o040000 {
            ZipKind::Dir
        } else if fmt == 0o120000 {
            ZipKind::Symlink
        } else if fmt == 0 || fmt == 0o100000 {
            ZipKind::File
        } else {
            return Err(InputError::refused(
                &origin,
                "device nodes and FIFOs are not allowed in images",
            ));
        };
        let mode = match (unix, kind) {
            (Some(m), _) if m & 0o7777 != 0 => m & 0o7777,
            (_, ZipKind::Dir) => 0o755,
            _ => 0o644,
        };
        let size = zf.size();
        if size > MAX_ENTRY_SIZE {
            return Err(InputError::refused(
                &origin,
                format!("declared size {size} is absurd"),
            ));
        }
        f(&name, kind, mode, &mut zf, size)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::Skeleton;

    fn tar_with(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, ty, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            // write the raw name so hostile names reach the reader unchanged
            let bytes = name.as_bytes();
            h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            h.set_entry_type(*ty);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            if !link.is_empty() {
                h.set_link_name(link).unwrap();
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn load(bytes: &[u8]) -> Result<Tree, InputError> {
        let dir = tempfile::tempdir().unwrap();
        let mut tree = Tree::new(0, Skeleton::default());
        let mut stage = Stage::new(dir.path().to_path_buf());
        let place = Placement {
            source: "evil.tar".into(),
            dest: "/opt".into(),
            ..Default::default()
        };
        add_tar(&mut tree, &mut stage, bytes, &place)?;
        Ok(tree)
    }

    #[test]
    fn dotdot_entry_is_refused_with_its_name() {
        let t = tar_with(&[("../../etc/passwd", tar::EntryType::Regular, b"x", "")]);
        let err = load(&t).unwrap_err().to_string();
        assert!(
            err.contains("evil.tar") && err.contains("../../etc/passwd"),
            "{err}"
        );
    }

    #[test]
    fn device_nodes_are_refused() {
        let t = tar_with(&[("dev/sda", tar::EntryType::Block, b"", "")]);
        assert!(load(&t).unwrap_err().to_string().contains("device"));
    }

    #[test]
    fn hardlink_to_outside_or_later_entry_is_refused() {
        let t = tar_with(&[("a", tar::EntryType::Link, b"", "/etc/shadow")]);
        assert!(load(&t).is_err());
        let t = tar_with(&[
            ("a", tar::EntryType::Link, b"", "b"),
            ("b", tar::EntryType::Regular, b"x", ""),
        ]);
        assert!(load(&t).is_err());
    }

    #[test]
    fn file_beneath_symlink_lands_inside_the_image() {
        let t = tar_with(&[
            ("up", tar::EntryType::Symlink, b"", "../../../../.."),
            ("up/etc/cron.d/x", tar::EntryType::Regular, b"pwn", ""),
        ]);
        let tree = load(&t).unwrap();
        // `/opt/up` points above the root, which resolves to the root itself
        assert!(
            tree.entries().contains_key("etc/cron.d/x"),
            "{:?}",
            tree.entries().keys()
        );
    }

    /// A chain of `n` symlinks, each pointing at the next with `pad`
    /// folder components after it, then a file beneath the first.
    fn link_chain(n: usize, pad: usize) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for i in 0..n {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            let target = format!("l{}{}", i + 1, "/x".repeat(pad));
            b.append_link(&mut h, format!("l{i}"), target).unwrap();
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(1);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, "l0/f", &b"x"[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn symlink_chain_bomb_is_bounded() {
        // three links of 2 KB targets: the resolved path is past Linux's 4096 bytes
        let refused = |t: &[u8]| match load(t) {
            Ok(_) => panic!("the chain was accepted"),
            Err(e) => e.to_string(),
        };
        let err = refused(&link_chain(3, 1000));
        assert!(
            err.contains("evil.tar") && err.contains("l0/f") && err.contains("4096"),
            "{err}"
        );
        // forty links of 4 KB targets (about 200 KB of tar) would ask for
        // gigabytes of folder keys; refused at once instead
        let bomb = link_chain(40, 2040);
        assert!(bomb.len() < 400 << 10, "{}", bomb.len());
        let t0 = std::time::Instant::now();
        let err = refused(&bomb);
        assert!(err.contains("l0/f"), "{err}");
        assert!(t0.elapsed() < std::time::Duration::from_secs(10));
    }

    /// A tar stream that is one extension header claiming `size` bytes, then
    /// that many `a`s (generated, never held), counting what was read.
    struct Endless {
        header: Vec<u8>,
        pos: u64,
        size: u64,
        read: std::rc::Rc<std::cell::Cell<u64>>,
    }

    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let total = 512 + self.size;
            if self.pos >= total {
                return Ok(0);
            }
            let n = buf.len().min((total - self.pos) as usize);
            for (k, b) in buf[..n].iter_mut().enumerate() {
                let at = self.pos as usize + k;
                *b = if at < 512 { self.header[at] } else { b'a' };
            }
            self.pos += n as u64;
            self.read.set(self.pos);
            Ok(n)
        }
    }

    fn extension_bomb(kind: u8) -> (Result<Tree, InputError>, u64) {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        h.set_entry_type(tar::EntryType::new(kind));
        let size = 100u64 << 20;
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        let read = std::rc::Rc::new(std::cell::Cell::new(0));
        let r = Endless {
            header: h.as_bytes().to_vec(),
            pos: 0,
            size,
            read: read.clone(),
        };
        let dir = tempfile::tempdir().unwrap();
        let mut tree = Tree::new(0, Skeleton::default());
        let mut stage = Stage::new(dir.path().to_path_buf());
        let place = Placement {
            source: "bomb.tar".into(),
            ..Default::default()
        };
        let res = add_tar(&mut tree, &mut stage, r, &place).map(|()| tree);
        (res, read.get())
    }

    #[test]
    fn long_name_and_pax_bombs_are_refused_before_reading() {
        for kind in [b'L', b'K', b'x'] {
            let (res, read) = extension_bomb(kind);
            let err = match res {
                Ok(_) => panic!("{} header accepted", kind as char),
                Err(e) => e.to_string(),
            };
            assert!(err.contains("bomb.tar") && err.contains("header"), "{err}");
            assert!(read < 1 << 20, "{} read {read} bytes", kind as char);
        }
    }

    #[test]
    fn honest_extension_headers_pass_the_guard() {
        let mut b = tar::Builder::new(Vec::new());
        let long = format!("{}/f", "d".repeat(300));
        b.append_pax_extensions([("comment", &b"hello"[..])])
            .unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(3);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_link(&mut h, "l", "t/".repeat(200)).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(1);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, "last", &b"z"[..]).unwrap();
        let tree = match load(&b.into_inner().unwrap()) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        assert!(tree.entries().contains_key(&format!("opt/{long}")));
        assert!(tree.entries().contains_key("opt/l"));
        assert!(tree.entries().contains_key("opt/last"));
    }

    #[test]
    fn xz_archives_decode_under_the_memory_limit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.tar.xz");
        let tar = tar_with(&[("a", tar::EntryType::Regular, b"hello", "")]);
        let mut w = xz2::write::XzEncoder::new(File::create(&p).unwrap(), 9);
        std::io::Write::write_all(&mut w, &tar).unwrap();
        w.finish().unwrap();
        let mut tree = Tree::new(0, Skeleton::default());
        let mut stage = Stage::new(dir.path().to_path_buf());
        let place = Placement {
            source: "x.tar.xz".into(),
            ..Default::default()
        };
        if let Err(e) = add_file(&mut tree, &mut stage, &p, Format::TarXz, &place) {
            panic!("{e}");
        }
        assert!(tree.entries().contains_key("a"));
    }

    #[test]
    fn truncated_archive_is_an_error() {
        let t = tar_with(&[("big", tar::EntryType::Regular, &[7u8; 5000], "")]);
        let err = load(&t[..2048]).unwrap_err().to_string();
        assert!(err.contains("evil.tar"), "{err}");
    }

    #[test]
    fn corrupt_gzip_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.tar.gz");
        std::fs::write(&p, b"\x1f\x8b\x08\x00garbage-not-deflate").unwrap();
        let mut tree = Tree::new(0, Skeleton::default());
        let mut stage = Stage::new(dir.path().to_path_buf());
        let place = Placement {
            source: "x.tar.gz".into(),
            ..Default::default()
        };
        let err = add_file(&mut tree, &mut stage, &p, Format::TarGz, &place).unwrap_err();
        assert!(err.to_string().contains("x.tar.gz"), "{err}");
    }

    #[test]
    fn zip_slip_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.zip");
        let mut w = zip::ZipWriter::new(File::create(&p).unwrap());
        w.start_file("../../evil.sh", zip::write::SimpleFileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut w, b"x").unwrap();
        w.finish().unwrap();
        let mut tree = Tree::new(0, Skeleton::default());
        let mut stage = Stage::new(dir.path().to_path_buf());
        let place = Placement {
            source: "x.zip".into(),
            ..Default::default()
        };
        let err = add_file(&mut tree, &mut stage, &p, Format::Zip, &place).unwrap_err();
        assert!(err.to_string().contains("../../evil.sh"), "{err}");
    }
}
