//! The small blocking client: HEAD, GET, PUT, listings, multipart uploads
//! and presigned GET URLs, each request signed (see `sign`) and retried on
//! transport and server errors; the XML of the answers read here. No error
//! carries a URL with a query.
//!
//! The XML is read by a small tag finder, not an XML crate (quick-xml was
//! weighed): S3-compatible services put a bare `&` or an unknown entity in
//! their error messages, and an error body is cut at 64 KiB; a strict parser
//! refuses both and would lose the `Code` and `Message` the finder still
//! reads. The answers ferry reads are flat lists of leaf elements, and the
//! finder gives a compound element's inner XML, which `parse_uploads` and
//! `parse_parts` read again.

use super::*;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::blocking::{Client, Response};
use sign::{Flavor, Keys};

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
    pub(super) http: Client,
    /// `http` or `https`.
    pub(super) scheme: String,
    /// `host[:port]` of the service (without the bucket).
    pub(super) host: String,
    pub(super) style: Style,
    pub(super) region: String,
    pub(super) keys: Keys,
    /// The wait before the second try; it doubles at each try after.
    pub(super) retry_wait: Duration,
}

/// Requests that fail on the way (connection, 5xx, 429) are tried this often.
pub(super) const TRIES: u32 = 4;

pub(super) fn now() -> u64 {
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
pub(super) fn xml_unescape(s: &str) -> String {
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

pub(super) fn xml_escape(s: &str) -> String {
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
    pub(super) fn address(&self, key: &str) -> (String, String) {
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
    pub(super) fn signed_path(&self, key: &str, path: &str) -> String {
        match self.loc.flavor {
            Flavor::Aws => path.to_string(),
            Flavor::Oss => format!("/{}/{}", self.loc.bucket, sign::uri_encode(key, true)),
        }
    }

    pub(super) fn url(&self, host: &str, path: &str, query: &[(String, String)]) -> String {
        let q = sign::query_string(query);
        if q.is_empty() {
            format!("{}://{host}{path}", self.scheme)
        } else {
            format!("{}://{host}{path}?{q}", self.scheme)
        }
    }

    /// Sends one signed request, trying again on connection errors and
    /// 5xx/429 answers; any other answer, and the last one, is returned as is.
    pub(super) fn send(
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
    pub(super) fn fail(&self, what: &str, key: &str, r: Response) -> ObjError {
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
    pub(super) fn answer_text(
        &self,
        what: &str,
        key: &str,
        r: Response,
    ) -> Result<String, ObjError> {
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

    pub(super) fn object(&self, key: &str) -> String {
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

    pub(super) fn meta(&self, sha256: &str) -> Vec<(String, String)> {
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

    pub(super) fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
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
pub(super) const ERROR_BODY_LIMIT: u64 = 64 << 10;

/// The most of a listing page (or another XML answer) read; a page of 1000
/// parts or uploads is a few hundred KiB.
pub(super) const LISTING_LIMIT: u64 = 16 << 20;

/// S3's own limit on the parts of an upload.
pub(super) const MAX_PARTS: usize = 10_000;

/// At most `limit + 1` bytes of `r`'s body, so a longer one can be told apart.
pub(super) fn read_at_most(r: Response, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    r.take(limit + 1).read_to_end(&mut out)?;
    Ok(out)
}

/// The start of an error answer's body (where its code and message are);
/// the rest is not read, and a body cut short is read as far as it came.
pub(super) fn error_text(r: Response) -> String {
    use std::io::Read;
    let mut out = Vec::new();
    let _ = r.take(ERROR_BODY_LIMIT).read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn parse_uploads(xml: &str, key: &str) -> Vec<String> {
    xml_all(xml, "Upload")
        .iter()
        .filter(|u| xml_one(u, "Key") == key)
        .map(|u| xml_one(u, "UploadId"))
        .filter(|id| !id.is_empty())
        .collect()
}

pub(super) fn parse_parts(xml: &str) -> Vec<Part> {
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

pub(super) fn complete_xml(parts: &[Part]) -> String {
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
