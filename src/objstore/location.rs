//! Where a bucket is: `s3://bucket/prefix` and `oss://bucket/prefix` read
//! into a [`Location`], the endpoint and URL style that reach it, and
//! [`open`], which makes a [`Store`] from them and the credentials.

use super::*;
use std::path::Path;

use sign::{Flavor, Keys};

/// A bucket and a prefix: where an image's OCI layout lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub flavor: Flavor,
    pub bucket: String,
    /// Without leading or trailing `/`; may be empty.
    pub prefix: String,
}

impl Location {
    /// Whether a destination names object storage rather than a host.
    pub fn is_bucket_url(s: &str) -> bool {
        s.starts_with("s3://") || s.starts_with("oss://")
    }

    pub fn parse(s: &str) -> Result<Location, ObjError> {
        let bad = |m: &str| ObjError::BadUrl {
            url: s.to_string(),
            message: m.to_string(),
        };
        let (flavor, rest) = if let Some(r) = s.strip_prefix("s3://") {
            (Flavor::Aws, r)
        } else if let Some(r) = s.strip_prefix("oss://") {
            (Flavor::Oss, r)
        } else {
            return Err(bad("it starts with neither `s3://` nor `oss://`"));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.contains('@') || bucket.contains(':') {
            return Err(bad(
                "it carries credentials or a port; give credentials in the environment and the server with --endpoint",
            ));
        }
        let ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !bucket.starts_with(['-', '.'])
            && !bucket.ends_with(['-', '.']);
        if !ok {
            return Err(bad(
                "the bucket name must be 3 to 63 lower-case letters, digits, `-` or `.`",
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
            && !prefix.is_empty()
        {
            return Err(bad("the prefix has an empty, `.` or `..` part"));
        }
        Ok(Location {
            flavor,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }

    /// The object key of `name` (`index.json`, `blobs/sha256/<hex>`) under the prefix.
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    /// How messages name an object: `s3://bucket/prefix/name`.
    pub fn object_url(&self, name: &str) -> String {
        let scheme = match self.flavor {
            Flavor::Aws => "s3",
            Flavor::Oss => "oss",
        };
        format!("{scheme}://{}/{}", self.bucket, self.key(name))
    }
}

/// Whether the bucket is a path segment (`host/bucket/key`) or part of the
/// host name (`bucket.host/key`; OSS accepts only this).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Path,
    Virtual,
}

/// Where the server is, as given on the command line (each optional).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub style: Option<Style>,
}

/// A client of the bucket `url` with keys from the process's environment (or
/// `credentials_file`); a region not given comes from `AWS_REGION` /
/// `AWS_DEFAULT_REGION` (s3://) or `OSS_REGION` (oss://). What the launcher
/// and the commands call.
pub fn open(
    url: &str,
    mut settings: Settings,
    credentials_file: Option<&Path>,
) -> Result<Store, ObjError> {
    let loc = Location::parse(url)?;
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if settings.region.is_none() {
        settings.region = match loc.flavor {
            Flavor::Aws => env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")),
            Flavor::Oss => env("OSS_REGION"),
        };
    }
    // the settings first: a wrong one is not hidden behind missing keys
    let no_keys = Keys {
        access_key: String::new(),
        secret_key: String::new(),
        session_token: None,
    };
    let mut store = Store::new(loc, &settings, no_keys)?;
    store.keys = credentials(&store.loc, credentials_file, &env)?;
    Ok(store)
}

/// The scheme and the `host[:port]` of an endpoint, spelled as the HTTP
/// client sends it in `Host` (and so as it must be signed): the name in
/// lower case, and no port when it is the scheme's default (`:443` of
/// https, `:80` of http).
pub(super) fn service_host(endpoint: &str) -> Result<(String, String), ObjError> {
    let bad = || ObjError::BadEndpoint {
        endpoint: endpoint.to_string(),
    };
    let url = reqwest::Url::parse(endpoint).map_err(|_| bad())?;
    let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(bad)?;
    if !matches!(url.scheme(), "http" | "https")
        || !url.username().is_empty()
        || url.password().is_some()
        || url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(bad());
    }
    let host = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    Ok((url.scheme().to_string(), host))
}

/// Whether `host[:port]` is an IP address, which has no bucket sub-domains.
pub(super) fn is_ip_host(host: &str) -> bool {
    host.starts_with('[')
        || host
            .rsplit_once(':')
            .map_or(host, |(h, _)| h)
            .parse::<std::net::Ipv4Addr>()
            .is_ok()
}
