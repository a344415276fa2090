//! The default image (`images/spark`), compiled into the binary so that
//! `ferry build` with no definition works from any folder, including a ferry
//! installed through Nix. The files are written once into the cache, under a
//! folder named by their digest, and built from there like any definition.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Every file of `images/spark`, by its path inside that folder.
pub const FILES: &[(&str, &[u8])] = &[
    (
        "image.toml",
        include_bytes!("../../images/spark/image.toml"),
    ),
    (
        "image.lock",
        include_bytes!("../../images/spark/image.lock"),
    ),
    (
        "image.digest",
        include_bytes!("../../images/spark/image.digest"),
    ),
    (
        "config.digest",
        include_bytes!("../../images/spark/config.digest"),
    ),
    (
        "files/etc/zookeeper/conf/environment",
        include_bytes!("../../images/spark/files/etc/zookeeper/conf/environment"),
    ),
    (
        "files/etc/zookeeper/conf/zoo.cfg",
        include_bytes!("../../images/spark/files/etc/zookeeper/conf/zoo.cfg"),
    ),
    (
        "files/opt/ferry/jobs/sample.py",
        include_bytes!("../../images/spark/files/opt/ferry/jobs/sample.py"),
    ),
    (
        "files/opt/spark/conf/log4j2.properties",
        include_bytes!("../../images/spark/files/opt/spark/conf/log4j2.properties"),
    ),
    (
        "files/usr/share/zookeeper/bin/zkEnv.sh",
        include_bytes!("../../images/spark/files/usr/share/zookeeper/bin/zkEnv.sh"),
    ),
];

/// Writes the embedded definition under `cache/default-image/<digest>/spark`
/// (once) and returns the path of its image.toml.
pub fn materialize(cache_root: &Path) -> std::io::Result<PathBuf> {
    let mut h = Sha256::new();
    for (name, bytes) in FILES {
        h.update(name.as_bytes());
        h.update([0]);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    let id = hex::encode(h.finalize());
    let root = cache_root.join("default-image").join(&id[..16]);
    let def = root.join("spark/image.toml");
    if def.exists() {
        return Ok(def);
    }
    std::fs::create_dir_all(&root)?;
    let tmp = tempfile::Builder::new()
        .prefix(".spark-")
        .tempdir_in(&root)?;
    for (name, bytes) in FILES {
        let p = tmp.path().join(name);
        std::fs::create_dir_all(p.parent().expect("file has a parent"))?;
        std::fs::write(&p, bytes)?;
    }
    let tmp = tmp.keep();
    match std::fs::rename(&tmp, root.join("spark")) {
        Ok(()) => Ok(def),
        // another ferry got there first: its copy is the same bytes
        Err(_) if def.exists() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(def)
        }
        Err(e) => Err(e),
    }
}

/// The manifest digest the committed lock builds to.
pub fn expected_digest() -> &'static str {
    embedded("image.digest")
}

/// Its config digest: the id Docker gives the image it loads.
pub fn expected_config_digest() -> &'static str {
    embedded("config.digest")
}

fn embedded(name: &str) -> &'static str {
    let (_, bytes) = FILES
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("{name} is embedded"));
    std::str::from_utf8(bytes).expect("utf-8").trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adding a file to images/spark without embedding it would make the
    /// built-in definition differ from the repository's.
    #[test]
    fn every_file_of_the_image_folder_is_embedded_byte_for_byte() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("images/spark");
        let mut on_disk = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    on_disk.push(
                        p.strip_prefix(&root)
                            .unwrap()
                            .to_string_lossy()
                            .into_owned(),
                    );
                }
            }
        }
        on_disk.sort();
        let mut embedded: Vec<String> = FILES.iter().map(|(n, _)| n.to_string()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
        for (name, bytes) in FILES {
            assert_eq!(&std::fs::read(root.join(name)).unwrap(), bytes, "{name}");
        }
        assert!(expected_digest().starts_with("sha256:"));
        assert!(expected_config_digest().starts_with("sha256:"));
    }

    #[test]
    fn materialized_copy_parses() {
        let dir = tempfile::tempdir().unwrap();
        let def = materialize(dir.path()).unwrap();
        assert_eq!(materialize(dir.path()).unwrap(), def);
        let d = crate::image::spec::Definition::load(&def).unwrap();
        assert_eq!(d.spec.name, "ferry/spark");
    }
}
