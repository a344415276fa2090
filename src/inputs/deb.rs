//! Debian packages as layer sources: the `ar` container is read by hand (it
//! is three fields and a size), the control file is checked against what the
//! lock says the package is, and `data.tar.*` is added to the tree. No
//! maintainer script is ever run.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::archive::{self, Format, Placement, Stage};
use super::{InputError, Tree};

fn not_a_deb(source: &str, why: impl std::fmt::Display) -> InputError {
    InputError::Corrupt {
        source_name: source.to_string(),
        reason: format!("not a Debian package: {why}"),
    }
}

/// The `Package` and `Version` of a .deb's control file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Control {
    pub package: String,
    pub version: String,
    pub arch: String,
}

/// Calls `on_member(name, reader)` for each member of the `ar` container, in
/// order, until it returns `false`; checks the magic, the headers and sizes.
fn for_each_member(
    file: &Path,
    src: &str,
    mut on_member: impl FnMut(&str, &mut dyn Read) -> Result<bool, InputError>,
) -> Result<(), InputError> {
    let f = File::open(file).map_err(|e| InputError::io(file, e))?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(|e| not_a_deb(src, e))?;
    if &magic != b"!<arch>\n" {
        return Err(not_a_deb(src, "no `!<arch>` magic"));
    }
    let mut offset: u64 = 8;
    loop {
        let mut h = [0u8; 60];
        match r.read_exact(&mut h) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(not_a_deb(src, e)),
        }
        if &h[58..60] != b"`\n" {
            return Err(not_a_deb(
                src,
                format!("bad member header at byte {offset}"),
            ));
        }
        let name = String::from_utf8_lossy(&h[0..16])
            .trim_end()
            .trim_end_matches('/')
            .to_string();
        let size: u64 = String::from_utf8_lossy(&h[48..58])
            .trim()
            .parse()
            .map_err(|_| not_a_deb(src, format!("bad size in member `{name}`")))?;
        if size > archive::MAX_ENTRY_SIZE {
            return Err(not_a_deb(
                src,
                format!("member `{name}` declares an absurd size"),
            ));
        }
        let mut member = (&mut r).take(size);
        if !on_member(&name, &mut member)? {
            return Ok(());
        }
        // skip what is left of the member, and the padding byte for odd sizes
        std::io::copy(&mut member, &mut std::io::sink()).map_err(|e| not_a_deb(src, e))?;
        if size % 2 == 1 {
            let mut pad = [0u8; 1];
            let _ = r.read(&mut pad).map_err(|e| not_a_deb(src, e))?;
        }
        offset += 60 + size + size % 2;
    }
}

/// The control fields of a `control.tar.*` member.
fn control_member(
    name: &str,
    ext: &str,
    member: &mut dyn Read,
    src: &str,
) -> Result<Control, InputError> {
    let fmt = tar_format(ext).ok_or_else(|| not_a_deb(src, format!("member `{name}`")))?;
    read_control(archive::decompressor(member, fmt, src)?, src)
}

/// Adds the package's files to `tree` and returns its control fields.
pub fn add_deb(
    tree: &mut Tree,
    stage: &mut Stage,
    file: &Path,
    place: &Placement,
) -> Result<Control, InputError> {
    let src = place.source.as_str();
    let mut control = None;
    let mut seen_data = false;
    for_each_member(file, src, |name, member| {
        if name == "debian-binary" {
            let mut v = String::new();
            member
                .take(64)
                .read_to_string(&mut v)
                .map_err(|e| not_a_deb(src, e))?;
            if !v.starts_with("2.") {
                return Err(not_a_deb(src, format!("format `{}`", v.trim())));
            }
        } else if let Some(ext) = name.strip_prefix("control.tar") {
            control = Some(control_member(name, ext, member, src)?);
        } else if let Some(ext) = name.strip_prefix("data.tar") {
            let fmt = tar_format(ext).ok_or_else(|| not_a_deb(src, format!("member `{name}`")))?;
            archive::add_tar(tree, stage, archive::decompressor(member, fmt, src)?, place)?;
            seen_data = true;
        }
        Ok(true)
    })?;
    if !seen_data {
        return Err(not_a_deb(src, "no data.tar member"));
    }
    control.ok_or_else(|| not_a_deb(src, "no control.tar member"))
}

fn tar_format(ext: &str) -> Option<Format> {
    match ext {
        "" => Some(Format::Tar),
        ".gz" => Some(Format::TarGz),
        ".xz" => Some(Format::TarXz),
        ".zst" => Some(Format::TarZst),
        _ => None,
    }
}

fn read_control(r: impl Read, src: &str) -> Result<Control, InputError> {
    let mut ar = archive::tar_reader(r);
    for entry in ar.entries().map_err(|e| not_a_deb(src, e))? {
        let mut entry = entry.map_err(|e| not_a_deb(src, e))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if name.trim_start_matches("./") != "control" {
            continue;
        }
        let mut text = String::new();
        (&mut entry)
            .take(1 << 20)
            .read_to_string(&mut text)
            .map_err(|e| not_a_deb(src, e))?;
        let mut c = Control::default();
        for line in text.lines() {
            if let Some((k, v)) = line.split_once(':') {
                match k {
                    "Package" => c.package = v.trim().to_string(),
                    "Version" => c.version = v.trim().to_string(),
                    "Architecture" => c.arch = v.trim().to_string(),
                    _ => {}
                }
            }
        }
        return Ok(c);
    }
    Err(not_a_deb(src, "control.tar has no `control` file"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::Skeleton;

    #[test]
    fn a_text_file_is_not_a_deb() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fake.deb");
        std::fs::write(&p, "<html>not found</html>").unwrap();
        let mut tree = Tree::new(0, Skeleton::default());
        let mut stage = Stage::new(dir.path().to_path_buf());
        let place = Placement {
            source: "fake.deb".into(),
            ..Default::default()
        };
        let err = add_deb(&mut tree, &mut stage, &p, &place)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("fake.deb") && err.contains("not a Debian package"),
            "{err}"
        );
    }
}
