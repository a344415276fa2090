//! Build-time checks over the whole image: every ELF file's shared-library
//! needs resolve inside the image, and every jar's manifest `Class-Path`
//! entry exists in it. A missing library is a build error, not a runtime
//! surprise. Facts are gathered per layer (while the layer's files are at
//! hand, and kept in the layer cache) and checked over the merged image.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

pub use crate::cache::layers::{ElfNeeds, LayerFacts};
use crate::inputs::{Data, Kind, Tree, glob_match, resolve_in_root};

/// Gathers the facts of a layer's tree.
pub fn gather(tree: &Tree, elf: bool, jars: bool) -> LayerFacts {
    let mut f = LayerFacts::default();
    for (path, e) in tree.entries() {
        let Kind::File { data, size, .. } = &e.kind else {
            continue;
        };
        f.files.insert(path.clone());
        if *size < 64 {
            continue;
        }
        let Data::Path(p) = data else { continue };
        if elf && let Some(n) = read_elf(p) {
            f.elf.insert(path.clone(), n);
            continue;
        }
        if jars
            && path.ends_with(".jar")
            && let Some(cp) = read_class_path(p)
        {
            f.jars.insert(path.clone(), cp);
        }
    }
    f
}

fn rd<R: Read + Seek>(r: &mut R, at: u64, buf: &mut [u8]) -> Option<()> {
    r.seek(SeekFrom::Start(at)).ok()?;
    r.read_exact(buf).ok()
}

