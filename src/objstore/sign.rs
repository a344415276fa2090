//! Request signing for object storage, as pure functions of the request, the
//! keys and the time: AWS Signature V4 (`AWS4-HMAC-SHA256`; AWS S3, OSS's
//! S3-compatible endpoint, MinIO, Ceph, SeaweedFS) and Alibaba Cloud's native
//! OSS V4 (`OSS4-HMAC-SHA256`), each as an `Authorization` header and as a
//! presigned URL query. No I/O; the secret never leaves these functions
//! except as an HMAC.
//!
//! The signer itself is written here rather than taken from an SDK: it is a
//! few pure functions, checked against the vectors AWS and Alibaba Cloud
//! publish (see the tests), while the SDKs bring an async runtime and their
//! own HTTP stack, and none signs OSS V4 and AWS V4 alike. Only the
//! percent-encoding is the `percent-encoding` crate's.

use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};

/// The payload hash of a request whose body is not hashed.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Which scheme signs the requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// AWS Signature V4, headers named `x-amz-*`.
    Aws,
    /// Alibaba Cloud OSS V4, headers named `x-oss-*`.
    Oss,
}

impl Flavor {
    /// The prefix of the vendor's own headers: `x-amz-` or `x-oss-`.
    pub fn header_prefix(self) -> &'static str {
        match self {
            Flavor::Aws => "x-amz-",
            Flavor::Oss => "x-oss-",
        }
    }
    fn algorithm(self) -> &'static str {
        match self {
            Flavor::Aws => "AWS4-HMAC-SHA256",
            Flavor::Oss => "OSS4-HMAC-SHA256",
        }
    }
    fn key_prefix(self) -> &'static str {
        match self {
            Flavor::Aws => "AWS4",
            Flavor::Oss => "aliyun_v4",
        }
    }
    fn terminator(self) -> &'static str {
        match self {
            Flavor::Aws => "aws4_request",
            Flavor::Oss => "aliyun_v4_request",
        }
    }
    fn service(self) -> &'static str {
        match self {
            Flavor::Aws => "s3",
            Flavor::Oss => "oss",
        }
    }
}

/// An access key and its secret. `Debug` never shows the secret.
#[derive(Clone)]
pub struct Keys {
    pub access_key: String,
    pub secret_key: String,
    /// A temporary credential's session token, sent as `x-amz-security-token`
    /// / `x-oss-security-token`.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<hidden>")
            .finish()
    }
}

/// What is signed of one request. `path` is the URI path as sent (already
/// encoded); `query` and `headers` are raw, unencoded pairs; header names
/// are lower case.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a [(String, String)],
    pub headers: &'a [(String, String)],
    /// Hex sha256 of the body, or [`UNSIGNED_PAYLOAD`].
    pub payload_hash: &'a str,
}

/// `20130524T000000Z` for seconds since the epoch.
pub fn timestamp(secs: u64) -> String {
    crate::clock::format_rfc3339(secs).replace(['-', ':'], "")
}

/// RFC 3986's unreserved characters: what both signers leave unencoded.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// The same, with `/` kept (an object key in a path).
const UNRESERVED_AND_SLASH: &AsciiSet = &UNRESERVED.remove(b'/');

