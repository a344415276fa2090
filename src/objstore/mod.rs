//! Object storage as a place for images: `s3://bucket/prefix` (AWS Signature
//! V4: AWS S3, MinIO, Ceph, SeaweedFS, OSS's S3-compatible endpoint) and
//! `oss://bucket/prefix` (Alibaba Cloud OSS, native V4 signing).
//!
//! This module owns the bucket URLs (`location`), where credentials come
//! from (`credentials`), and a small blocking client (`client`): HEAD, GET,
//! PUT, multipart uploads and presigned GET URLs; this file holds their one
//! error type.
//! The image layout in the bucket and the multipart plan are in [`upload`];
//! hosts fetching from the bucket are in [`pull`]. Credentials come only from
//! the environment or a 0600 file; they are never printed, and no error
//! carries a URL with a query.

mod client;
mod credentials;
mod location;
pub mod pull;
pub mod sign;
pub mod upload;

pub use client::*;
pub use credentials::*;
pub use location::*;

use std::path::PathBuf;

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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::sign::{Flavor, Keys};
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
