//! Hosts fetching an image straight from a bucket, all at once, so the
//! controller's uplink carries only small requests.
//!
//! The controller reads the image's index, manifest and config from the
//! bucket (checking their digests), then delivers to each host through the
//! same per-host flow as an SSH push ([`crate::deliver::deliver_host`]), with
//! the bucket as the blob source: the host downloads each missing blob with curl or wget from a
//! presigned GET URL valid for minutes. The URL goes on the command's stdin,
//! never in its arguments (where `ps` shows it), and no key reaches a host.
//! The host checks the blob's sha256 before renaming it into its store; the
//! image is then loaded, its id checked and recorded by that same flow, so
//! a pulled image and a pushed one are alike on the host.

use crate::ssh::Script;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde_json::Value;

use super::{ObjError, Store};
use crate::deliver::{
    self, BadValue, BlobSource, Event, HostState, HostStats, LocalBlob, Plan, PushError, PushImage,
    Reporter, Send, check_hex, check_store,
};
use crate::grammar::is_hex64;
use crate::oci::sha256_hex;
use crate::ssh::{Remote, SshError, Target};

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Host(#[from] PushError),
    #[error(
        "on `{host}`, `{object}` did not hash to its name: the bucket's copy is damaged or was changed; push the image again"
    )]
    Tampered { host: String, object: String },
    #[error(
        "on `{host}`, fetching `{object}` failed ({tool}): {stderr}; check that the host reaches the endpoint"
    )]
    Fetch {
        host: String,
        object: String,
        tool: String,
        stderr: String,
    },
    #[error(
        "on `{host}`, the endpoint sent more than the {size} bytes of `{object}`: the bucket's copy is not the one the image names (or the endpoint is not the bucket); nothing was kept; push the image again"
    )]
    TooBig {
        host: String,
        object: String,
        size: u64,
    },
    #[error("`{host}` has neither curl nor wget; install one of them there")]
    NoFetcher { host: String },
}

/// A transport error is the host's, as an SSH push reports it.
impl From<SshError> for PullError {
    fn from(e: SshError) -> PullError {
        PullError::Host(e.into())
    }
}

/// The most an index, manifest or config may weigh.
const SMALL: u64 = 4 << 20;

fn descriptor(v: &Value, object: &str) -> Result<(String, u64), ObjError> {
    let bad = |m: &str| ObjError::BadImage {
        object: object.to_string(),
        message: m.to_string(),
    };
    let hex = v["digest"]
        .as_str()
        .and_then(|d| d.strip_prefix("sha256:"))
        .filter(|h| is_hex64(h))
        .ok_or_else(|| bad("a descriptor has no sha256 digest"))?;
    let size = v["size"]
        .as_u64()
        .ok_or_else(|| bad("a descriptor has no size"))?;
    Ok((hex.to_string(), size))
}

/// Reads a blob the controller needs itself, checking its digest.
fn small_blob(store: &Store, hex: &str) -> Result<(Vec<u8>, Value), ObjError> {
    let name = format!("blobs/sha256/{hex}");
    let body = store.get(&store.loc.key(&name), SMALL)?;
    let found = sha256_hex(&body);
    if found != hex {
        return Err(ObjError::Tampered {
            object: store.loc.object_url(&name),
            found,
        });
    }
    let v = serde_json::from_slice(&body).map_err(|e| ObjError::BadImage {
        object: store.loc.object_url(&name),
        message: e.to_string(),
    })?;
    Ok((body, v))
}

