//! End-to-end tests of object-storage delivery: `ferry push … s3://` into a
//! real S3 server (SeaweedFS, checking signatures) and `ferry pull` onto
//! three namespaced hosts (tests/hosts.sh). `tests/s3-e2e.sh` starts both and
//! sets FERRY_E2E_HOSTS, FERRY_S3_ENDPOINT, FERRY_S3_BUCKET,
//! FERRY_S3_ACCESS_KEY, FERRY_S3_SECRET_KEY, FERRY_S3_DOMAIN (the server's
//! name for virtual-hosted buckets) and FERRY_SPARK_LAYOUT; without them
//! each test says loudly that it was skipped (and fails under CI).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

mod common;
use common::{assert_sample_answer, repo};

const SPARK: &str = "ferry/spark:3.5.3";
const BUSYBOX: &str = "ferry/busybox:1.35";
/// `ferry push`'s default --part-size, in bytes.
const PART: u64 = 16 << 20;

struct Env {
    hosts: PathBuf,
    addrs: Vec<String>,
    endpoint: String,
    bucket: String,
    access: String,
    secret: String,
    spark: PathBuf,
    /// `bucket.<domain>` names a bucket on the server (virtual-hosted style).
    domain: String,
}

/// The fixture, or `None` (after a loud notice; a failure under CI).
fn env(test: &str) -> Option<Env> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let got = (|| {
        let hosts = PathBuf::from(var("FERRY_E2E_HOSTS")?);
        let list = std::fs::read_to_string(hosts.join("hosts")).ok()?;
        let addrs = list
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .map(str::to_string)
            .collect::<Vec<_>>();
        Some(Env {
            hosts,
            addrs,
            endpoint: var("FERRY_S3_ENDPOINT")?,
            bucket: var("FERRY_S3_BUCKET")?,
            access: var("FERRY_S3_ACCESS_KEY")?,
            secret: var("FERRY_S3_SECRET_KEY")?,
            spark: PathBuf::from(var("FERRY_SPARK_LAYOUT")?),
            domain: var("FERRY_S3_DOMAIN")?,
        })
    })();
    if got.is_none() {
        let notice = format!(
            "SKIPPED {test}: the S3 server and hosts are not up (FERRY_E2E_HOSTS, FERRY_S3_*, FERRY_SPARK_LAYOUT); run `bash tests/s3-e2e.sh`"
        );
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "{notice} (required under CI)"
        );
        // straight to the stream: the test harness hides `eprintln!` of passing tests
        let _ = writeln!(std::io::stderr().lock(), "\n*** {notice} ***\n");
    }
    got
}

/// The hosts and the bucket are shared: one test at a time.
fn turn() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

impl Env {
    fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    fn host(&self, i: usize) -> String {
        format!("ssh://root@{}", self.addrs[i])
    }

    /// `ferry ARGS` with the keys in the environment and the endpoint set.
    fn ferry(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
        c.args(args)
            .arg("--endpoint")
            .arg(&self.endpoint)
            .env("AWS_ACCESS_KEY_ID", &self.access)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env_remove("SSH_AUTH_SOCK");
        c
    }

    /// `ferry` with the keys in the environment, and no endpoint.
    fn ferry_bare(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
        c.args(args)
            .env("AWS_ACCESS_KEY_ID", &self.access)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env_remove("SSH_AUTH_SOCK");
        c
    }

    fn push(&self, layout: &Path, prefix: &str) -> (Output, Value) {
        let out = self
            .ferry(&[
                "push",
                layout.to_str().unwrap(),
                &self.url(prefix),
                "--json",
            ])
            .output()
            .unwrap();
        let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if out.status.success() {
            let all = text(&out);
            assert!(
                leaks(self, &all).is_empty(),
                "{:?} in: {all}",
                leaks(self, &all)
            );
        }
        (out, json)
    }

    fn pull_cmd(&self, prefix: &str, hosts: &[usize]) -> Command {
        let mut c = self.ferry(&["pull", &self.url(prefix), "--json"]);
        c.args(hosts.iter().map(|&i| self.host(i)))
            .arg("--identity")
            .arg(self.hosts.join("id_ed25519"))
            .arg("--known-hosts")
            .arg(self.hosts.join("known_hosts"));
        c
    }

