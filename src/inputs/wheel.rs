//! Python wheels as layer sources: installed the way an installer would
//! (purelib/platlib into `site_packages`, scripts into `bin_dir` with their
//! `#!python` line rewritten, console-script entry points generated),
//! keeping the exec bits the archive records. No Python runs at build time.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use super::archive::{self, Stage, ZipKind};
use super::{Data, Entry, InputError, Kind, Origin, Tree, image_path};

#[derive(Debug, Clone)]
pub struct WheelTarget {
    pub site_packages: String,
    pub bin_dir: String,
    pub python: String,
}

/// Console and GUI scripts a wheel may declare: each becomes a generated
/// file held in memory.
pub const MAX_WHEEL_SCRIPTS: usize = 10_000;
/// `METADATA` and `entry_points.txt` are read into memory: at most this much each.
const MAX_WHEEL_TEXT: u64 = 16 << 20;
/// A script under `*.data/scripts/` is read whole to rewrite its `#!` line.
const MAX_WHEEL_SCRIPT: u64 = 64 << 20;

/// Installs the wheel into `tree`; returns its (name, version) from METADATA.
/// What it must hold in memory is bounded: one `METADATA`, one
/// `entry_points.txt`, [`MAX_WHEEL_SCRIPTS`] generated scripts; script files
/// are rewritten one at a time and staged on disk.
pub fn add_wheel(
    tree: &mut Tree,
    stage: &mut Stage,
    file: &Path,
    source: &str,
    t: &WheelTarget,
) -> Result<(String, String), InputError> {
    let corrupt = |reason: String| InputError::Corrupt {
        source_name: source.to_string(),
        reason,
    };
    let prefix = t
        .bin_dir
        .trim_end_matches('/')
        .rsplit_once('/')
        .map(|(p, _)| p.to_string())
        .unwrap_or_default();
    let mut metadata: Option<String> = None;
    // the text and the archive entry it came from
    let mut entry_points: Option<(String, String)> = None;
    let mut saw_wheel = false;
    archive::for_each_zip_entry(file, source, |name, kind, mode, reader, size| {
        let origin = Origin {
            source: source.to_string(),
            entry: name.to_string(),
        };
        let mut parts = name.splitn(2, '/');
        let top = parts.next().unwrap_or_default();
        let rest = parts.next().unwrap_or_default();
        if top.ends_with(".dist-info") && kind == ZipKind::File {
            match rest {
                "METADATA" | "entry_points.txt" => {
                    let seen = if rest == "METADATA" {
                        metadata.is_some()
                    } else {
                        entry_points.is_some()
                    };
                    if seen {
                        return Err(InputError::refused(
                            &origin,
                            format!("a second `{rest}`: a wheel has one `.dist-info`"),
                        ));
                    }
                    if size > MAX_WHEEL_TEXT {
                        return Err(InputError::refused(
                            &origin,
                            format!("{size} bytes, over the {MAX_WHEEL_TEXT}-byte limit"),
                        ));
                    }
                    let mut text = String::new();
                    reader
                        .take(MAX_WHEEL_TEXT)
                        .read_to_string(&mut text)
                        .map_err(|e| corrupt(format!("{name}: {e}")))?;
                    let bytes: Arc<[u8]> = text.as_bytes().into();
                    if rest == "METADATA" {
                        metadata = Some(text);
                    } else {
                        entry_points = Some((name.to_string(), text));
                    }
                    let path = image_path(&t.site_packages, name)
                        .map_err(|r| InputError::refused(&origin, r))?;
                    return insert_bytes(tree, &path, bytes, mode, &origin);
                }
                "WHEEL" => saw_wheel = true,
                _ => {}
            }
        }
        let (dest, rel, script) = if let Some(data_rest) = top.strip_suffix(".data").map(|_| rest) {
            let mut p = data_rest.splitn(2, '/');
            let scheme = p.next().unwrap_or_default();
            let rel = p.next().unwrap_or_default();
            match scheme {
                "purelib" | "platlib" => (t.site_packages.as_str(), rel, false),
                "scripts" => (t.bin_dir.as_str(), rel, true),
                "data" => (prefix.as_str(), rel, false),
                "headers" => return Ok(()),
                other => {
                    return Err(InputError::refused(
                        &origin,
                        format!("unknown wheel scheme `{other}`"),
                    ));
                }
            }
        } else {
            (t.site_packages.as_str(), name, false)
        };
        if rel.is_empty() {
            return Ok(());
        }
        let path = image_path(dest, rel).map_err(|r| InputError::refused(&origin, r))?;
        if script && kind == ZipKind::File {
            if size > MAX_WHEEL_SCRIPT {
                return Err(InputError::refused(
                    &origin,
                    format!("script of {size} bytes, over the {MAX_WHEEL_SCRIPT}-byte limit"),
                ));
            }
            let mut body = Vec::new();
            reader
                .take(MAX_WHEEL_SCRIPT)
                .read_to_end(&mut body)
                .map_err(|e| corrupt(format!("{name}: {e}")))?;
            let body = rewrite_shebang(&body, &t.python);
            let len = body.len() as u64;
            return archive::add_zip_entry(
                tree,
                stage,
                &path,
                &origin,
                ZipKind::File,
                0o755,
                &mut &body[..],
                len,
            );
        }
        archive::add_zip_entry(tree, stage, &path, &origin, kind, mode, reader, size)
    })?;
    if !saw_wheel {
        return Err(corrupt("not a wheel: no `*.dist-info/WHEEL`".into()));
    }
    let metadata =
        metadata.ok_or_else(|| corrupt("not a wheel: no `*.dist-info/METADATA`".into()))?;
    let field = |k: &str| {
        metadata
            .lines()
            .find_map(|l| {
                l.strip_prefix(k)
                    .and_then(|v| v.strip_prefix(':'))
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    let (name, version) = (field("Name"), field("Version"));
    if let Some((entry, ep)) = entry_points {
        let scripts = console_scripts(&ep);
        if scripts.len() > MAX_WHEEL_SCRIPTS {
            return Err(InputError::refused(
                &Origin {
                    source: source.to_string(),
                    entry,
                },
                format!(
                    "declares {} scripts, more than {MAX_WHEEL_SCRIPTS}",
                    scripts.len()
                ),
            ));
        }
        for (script, module, attr) in scripts {
            let origin = Origin {
                source: source.to_string(),
                entry: format!("entry point `{script}`"),
            };
            let path =
                image_path(&t.bin_dir, &script).map_err(|r| InputError::refused(&origin, r))?;
            let import = match attr.split('.').next() {
                Some(first) => format!("from {module} import {first}"),
                None => format!("import {module}"),
            };
            let body = format!(
                "#!{python}\n# -*- coding: utf-8 -*-\nimport re\nimport sys\n{import}\nif __name__ == \"__main__\":\n    sys.argv[0] = re.sub(r\"(-script\\.pyw|\\.exe)?$\", \"\", sys.argv[0])\n    sys.exit({attr}())\n",
                python = t.python
            );
            insert_bytes(tree, &path, body.into_bytes().into(), 0o755, &origin)?;
        }
    }
    Ok((name, version))
}

fn insert_bytes(
    tree: &mut Tree,
    path: &str,
    bytes: Arc<[u8]>,
    mode: u32,
    origin: &Origin,
) -> Result<(), InputError> {
    let group = tree.new_group();
    let size = bytes.len() as u64;
    let mtime = tree.created();
    tree.insert(
        path,
        Entry::root_owned(
            Kind::File {
                data: Data::Bytes(bytes),
                size,
                group,
            },
            mode,
            mtime,
        ),
        origin,
    )
}

fn rewrite_shebang(body: &[u8], python: &str) -> Vec<u8> {
    let first_end = body.iter().position(|b| *b == b'\n').unwrap_or(body.len());
    let first = &body[..first_end];
    if first.starts_with(b"#!python") || first == b"#!/usr/bin/env python" {
        let mut out = format!("#!{python}").into_bytes();
        out.extend_from_slice(&body[first_end..]);
        out
    } else {
        body.to_vec()
    }
}

/// `(script, module, attribute)` for each console or GUI script.
fn console_scripts(text: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut in_section = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_section = line == "[console_scripts]" || line == "[gui_scripts]";
            continue;
        }
        if !in_section || line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((name, target)) = line.split_once('=') {
            let target = target.split('[').next().unwrap_or_default().trim();
            if let Some((module, attr)) = target.split_once(':') {
                out.push((
                    name.trim().to_string(),
                    module.trim().to_string(),
                    attr.trim().to_string(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wheel(dir: &Path, files: &[(&str, String)]) -> std::path::PathBuf {
        let p = dir.join("evil-1.0-py3-none-any.whl");
        let mut w = zip::ZipWriter::new(std::fs::File::create(&p).unwrap());
        for (name, body) in files {
            w.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            std::io::Write::write_all(&mut w, body.as_bytes()).unwrap();
        }
        w.finish().unwrap();
        p
    }

    fn install(p: &Path) -> Result<Tree, InputError> {
        let stage_dir = tempfile::tempdir().unwrap();
        let mut stage = Stage::new(stage_dir.path().to_path_buf());
        let mut tree = Tree::new(0, crate::inputs::Skeleton::default());
        let t = WheelTarget {
            site_packages: "/site".into(),
            bin_dir: "/usr/local/bin".into(),
            python: "/usr/bin/python3".into(),
        };
        add_wheel(&mut tree, &mut stage, p, "evil.whl", &t).map(|_| tree)
    }

    fn refused(r: Result<Tree, InputError>) -> InputError {
        match r {
            Ok(_) => panic!("the wheel was accepted"),
            Err(e) => e,
        }
    }

    #[test]
    fn what_a_wheel_holds_in_memory_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let meta = "Name: evil\nVersion: 1.0\n".to_string();
        let base = [
            ("evil-1.0.dist-info/WHEEL", String::new()),
            ("evil-1.0.dist-info/METADATA", meta.clone()),
        ];
        // a second METADATA, in another .dist-info
        let mut files = base.to_vec();
        files.push(("other-1.0.dist-info/METADATA", meta.clone()));
        let err = refused(install(&wheel(dir.path(), &files)));
        assert!(
            err.to_string().contains("evil.whl")
                && err.to_string().contains("other-1.0.dist-info/METADATA"),
            "{err}"
        );
        // more console scripts than any honest wheel declares
        let mut eps = "[console_scripts]\n".to_string();
        for i in 0..10_001 {
            eps.push_str(&format!("s{i} = m:f\n"));
        }
        let mut files = base.to_vec();
        files.push(("evil-1.0.dist-info/entry_points.txt", eps));
        let err = refused(install(&wheel(dir.path(), &files)));
        assert!(
            err.to_string().contains("evil.whl") && err.to_string().contains("entry_points.txt"),
            "{err}"
        );
        // scripts are staged on disk, not held
        let mut files = base.to_vec();
        files.push(("evil-1.0.data/scripts/run", "#!python\nprint(1)\n".into()));
        let tree = install(&wheel(dir.path(), &files)).unwrap();
        assert!(matches!(
            &tree.entries()["usr/local/bin/run"].kind,
            Kind::File {
                data: Data::Path(_),
                ..
            }
        ));
    }

    #[test]
    fn entry_points_parse() {
        let ep = "[console_scripts]\nf2py = numpy.f2py.f2py2e:main\n\n[other]\nx = y:z\n";
        assert_eq!(
            console_scripts(ep),
            vec![("f2py".into(), "numpy.f2py.f2py2e".into(), "main".into())]
        );
    }

    #[test]
    fn shebang_is_rewritten() {
        assert_eq!(
            rewrite_shebang(b"#!python\nprint(1)\n", "/usr/bin/python3"),
            b"#!/usr/bin/python3\nprint(1)\n"
        );
        assert_eq!(rewrite_shebang(b"#!/bin/sh\n", "/p"), b"#!/bin/sh\n");
    }
}