/// The image in the bucket, as the SSH push describes one; each blob's
/// `path` is its object key.
pub fn read_image(store: &Store, tag: Option<&str>) -> Result<PushImage, ObjError> {
    store.check_bucket()?;
    let index_obj = store.loc.object_url("index.json");
    let index: Value = serde_json::from_slice(&store.get(&store.loc.key("index.json"), SMALL)?)
        .map_err(|e| ObjError::BadImage {
            object: index_obj.clone(),
            message: e.to_string(),
        })?;
    let m = &index["manifests"][0];
    let (mhex, msize) = descriptor(m, &index_obj)?;
    let reference = match tag {
        Some(t) => t.to_string(),
        None => m["annotations"]["io.containerd.image.name"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ObjError::BadImage {
                object: index_obj.clone(),
                message: "it names no image (no `io.containerd.image.name`); pass --tag name:tag"
                    .into(),
            })?,
    };
    let mobj = store.loc.object_url(&format!("blobs/sha256/{mhex}"));
    let (_, manifest) = small_blob(store, &mhex)?;
    let (chex, csize) = descriptor(&manifest["config"], &mobj)?;
    let layers = manifest["layers"]
        .as_array()
        .map(|ls| {
            ls.iter()
                .map(|l| descriptor(l, &mobj))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?
        .unwrap_or_default();
    let (_, config) = small_blob(store, &chex)?;
    let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if diff_ids.len() != layers.len() {
        return Err(ObjError::BadImage {
            object: store.loc.object_url(&format!("blobs/sha256/{chex}")),
            message: format!("{} diff_ids for {} layers", diff_ids.len(), layers.len()),
        });
    }
    let blob = |(hex, size): (String, u64)| LocalBlob {
        path: store.loc.key(&format!("blobs/sha256/{hex}")).into(),
        hex,
        size,
    };
    Ok(PushImage {
        reference,
        config: blob((chex, csize)),
        layers: layers.into_iter().map(blob).collect(),
        manifest: blob((mhex, msize)),
        diff_ids,
    })
}

/// Exit statuses of [`fetch_script`].
const EXIT_NO_FETCHER: i32 = 6;
const EXIT_FETCH: i32 = 7;
/// Exit status of [`fetch_script`] when the endpoint sent more than the blob's size.
const EXIT_TOO_BIG: i32 = 9;

/// `$1` the store, `$2` the blob's hex, `$3` its size; the URL on stdin.
/// The exit statuses 2, 4 ([`deliver::EXIT_DIGEST`]), 6 ([`EXIT_NO_FETCHER`]),
/// 7 ([`EXIT_FETCH`]), 8 ([`deliver::EXIT_NO_HASHER`]) and 9
/// ([`EXIT_TOO_BIG`]) are written as numbers (a test checks them).
///
/// The download goes through `head -c`, asking for one byte more than the
/// blob lacks: an endpoint answering without end fills no more than that,
/// and the byte more tells it apart from one that stopped short. curl's own
/// `--retry` would write a cut transfer's bytes twice into the pipe, so the
/// loop retries, continuing from what the file has.
const FETCH: &str = r#"S=$1 hex=$2 size=$3
cd -- "$S/blobs/sha256" || exit 2
mkdir -p -- "$S/locks" "$S/tmp" || exit 2
IFS= read -r url || exit 2
command -v openssl >/dev/null 2>&1 || command -v sha256sum >/dev/null 2>&1 || exit 8
if command -v curl >/dev/null 2>&1; then get=curl
elif command -v wget >/dev/null 2>&1; then get=wget
else exit 6
fi
own=
if blob_lock "$hex" 0; then
  own=1
  p=$hex.part
  have=$(stat -c %s "$p" 2>/dev/null || echo 0)
  [ "$have" -lt "$size" ] || { rm -f "$p"; have=0; }
else
  # a push or another pull is writing this blob: never touch its .part
  p=$(mktemp "$S/tmp/$hex.XXXXXX") || exit 2
  have=0
fi
from=$have
if [ "$get" = curl ]; then
  tries=0
  while [ "$have" -lt "$size" ] && [ "$tries" -lt 3 ]; do
    [ "$tries" = 0 ] || sleep "$tries"
    tries=$((tries + 1))
    printf 'url = "%s"\n' "$url" | curl -sSf -C "$have" --config - | head -c "$((size - have + 1))" >> "$p"
    have=$(stat -c %s "$p") || exit 2
  done
else
  # wget cannot continue from stdin's URL list: it starts over
  from=0
  printf '%s\n' "$url" | wget -q -O - -i - | head -c "$((size + 1))" > "$p"
  have=$(stat -c %s "$p") || exit 2
fi
if [ "$have" -gt "$size" ]; then
  rm -f "$p"
  echo "the endpoint sent more than the blob's $size bytes" >&2
  exit 9
fi
# a cut download is kept for curl to continue, unless it is a private copy
[ "$have" -eq "$size" ] || { [ -n "$own" ] || rm -f "$p"; exit 7; }
s=$(sum256 "$p") || { [ -n "$own" ] || rm -f "$p"; exit 8; }
[ "$s" = "$hex" ] || { rm -f "$p"; exit 4; }
mv -f "$p" "$hex" || exit 2
echo "fetched $((size - from))""#;

/// Downloads one blob into `<hex>.part` (continuing a cut download with
/// curl), checks its sha256 (with `openssl`, else `sha256sum`, as the SSH
/// push does) and renames it; prints `fetched <bytes>`, the bytes that came
/// over the network. It holds the blob's lock ([`deliver::BLOB_LOCK`]) as an
/// upload does; when a push or another pull holds it, it downloads into a
/// file of its own in `$S/tmp` instead. The URL is the first line of stdin
/// and reaches curl/wget through a pipe from the shell's `printf` builtin:
/// it is never an argument of any process.
pub fn fetch_script(store: &str, hex: &str, size: u64) -> Result<Script, BadValue> {
    check_store(store)?;
    check_hex("blob digest", hex)?;
    Ok(Script::new(deliver::SUM256)
        .then(deliver::BLOB_LOCK)
        .then(FETCH)
        .arg(store)
        .arg(hex)
        .arg(size.to_string()))
}

/// A presigned URL goes into curl's config as `url = "..."`: a `"`, a `\`,
/// a space or a control character could end the string and add an option
/// (`output = ...`). The signer percent-encodes all of them; this makes sure.
fn check_url(url: &str) -> Result<(), BadValue> {
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() <= 8192
        && url
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\');
    if ok {
        Ok(())
    } else {
        // the query is a credential: never shown
        let head = url.split('?').next().unwrap_or_default();
        Err(BadValue::new(
            "presigned URL",
            head,
            "holds a quote, a backslash, a space or a control character (or is not http)",
        ))
    }
}

/// The bytes a run of [`fetch_script`] says came over the network.
fn fetched(stdout: &str) -> Option<u64> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("fetched "))
        .and_then(|n| n.trim().parse().ok())
}