    fn ssh(&self, i: usize, cmd: &str) -> Output {
        Command::new("ssh")
            .arg("-i")
            .arg(self.hosts.join("id_ed25519"))
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.hosts.join("known_hosts").display()
            ))
            .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
            .arg(format!("root@{}", self.addrs[i]))
            .arg(cmd)
            .output()
            .expect("ssh runs")
    }

    fn ssh_ok(&self, i: usize, cmd: &str) -> String {
        let out = self.ssh(i, cmd);
        assert!(
            out.status.success(),
            "`{cmd}` on host {} failed: {}",
            i + 1,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn reset(&self, i: usize, reference: &str) {
        self.ssh_ok(i, &format!("rm -rf /var/lib/ferry/blobs /var/lib/ferry/tmp /var/lib/ferry/images /var/lib/ferry/lock /var/lib/ferry/locks; docker rmi -f {reference} >/dev/null 2>&1; true"));
    }

    /// A request another S3 client makes (curl's own SigV4), keys on its stdin.
    fn curl(&self, args: &[&str], stdin_file: Option<&Path>) -> Output {
        let mut c = Command::new("curl");
        c.args(["-s", "--aws-sigv4", "aws:amz:us-east-1:s3", "--config", "-"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if let Some(f) = stdin_file {
            c.arg("-T").arg(f);
        }
        let mut child = c.spawn().unwrap();
        writeln!(
            child.stdin.take().unwrap(),
            "user = \"{}:{}\"",
            self.access,
            self.secret
        )
        .unwrap();
        child.wait_with_output().unwrap()
    }

    fn object(&self, key: &str) -> String {
        format!("{}/{}/{key}", self.endpoint, self.bucket)
    }

    /// Whether the bucket has the object `key`.
    fn has(&self, key: &str) -> bool {
        let head = self.curl(
            &[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-I",
                &self.object(key),
            ],
            None,
        );
        String::from_utf8_lossy(&head.stdout) == "200"
    }

    /// The sha256 of the object `key`, read back with another client.
    fn object_sha256(&self, key: &str) -> String {
        let mut child = Command::new("curl")
            .args([
                "-sf",
                "--aws-sigv4",
                "aws:amz:us-east-1:s3",
                "--config",
                "-",
            ])
            .arg(self.object(key))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(
            child.stdin.take().unwrap(),
            "user = \"{}:{}\"",
            self.access,
            self.secret
        )
        .unwrap();
        let mut hasher = Sha256::new();
        let mut body = child.stdout.take().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = std::io::Read::read(&mut body, &mut buf).unwrap();
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        assert!(child.wait().unwrap().success(), "GET {key} failed");
        hex::encode(hasher.finalize())
    }

    /// Unfinished multipart uploads of keys under `prefix/`: (key, upload id).
    /// (`prefix` has no `/`: curl 7.88 signs a query with one wrongly.)
    fn uploads(&self, prefix: &str) -> Vec<(String, String)> {
        let out = self.curl(
            &[
                "-f",
                &format!("{}/{}?prefix={prefix}&uploads=", self.endpoint, self.bucket),
            ],
            None,
        );
        assert!(out.status.success(), "listing uploads: {}", text(&out));
        let xml = String::from_utf8_lossy(&out.stdout).into_owned();
        xml.split("<Upload>")
            .skip(1)
            .map(|u| (tag(u, "Key"), tag(u, "UploadId")))
            .filter(|(k, _)| k.starts_with(&format!("{prefix}/")))
            .collect()
    }

    /// Starts a multipart upload of `key` as ferry would (its sha256 in the metadata).
    fn create_upload(&self, key: &str, sha256: &str) -> String {
        let out = self.curl(
            &[
                "-f",
                "-X",
                "POST",
                "-H",
                &format!("x-amz-meta-sha256: {sha256}"),
                &format!("{}?uploads=", self.object(key)),
            ],
            None,
        );
        let id = tag(&String::from_utf8_lossy(&out.stdout), "UploadId");
        assert!(!id.is_empty(), "no upload: {}", text(&out));
        id
    }

    /// Sends `bytes` as part `n` of an upload, as another client could.
    fn upload_part(&self, key: &str, id: &str, n: u32, bytes: &[u8]) {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("part");
        std::fs::write(&f, bytes).unwrap();
        let out = self.curl(
            &[
                "-f",
                &format!("{}?partNumber={n}&uploadId={id}", self.object(key)),
            ],
            Some(&f),
        );
        assert!(out.status.success(), "part {n} of {key}: {}", text(&out));
    }
}

/// The text of the first `<name>` in `xml`.
fn tag(xml: &str, name: &str) -> String {
    let open = format!("<{name}>");
    xml.split_once(&open)
        .and_then(|(_, rest)| rest.split_once(&format!("</{name}>")))
        .map(|(v, _)| v.to_string())
        .unwrap_or_default()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The busybox image, built once per run.
fn busybox() -> &'static Path {
    static L: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &L.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("busybox");
        let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
        c.arg("build")
            .arg(repo().join("images/busybox/image.toml"))
            .arg("--out")
            .arg(&out);
        common::ok(&mut c);
        (dir, out)
    })
    .1
}

/// An image whose one layer (uncompressed) is 12 MiB and a bit of bytes that
/// do not compress: three parts at `--part-size 5`. Built once per run.
fn big_image() -> &'static Path {
    static L: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &L.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let def = dir.path().join("big");
        std::fs::create_dir_all(&def).unwrap();
        // xorshift: the same bytes every run, and incompressible enough
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let data: Vec<u8> = (0..(12 << 20) + 4321)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(def.join("big.bin"), data).unwrap();
        std::fs::write(
            def.join("image.toml"),
            "name = \"ferry/big\"\ntag = \"1\"\ncreated = \"2024-01-01T00:00:00Z\"\ncompression = \"none\"\nbase = \"scratch\"\n\n[[layer]]\nname = \"big\"\n[[layer.source]]\npath = \"big.bin\"\ndest = \"/big.bin\"\n",
        )
        .unwrap();
        let toml = def.join("image.toml");
        common::ok(common::ferry().arg("lock").arg(&toml));
        let out = dir.path().join("out");
        common::ok(common::ferry().arg("build").arg(&toml).arg("--out").arg(&out));
        (dir, out)
    })
    .1
}