/// RFC 3986 percent-encoding of everything but the unreserved characters
/// (and `/` when `keep_slash`), as both signers want it: every other byte,
/// UTF-8 ones included, as `%XX` in upper case.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let set = if keep_slash {
        UNRESERVED_AND_SLASH
    } else {
        UNRESERVED
    };
    utf8_percent_encode(s, set).to_string()
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data.as_bytes());
    m.finalize().into_bytes().to_vec()
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// The query encoded and sorted by key, then value. AWS writes `k=` for an
/// empty value; OSS writes just `k`.
fn canonical_query(flavor: Flavor, query: &[(String, String)]) -> String {
    let mut q: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    q.sort();
    q.iter()
        .map(|(k, v)| match flavor {
            Flavor::Oss if v.is_empty() => k.clone(),
            _ => format!("{k}={v}"),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The headers that are signed: all of them for AWS (the caller passes only
/// those it wants signed); for OSS the default set (`content-type`,
/// `content-md5`, `x-oss-*`).
fn signed(flavor: Flavor, headers: &[(String, String)]) -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .filter(|(k, _)| match flavor {
            Flavor::Aws => true,
            Flavor::Oss => k == "content-type" || k == "content-md5" || k.starts_with("x-oss-"),
        })
        .collect();
    h.sort();
    h
}

fn scope(flavor: Flavor, date: &str, region: &str) -> String {
    format!(
        "{date}/{region}/{}/{}",
        flavor.service(),
        flavor.terminator()
    )
}

/// The signature of a canonical request: the hex HMAC of the string to sign
/// under the key derived from the secret, the date and the region.
fn signature(flavor: Flavor, keys: &Keys, stamp: &str, region: &str, canonical: &str) -> String {
    let date = &stamp[..8];
    let to_sign = format!(
        "{}\n{stamp}\n{}\n{}",
        flavor.algorithm(),
        scope(flavor, date, region),
        sha256_hex(canonical)
    );
    let mut k = hmac(
        format!("{}{}", flavor.key_prefix(), keys.secret_key).as_bytes(),
        date,
    );
    for part in [region, flavor.service(), flavor.terminator()] {
        k = hmac(&k, part);
    }
    hex::encode(hmac(&k, &to_sign))
}

fn canonical_request(flavor: Flavor, req: &Request, headers: &[(String, String)]) -> String {
    let lines: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let names = headers
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let query = canonical_query(flavor, req.query);
    match flavor {
        Flavor::Aws => format!(
            "{}\n{}\n{query}\n{lines}\n{names}\n{}",
            req.method, req.path, req.payload_hash
        ),
        // OSS lists only "additional" headers here; ferry signs none
        Flavor::Oss => format!(
            "{}\n{}\n{query}\n{lines}\n\n{}",
            req.method, req.path, req.payload_hash
        ),
    }
}

/// The `Authorization` header of a request at `secs`. The headers must
/// already hold the date (`x-amz-date` / `x-oss-date`), the payload hash
/// header and, for AWS, `host`. For OSS, `req.path` is `/bucket/key`
/// whatever the URL style.
pub fn authorization(
    flavor: Flavor,
    req: &Request,
    keys: &Keys,
    region: &str,
    secs: u64,
) -> String {
    let stamp = timestamp(secs);
    let headers = signed(flavor, req.headers);
    let sig = signature(
        flavor,
        keys,
        &stamp,
        region,
        &canonical_request(flavor, req, &headers),
    );
    let credential = format!("{}/{}", keys.access_key, scope(flavor, &stamp[..8], region));
    match flavor {
        Flavor::Aws => format!(
            "{} Credential={credential}, SignedHeaders={}, Signature={sig}",
            flavor.algorithm(),
            headers
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(";")
        ),
        Flavor::Oss => format!(
            "{} Credential={credential},Signature={sig}",
            flavor.algorithm()
        ),
    }
}

/// The query parameters of a presigned URL valid for `expires` seconds from
/// `secs`, signature last. `req.query` holds the request's own parameters;
/// its payload hash is not used (always [`UNSIGNED_PAYLOAD`]). For AWS the
/// headers are `host` only.
pub fn presign(
    flavor: Flavor,
    req: &Request,
    keys: &Keys,
    region: &str,
    secs: u64,
    expires: u64,
) -> Vec<(String, String)> {
    let stamp = timestamp(secs);
    let credential = format!("{}/{}", keys.access_key, scope(flavor, &stamp[..8], region));
    let headers = signed(flavor, req.headers);
    let mut query = req.query.to_vec();
    let token = keys.session_token.clone();
    match flavor {
        Flavor::Aws => {
            let names = headers
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(";");
            query.extend([
                ("X-Amz-Algorithm".into(), flavor.algorithm().into()),
                ("X-Amz-Credential".into(), credential),
                ("X-Amz-Date".into(), stamp.clone()),
                ("X-Amz-Expires".into(), expires.to_string()),
                ("X-Amz-SignedHeaders".into(), names),
            ]);
            if let Some(t) = token {
                query.push(("X-Amz-Security-Token".into(), t));
            }
        }
        Flavor::Oss => {
            query.extend([
                ("x-oss-signature-version".into(), flavor.algorithm().into()),
                ("x-oss-credential".into(), credential),
                ("x-oss-date".into(), stamp.clone()),
                ("x-oss-expires".into(), expires.to_string()),
            ]);
            if let Some(t) = token {
                query.push(("x-oss-security-token".into(), t));
            }
        }
    }
    let unsigned = Request {
        query: &query,
        payload_hash: UNSIGNED_PAYLOAD,
        ..*req
    };
    let sig = signature(
        flavor,
        keys,
        &stamp,
        region,
        &canonical_request(flavor, &unsigned, &headers),
    );
    let name = match flavor {
        Flavor::Aws => "X-Amz-Signature",
        Flavor::Oss => "x-oss-signature",
    };
    query.push((name.into(), sig));
    query
}

/// A query as it goes on a URL: encoded pairs joined with `&`.
pub fn query_string(query: &[(String, String)]) -> String {
    query
        .iter()
        .map(|(k, v)| format!("{}={}", uri_encode(k, false), uri_encode(v, false)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn aws_keys() -> Keys {
        // the example keys of AWS's Signature V4 documentation
        Keys {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        }
    }

    /// 2013-05-24T00:00:00Z, the time of AWS's S3 examples.
    const AWS_TIME: u64 = 1_369_353_600;
    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// The encoding is the one the hand-written loop gave before the crate:
    /// every unreserved byte kept, `/` kept only when asked, all else `%XX`.
    #[test]
    fn uri_encode_keeps_exactly_the_unreserved_bytes() {
        let by_hand = |s: &str, keep_slash: bool| {
            let mut out = String::new();
            for b in s.bytes() {
                match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                        out.push(b as char)
                    }
                    b'/' if keep_slash => out.push('/'),
                    _ => out.push_str(&format!("%{b:02X}")),
                }
            }
            out
        };
        let ascii: String = (0u8..128).map(char::from).collect();
        for s in [ascii.as_str(), "a b+c/d~e", "é/ü 漢字", ""] {
            for keep in [false, true] {
                assert_eq!(uri_encode(s, keep), by_hand(s, keep), "{s:?} {keep}");
            }
        }
    }

    #[test]
    fn aws_get_object_example() {
        // "GET Object" in the S3 Signature V4 header-signing examples
        let headers = pairs(&[
            ("host", "examplebucket.s3.amazonaws.com"),
            ("range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", "20130524T000000Z"),
        ]);
        let req = Request {
            method: "GET",
            path: "/test.txt",
            query: &[],
            headers: &headers,
            payload_hash: EMPTY_SHA256,
        };
        assert_eq!(
            authorization(Flavor::Aws, &req, &aws_keys(), "us-east-1", AWS_TIME),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn aws_list_objects_example_with_a_sorted_query() {
        // "GET Bucket (List Objects)": max-keys=2&prefix=J
        let headers = pairs(&[
            ("host", "examplebucket.s3.amazonaws.com"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", "20130524T000000Z"),
        ]);
        let query = pairs(&[("prefix", "J"), ("max-keys", "2")]);
        let req = Request {
            method: "GET",
            path: "/",
            query: &query,
            headers: &headers,
            payload_hash: EMPTY_SHA256,
        };
        assert!(
            authorization(Flavor::Aws, &req, &aws_keys(), "us-east-1", AWS_TIME).ends_with(
                "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
            )
        );
    }

    #[test]
    fn aws_presigned_url_example() {
        // "Example: presigned URL" of the S3 query-string authentication docs
        let headers = pairs(&[("host", "examplebucket.s3.amazonaws.com")]);
        let req = Request {
            method: "GET",
            path: "/test.txt",
            query: &[],
            headers: &headers,
            payload_hash: UNSIGNED_PAYLOAD,
        };
        let q = presign(Flavor::Aws, &req, &aws_keys(), "us-east-1", AWS_TIME, 86400);
        assert_eq!(
            query_string(&q),
            "X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    fn oss_vector_query() -> Vec<(String, String)> {
        pairs(&[
            ("param1", "value1"),
            ("+param1", "value3"),
            ("|param1", "value4"),
            ("+param2", ""),
            ("|param2", ""),
            ("param2", ""),
        ])
    }

    fn oss_keys() -> Keys {
        Keys {
            access_key: "ak".into(),
            secret_key: "sk".into(),
            session_token: None,
        }
    }

    #[test]
    fn oss4_header_vector_of_the_official_sdks() {
        // the V4 signer test shared by Alibaba Cloud's OSS SDKs (Go, Java, C++, ...)
        let headers = pairs(&[
            ("x-oss-head1", "value"),
            ("abc", "value"),
            ("ZAbc", "value"),
            ("XYZ", "value"),
            ("content-type", "text/plain"),
            ("x-oss-content-sha256", UNSIGNED_PAYLOAD),
            ("x-oss-date", "20231216T162057Z"),
        ]);
        let query = oss_vector_query();
        let path = format!("/bucket/{}", uri_encode("1234+-/123/1.txt", true));
        assert_eq!(path, "/bucket/1234%2B-/123/1.txt");
        let req = Request {
            method: "PUT",
            path: &path,
            query: &query,
            headers: &headers,
            payload_hash: UNSIGNED_PAYLOAD,
        };
        assert_eq!(
            canonical_query(Flavor::Oss, &query),
            "%2Bparam1=value3&%2Bparam2&%7Cparam1=value4&%7Cparam2&param1=value1&param2"
        );
        assert_eq!(
            authorization(Flavor::Oss, &req, &oss_keys(), "cn-hangzhou", 1_702_743_657),
            "OSS4-HMAC-SHA256 Credential=ak/20231216/cn-hangzhou/oss/aliyun_v4_request,\
             Signature=e21d18daa82167720f9b1047ae7e7f1ce7cb77a31e8203a7d5f4624fa0284afe"
        );
    }

    #[test]
    fn oss4_presign_vector_of_the_official_sdks() {
        let headers = pairs(&[
            ("x-oss-head1", "value"),
            ("abc", "value"),
            ("ZAbc", "value"),
            ("XYZ", "value"),
            ("content-type", "application/octet-stream"),
        ]);
        let query = oss_vector_query();
        let req = Request {
            method: "PUT",
            path: "/bucket/1234%2B-/123/1.txt",
            query: &query,
            headers: &headers,
            payload_hash: UNSIGNED_PAYLOAD,
        };
        let q = presign(
            Flavor::Oss,
            &req,
            &oss_keys(),
            "cn-hangzhou",
            1_702_781_677,
            599,
        );
        let s = query_string(&q);
        assert!(
            s.contains("x-oss-credential=ak%2F20231217%2Fcn-hangzhou%2Foss%2Faliyun_v4_request"),
            "{s}"
        );
        assert!(
            s.ends_with(
                "x-oss-signature=a39966c61718be0d5b14e668088b3fa07601033f6518ac7b523100014269c0fe"
            ),
            "{s}"
        );
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let s = format!("{:?}", aws_keys());
        assert!(
            s.contains("AKIAIOSFODNN7EXAMPLE") && !s.contains("EXAMPLEKEY"),
            "{s}"
        );
    }
}