pub struct Options {
    pub push: deliver::Options,
    /// Seconds each presigned URL is valid.
    pub url_expiry: u64,
}

pub struct HostOutcome {
    pub target: Target,
    pub stats: HostStats,
    pub seconds: f64,
    pub result: Result<(), PullError>,
}

/// Pulls onto every target, `parallel` at a time; outcomes keep the targets' order.
pub fn pull_all(
    targets: &[Target],
    image: &PushImage,
    store: &Store,
    opts: &Options,
    reporter: &dyn Reporter,
) -> Vec<HostOutcome> {
    let next = AtomicUsize::new(0);
    let outcomes: Mutex<Vec<Option<HostOutcome>>> =
        Mutex::new(targets.iter().map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..opts.push.parallel.clamp(1, targets.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(target) = targets.get(i) else { break };
                    let t0 = Instant::now();
                    let mut stats = HostStats::default();
                    let result = pull_host(target, image, store, opts, reporter, &mut stats);
                    outcomes.lock().expect("outcomes lock")[i] = Some(HostOutcome {
                        target: target.clone(),
                        stats,
                        seconds: t0.elapsed().as_secs_f64(),
                        result,
                    });
                }
            });
        }
    });
    outcomes
        .into_inner()
        .expect("outcomes lock")
        .into_iter()
        .map(|o| o.expect("every target ran"))
        .collect()
}