fn blob_sizes(layout: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn the_spark_image_goes_up_once_and_other_tools_can_read_the_layout() {
    let _turn = turn();
    let Some(e) = env("the_spark_image_goes_up_once") else {
        return;
    };
    let (out, first) = e.push(&e.spark, "spark");
    assert!(out.status.success(), "{}", text(&out));
    let (out, again) = e.push(&e.spark, "spark");
    assert!(out.status.success(), "{}", text(&out));
    eprintln!("first push: {first}");
    assert_eq!(
        (again["objects_sent"].as_u64(), again["bytes_sent"].as_u64()),
        (Some(0), Some(0)),
        "the second push sent something: {again}"
    );
    // an OCI layout any S3 client reads: the same index.json and blobs
    let index = e.curl(&[&e.object("spark/index.json")], None);
    assert_eq!(
        index.stdout,
        std::fs::read(e.spark.join("index.json")).unwrap()
    );
    let layout = e.curl(&[&e.object("spark/oci-layout")], None);
    assert!(String::from_utf8_lossy(&layout.stdout).contains("imageLayoutVersion"));
    for (hex, size) in blob_sizes(&e.spark) {
        let head = e.curl(
            &["-I", &e.object(&format!("spark/blobs/sha256/{hex}"))],
            None,
        );
        let h = String::from_utf8_lossy(&head.stdout).to_ascii_lowercase();
        assert!(h.contains(&format!("content-length: {size}")), "{hex}: {h}");
        assert!(
            h.contains(&format!("x-amz-meta-sha256: {hex}")),
            "{hex}: {h}"
        );
    }
}

#[test]
fn an_interrupted_multipart_upload_sends_only_the_missing_parts() {
    assert_eq!(
        progress_left("   1.4s  sha256:e53628ba8746: 49.8 MB / 66.6 MB, 44.4 MB/s"),
        Some(16_800_000)
    );
    assert_eq!(progress_left("   0.0s  index.json: sending 347 B"), None);
    let _turn = turn();
    let Some(e) = env("an_interrupted_multipart_upload") else {
        return;
    };
    let mut child = e
        .ferry(&["push", e.spark.to_str().unwrap(), &e.url("resume")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // a progress line (`sha256:…: 49.8 MB / 313.4 MB, …`) means parts of a
    // large blob are in; cut where at least 4 parts are still to go, so the
    // upload cannot finish before the kill lands (a 4-part blob whose last
    // part was in flight did, once)
    let mut seen = Vec::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        seen.push(line.clone());
        if progress_left(&line).is_some_and(|left| left >= 4 * PART) {
            break;
        }
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the push ended before it was cut: {seen:?}"
    );

    // what the cut left: unfinished uploads, and multipart blobs not yet whole
    let unfinished = e.uploads("resume");
    assert!(
        !unfinished.is_empty(),
        "no unfinished upload after the cut: {seen:?}"
    );
    let blobs = blob_sizes(&e.spark);
    let parts_left: u64 = blobs
        .iter()
        .filter(|(hex, size)| *size > PART && !e.has(&format!("resume/blobs/sha256/{hex}")))
        .map(|(_, size)| size.div_ceil(PART))
        .sum();

    let (out, again) = e.push(&e.spark, "resume");
    assert!(out.status.success(), "{}", text(&out));
    eprintln!("after the cut: {again}");
    let total: u64 = blobs.iter().map(|b| b.1).sum();
    assert!(again["resumed"].as_u64().unwrap() >= 1, "{again}");
    assert!(again["parts_reused"].as_u64().unwrap() >= 1, "{again}");
    assert_eq!(
        again["parts_sent"].as_u64().unwrap() + again["parts_reused"].as_u64().unwrap(),
        parts_left,
        "every part of the blobs the cut left unfinished, sent or reused: {again}"
    );
    assert!(again["bytes_sent"].as_u64().unwrap() < total, "{again}");
    // the resumed objects hold the blobs' bytes, as another client reads them
    for (key, _) in &unfinished {
        let hex = key.rsplit('/').next().unwrap();
        assert_eq!(e.object_sha256(key), hex, "{key}");
    }
    let (out, third) = e.push(&e.spark, "resume");
    assert!(out.status.success());
    assert_eq!(third["bytes_sent"].as_u64(), Some(0), "{third}");
}

/// The bytes a push's progress line says are left of its object
/// (`total - sent`, from `49.8 MB / 313.4 MB`), or `None` for other lines.
fn progress_left(line: &str) -> Option<u64> {
    let bytes = |s: &str| -> Option<f64> {
        let (n, unit) = s.trim().split_once(' ')?;
        let scale = match unit {
            "B" => 1.0,
            "KB" => 1e3,
            "MB" => 1e6,
            "GB" => 1e9,
            _ => return None,
        };
        Some(n.parse::<f64>().ok()? * scale)
    };
    let (head, rest) = line.split_once(" / ")?;
    let sent = bytes(head.rsplit_once(": ")?.1)?;
    let total = bytes(rest.split_once(',')?.0)?;
    Some((total - sent).max(0.0).round() as u64)
}

#[test]
fn a_part_in_the_bucket_with_other_bytes_is_sent_again() {
    let _turn = turn();
    let Some(e) = env("a_part_in_the_bucket_with_other_bytes") else {
        return;
    };
    let big = big_image();
    let (hex, size) = blob_sizes(big).into_iter().max_by_key(|b| b.1).unwrap();
    let part = 5u64 << 20;
    assert_eq!(size.div_ceil(part), 3, "the big layer should have 3 parts");
    let bytes = std::fs::read(big.join("blobs/sha256").join(&hex)).unwrap();
    // an unfinished upload: part 1 right, part 2 of the right size but other bytes
    let key = format!("etag/blobs/sha256/{hex}");
    let id = e.create_upload(&key, &hex);
    e.upload_part(&key, &id, 1, &bytes[..part as usize]);
    e.upload_part(&key, &id, 2, &vec![b'x'; part as usize]);

    let out = e
        .ferry(&["push", big.to_str().unwrap(), &e.url("etag"), "--json"])
        .args(["--part-size", "5"])
        .output()
        .unwrap();
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            json["resumed"].as_u64(),
            json["parts_reused"].as_u64(),
            json["parts_sent"].as_u64()
        ),
        (Some(1), Some(1), Some(2)),
        "{json}"
    );
    assert!(
        all.contains("part 2 in the bucket holds other bytes"),
        "{all}"
    );
    assert_eq!(e.object_sha256(&key), hex);
}

