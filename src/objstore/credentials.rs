//! Where the keys come from: the environment or a 0600 file, never a
//! command line. They are never printed.

use super::*;
use std::path::Path;

use sign::{Flavor, Keys};

/// Reads the keys for a location: the environment first (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`; for `oss://`
/// `OSS_ACCESS_KEY_ID`, `OSS_ACCESS_KEY_SECRET`, `OSS_SESSION_TOKEN`), or the
/// given file, which must not be readable by group or others.
pub fn credentials(
    loc: &Location,
    file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Keys, ObjError> {
    if let Some(path) = file {
        return credentials_file(path);
    }
    let (id, secret, token) = match loc.flavor {
        Flavor::Aws => (
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
        ),
        Flavor::Oss => (
            "OSS_ACCESS_KEY_ID",
            "OSS_ACCESS_KEY_SECRET",
            "OSS_SESSION_TOKEN",
        ),
    };
    match (env(id), env(secret)) {
        (Some(a), Some(s)) if !a.is_empty() && !s.is_empty() => Ok(Keys {
            access_key: a,
            secret_key: s,
            session_token: env(token).filter(|t| !t.is_empty()),
        }),
        _ => Err(ObjError::NoCredentials {
            url: loc.object_url(""),
            vars: format!("{id} and {secret}"),
        }),
    }
}

/// A credentials file: `key = value` lines (an AWS-style `[default]` section
/// is fine). Names: `aws_access_key_id` or `access_key_id`,
/// `aws_secret_access_key`, `secret_access_key` or `access_key_secret`, and
/// optionally `aws_session_token` / `session_token`.
pub(super) fn credentials_file(path: &Path) -> Result<Keys, ObjError> {
    use std::os::unix::fs::PermissionsExt;
    let bad = |message: String| ObjError::CredentialsFile {
        path: path.to_path_buf(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ObjError::CredentialsMode {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let (mut id, mut secret, mut token) = (None, None, None);
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.trim().to_string();
            continue;
        }
        if !(section.is_empty() || section == "default") {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').to_string();
        match k.trim().to_ascii_lowercase().as_str() {
            "aws_access_key_id" | "access_key_id" => id = Some(v),
            "aws_secret_access_key" | "secret_access_key" | "access_key_secret" => secret = Some(v),
            "aws_session_token" | "session_token" | "security_token" => token = Some(v),
            _ => {}
        }
    }
    match (id, secret) {
        (Some(access_key), Some(secret_key)) => Ok(Keys {
            access_key,
            secret_key,
            session_token: token,
        }),
        _ => Err(bad(
            "it names no `aws_access_key_id` and `aws_secret_access_key` (or `access_key_id` and `access_key_secret`)".into(),
        )),
    }
}