/// A pull's source: the bucket, each blob fetched by the host itself.
struct FromBucket<'s> {
    store: &'s Store,
    url_expiry: u64,
}

impl BlobSource for FromBucket<'_> {
    type Error = PullError;

    fn when_busy(&self) -> &'static str {
        "nothing was fetched; pull again when gc has ended"
    }

    fn store_blobs(
        &self,
        remote: &Remote,
        store: &str,
        plan: &Plan,
        _state: &HostState,
        reporter: &dyn Reporter,
        stats: &mut HostStats,
    ) -> Result<(), PullError> {
        for s in &plan.sends {
            stats.bytes_sent += fetch(remote, self.store, store, s, self.url_expiry, reporter)?;
            stats.blobs_sent += 1;
            stats.resumed += usize::from(s.offset > 0);
            stats.replaced += usize::from(s.replace);
        }
        Ok(())
    }
}

/// Has one host fetch what it lacks from the bucket, then load the image.
pub fn pull_host(
    target: &Target,
    image: &PushImage,
    store: &Store,
    opts: &Options,
    reporter: &dyn Reporter,
    stats: &mut HostStats,
) -> Result<(), PullError> {
    let source = FromBucket {
        store,
        url_expiry: opts.url_expiry,
    };
    deliver::deliver_host(&source, target, image, &opts.push, reporter, stats)
}

/// Has the host fetch one blob; returns the bytes that came over the network.
fn fetch(
    remote: &Remote,
    store: &Store,
    dir: &str,
    s: &Send,
    expiry: u64,
    reporter: &dyn Reporter,
) -> Result<u64, PullError> {
    let label = remote.label();
    let key = s.path.to_string_lossy().into_owned();
    let object = store.loc.object_url(&format!("blobs/sha256/{}", s.hex));
    // made just before use, so a long queue does not outlive it
    let url = store.presign_get(&key, expiry);
    let what = format!("fetching blob sha256:{}", &s.hex[..12]);
    check_url(&url).map_err(|e| e.on(&label))?;
    let script = fetch_script(dir, &s.hex, s.size).map_err(|e| e.on(&label))?;
    let result = remote.run_checked(
        &what,
        &script,
        &mut |w| {
            w.write_all(format!("{url}\n").as_bytes())
                .map_err(|e| remote.io_error(&what, e))
        },
        &[0],
    );
    let out = match result {
        Ok(out) => out,
        Err(SshError::Remote { status, stderr, .. }) => {
            return Err(match status {
                deliver::EXIT_DIGEST => PullError::Tampered {
                    host: label,
                    object,
                },
                deliver::EXIT_NO_HASHER => PushError::NoHasher { host: label }.into(),
                EXIT_NO_FETCHER => PullError::NoFetcher { host: label },
                EXIT_TOO_BIG => PullError::TooBig {
                    host: label,
                    object,
                    size: s.size,
                },
                EXIT_FETCH => PullError::Fetch {
                    host: label,
                    object,
                    tool: "curl or wget".into(),
                    stderr: redact(&stderr),
                },
                _ => PullError::Fetch {
                    host: label,
                    object,
                    tool: format!("exit status {status}"),
                    stderr: redact(&stderr),
                },
            });
        }
        Err(e) => return Err(e.into()),
    };
    // the script prints it after the rename; the plan's figure is the fallback
    let bytes = fetched(&String::from_utf8_lossy(&out)).unwrap_or(s.size - s.offset);
    reporter.event(&label, Event::Sent { hex: &s.hex, bytes });
    Ok(bytes)
}