#[test]
fn a_wrong_secret_a_missing_bucket_and_a_shared_credentials_file_are_clear_errors() {
    let _turn = turn();
    let Some(e) = env("a_wrong_secret_a_missing_bucket") else {
        return;
    };
    let bb = busybox().to_str().unwrap();
    let out = e
        .ferry(&["push", bb, &e.url("wrong")])
        .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let last = err.lines().last().unwrap();
    assert!(
        last.starts_with("error: ")
            && last.contains("refused the credentials")
            && last.contains(&e.bucket),
        "{err}"
    );
    assert!(!err.contains("not-the-secret"), "{err}");

    let out = e
        .ferry(&["push", bb, "s3://no-such-bucket-here/x"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("the bucket `no-such-bucket-here` does not exist"),
        "{err}"
    );

    let out = e
        .ferry(&["push", bb, &e.url("nokeys")])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        "{}",
        text(&out)
    );

    // a credentials file works only when nobody else can read it
    let dir = tempfile::tempdir().unwrap();
    let f = e.shared_credentials(dir.path(), "[default]\n");
    let with_file = || {
        only_file_keys(
            e.ferry(&["push", bb, &e.url("file")])
                .arg("--credentials-file")
                .arg(&f),
        )
    };
    let out = with_file();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("chmod 600") && err.contains(f.to_str().unwrap()),
        "{err}"
    );
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = with_file();
    assert!(out.status.success(), "{}", text(&out));
}

