//! The grammar checks every value passes before it reaches a host script
//! (the store, blob names, the image reference). It runs nothing.

use super::PushError;
use super::image::PushImage;
use crate::grammar::is_hex64;

/// A value refused before it reaches a host script: it does not match the
/// grammar of what it is meant to be.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("the {field} `{shown}` {reason}")]
pub struct BadValue {
    pub field: &'static str,
    /// The value, escaped and cut so the message stays one line.
    pub shown: String,
    pub reason: String,
}

impl BadValue {
    pub(crate) fn new(field: &'static str, value: &str, reason: impl Into<String>) -> BadValue {
        let mut shown: String = value.escape_debug().collect();
        if shown.chars().count() > 80 {
            shown = shown.chars().take(80).collect::<String>() + "…";
        }
        BadValue {
            field,
            shown,
            reason: reason.into(),
        }
    }

    /// The refusal as a push error naming the host.
    pub fn on(self, host: &str) -> PushError {
        PushError::BadValue {
            host: host.to_string(),
            source: self,
        }
    }
}

/// The store folder on a host: absolute and normal (no `.`, `..` or empty
/// components), printable, no longer than a Linux path. Looser than
/// [`crate::grammar::path`] on purpose: the store reaches scripts only as a
/// value and is never written into a file a daemon or a shell reads.
pub fn check_store(store: &str) -> Result<(), BadValue> {
    let bad = |reason| Err(BadValue::new("store path", store, reason));
    if !store.starts_with('/') {
        return bad("is not absolute; pass --store /var/lib/ferry or another absolute path");
    }
    if store.len() > 4095 || store.chars().any(char::is_control) {
        return bad("holds a control character or is too long");
    }
    if store.len() > 1
        && store[1..]
            .trim_end_matches('/')
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return bad("is not a normal path (an empty, `.` or `..` component)");
    }
    Ok(())
}

/// A sha256 in hex as blob names are written: exactly 64 lowercase hex digits.
pub fn check_hex(field: &'static str, hex: &str) -> Result<(), BadValue> {
    if is_hex64(hex) {
        Ok(())
    } else {
        Err(BadValue::new(
            field,
            hex,
            "is not a sha256 (64 lowercase hex digits)",
        ))
    }
}

/// An image reference as Docker reads one ([`crate::grammar::image_reference`]):
/// so it never starts with `-` (an option to the runtime) and holds no
/// space or control character.
pub fn check_reference(reference: &str) -> Result<(), BadValue> {
    crate::grammar::image_reference(reference)
        .map_err(|reason| BadValue::new("image reference", reference, reason))
}

/// Checks everything of `image` that reaches a host script, and the store:
/// a push or pull refuses before it connects.
pub fn check_image(store: &str, image: &PushImage) -> Result<(), BadValue> {
    check_store(store)?;
    check_reference(&image.reference)?;
    for b in image.blobs() {
        check_hex("blob digest", &b.hex)?;
    }
    Ok(())
}
