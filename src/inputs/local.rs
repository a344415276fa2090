//! Local files and folders of the repository as layer sources. Modes are
//! normalised as git sees them (0644, or 0755 when the owner may execute),
//! owners are root and times are the build's `created`, so a checkout's
//! umask, owner or mtimes never change a digest.

use std::path::Path;

use super::{Data, Entry, InputError, Kind, Origin, Tree};

pub fn git_mode(mode: u32) -> u32 {
    if mode & 0o100 != 0 { 0o755 } else { 0o644 }
}

/// Adds `path` (a file or a folder) at image path `dest`. A folder's content
/// goes under `dest`; a file lands at `dest`, or inside it when `dest` ends in `/`.
pub fn add_path(
    tree: &mut Tree,
    path: &Path,
    dest: &str,
    mode: Option<u32>,
) -> Result<(), InputError> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| InputError::io(path, e))?;
    let source = path.display().to_string();
    if meta.is_dir() {
        walk(tree, path, dest.trim_end_matches('/'), mode, &source)
    } else {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let target = if dest.is_empty() || dest.ends_with('/') {
            format!("{dest}{name}")
        } else {
            dest.to_string()
        };
        add_one(tree, path, &meta, &target, mode, &source)
    }
}

fn walk(
    tree: &mut Tree,
    dir: &Path,
    dest: &str,
    mode: Option<u32>,
    source: &str,
) -> Result<(), InputError> {
    let names = super::sorted_names(dir)?;
    for name in names {
        let p = dir.join(&name);
        let meta = std::fs::symlink_metadata(&p).map_err(|e| InputError::io(&p, e))?;
        let target = format!("{dest}/{}", name.to_string_lossy());
        if meta.is_dir() {
            add_one(tree, &p, &meta, &target, mode, source)?;
            walk(tree, &p, &target, mode, source)?;
        } else {
            add_one(tree, &p, &meta, &target, mode, source)?;
        }
    }
    Ok(())
}

fn add_one(
    tree: &mut Tree,
    p: &Path,
    meta: &std::fs::Metadata,
    target: &str,
    mode: Option<u32>,
    source: &str,
) -> Result<(), InputError> {
    use std::os::unix::fs::PermissionsExt;
    let origin = Origin {
        source: source.to_string(),
        entry: p.display().to_string(),
    };
    let mtime = tree.created();
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        let t = std::fs::read_link(p).map_err(|e| InputError::io(p, e))?;
        Kind::Symlink(t.to_string_lossy().into_owned())
    } else if ft.is_file() {
        let group = tree.new_group();
        Kind::File {
            data: Data::Path(p.to_path_buf()),
            size: meta.len(),
            group,
        }
    } else {
        return Err(InputError::refused(
            &origin,
            "only files, folders and symlinks can go into an image",
        ));
    };
    let mode = match kind {
        Kind::Dir => 0o755,
        Kind::Symlink(_) => 0o777,
        Kind::File { .. } => mode.unwrap_or_else(|| git_mode(meta.permissions().mode())),
    };
    tree.insert(target, Entry::root_owned(kind, mode, mtime), &origin)
}