impl Env {
    /// `dir/creds` with the test's keys after `head`, readable by all
    /// (0644), which ferry refuses until it is made 0600.
    fn shared_credentials(&self, dir: &Path, head: &str) -> PathBuf {
        let f = dir.join("creds");
        std::fs::write(
            &f,
            format!(
                "{head}aws_access_key_id = {}\naws_secret_access_key = {}\n",
                self.access, self.secret
            ),
        )
        .unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        f
    }
}

/// Runs `cmd` with no keys in its environment (a credentials file's only).
fn only_file_keys(cmd: &mut Command) -> Output {
    cmd.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .unwrap()
}

/// Words that must not appear anywhere: the secret, and a presigned URL's parts.
fn leaks(e: &Env, s: &str) -> Vec<String> {
    [
        e.secret.as_str(),
        "X-Amz-Signature",
        "X-Amz-Credential",
        "Signature=",
    ]
    .iter()
    .filter(|w| s.contains(*w))
    .map(|w| w.to_string())
    .collect()
}

#[test]
fn three_hosts_pull_the_spark_image_in_parallel_and_no_secret_shows() {
    let _turn = turn();
    let Some(e) = env("three_hosts_pull_the_spark_image") else {
        return;
    };
    let (out, _) = e.push(&e.spark, "spark");
    assert!(out.status.success(), "{}", text(&out));
    for i in 0..3 {
        e.reset(i, SPARK);
    }
    // watch every process while the hosts pull
    let stop = AtomicBool::new(false);
    let (out, seen) = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut found = Vec::new();
            let mut curls = 0;
            while !stop.load(Ordering::SeqCst) {
                for line in common::hosts_command_lines(&e.hosts, e.addrs.len()) {
                    // the hosts' fetchers and digest checks, wherever they are installed
                    curls += usize::from(line.split_whitespace().next().is_some_and(|a| {
                        ["curl", "wget", "openssl", "sha256sum"]
                            .iter()
                            .any(|t| a == *t || a.ends_with(&format!("/{t}")))
                    }));
                    let l = leaks(&e, &line);
                    if !l.is_empty() {
                        found.push(format!("{l:?} in `{line}`"));
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (found, curls)
        });
        let out = e.pull_cmd("spark", &[0, 1, 2]).output().unwrap();
        stop.store(true, Ordering::SeqCst);
        (out, watcher.join().unwrap())
    });
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(seen.0.is_empty(), "secrets in process lists: {:?}", seen.0);
    assert!(
        seen.1 > 0,
        "the watcher never saw the hosts' curl, wget, openssl or sha256sum; the pull said: {all}"
    );
    assert!(
        leaks(&e, &all).is_empty(),
        "{:?} in: {all}",
        leaks(&e, &all)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("pull: {json}");
    for (i, r) in json["hosts"].as_array().unwrap().iter().enumerate() {
        assert_eq!(
            (r["ok"].as_bool(), r["loaded"].as_bool()),
            (Some(true), Some(true)),
            "{r}"
        );
        let java = e.ssh(i, &format!("docker run --rm {SPARK} java -version"));
        let said = String::from_utf8_lossy(&java.stderr);
        assert!(said.contains("version \"17."), "host {}: {said}", i + 1);
    }
    // the hosts' stores are those an SSH push fills: a second pull fetches nothing
    let out = e.pull_cmd("spark", &[0, 1, 2]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    for r in json["hosts"].as_array().unwrap() {
        assert_eq!(
            (r["blobs_fetched"].as_u64(), r["loaded"].as_bool()),
            (Some(0), Some(false)),
            "{r}"
        );
    }
    // recorded for `ferry gc` as a push records it
    let index: Value =
        serde_json::from_slice(&std::fs::read(e.spark.join("index.json")).unwrap()).unwrap();
    let manifest = index["manifests"][0]["digest"].as_str().unwrap();
    let records = e.ssh_ok(0, "find /var/lib/ferry/images -type f");
    assert!(
        records.contains(manifest.trim_start_matches("sha256:")),
        "no gc record on the host: {records}"
    );
}

#[test]
fn a_tampered_object_in_the_bucket_is_caught_on_the_host() {
    let _turn = turn();
    let Some(e) = env("a_tampered_object_in_the_bucket") else {
        return;
    };
    let bb = busybox();
    let (out, _) = e.push(bb, "tamper");
    assert!(out.status.success(), "{}", text(&out));
    // overwrite the largest blob with as many other bytes, as another client could
    let (hex, size) = blob_sizes(bb).into_iter().max_by_key(|b| b.1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk");
    std::fs::write(&junk, vec![b'x'; size as usize]).unwrap();
    let put = e.curl(
        &["-f", &e.object(&format!("tamper/blobs/sha256/{hex}"))],
        Some(&junk),
    );
    assert!(put.status.success(), "{}", text(&put));
    e.reset(0, BUSYBOX);
    let out = e.pull_cmd("tamper", &[0]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &json["hosts"][0];
    assert_eq!(r["tampered"].as_bool(), Some(true), "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains(&format!("tamper/blobs/sha256/{hex}")),
        "{r}"
    );
    let stored = e.ssh_ok(0, "ls /var/lib/ferry/blobs/sha256");
    assert!(!stored.contains(&hex), "the bad blob was kept: {stored}");
    // pushing again repairs the bucket (the object lost its digest metadata)
    let (out, again) = e.push(bb, "tamper");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(again["objects_sent"].as_u64(), Some(1), "{again}");
    let out = e.pull_cmd("tamper", &[0]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_cluster_file_names_the_hosts_and_the_bucket_and_plans_carry_no_secret() {
    let _turn = turn();
    let Some(e) = env("a_cluster_file_names_the_hosts") else {
        return;
    };
    let (out, _) = e.push(busybox(), "cluster");
    assert!(out.status.success(), "{}", text(&out));
    let dir = tempfile::tempdir().unwrap();
    let key = e.hosts.join("id_ed25519");
    let hosts: String = (0..3)
        .map(|i| {
            format!(
                "[[host]]\nname = \"h{i}\"\naddress = \"{}\"\nssh = {{ user = \"root\", key = \"{}\" }}\n\n",
                e.addrs[i],
                key.display()
            )
        })
        .collect();
    let cluster = dir.path().join("cluster.toml");
    std::fs::write(
        &cluster,
        format!(
            "name = \"s3\"\ndelivery = \"{}\"\nobject_store = {{ endpoint = \"{}\" }}\n\n[image]\nreference = \"{BUSYBOX}\"\n\n{hosts}[zookeeper]\nhosts = [\"h0\"]\n\n[spark.masters]\nhosts = [\"h0\"]\n\n[spark.workers]\nhosts = [\"h1\", \"h2\"]\n",
            e.url("cluster"),
            e.endpoint
        ),
    )
    .unwrap();
    for i in 0..3 {
        e.reset(i, BUSYBOX);
    }
    // the endpoint comes from the cluster file too
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["pull", "--cluster", cluster.to_str().unwrap(), "--json"])
        .env("AWS_ACCESS_KEY_ID", &e.access)
        .env("AWS_SECRET_ACCESS_KEY", &e.secret)
        .env_remove("SSH_AUTH_SOCK")
        .arg("--known-hosts")
        .arg(e.hosts.join("known_hosts"))
        .output()
        .unwrap();
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(leaks(&e, &all).is_empty(), "{all}");
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["hosts"].as_array().unwrap().len(), 3, "{json}");

    let spark = e.spark.to_str().unwrap();
    let c = cluster.to_str().unwrap();
    for args in [
        vec!["plan", c, "--image", spark],
        vec!["plan", c, "--image", spark, "--json"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(&args)
            .env("AWS_ACCESS_KEY_ID", &e.access)
            .env("AWS_SECRET_ACCESS_KEY", &e.secret)
            .output()
            .unwrap();
        let all = text(&out);
        assert!(out.status.success(), "{all}");
        assert!(
            all.contains(&e.url("cluster")),
            "the plan does not name the bucket: {all}"
        );
        assert!(leaks(&e, &all).is_empty(), "{all}");
    }
}

#[test]
fn pulls_finish_before_their_deadline() {
    // the deadline of a pull of the small image onto one host: a hung host
    // script (waiting on stdin, say) would show here rather than stall CI
    let _turn = turn();
    let Some(e) = env("pulls_finish_before_their_deadline") else {
        return;
    };
    let (out, _) = e.push(busybox(), "quick");
    assert!(out.status.success(), "{}", text(&out));
    e.reset(1, BUSYBOX);
    let t0 = Instant::now();
    let mut child = e
        .pull_cmd("quick", &[1])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = t0 + Duration::from_secs(120);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            assert!(s.success());
            break;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the pull did not finish in 120s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_damaged_local_blob_is_refused_and_no_index_is_written() {
    let _turn = turn();
    let Some(e) = env("a_damaged_local_blob_is_refused") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("busybox");
    common::ok(Command::new("cp").arg("-r").arg(busybox()).arg(&copy));
    let (hex, size) = blob_sizes(&copy).into_iter().max_by_key(|b| b.1).unwrap();
    let blob = copy.join("blobs/sha256").join(&hex);
    std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&blob, vec![b'y'; size as usize]).unwrap();
    let (out, _) = e.push(&copy, "damaged");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("does not match its name") && err.contains(&hex),
        "{err}"
    );
    // a reader finds no image there: index.json goes last
    let head = e.curl(
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-I",
            &e.object("damaged/index.json"),
        ],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&head.stdout), "404");
}

#[test]
fn virtual_hosted_urls_work_against_the_server() {
    let _turn = turn();
    let Some(e) = env("virtual_hosted_urls_work_against_the_server") else {
        return;
    };
    let big = big_image();
    // an IP address has no bucket names under it: a clear error, nothing sent
    let out = e
        .ferry(&["push", big.to_str().unwrap(), &e.url("vhost-ip")])
        .args(["--url-style", "virtual"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.lines()
            .last()
            .unwrap()
            .contains("needs a DNS name, not an IP address"),
        "{err}"
    );
    // OSS refuses path-style requests: said before any key is looked for
    let out = e
        .ferry_bare(&["push", big.to_str().unwrap(), "oss://bkt/x"])
        .args(["--region", "cn-hangzhou", "--url-style", "path"])
        .env_remove("OSS_ACCESS_KEY_ID")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("`--url-style path` cannot be used with `oss://`"),
        "{err}"
    );
    // `bucket.<domain>` must resolve to the server for ferry alone: a mount
    // namespace of its own, where /etc/hosts is a copy with that name added
    // (the machine's file is not touched)
    if Command::new("unshare").arg("--version").output().is_err() {
        let notice = "SKIPPED the virtual-hosted push: no `unshare` (util-linux) to give ferry its own /etc/hosts";
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "{notice}"
        );
        let _ = writeln!(std::io::stderr().lock(), "\n*** {notice} ***\n");
        return;
    }
    let (ip, port) = e
        .endpoint
        .trim_start_matches("http://")
        .split_once(':')
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    let mut text_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    // the bucket's name only: a path-style request (to the bare domain) would not resolve
    text_hosts += &format!("\n{ip} {}.{}\n", e.bucket, e.domain);
    std::fs::write(&hosts, text_hosts).unwrap();
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$0" /etc/hosts && exec "$@""#)
        .arg(&hosts)
        .arg(env!("CARGO_BIN_EXE_ferry"))
        .args(["push", big.to_str().unwrap(), &e.url("vhost"), "--json"])
        .args(["--url-style", "virtual", "--part-size", "5", "--endpoint"])
        .arg(format!("http://{}:{port}", e.domain))
        .env("AWS_ACCESS_KEY_ID", &e.access)
        .env("AWS_SECRET_ACCESS_KEY", &e.secret)
        .output()
        .unwrap();
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(leaks(&e, &all).is_empty(), "{all}");
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["parts_sent"].as_u64(), Some(3), "{json}");
    assert_eq!(
        json["endpoint"].as_str(),
        Some(format!("http://{}:{port}", e.domain).as_str()),
        "{json}"
    );
    // the same objects, read path-style by another client
    for (hex, _) in blob_sizes(big) {
        assert_eq!(e.object_sha256(&format!("vhost/blobs/sha256/{hex}")), hex);
    }
    let index = e.curl(&["-f", &e.object("vhost/index.json")], None);
    assert_eq!(index.stdout, std::fs::read(big.join("index.json")).unwrap());
}

