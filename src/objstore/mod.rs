//! Object storage as a place for images: `s3://bucket/prefix` (AWS Signature
//! V4: AWS S3, MinIO, Ceph, SeaweedFS, OSS's S3-compatible endpoint) and
//! `oss://bucket/prefix` (Alibaba Cloud OSS, native V4 signing).
//!
//! This module owns the bucket URLs, where credentials come from, and a small
//! blocking client: HEAD, GET, PUT, multipart uploads and presigned GET URLs.
//! The image layout in the bucket and the multipart plan are in [`upload`];
//! hosts fetching from the bucket are in [`pull`]. Credentials come only from
//! the environment or a 0600 file; they are never printed, and no error
//! carries a URL with a query.

pub mod pull;
pub mod sign;
pub mod upload;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::blocking::{Client, Response};
use sign::{Flavor, Keys};

#[derive(Debug, thiserror::Error)]
pub enum ObjError {
    #[error(
        "`{url}` is not a bucket address: {message}; write it as `s3://bucket/prefix` or `oss://bucket/prefix`"
    )]
    BadUrl { url: String, message: String },
    #[error(
        "`--endpoint {endpoint}` is not an http(s) address: write it as `http://host:port` or `https://host`"
    )]
    BadEndpoint { endpoint: String },
    #[error(
        "`oss://` needs a region (`--region cn-hangzhou`); the endpoint alone does not name it"
    )]
    NoRegion,
    #[error(
        "`--url-style path` cannot be used with `oss://` (at `{endpoint}`): OSS refuses path-style requests; leave --url-style out (or write `virtual`)"
    )]
    OssPathStyle { endpoint: String },
    #[error(
        "`--url-style virtual` needs a DNS name, not an IP address (`{endpoint}`): buckets are reached as `bucket.HOST`; use `--url-style path`, or an endpoint name under which each bucket has a name"
    )]
    VirtualIp { endpoint: String },
    #[error(
        "no credentials for `{url}`: set {vars}, or pass --credentials-file FILE (mode 0600); they are never read from the command line"
    )]
    NoCredentials { url: String, vars: String },
    #[error("the credentials file `{}` can be read by others (mode {mode:o}); run `chmod 600 {}`", path.display(), path.display())]
    CredentialsMode { path: PathBuf, mode: u32 },
    #[error("cannot read the credentials file `{}`: {message}", path.display())]
    CredentialsFile { path: PathBuf, message: String },
    #[error(
        "`{endpoint}` refused the credentials for bucket `{bucket}` ({code}); check the access key and secret (environment or --credentials-file)"
    )]
    Denied {
        endpoint: String,
        bucket: String,
        code: String,
    },
    #[error(
        "the bucket `{bucket}` does not exist at `{endpoint}`; create it first, or check the name and --endpoint"
    )]
    NoBucket { endpoint: String, bucket: String },
    #[error("cannot reach `{endpoint}` while {what}: {message}; check --endpoint and the network")]
    Connect {
        endpoint: String,
        what: String,
        message: String,
    },
    #[error("`{endpoint}` answered {status} while {what} (`{object}`): {code} {message}")]
    Http {
        endpoint: String,
        what: String,
        object: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error(
        "`{endpoint}` sent more than {limit} bytes while {what} (`{object}`): that is not an answer of object storage; check --endpoint"
    )]
    TooLarge {
        endpoint: String,
        what: String,
        object: String,
        limit: u64,
    },
    #[error(
        "`{endpoint}` kept paging while {what} (`{object}`): more than {MAX_PARTS} parts, or a page marker that does not move; check --endpoint"
    )]
    EndlessListing {
        endpoint: String,
        what: String,
        object: String,
    },
    #[error("`{object}` is not in the bucket; push the image there first")]
    Missing { object: String },
    #[error("`{object}` is not a usable image: {message}; push the image again")]
    BadImage { object: String, message: String },
    #[error(
        "`{object}` has sha256:{found}, not the digest it is named by; the bucket's copy is damaged or was changed: push the image again"
    )]
    Tampered { object: String, found: String },
    #[error("cannot read `{}`", path.display())]
    Local {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the local blob `{}` does not match its name (its content is sha256:{found}); run `ferry verify` on the layout and rebuild it",
        path.display()
    )]
    LocalCorrupt { path: PathBuf, found: String },
}

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
fn credentials_file(path: &Path) -> Result<Keys, ObjError> {
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

/// What a HEAD tells of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    /// The `sha256` metadata ferry writes with each object, if any.
    pub sha256: Option<String>,
}

/// One uploaded part of a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub number: u32,
    pub size: u64,
    pub etag: String,
}

/// A logged-in client of one bucket.
pub struct Store {
    pub loc: Location,
    http: Client,
    /// `http` or `https`.
    scheme: String,
    /// `host[:port]` of the service (without the bucket).
    host: String,
    style: Style,
    region: String,
    keys: Keys,
    /// The wait before the second try; it doubles at each try after.
    retry_wait: Duration,
}