/// Drops any query string from what a host's tool printed: a presigned URL
/// must not reach a log.
fn redact(s: &str) -> String {
    s.split_whitespace()
        .map(|w| match w.split_once('?') {
            Some((head, _)) if w.contains("://") => format!("{head}?…"),
            _ => w.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_fetch_script_keeps_the_url_out_of_arguments() {
        let s = fetch_script("/var/lib/ferry", &"a".repeat(64), 1000).unwrap();
        assert_eq!(s.values(), ["/var/lib/ferry", &"a".repeat(64), "1000"]);
        assert!(FETCH.contains("IFS= read -r url"), "{FETCH}");
        // the only uses of the URL are as an argument of the printf builtin
        for line in FETCH.lines().filter(|l| l.contains("$url")) {
            assert!(line.trim_start().starts_with("printf "), "{line}");
        }
        assert!(
            FETCH.contains("curl -sSf -C \"$have\" --config - | head -c")
                && FETCH.contains("wget -q -O - -i - | head -c")
        );
        // the blob's lock is the upload's, not a copy of it
        assert_eq!(s.text().matches("blob_lock()").count(), 1);
        assert!(s.text().contains(deliver::BLOB_LOCK));
        for code in [
            deliver::EXIT_DIGEST,
            deliver::EXIT_NO_HASHER,
            EXIT_FETCH,
            EXIT_NO_FETCHER,
            EXIT_TOO_BIG,
        ] {
            assert!(FETCH.contains(&format!("exit {code}")), "{code}");
        }
    }

    #[test]
    fn hostile_values_never_reach_the_fetch_script() {
        for v in crate::ssh::script::tests::HOSTILE {
            assert!(fetch_script(v, &"a".repeat(64), 1).is_err(), "{v:?}");
            assert!(fetch_script("/s", v, 1).is_err(), "{v:?}");
            let url = format!("http://h/b/k?X-Amz-Signature={v}");
            let e = check_url(&url);
            assert!(
                e.is_err()
                    || v.chars()
                        .all(|c| c.is_ascii_graphic() && !"\"\\".contains(c)),
                "{v:?}"
            );
            // the signature never shows in the refusal
            if let Err(e) = e {
                assert!(!e.to_string().contains("Signature"), "{e}");
            }
        }
        assert!(check_url("http://h/b/k\"\noutput = \"/etc/shadow").is_err());
        assert!(check_url("http://h:9/b/blobs/sha256/x?X-Amz-Signature=ab%20c").is_ok());
    }

    /// Serves `body` to every GET on a local port, once per connection,
    /// from the offset of a `Range: bytes=N-` header when there is one.
    fn serve(body: Vec<u8>) -> String {
        use std::io::{BufRead, BufReader, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                let mut from = 0usize;
                while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("range: bytes=") {
                        from = v.trim().trim_end_matches('-').parse().unwrap_or(0);
                    }
                    line.clear();
                }
                let mut w = conn;
                let status = if from > 0 {
                    format!(
                        "206 Partial Content\r\nContent-Range: bytes {from}-{}/{}",
                        body.len() - 1,
                        body.len()
                    )
                } else {
                    "200 OK".to_string()
                };
                let _ = write!(
                    w,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len() - from
                );
                let _ = w.write_all(&body[from..]);
            }
        });
        format!("http://{addr}/b/blobs/sha256/x?X-Amz-Signature=abc&X-Amz-Date=1")
    }

    /// Serves `prefix`, then bytes without end (no `Content-Length`), as a
    /// hostile endpoint would, up to `cap` bytes; counts what it could send.
    fn serve_endless(
        prefix: Vec<u8>,
        cap: usize,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{BufRead, BufReader, Write};
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = sent.clone();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let mut w = conn;
                let _ = write!(w, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
                let mut chunk = prefix.clone();
                chunk.resize(64 << 10, b'z');
                let mut n = 0;
                while n < cap && w.write_all(&chunk).is_ok() {
                    n += chunk.len();
                    count.fetch_add(chunk.len(), Ordering::SeqCst);
                    chunk.fill(b'z');
                }
            }
        });
        (
            format!("http://{addr}/b/blobs/sha256/x?X-Amz-Signature=abc"),
            sent,
        )
    }

    /// What the fetch script runs besides the fetcher and the hasher.
    fn base_tools() -> Vec<std::path::PathBuf> {
        [
            "stat", "rm", "mv", "mkdir", "mktemp", "head", "flock", "sleep",
        ]
        .iter()
        .map(|t| system_tool(t).unwrap())
        .collect()
    }

    fn system_tool(name: &str) -> Option<std::path::PathBuf> {
        ["/usr/bin", "/bin"]
            .iter()
            .map(|d| std::path::Path::new(d).join(name))
            .find(|p| p.exists())
    }

    /// Runs the fetch script with only `tools` on its PATH: its exit status and stdout.
    fn run_fetch(
        tools: &[std::path::PathBuf],
        store: &std::path::Path,
        hex: &str,
        size: u64,
        url: &str,
    ) -> (Option<i32>, String) {
        let bin = tempfile::tempdir().unwrap();
        for t in tools {
            std::os::unix::fs::symlink(t, bin.path().join(t.file_name().unwrap())).unwrap();
        }
        // as `sh -c TEXT sh ARGS` runs on the host; no `sh` on this PATH
        let script = fetch_script(store.to_str().unwrap(), hex, size).unwrap();
        let mut c = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(script.text())
            .arg("sh")
            .args(script.values())
            .env_clear()
            .env("PATH", bin.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin
            .take()
            .unwrap()
            .write_all(format!("{url}\n").as_bytes())
            .unwrap();
        let out = c.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    #[test]
    fn hosts_fetch_with_curl_or_wget_and_keep_only_a_matching_blob() {
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let hex = sha256_hex(&body);
        let size = body.len() as u64;
        let base = base_tools();
        for (tool, hasher) in [
            ("curl", "openssl"),
            ("curl", "sha256sum"),
            ("wget", "openssl"),
            ("wget", "sha256sum"),
        ] {
            let (Some(fetcher), Some(hasher_bin)) = (system_tool(tool), system_tool(hasher)) else {
                eprintln!("\n*** SKIPPED the {tool}/{hasher} case: not installed ***\n");
                continue;
            };
            let case = format!("{tool} with {hasher}");
            let mut tools = base.clone();
            tools.extend([fetcher, hasher_bin]);
            let dir = tempfile::tempdir().unwrap();
            let store = dir.path().join("store");
            let blobs = store.join("blobs/sha256");
            std::fs::create_dir_all(&blobs).unwrap();
            let url = serve(body.clone());
            assert_eq!(
                run_fetch(&tools, &store, &hex, size, &url),
                (Some(0), format!("fetched {size}\n")),
                "{case}"
            );
            assert_eq!(std::fs::read(blobs.join(&hex)).unwrap(), body, "{case}");
            // a cut download: curl continues it, wget starts over, and the
            // count says what came over the network
            std::fs::remove_file(blobs.join(&hex)).unwrap();
            std::fs::write(blobs.join(format!("{hex}.part")), &body[..150_000]).unwrap();
            let expect = if tool == "curl" { size - 150_000 } else { size };
            assert_eq!(
                run_fetch(&tools, &store, &hex, size, &url),
                (Some(0), format!("fetched {expect}\n")),
                "{case}"
            );
            assert_eq!(std::fs::read(blobs.join(&hex)).unwrap(), body, "{case}");
            // what does not hash to its name is removed, and said so
            let other = "0".repeat(64);
            assert_eq!(
                run_fetch(&tools, &store, &other, size, &url).0,
                Some(deliver::EXIT_DIGEST),
                "{case}"
            );
            let left: Vec<_> = std::fs::read_dir(&blobs)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            assert_eq!(left, vec![hex.clone()], "{case}");
        }
    }

    /// An endpoint that answers a blob without end: the host stops at the
    /// blob's size (and one byte more, to know), and keeps nothing.
    #[test]
    fn a_hostile_endpoint_cannot_fill_the_hosts_disk() {
        let body = b"the blob".to_vec();
        let hex = sha256_hex(&body);
        let cap = 64 << 20;
        for tool in ["curl", "wget"] {
            let Some(fetcher) = system_tool(tool) else {
                eprintln!("\n*** SKIPPED the {tool} case: not installed ***\n");
                continue;
            };
            let mut tools = base_tools();
            tools.extend([fetcher, system_tool("sha256sum").unwrap()]);
            let dir = tempfile::tempdir().unwrap();
            let store = dir.path().join("store");
            let blobs = store.join("blobs/sha256");
            std::fs::create_dir_all(&blobs).unwrap();
            let (url, sent) = serve_endless(body.clone(), cap);
            let (code, _) = run_fetch(&tools, &store, &hex, body.len() as u64, &url);
            assert_eq!(code, Some(EXIT_TOO_BIG), "{tool}");
            let sent = sent.load(Ordering::SeqCst);
            assert!(sent < cap, "{tool}: the host took all {sent} bytes");
            assert_eq!(std::fs::read_dir(&blobs).unwrap().count(), 0, "{tool}");
        }
    }

    /// A push (or another pull) writing the same blob holds its lock: the
    /// pull leaves that `.part` alone, fetches into a file of its own, and
    /// stores the blob.
    #[test]
    fn a_pull_never_touches_a_part_another_writer_holds() {
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let hex = sha256_hex(&body);
        let theirs = vec![7u8; 150_000];
        for tool in ["curl", "wget"] {
            let Some(fetcher) = system_tool(tool) else {
                eprintln!("\n*** SKIPPED the {tool} case: not installed ***\n");
                continue;
            };
            let mut tools = base_tools();
            tools.extend([fetcher, system_tool("sha256sum").unwrap()]);
            let dir = tempfile::tempdir().unwrap();
            let store = dir.path().join("store");
            let blobs = store.join("blobs/sha256");
            for d in [&blobs, &store.join("locks"), &store.join("tmp")] {
                std::fs::create_dir_all(d).unwrap();
            }
            let part = blobs.join(format!("{hex}.part"));
            std::fs::write(&part, &theirs).unwrap();
            let lock = std::fs::File::create(store.join("locks").join(&hex)).unwrap();
            rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
            let url = serve(body.clone());
            assert_eq!(
                run_fetch(&tools, &store, &hex, body.len() as u64, &url),
                (Some(0), format!("fetched {}\n", body.len())),
                "{tool}"
            );
            assert_eq!(std::fs::read(blobs.join(&hex)).unwrap(), body, "{tool}");
            assert_eq!(
                std::fs::read(&part).unwrap(),
                theirs,
                "{tool}: the .part changed"
            );
            assert_eq!(std::fs::read_dir(store.join("tmp")).unwrap().count(), 0);
            drop(lock);
        }
    }

    #[test]
    fn a_host_without_a_hasher_is_told_apart_from_a_tampered_blob() {
        let Some(curl) = system_tool("curl") else {
            eprintln!("\n*** SKIPPED: curl is not installed ***\n");
            return;
        };
        let body = b"the blob".to_vec();
        let hex = sha256_hex(&body);
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir_all(store.join("blobs/sha256")).unwrap();
        let mut tools = base_tools();
        tools.push(curl);
        let url = serve(body.clone());
        assert_eq!(
            run_fetch(&tools, &store, &hex, body.len() as u64, &url).0,
            Some(deliver::EXIT_NO_HASHER)
        );
        assert!(!store.join("blobs/sha256").join(&hex).exists());
        let e = PullError::from(PushError::NoHasher {
            host: "root@node1".into(),
        })
        .to_string();
        assert!(
            e.contains("`root@node1`") && e.contains("openssl") && !e.contains("tamper"),
            "{e}"
        );
        assert_eq!(fetched("fetched 12\n"), Some(12));
    }

    #[test]
    fn tool_messages_lose_their_query_strings() {
        assert_eq!(
            redact("curl: (22) http://h:1/b/k?X-Amz-Signature=abc failed"),
            "curl: (22) http://h:1/b/k?… failed"
        );
    }
}
