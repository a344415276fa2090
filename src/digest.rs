//! The sha256 helpers every part uses: the hex digest of bytes, of a file,
//! and of what streams through a `Write`, and the canonical JSON whose
//! digest names an image's config and manifest. It depends on no other
//! module of ferry.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Serialises JSON canonically: serde_json's map is a BTreeMap (the
/// `preserve_order` feature is never enabled), so keys come out sorted.
pub fn canonical(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("JSON values serialise")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// sha256 and size of a file.
pub fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = File::open(path)?;
    let mut h = HashWriter(Sha256::new());
    let n = std::io::copy(&mut f, &mut h)?;
    Ok((hex::encode(h.0.finalize()), n))
}

/// A `Write` that only hashes.
pub struct HashWriter(pub Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