/// A cluster file of one host (`h1`, the first test host) running a master
/// and a worker, no ZooKeeper, delivered from `delivery`.
fn one_host_cluster(e: &Env, dir: &Path, name: &str, delivery: &str) -> PathBuf {
    let text = format!(
        r#"name = "{name}"
delivery = "{delivery}"
object_store = {{ endpoint = "{endpoint}" }}

[image]
layout = "{layout}"

[[host]]
name = "h1"
address = "{addr}"
ssh = {{ user = "root", key = "{key}" }}

[spark.masters]
hosts = ["h1"]
jvm_options = ["-Xmx256m"]

[spark.workers]
hosts = ["h1"]
cores = 1
memory = "512m"
jvm_options = ["-Xmx128m"]
"#,
        endpoint = e.endpoint,
        layout = e.spark.display(),
        addr = e.addrs[0],
        key = e.hosts.join("id_ed25519").display(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn push_takes_the_bucket_and_the_service_from_a_cluster_file() {
    let _turn = turn();
    let Some(e) = env("push_takes_the_bucket_and_the_service_from_a_cluster_file") else {
        return;
    };
    let bb = busybox().to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cluster = one_host_cluster(&e, dir.path(), "pushc", &e.url("pushc"));
    let c = cluster.to_str().unwrap();
    // no --endpoint and no bucket: both from the cluster file
    let out = e
        .ferry_bare(&["push", bb, "--cluster", c, "--json"])
        .output()
        .unwrap();
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(leaks(&e, &all).is_empty(), "{all}");
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["bucket"].as_str(),
        Some(e.url("pushc/").as_str()),
        "{json}"
    );
    assert_eq!(
        json["endpoint"].as_str(),
        Some(e.endpoint.as_str()),
        "{json}"
    );
    let index = e.curl(&["-f", &e.object("pushc/index.json")], None);
    assert_eq!(
        index.stdout,
        std::fs::read(busybox().join("index.json")).unwrap()
    );
    // a bucket named on the command line, the service still from the file
    let out = e
        .ferry_bare(&["push", bb, &e.url("pushc2"), "--cluster", c])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(e.has("pushc2/index.json"));
    // a cluster delivered over SSH names no bucket
    let ssh = one_host_cluster(&e, dir.path(), "pushssh", "ssh");
    let out = e
        .ferry_bare(&["push", bb, "--cluster", ssh.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("delivers over `ssh`, not from a bucket"),
        "{err}"
    );
}

/// Takes the cluster down (and its folders) however the test ends.
struct Down<'a> {
    e: &'a Env,
    cluster: &'a Path,
}

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .arg("down")
            .arg(self.cluster)
            .arg("--purge")
            .arg("--known-hosts")
            .arg(self.e.hosts.join("known_hosts"))
            .env_remove("SSH_AUTH_SOCK")
            .output();
    }
}