/// Requests that fail on the way (connection, 5xx, 429) are tried this often.
const TRIES: u32 = 4;

/// The scheme and the `host[:port]` of an endpoint, spelled as the HTTP
/// client sends it in `Host` (and so as it must be signed): the name in
/// lower case, and no port when it is the scheme's default (`:443` of
/// https, `:80` of http).
fn service_host(endpoint: &str) -> Result<(String, String), ObjError> {
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
fn is_ip_host(host: &str) -> bool {
    host.starts_with('[')
        || host
            .rsplit_once(':')
            .map_or(host, |(h, _)| h)
            .parse::<std::net::Ipv4Addr>()
            .is_ok()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The text of each `<tag>…</tag>` in `xml`, unescaped.
pub fn xml_all(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(xml_unescape(&after[..j]));
        rest = &after[j + close.len()..];
    }
    out
}

/// Replaces XML's named and numeric character references (`&quot;`, `&#34;`, `&#x22;`).
fn xml_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let decoded = after.find(';').filter(|&j| j <= 8).and_then(|j| {
            let name = &after[..j];
            let c = match name {
                "quot" => Some('"'),
                "apos" => Some('\''),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "amp" => Some('&'),
                _ => name
                    .strip_prefix("#x")
                    .map(|h| u32::from_str_radix(h, 16))
                    .or_else(|| name.strip_prefix('#').map(str::parse::<u32>))
                    .and_then(Result::ok)
                    .and_then(char::from_u32),
            }?;
            Some((c, j))
        });
        match decoded {
            Some((c, j)) => {
                out.push(c);
                rest = &after[j + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The first `<tag>` of `xml`, or "".
pub fn xml_one(xml: &str, tag: &str) -> String {
    xml_all(xml, tag).into_iter().next().unwrap_or_default()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A body to send: bytes in memory, so a failed request can be tried again;
/// each try shares them (a clone is a reference count, not a copy).
pub type Body = bytes::Bytes;

impl Store {
    pub fn new(loc: Location, settings: &Settings, keys: Keys) -> Result<Store, ObjError> {
        let region = match (&settings.region, loc.flavor) {
            (Some(r), _) => r.clone(),
            (None, Flavor::Aws) => "us-east-1".to_string(),
            (None, Flavor::Oss) => return Err(ObjError::NoRegion),
        };
        let endpoint = match (&settings.endpoint, loc.flavor) {
            (Some(e), _) => e.clone(),
            (None, Flavor::Aws) => format!("https://s3.{region}.amazonaws.com"),
            (None, Flavor::Oss) => format!("https://oss-{region}.aliyuncs.com"),
        };
        let (scheme, host) = service_host(&endpoint)?;
        // a custom S3 endpoint (MinIO, SeaweedFS, Ceph) rarely has DNS per bucket
        let style = settings.style.unwrap_or(match loc.flavor {
            Flavor::Oss => Style::Virtual,
            Flavor::Aws if settings.endpoint.is_some() => Style::Path,
            Flavor::Aws => Style::Virtual,
        });
        if style == Style::Path && loc.flavor == Flavor::Oss {
            return Err(ObjError::OssPathStyle { endpoint });
        }
        if style == Style::Virtual && is_ip_host(&host) {
            return Err(ObjError::VirtualIp { endpoint });
        }
        let http = Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(900))
            .pool_max_idle_per_host(32)
            .build()
            .map_err(|e| ObjError::Connect {
                endpoint: endpoint.clone(),
                what: "starting the HTTP client".into(),
                message: e.without_url().to_string(),
            })?;
        Ok(Store {
            loc,
            http,
            scheme,
            host,
            style,
            region,
            keys,
            retry_wait: Duration::from_millis(500),
        })
    }

    /// The service address, for messages: `http://host:port`.
    pub fn endpoint(&self) -> String {
        format!("{}://{}", self.scheme, self.host)
    }

    /// The host header and URI path of an object (`key` may be empty: the bucket).
    fn address(&self, key: &str) -> (String, String) {
        let key = sign::uri_encode(key, true);
        match self.style {
            Style::Path => (self.host.clone(), format!("/{}/{key}", self.loc.bucket)),
            Style::Virtual => (
                format!("{}.{}", self.loc.bucket, self.host),
                format!("/{key}"),
            ),
        }
    }

    /// The path OSS signs: `/bucket/key` whatever the URL style.
    fn signed_path(&self, key: &str, path: &str) -> String {
        match self.loc.flavor {
            Flavor::Aws => path.to_string(),
            Flavor::Oss => format!("/{}/{}", self.loc.bucket, sign::uri_encode(key, true)),
        }
    }

    fn url(&self, host: &str, path: &str, query: &[(String, String)]) -> String {
        let q = sign::query_string(query);
        if q.is_empty() {
            format!("{}://{host}{path}", self.scheme)
        } else {
            format!("{}://{host}{path}?{q}", self.scheme)
        }
    }

    /// Sends one signed request, trying again on connection errors and
    /// 5xx/429 answers; any other answer, and the last one, is returned as is.
    fn send(
        &self,
        what: &str,
        method: &str,
        key: &str,
        query: &[(String, String)],
        extra: &[(String, String)],
        body: Body,
    ) -> Result<Response, ObjError> {
        let (host, path) = self.address(key);
        let url = self.url(&host, &path, query);
        let p = self.loc.flavor.header_prefix();
        let mut last = String::new();
        for attempt in 0..TRIES {
            if attempt > 0 {
                std::thread::sleep(self.retry_wait * (1 << (attempt - 1)));
            }
            let secs = now();
            let mut headers: Vec<(String, String)> = vec![
                (format!("{p}content-sha256"), sign::UNSIGNED_PAYLOAD.into()),
                (format!("{p}date"), sign::timestamp(secs)),
            ];
            if self.loc.flavor == Flavor::Aws {
                headers.push(("host".into(), host.clone()));
            }
            if let Some(t) = &self.keys.session_token {
                headers.push((format!("{p}security-token"), t.clone()));
            }
            headers.extend(extra.iter().cloned());
            let spath = self.signed_path(key, &path);
            let req = sign::Request {
                method,
                path: &spath,
                query,
                headers: &headers,
                payload_hash: sign::UNSIGNED_PAYLOAD,
            };
            let auth = sign::authorization(self.loc.flavor, &req, &self.keys, &self.region, secs);
            let m = reqwest::Method::from_bytes(method.as_bytes()).expect("a known method");
            let mut rb = self.http.request(m, &url).header("authorization", auth);
            for (k, v) in headers.iter().filter(|(k, _)| k != "host") {
                rb = rb.header(k.as_str(), v.as_str());
            }
            // always a body: without one reqwest sends no Content-Length, and PUTs get 411
            match rb.body(body.clone()).send() {
                // the last answer is the caller's to report, with the server's error code
                Ok(r)
                    if (r.status().is_server_error() || r.status().as_u16() == 429)
                        && attempt + 1 < TRIES => {}
                Ok(r) => return Ok(r),
                Err(e) => last = e.without_url().to_string(),
            }
        }
        Err(ObjError::Connect {
            endpoint: self.endpoint(),
            what: what.to_string(),
            message: format!("{last} (tried {TRIES} times)"),
        })
    }

    /// Turns a non-2xx answer into an error naming the object.
    fn fail(&self, what: &str, key: &str, r: Response) -> ObjError {
        let status = r.status().as_u16();
        let text = error_text(r);
        let code = xml_one(&text, "Code");
        let message = xml_one(&text, "Message");
        match (status, code.as_str()) {
            (404, "NoSuchBucket") => ObjError::NoBucket {
                endpoint: self.endpoint(),
                bucket: self.loc.bucket.clone(),
            },
            (403, _) | (400, "AuthorizationHeaderMalformed") | (400, "InvalidAccessKeyId") => {
                ObjError::Denied {
                    endpoint: self.endpoint(),
                    bucket: self.loc.bucket.clone(),
                    code: if code.is_empty() {
                        format!("HTTP {status}")
                    } else {
                        code
                    },
                }
            }
            (404, _) if what.starts_with("reading") => ObjError::Missing {
                object: self.object(key),
            },
            _ => ObjError::Http {
                endpoint: self.endpoint(),
                what: what.to_string(),
                object: self.object(key),
                status,
                code,
                message,
            },
        }
    }

    /// The body of a successful XML answer, refused beyond [`LISTING_LIMIT`].
    fn answer_text(&self, what: &str, key: &str, r: Response) -> Result<String, ObjError> {
        let body = read_at_most(r, LISTING_LIMIT).map_err(|e| ObjError::Connect {
            endpoint: self.endpoint(),
            what: what.into(),
            message: e.to_string(),
        })?;
        if body.len() as u64 > LISTING_LIMIT {
            return Err(ObjError::TooLarge {
                endpoint: self.endpoint(),
                what: what.into(),
                object: self.object(key),
                limit: LISTING_LIMIT,
            });
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    fn object(&self, key: &str) -> String {
        let scheme = match self.loc.flavor {
            Flavor::Aws => "s3",
            Flavor::Oss => "oss",
        };
        format!("{scheme}://{}/{key}", self.loc.bucket)
    }

    /// Checks that the bucket exists and the keys are accepted.
    pub fn check_bucket(&self) -> Result<(), ObjError> {
        let q = vec![
            ("list-type".to_string(), "2".to_string()),
            ("max-keys".to_string(), "1".to_string()),
            ("prefix".to_string(), self.loc.key("index.json")),
        ];
        let r = self.send("listing the bucket", "GET", "", &q, &[], Body::new())?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(self.fail("listing the bucket", "", r))
        }
    }

    /// Size and sha256 metadata of an object, or `None` when there is none.
    pub fn head(&self, key: &str) -> Result<Option<ObjectInfo>, ObjError> {
        let what = "checking an object";
        let r = self.send(what, "HEAD", key, &[], &[], Body::new())?;
        if r.status().as_u16() == 404 {
            return Ok(None);
        }
        if !r.status().is_success() {
            // a HEAD answer has no body: tell a missing bucket apart by asking for it
            if r.status().as_u16() != 403 {
                self.check_bucket()?;
            }
            return Err(self.fail(what, key, r));
        }
        let size = r
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let meta = format!("{}meta-sha256", self.loc.flavor.header_prefix());
        let sha256 = r
            .headers()
            .get(meta.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(Some(ObjectInfo { size, sha256 }))
    }

    /// Reads a small object (an index, manifest or config), at most `limit` bytes.
    pub fn get(&self, key: &str, limit: u64) -> Result<Vec<u8>, ObjError> {
        let what = "reading an object";
        let r = self.send(what, "GET", key, &[], &[], Body::new())?;
        if !r.status().is_success() {
            return Err(self.fail(what, key, r));
        }
        let mut out = Vec::new();
        use std::io::Read;
        r.take(limit + 1)
            .read_to_end(&mut out)
            .map_err(|e| ObjError::Connect {
                endpoint: self.endpoint(),
                what: what.into(),
                message: e.to_string(),
            })?;
        if out.len() as u64 > limit {
            return Err(ObjError::BadImage {
                object: self.object(key),
                message: format!("it is larger than {limit} bytes"),
            });
        }
        Ok(out)
    }

    fn meta(&self, sha256: &str) -> Vec<(String, String)> {
        vec![(
            format!("{}meta-sha256", self.loc.flavor.header_prefix()),
            sha256.to_string(),
        )]
    }

    /// Writes a whole object with its sha256 in the metadata.
    pub fn put(&self, key: &str, body: Body, sha256: &str) -> Result<(), ObjError> {
        let what = "writing an object";
        let r = self.send(what, "PUT", key, &[], &self.meta(sha256), body)?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(self.fail(what, key, r))
        }
    }

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Starts a multipart upload; the metadata is given now, not at the end.
    pub fn create_upload(&self, key: &str, sha256: &str) -> Result<String, ObjError> {
        let what = "starting a multipart upload";
        let r = self.send(
            what,
            "POST",
            key,
            &Self::q(&[("uploads", "")]),
            &self.meta(sha256),
            Body::new(),
        )?;
        if !r.status().is_success() {
            return Err(self.fail(what, key, r));
        }
        let id = xml_one(&self.answer_text(what, key, r)?, "UploadId");
        if id.is_empty() {
            return Err(ObjError::Http {
                endpoint: self.endpoint(),
                what: what.into(),
                object: self.object(key),
                status: 200,
                code: "NoUploadId".into(),
                message: "the answer names no upload".into(),
            });
        }
        Ok(id)
    }

    /// Unfinished uploads of exactly `key`, oldest first.
    pub fn list_uploads(&self, key: &str) -> Result<Vec<String>, ObjError> {
        let what = "listing unfinished uploads";
        let r = self.send(
            what,
            "GET",
            "",
            &Self::q(&[("uploads", ""), ("prefix", key)]),
            &[],
            Body::new(),
        )?;
        if !r.status().is_success() {
            return Err(self.fail(what, key, r));
        }
        Ok(parse_uploads(&self.answer_text(what, "", r)?, key))
    }

    /// The parts an unfinished upload has, by number.
    pub fn list_parts(&self, key: &str, upload: &str) -> Result<Vec<Part>, ObjError> {
        let what = "listing the parts of an upload";
        let mut parts = Vec::new();
        let mut marker = String::new();
        loop {
            let mut q = Self::q(&[("uploadId", upload), ("max-parts", "1000")]);
            if !marker.is_empty() {
                q.push(("part-number-marker".into(), marker.clone()));
            }
            let r = self.send(what, "GET", key, &q, &[], Body::new())?;
            if !r.status().is_success() {
                return Err(self.fail(what, key, r));
            }
            let text = self.answer_text(what, key, r)?;
            parts.extend(parse_parts(&text));
            let next = xml_one(&text, "NextPartNumberMarker");
            if xml_one(&text, "IsTruncated") != "true" || next.is_empty() {
                break;
            }
            // a server that pages forever, or in place, is not followed
            if next == marker || parts.len() > MAX_PARTS {
                return Err(ObjError::EndlessListing {
                    endpoint: self.endpoint(),
                    what: what.into(),
                    object: self.object(key),
                });
            }
            marker = next;
        }
        parts.sort_by_key(|p| p.number);
        Ok(parts)
    }

    /// Sends one part; returns its ETag.
    pub fn upload_part(
        &self,
        key: &str,
        upload: &str,
        number: u32,
        body: Body,
    ) -> Result<String, ObjError> {
        let what = format!("uploading part {number}");
        let n = number.to_string();
        let r = self.send(
            &what,
            "PUT",
            key,
            &Self::q(&[("partNumber", &n), ("uploadId", upload)]),
            &[],
            body,
        )?;
        if !r.status().is_success() {
            return Err(self.fail(&what, key, r));
        }
        Ok(r.headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string())
    }

    /// Joins the parts into the object.
    pub fn complete(&self, key: &str, upload: &str, parts: &[Part]) -> Result<(), ObjError> {
        let what = "completing a multipart upload";
        let body = Body::from(complete_xml(parts));
        let r = self.send(
            what,
            "POST",
            key,
            &Self::q(&[("uploadId", upload)]),
            &[],
            body,
        )?;
        let status = r.status();
        // a 200 can still carry an error document (and its start says so)
        let text = error_text(r);
        if status.is_success() && !text.contains("<Error>") {
            return Ok(());
        }
        Err(ObjError::Http {
            endpoint: self.endpoint(),
            what: what.into(),
            object: self.object(key),
            status: status.as_u16(),
            code: xml_one(&text, "Code"),
            message: xml_one(&text, "Message"),
        })
    }

    /// Drops an unfinished upload and its parts.
    pub fn abort(&self, key: &str, upload: &str) -> Result<(), ObjError> {
        let what = "aborting a multipart upload";
        let r = self.send(
            what,
            "DELETE",
            key,
            &Self::q(&[("uploadId", upload)]),
            &[],
            Body::new(),
        )?;
        if r.status().is_success() || r.status().as_u16() == 404 {
            Ok(())
        } else {
            Err(self.fail(what, key, r))
        }
    }

    /// A URL anyone holding it may GET `key` with, for `expires` seconds.
    pub fn presign_get(&self, key: &str, expires: u64) -> String {
        let (host, path) = self.address(key);
        let spath = self.signed_path(key, &path);
        let headers: Vec<(String, String)> = match self.loc.flavor {
            Flavor::Aws => vec![("host".into(), host.clone())],
            Flavor::Oss => vec![],
        };
        let req = sign::Request {
            method: "GET",
            path: &spath,
            query: &[],
            headers: &headers,
            payload_hash: sign::UNSIGNED_PAYLOAD,
        };
        let q = sign::presign(
            self.loc.flavor,
            &req,
            &self.keys,
            &self.region,
            now(),
            expires,
        );
        self.url(&host, &path, &q)
    }
}

/// The most of an error answer's body read: its code and message come first.
const ERROR_BODY_LIMIT: u64 = 64 << 10;
/// The most of a listing page (or another XML answer) read; a page of 1000
/// parts or uploads is a few hundred KiB.
const LISTING_LIMIT: u64 = 16 << 20;
/// S3's own limit on the parts of an upload.
const MAX_PARTS: usize = 10_000;

/// At most `limit + 1` bytes of `r`'s body, so a longer one can be told apart.
fn read_at_most(r: Response, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    r.take(limit + 1).read_to_end(&mut out)?;
    Ok(out)
}

/// The start of an error answer's body (where its code and message are);
/// the rest is not read, and a body cut short is read as far as it came.
fn error_text(r: Response) -> String {
    use std::io::Read;
    let mut out = Vec::new();
    let _ = r.take(ERROR_BODY_LIMIT).read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_uploads(xml: &str, key: &str) -> Vec<String> {
    xml_all(xml, "Upload")
        .iter()
        .filter(|u| xml_one(u, "Key") == key)
        .map(|u| xml_one(u, "UploadId"))
        .filter(|id| !id.is_empty())
        .collect()
}

fn parse_parts(xml: &str) -> Vec<Part> {
    xml_all(xml, "Part")
        .iter()
        .filter_map(|p| {
            Some(Part {
                number: xml_one(p, "PartNumber").parse().ok()?,
                size: xml_one(p, "Size").parse().ok()?,
                etag: xml_one(p, "ETag"),
            })
        })
        .collect()
}

fn complete_xml(parts: &[Part]) -> String {
    let mut s = String::from("<CompleteMultipartUpload>");
    for p in parts {
        s.push_str(&format!(
            "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>",
            p.number,
            xml_escape(&p.etag)
        ));
    }
    s.push_str("</CompleteMultipartUpload>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn keys() -> Keys {
        Keys {
            access_key: "AK".into(),
            secret_key: "SECRET".into(),
            session_token: None,
        }
    }

    #[test]
    fn bucket_urls_parse() {
        let l = Location::parse("s3://my-bucket/images/spark/").unwrap();
        assert_eq!(
            (l.flavor, l.bucket.as_str(), l.prefix.as_str()),
            (Flavor::Aws, "my-bucket", "images/spark")
        );
        assert_eq!(l.key("index.json"), "images/spark/index.json");
        assert_eq!(
            l.object_url("oci-layout"),
            "s3://my-bucket/images/spark/oci-layout"
        );
        let l = Location::parse("oss://bkt").unwrap();
        assert_eq!(
            (l.flavor, l.prefix.as_str(), l.key("index.json").as_str()),
            (Flavor::Oss, "", "index.json")
        );
        for bad in [
            "http://b/p",
            "s3://AKIA:x@bucket/p",
            "s3://Bu/p",
            "s3://b/p",
            "s3://bucket/a//b",
            "s3://bucket/../x",
            "s3://-bucket",
        ] {
            let e = Location::parse(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("`{bad}`")), "{e}");
        }
    }

    #[test]
    fn urls_are_path_style_for_custom_endpoints_and_virtual_for_aws_and_oss() {
        let s3 = Location::parse("s3://bkt/p").unwrap();
        let custom = Settings {
            endpoint: Some("http://10.0.0.1:8333".into()),
            ..Settings::default()
        };
        let st = Store::new(s3.clone(), &custom, keys()).unwrap();
        assert_eq!(
            st.address("p/a b+c"),
            ("10.0.0.1:8333".into(), "/bkt/p/a%20b%2Bc".into())
        );
        assert!(
            st.presign_get("p/x", 60)
                .starts_with("http://10.0.0.1:8333/bkt/p/x?X-Amz-Algorithm=AWS4-HMAC-SHA256&")
        );
        let st = Store::new(s3.clone(), &Settings::default(), keys()).unwrap();
        assert_eq!(
            st.address("p/x"),
            ("bkt.s3.us-east-1.amazonaws.com".into(), "/p/x".into())
        );
        // an IP address has no bucket sub-domains
        let forced = Settings {
            style: Some(Style::Virtual),
            ..custom.clone()
        };
        let e = Store::new(s3.clone(), &forced, keys()).err().unwrap();
        assert!(
            matches!(e, ObjError::VirtualIp { .. }) && e.to_string().contains("--url-style path"),
            "{e}"
        );
        for ip in ["http://[::1]:8333", "https://10.0.0.1"] {
            let s = Settings {
                endpoint: Some(ip.into()),
                ..forced.clone()
            };
            assert!(
                matches!(
                    Store::new(s3.clone(), &s, keys()),
                    Err(ObjError::VirtualIp { .. })
                ),
                "{ip}"
            );
        }
        let named = Settings {
            endpoint: Some("http://s3.example.test:8333".into()),
            ..forced
        };
        let st = Store::new(s3, &named, keys()).unwrap();
        assert_eq!(
            st.address("x"),
            ("bkt.s3.example.test:8333".into(), "/x".into())
        );

        let oss = Location::parse("oss://bkt/p").unwrap();
        assert!(matches!(
            Store::new(oss.clone(), &Settings::default(), keys()),
            Err(ObjError::NoRegion)
        ));
        // OSS refuses path-style requests (`SecondLevelDomainForbidden`)
        let e = Store::new(
            oss.clone(),
            &Settings {
                region: Some("cn-hangzhou".into()),
                style: Some(Style::Path),
                ..Settings::default()
            },
            keys(),
        )
        .err()
        .unwrap();
        assert!(
            matches!(e, ObjError::OssPathStyle { .. }) && e.to_string().contains("oss://"),
            "{e}"
        );
        let st = Store::new(
            oss,
            &Settings {
                region: Some("cn-hangzhou".into()),
                ..Settings::default()
            },
            keys(),
        )
        .unwrap();
        assert_eq!(
            st.address("p/x"),
            ("bkt.oss-cn-hangzhou.aliyuncs.com".into(), "/p/x".into())
        );
        assert_eq!(st.signed_path("p/x", "/p/x"), "/bkt/p/x");
        let url = st.presign_get("p/x", 60);
        assert!(url.starts_with("https://bkt.oss-cn-hangzhou.aliyuncs.com/p/x?x-oss-signature-version=OSS4-HMAC-SHA256&"), "{url}");
        assert!(!url.contains("SECRET"));
        for bad in [
            "10.0.0.1:8333",
            "ftp://x",
            "http://",
            "http://h/path",
            "http://u@h",
            "http://h?x=1",
        ] {
            let s = Settings {
                endpoint: Some(bad.into()),
                ..Settings::default()
            };
            assert!(
                matches!(
                    Store::new(Location::parse("s3://bkt").unwrap(), &s, keys()),
                    Err(ObjError::BadEndpoint { .. })
                ),
                "{bad}"
            );
        }
    }

    /// What the HTTP client sends as `Host` for a URL (reqwest leaves the
    /// scheme's default port out and writes the name in lower case).
    fn sent_host(url: &str) -> String {
        let u = reqwest::Url::parse(url).unwrap();
        match u.port() {
            Some(p) => format!("{}:{p}", u.host_str().unwrap()),
            None => u.host_str().unwrap().to_string(),
        }
    }

    #[test]
    fn the_signed_host_is_the_one_the_client_sends() {
        let s3 = Location::parse("s3://bkt/p").unwrap();
        for (endpoint, style, host) in [
            (
                "https://S3.Example.test:443",
                Style::Path,
                "s3.example.test",
            ),
            ("http://s3.example.test:80/", Style::Path, "s3.example.test"),
            ("http://10.0.0.1:80", Style::Path, "10.0.0.1"),
            ("http://[::1]:80", Style::Path, "[::1]"),
            (
                "https://s3.example.test:80",
                Style::Path,
                "s3.example.test:80",
            ),
            (
                "http://s3.example.test:8333",
                Style::Path,
                "s3.example.test:8333",
            ),
            (
                "https://s3.example.test:443",
                Style::Virtual,
                "bkt.s3.example.test",
            ),
        ] {
            let s = Settings {
                endpoint: Some(endpoint.into()),
                region: None,
                style: Some(style),
            };
            let st = Store::new(s3.clone(), &s, keys()).unwrap();
            let (signed, path) = st.address("p/x");
            assert_eq!(signed, host, "{endpoint}");
            assert_eq!(
                sent_host(&st.url(&signed, &path, &[])),
                signed,
                "{endpoint}"
            );
            // a presigned URL is signed for the host it names
            assert_eq!(sent_host(&st.presign_get("p/x", 60)), signed, "{endpoint}");
        }
    }

    /// A server on a local port answering every request with `status` and
    /// `body`; returns its endpoint and the `Host` header of each request.
    fn fake_server(status: &'static str, body: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hosts = seen.clone();
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let (mut line, mut len, mut host) = (String::new(), 0usize, String::new());
                while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if let Some(v) = line.strip_prefix("host:").or(line.strip_prefix("Host:")) {
                        host = v.trim().to_string();
                    }
                    line.clear();
                }
                let _ = r.by_ref().take(len as u64).read_to_end(&mut Vec::new());
                hosts.lock().unwrap().push(host);
                let mut w = conn;
                let _ = write!(
                    w,
                    "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (format!("http://LocalHost:{port}"), seen)
    }

    /// The most a [`huge_server`] sends: far past any bound, yet not
    /// enough to exhaust memory when a bound is missing.
    const HUGE: u64 = 256 << 20;

    /// A server answering every request with `status`, no length and an
    /// XML body of [`HUGE`] bytes (endless as far as the client can tell),
    /// until the client hangs up; returns its endpoint and how many body
    /// bytes each answer got out.
    fn huge_server(status: &'static str) -> (String, Arc<Mutex<Vec<u64>>>) {
        use std::io::{BufRead, BufReader, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let counts = sent.clone();
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let mut w = conn;
                let _ = write!(
                    w,
                    "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nConnection: close\r\n\r\n<Error><Code>Big</Code><Message>"
                );
                let chunk = vec![b'x'; 64 << 10];
                let mut n = 0u64;
                while n < HUGE && w.write_all(&chunk).is_ok() {
                    n += chunk.len() as u64;
                }
                counts.lock().unwrap().push(n);
            }
        });
        (format!("http://127.0.0.1:{port}"), sent)
    }

    /// Runs `f` on a thread and waits at most a minute for it.
    fn within_a_minute<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(60))
            .expect("the call returned within a minute")
    }

    fn huge_store(status: &'static str) -> (Store, Arc<Mutex<Vec<u64>>>) {
        let (endpoint, sent) = huge_server(status);
        let settings = Settings {
            endpoint: Some(endpoint),
            ..Settings::default()
        };
        let mut st = Store::new(Location::parse("s3://bkt/p").unwrap(), &settings, keys()).unwrap();
        st.retry_wait = Duration::from_millis(1);
        (st, sent)
    }

    #[test]
    fn an_endless_error_body_is_read_only_as_far_as_its_bound() {
        let (st, sent) = huge_store("400 Bad Request");
        let e = within_a_minute(move || {
            st.upload_part("p/x", "u1", 1, Body::from_static(b"a part"))
                .unwrap_err()
        });
        let msg = e.to_string();
        assert!(msg.contains("s3://bkt/p/x") && msg.contains("400"), "{msg}");
        assert!(!msg.contains('\n') && msg.len() < 1000, "{}", &msg[..300]);
        // the client hung up after its bound: the server's writes failed
        // well before the end of its body
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while sent.lock().unwrap().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the server never finished"
            );
            std::thread::yield_now();
        }
        let n = sent.lock().unwrap()[0];
        assert!(n < 64 << 20, "the server got {n} bytes out");
    }

    #[test]
    fn an_endless_listing_is_refused_naming_the_bucket() {
        for list_parts in [false, true] {
            let (st, _) = huge_store("200 OK");
            let e = within_a_minute(move || {
                if list_parts {
                    st.list_parts("p/x", "u1").map(|_| ())
                } else {
                    st.list_uploads("p/x").map(|_| ())
                }
            })
            .unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, ObjError::TooLarge { .. }), "{msg}");
            assert!(
                msg.contains("s3://bkt/") && msg.contains("listing"),
                "{msg}"
            );
        }
    }

    #[test]
    fn a_listing_that_pages_in_place_is_not_followed() {
        let (endpoint, hosts) = fake_server(
            "200 OK",
            "<ListPartsResult><IsTruncated>true</IsTruncated><NextPartNumberMarker>5</NextPartNumberMarker></ListPartsResult>",
        );
        let settings = Settings {
            endpoint: Some(endpoint),
            ..Settings::default()
        };
        let st = Store::new(Location::parse("s3://bkt/p").unwrap(), &settings, keys()).unwrap();
        let e = st.list_parts("p/x", "u1").unwrap_err();
        assert!(matches!(e, ObjError::EndlessListing { .. }), "{e}");
        assert!(e.to_string().contains("s3://bkt/p/x"), "{e}");
        assert_eq!(hosts.lock().unwrap().len(), 2);
    }

    #[test]
    fn a_server_error_is_reported_with_its_code_after_the_retries() {
        let (endpoint, hosts) = fake_server(
            "503 Slow Down",
            "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
        );
        let settings = Settings {
            endpoint: Some(endpoint),
            ..Settings::default()
        };
        let mut st = Store::new(Location::parse("s3://bkt/p").unwrap(), &settings, keys()).unwrap();
        st.retry_wait = Duration::from_millis(1);
        let e = st
            .upload_part("p/x", "u1", 1, Body::from_static(b"a part"))
            .unwrap_err();
        match &e {
            ObjError::Http {
                status,
                code,
                message,
                ..
            } => assert_eq!(
                (*status, code.as_str(), message.as_str()),
                (503, "SlowDown", "Please reduce your request rate.")
            ),
            other => panic!("not the server's error: {other}"),
        }
        assert!(e.to_string().contains("uploading part 1"), "{e}");
        let hosts = hosts.lock().unwrap().clone();
        assert_eq!(hosts.len(), TRIES as usize, "{hosts:?}");
        // what was signed is what was sent
        let (signed, _) = st.address("p/x");
        assert!(hosts.iter().all(|h| *h == signed), "{hosts:?} vs {signed}");
    }

    #[test]
    fn credentials_come_from_the_environment_or_a_private_file() {
        let s3 = Location::parse("s3://bkt/p").unwrap();
        let env = |k: &str| match k {
            "AWS_ACCESS_KEY_ID" => Some("AK".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("SK".to_string()),
            _ => None,
        };
        let k = credentials(&s3, None, &env).unwrap();
        assert_eq!((k.access_key.as_str(), k.secret_key.as_str()), ("AK", "SK"));
        let e = credentials(&Location::parse("oss://bkt").unwrap(), None, &env)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("OSS_ACCESS_KEY_ID and OSS_ACCESS_KEY_SECRET"),
            "{e}"
        );

        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("creds");
        std::fs::write(&f, "[other]\naws_access_key_id = NO\n[default]\naws_access_key_id = FK\naws_secret_access_key = \"FS\"\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = credentials(&s3, Some(&f), &env).unwrap_err().to_string();
        assert!(
            e.contains("mode 644") && e.contains(&format!("chmod 600 {}", f.display())),
            "{e}"
        );
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let k = credentials(&s3, Some(&f), &env).unwrap();
        assert_eq!((k.access_key.as_str(), k.secret_key.as_str()), ("FK", "FS"));
    }

    #[test]
    fn xml_answers_parse() {
        let parts = r#"<?xml version="1.0"?><ListPartsResult><Bucket>b</Bucket><Key>k</Key><UploadId>u1</UploadId>
<IsTruncated>true</IsTruncated><NextPartNumberMarker>2</NextPartNumberMarker>
<Part><PartNumber>1</PartNumber><LastModified>x</LastModified><ETag>&quot;aa&quot;</ETag><Size>16777216</Size></Part>
<Part><PartNumber>2</PartNumber><ETag>"bb"</ETag><Size>5</Size></Part></ListPartsResult>"#;
        assert_eq!(
            parse_parts(parts),
            vec![
                Part {
                    number: 1,
                    size: 16777216,
                    etag: "\"aa\"".into()
                },
                Part {
                    number: 2,
                    size: 5,
                    etag: "\"bb\"".into()
                },
            ]
        );
        assert_eq!(xml_one(parts, "NextPartNumberMarker"), "2");
        let uploads = "<ListMultipartUploadsResult><Upload><Key>p/a</Key><UploadId>1</UploadId></Upload><Upload><Key>p/ab</Key><UploadId>2</UploadId></Upload><Upload><Key>p/a</Key><UploadId>3</UploadId></Upload></ListMultipartUploadsResult>";
        assert_eq!(parse_uploads(uploads, "p/a"), vec!["1", "3"]);
        let err = "<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature &amp; more</Message></Error>";
        assert_eq!(xml_one(err, "Message"), "The request signature & more");
        // SeaweedFS writes numeric references
        assert_eq!(
            xml_unescape("&#34;ab&#x22; &#39;x&#39; & &bogus;"),
            "\"ab\" 'x' & &bogus;"
        );
        assert_eq!(
            complete_xml(&[Part {
                number: 1,
                size: 1,
                etag: "\"e\"".into()
            }]),
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>&quot;e&quot;</ETag></Part></CompleteMultipartUpload>"
        );
    }
}