fn u16le(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64le(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads DT_NEEDED and RUNPATH of a 64-bit little-endian ELF file; `None`
/// for anything else. Every offset is bounds-checked: the file is untrusted.
pub fn read_elf(path: &Path) -> Option<ElfNeeds> {
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let mut h = [0u8; 64];
    rd(&mut f, 0, &mut h)?;
    if &h[..4] != b"\x7fELF" || h[4] != 2 || h[5] != 1 {
        return None;
    }
    let phoff = u64le(&h, 32);
    let phentsize = u16le(&h, 54) as u64;
    let phnum = u16le(&h, 56) as u64;
    if phentsize < 56 || phnum > 4096 || phoff.checked_add(phentsize * phnum)? > len {
        return None;
    }
    let mut loads = Vec::new();
    let mut dynamic = None;
    let mut ph = vec![0u8; (phentsize * phnum) as usize];
    rd(&mut f, phoff, &mut ph)?;
    for i in 0..phnum as usize {
        let p = &ph[i * phentsize as usize..];
        let (ty, off, vaddr, filesz) = (u32le(p, 0), u64le(p, 8), u64le(p, 16), u64le(p, 32));
        match ty {
            1 => loads.push((vaddr, off, filesz)),
            2 => dynamic = Some((off, filesz)),
            _ => {}
        }
    }
    let (doff, dsize) = dynamic?;
    if dsize > 1 << 20 || doff.checked_add(dsize)? > len {
        return None;
    }
    let mut dynb = vec![0u8; dsize as usize];
    rd(&mut f, doff, &mut dynb)?;
    let mut strtab = None;
    let mut needed = Vec::new();
    let mut runpath = Vec::new();
    for e in dynb.chunks_exact(16) {
        let (tag, val) = (u64le(e, 0), u64le(e, 8));
        match tag {
            0 => break,
            1 => needed.push(val),
            5 => strtab = Some(val),
            15 | 29 => runpath.push(val),
            _ => {}
        }
    }
    let strtab = strtab?;
    let str_off = loads
        .iter()
        .find(|(va, _, sz)| strtab >= *va && strtab < va + sz)
        .map(|(va, off, _)| off + (strtab - va))?;
    let mut read_str = |at: u64| -> Option<String> {
        let mut buf = [0u8; 512];
        let start = str_off.checked_add(at)?;
        if start >= len {
            return None;
        }
        let n = (len - start).min(512) as usize;
        rd(&mut f, start, &mut buf[..n])?;
        let end = buf[..n].iter().position(|b| *b == 0)?;
        Some(String::from_utf8_lossy(&buf[..end]).into_owned())
    };
    let needed = needed
        .into_iter()
        .map(&mut read_str)
        .collect::<Option<Vec<_>>>()?;
    let runpath = runpath
        .into_iter()
        .map(&mut read_str)
        .collect::<Option<Vec<_>>>()?
        .iter()
        .flat_map(|s| s.split(':').map(str::to_string).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect();
    Some(ElfNeeds { needed, runpath })
}

/// The manifest Class-Path of a jar, or `None` when it has none.
pub fn read_class_path(path: &Path) -> Option<Vec<String>> {
    let f = File::open(path).ok()?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(f)).ok()?;
    let mut m = zip.by_name("META-INF/MANIFEST.MF").ok()?;
    let mut text = String::new();
    (&mut m).take(1 << 20).read_to_string(&mut text).ok()?;
    // manifest lines are continued by a leading space
    let unfolded = text.replace("\r\n", "\n").replace("\n ", "");
    let cp = unfolded
        .lines()
        .find_map(|l| l.strip_prefix("Class-Path:"))?;
    Some(cp.split_whitespace().map(str::to_string).collect())
}

/// The merged view of an image for the checks.
pub struct ImageView {
    files: BTreeSet<String>,
    symlinks: BTreeMap<String, String>,
}

impl ImageView {
    pub fn new(files: BTreeSet<String>, symlinks: BTreeMap<String, String>) -> ImageView {
        ImageView { files, symlinks }
    }

    /// Resolves a path through the image's symlinks (inside the image root).
    fn resolve(&self, path: &str) -> Option<String> {
        let parts: Vec<&str> = path
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        resolve_in_root(&parts, true, |p| self.symlinks.get(p).map(String::as_str)).ok()
    }

    pub fn exists(&self, path: &str) -> bool {
        self.resolve(path).is_some_and(|p| self.files.contains(&p))
    }
}

/// Default library folders of a Debian-style image, after RUNPATH.
const LIB_DIRS: &[&str] = &[
    "lib/x86_64-linux-gnu",
    "usr/lib/x86_64-linux-gnu",
    "lib/aarch64-linux-gnu",
    "usr/lib/aarch64-linux-gnu",
    "lib64",
    "usr/lib64",
    "lib",
    "usr/lib",
    "usr/local/lib",
];

/// Every ELF need and jar Class-Path entry that does not resolve, as
/// `(file, what is missing)`; `ignore` globs name files not to check.
pub fn missing(
    view: &ImageView,
    facts: &[&LayerFacts],
    ignore: &[String],
    library_path: &[String],
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let skip = |p: &str| ignore.iter().any(|g| glob_match(g, p));
    let mut elf: BTreeMap<&String, &ElfNeeds> = BTreeMap::new();
    let mut jars: BTreeMap<&String, &Vec<String>> = BTreeMap::new();
    for f in facts {
        elf.extend(f.elf.iter());
        jars.extend(f.jars.iter());
    }
    // ld.so also takes a library another object already loaded by the same
    // name (auditwheel's bundled libraries rely on it): every folder some
    // object of the image has in its RUNPATH counts as searched.
    let expand = |path: &str, r: &str| {
        let origin = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        r.replace("$ORIGIN", &format!("/{origin}"))
            .replace("${ORIGIN}", &format!("/{origin}"))
    };
    let loaded_dirs: BTreeSet<String> = elf
        .iter()
        .flat_map(|(p, n)| n.runpath.iter().map(|r| expand(p, r)))
        .collect();
    for (path, needs) in elf {
        if skip(path) || !view.files.contains(path.as_str()) {
            continue;
        }
        let origin = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        for lib in &needs.needed {
            let found = if lib.contains('/') {
                view.exists(lib)
            } else {
                needs
                    .runpath
                    .iter()
                    .map(|r| {
                        r.replace("$ORIGIN", &format!("/{origin}"))
                            .replace("${ORIGIN}", &format!("/{origin}"))
                    })
                    .chain(library_path.iter().cloned())
                    .chain(loaded_dirs.iter().cloned())
                    .chain(LIB_DIRS.iter().map(|d| d.to_string()))
                    .any(|d| view.exists(&format!("{}/{lib}", d.trim_end_matches('/'))))
            };
            if !found {
                out.push((format!("/{path}"), format!("shared library `{lib}`")));
            }
        }
    }
    for (path, cp) in jars {
        if skip(path) || !view.files.contains(path.as_str()) {
            continue;
        }
        let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        for entry in cp {
            if entry.contains("://") && !entry.starts_with("file:") {
                continue;
            }
            let entry = entry.trim_start_matches("file:");
            let target = if entry.starts_with('/') {
                entry.to_string()
            } else {
                format!("{dir}/{entry}")
            };
            if entry.ends_with('/') {
                continue;
            }
            if !view.exists(&target) {
                out.push((format!("/{path}"), format!("Class-Path entry `{entry}`")));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_needs_of_a_real_elf_file() {
        // the test binary itself is a dynamically linked ELF file
        let me = std::env::current_exe().unwrap();
        let n = read_elf(&me).expect("an ELF file");
        assert!(n.needed.iter().any(|l| l.starts_with("libc.so")), "{n:?}");
        let not_elf = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(not_elf.path(), vec![b'x'; 200]).unwrap();
        assert_eq!(read_elf(not_elf.path()), None);
    }

    #[test]
    fn needs_resolve_through_runpath_and_symlinks() {
        let files: BTreeSet<String> = [
            "usr/lib/x86_64-linux-gnu/libc.so.6",
            "opt/app/lib/libjli.so",
            "opt/app/bin/java",
            "usr/share/java/a.jar",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let symlinks = BTreeMap::from([("lib".to_string(), "usr/lib".to_string())]);
        let view = ImageView::new(files, symlinks);
        let mut f = LayerFacts::default();
        f.elf.insert(
            "opt/app/bin/java".into(),
            ElfNeeds {
                needed: vec!["libc.so.6".into(), "libjli.so".into(), "libz.so.1".into()],
                runpath: vec!["$ORIGIN/../lib".into()],
            },
        );
        f.jars.insert(
            "usr/share/java/a.jar".into(),
            vec!["b.jar".into(), "/lib/x86_64-linux-gnu/libc.so.6".into()],
        );
        let m = missing(&view, &[&f], &[], &[]);
        assert_eq!(
            m,
            vec![
                (
                    "/opt/app/bin/java".to_string(),
                    "shared library `libz.so.1`".to_string()
                ),
                (
                    "/usr/share/java/a.jar".to_string(),
                    "Class-Path entry `b.jar`".to_string()
                )
            ]
        );
        assert_eq!(
            missing(
                &view,
                &[&f],
                &["/opt/app/**".into(), "**/*.jar".into()],
                &[]
            ),
            vec![]
        );
    }
}