#[test]
fn up_pulls_the_image_from_the_bucket_and_runs_the_sample_job() {
    let _turn = turn();
    let Some(e) = env("up_pulls_the_image_from_the_bucket") else {
        return;
    };
    let (out, _) = e.push(&e.spark, "spark");
    assert!(out.status.success(), "{}", text(&out));
    e.reset(0, SPARK);
    let dir = tempfile::tempdir().unwrap();
    let cluster = one_host_cluster(&e, dir.path(), "s3up", &e.url("spark"));
    let _down = Down {
        e: &e,
        cluster: &cluster,
    };
    let c = cluster.to_str().unwrap();
    let known = e.hosts.join("known_hosts");
    let k = known.to_str().unwrap();
    let t0 = Instant::now();
    let out = e
        .ferry_bare(&["up", c, "--known-hosts", k])
        .output()
        .unwrap();
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    eprintln!("up from the bucket: {:.1}s", t0.elapsed().as_secs_f64());
    assert!(all.contains("h1: image pulled from the bucket"), "{all}");
    assert!(leaks(&e, &all).is_empty(), "{all}");
    // the host's store holds the image's blobs: it fetched them itself
    let stored = e.ssh_ok(0, "ls /var/lib/ferry/blobs/sha256");
    for (hex, _) in blob_sizes(&e.spark) {
        assert!(
            stored.contains(&hex),
            "sha256:{hex} is not in the host's store"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = e
            .ferry_bare(&["status", c, "--json", "--known-hosts", k])
            .output()
            .unwrap();
        let s: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if s["workers_registered"] == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not register within 60s: {s:#} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_sample_answer(
        &e.ferry_bare(&["submit", c, "--known-hosts", k])
            .output()
            .unwrap(),
    );

    // keys from a credentials file: read only when nobody else can, and
    // enough on their own for a second `up`, which changes nothing
    let creds = e.shared_credentials(dir.path(), "");
    let with_file = || {
        only_file_keys(
            e.ferry_bare(&["up", c, "--known-hosts", k, "--credentials-file"])
                .arg(&creds),
        )
    };
    let out = with_file();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = with_file();
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("h1: the image is in docker"), "{all}");
}
