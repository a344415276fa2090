//! End-to-end tests of `ferry push` against real hosts: network namespaces
//! with their own sshd and dockerd, made by `tests/hosts.sh up 3`. They run
//! only when `FERRY_E2E_HOSTS` names that fixture's folder (`tests/push-e2e.sh`
//! sets it); otherwise each test says loudly that it was skipped.
//!
//! The hosts are shared, so the tests take turns (one lock) and each starts by
//! putting the hosts it uses into the state it needs.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, OnceLock};

use serde_json::Value;

const REFERENCE: &str = "ferry/busybox:1.35";

mod common;
use common::repo;

/// The fixture's folder, or `None` (after a loud notice) when it is not up.
fn hosts_dir(test: &str) -> Option<PathBuf> {
    match std::env::var_os("FERRY_E2E_HOSTS") {
        Some(d) if Path::new(&d).join("hosts").exists() => Some(PathBuf::from(d)),
        _ => {
            // straight to the stream: the test harness hides `eprintln!` of passing tests
            let _ = writeln!(
                std::io::stderr().lock(),
                "\n*** SKIPPED {test}: FERRY_E2E_HOSTS is not set to a running fixture; run `bash tests/push-e2e.sh` (it starts the hosts with tests/hosts.sh) ***\n"
            );
            None
        }
    }
}

/// The hosts share one fixture: one test at a time.
fn turn() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

struct Hosts {
    dir: PathBuf,
    /// Addresses, host 1 first.
    addrs: Vec<String>,
}

impl Hosts {
    fn open(dir: PathBuf) -> Hosts {
        let list = std::fs::read_to_string(dir.join("hosts")).unwrap();
        let addrs = list
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .map(str::to_string)
            .collect::<Vec<_>>();
        assert!(
            addrs.len() >= 3,
            "the fixture has {} hosts; start it with `tests/hosts.sh up 3`",
            addrs.len()
        );
        Hosts { dir, addrs }
    }

    fn url(&self, i: usize) -> String {
        format!("ssh://root@{}", self.addrs[i])
    }

    /// Runs a shell command on host `i` with OpenSSH's client.
    fn ssh(&self, i: usize, cmd: &str) -> Output {
        Command::new("ssh")
            .arg("-i")
            .arg(self.dir.join("id_ed25519"))
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.dir.join("known_hosts").display()
            ))
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "ConnectTimeout=5",
            ])
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

    /// An empty store and no image in Docker.
    fn reset(&self, i: usize) {
        self.ssh_ok(i, &format!("rm -rf /var/lib/ferry/blobs /var/lib/ferry/tmp /var/lib/ferry/images /var/lib/ferry/lock /var/lib/ferry/locks; docker rmi -f {REFERENCE} >/dev/null 2>&1; true"));
    }

    /// The fixture's FERRY_NET, as `up` wrote it in `env`: the script needs it to name the namespaces.
    fn net(&self) -> Option<(&'static str, String)> {
        let env = std::fs::read_to_string(self.dir.join("env")).ok()?;
        let net = env.lines().find_map(|l| l.strip_prefix("FERRY_NET="))?;
        Some(("FERRY_NET", net.trim().to_string()))
    }

    fn fixture_script(&self, args: &[&str]) {
        let out = Command::new("bash")
            .arg(repo().join("tests/hosts.sh"))
            .args(args)
            .env("FERRY_HOSTS_DIR", &self.dir)
            .envs(self.net())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "hosts.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The busybox image, built once per test run.
fn layout() -> &'static Path {
    static L: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &L.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("busybox");
        let cache = std::env::var_os("FERRY_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| dir.path().join("cache"));
        let built = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .arg("build")
            .arg(repo().join("images/busybox/image.toml"))
            .arg("--out")
            .arg(&out)
            .arg("--cache")
            .arg(cache)
            .output()
            .unwrap();
        assert!(
            built.status.success(),
            "building the busybox image failed: {}",
            String::from_utf8_lossy(&built.stderr)
        );
        (dir, out)
    })
    .1
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// (hex, size) of the first (largest) layer and of the config.
fn layer_and_config() -> ((String, u64), (String, u64)) {
    let l = layout();
    let index = read_json(&l.join("index.json"));
    let m = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let manifest = read_json(&l.join("blobs/sha256").join(m));
    let d = |v: &Value| {
        (
            v["digest"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:")
                .to_string(),
            v["size"].as_u64().unwrap(),
        )
    };
    (d(&manifest["layers"][0]), d(&manifest["config"]))
}

struct Pushed {
    code: i32,
    json: Value,
    stderr: String,
}

impl Pushed {
    fn host(&self, h: &Hosts, i: usize) -> &Value {
        let want = format!("root@{}", h.addrs[i]);
        self.json["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["host"] == want.as_str())
            .unwrap_or_else(|| panic!("no result for {want}: {}", self.json))
    }
}

fn push(h: &Hosts, hosts: &[usize], extra: &[&str]) -> Pushed {
    push_with(h, hosts, &h.dir.join("known_hosts"), extra)
}

fn push_with(h: &Hosts, hosts: &[usize], known_hosts: &Path, extra: &[&str]) -> Pushed {
    push_layout(layout(), h, hosts, known_hosts, extra)
}

fn push_layout(
    layout: &Path,
    h: &Hosts,
    hosts: &[usize],
    known_hosts: &Path,
    extra: &[&str],
) -> Pushed {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("push")
        .arg(layout)
        .args(hosts.iter().map(|&i| h.url(i)))
        .arg("--identity")
        .arg(h.dir.join("id_ed25519"))
        .arg("--known-hosts")
        .arg(known_hosts)
        .arg("--json")
        .args(extra)
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("push printed no JSON ({e}): {stderr}"));
    Pushed {
        code: out.status.code().unwrap_or(-1),
        json,
        stderr,
    }
}

fn assert_ok(p: &Pushed) {
    assert_eq!(p.code, 0, "push failed: {}\n{}", p.json, p.stderr);
}

fn sha256_on(h: &Hosts, i: usize, hex: &str) -> String {
    h.ssh_ok(
        i,
        &format!("sha256sum /var/lib/ferry/blobs/sha256/{hex} | cut -d' ' -f1"),
    )
    .trim()
    .to_string()
}

#[test]
fn push_to_three_hosts_runs_there_and_a_second_push_sends_nothing() {
    let _turn = turn();
    let Some(dir) = hosts_dir("push_to_three_hosts_runs_there_and_a_second_push_sends_nothing")
    else {
        return;
    };
    let h = Hosts::open(dir);
    (0..3).for_each(|i| h.reset(i));

    let p = push(&h, &[0, 1, 2], &[]);
    assert_ok(&p);
    let blobs = std::fs::read_dir(layout().join("blobs/sha256"))
        .unwrap()
        .count() as u64;
    for i in 0..3 {
        let r = p.host(&h, i);
        assert_eq!(
            (
                r["ok"].as_bool(),
                r["loaded"].as_bool(),
                r["blobs_sent"].as_u64()
            ),
            (Some(true), Some(true), Some(blobs)),
            "{r}"
        );
        let said = h.ssh_ok(i, &format!("docker run --rm --network none {REFERENCE}"));
        let motd = std::fs::read_to_string(repo().join("images/busybox/files/motd")).unwrap();
        assert_eq!(said, motd, "host {}", i + 1);
        let left = h.ssh_ok(
            i,
            "ls -A /var/lib/ferry/tmp; ls /var/lib/ferry/blobs/sha256 | grep -c part || true",
        );
        assert_eq!(
            left.trim(),
            "0",
            "host {} keeps temporary files: {left}",
            i + 1
        );
    }

    let again = push(&h, &[0, 1, 2], &[]);
    assert_ok(&again);
    for i in 0..3 {
        let r = again.host(&h, i);
        assert_eq!(
            (
                r["blobs_sent"].as_u64(),
                r["bytes_sent"].as_u64(),
                r["loaded"].as_bool()
            ),
            (Some(0), Some(0), Some(false)),
            "{r}"
        );
    }

    // the table, for people
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("push")
        .arg(layout())
        .arg(h.url(0))
        .arg("-i")
        .arg(h.dir.join("id_ed25519"))
        .arg("--known-hosts")
        .arg(h.dir.join("known_hosts"))
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        table.starts_with("HOST")
            && table.contains(&format!("root@{}", h.addrs[0]))
            && table.contains("ok, up to date"),
        "{table}"
    );
}

#[test]
fn a_corrupt_stored_blob_is_found_and_replaced() {
    let _turn = turn();
    let Some(dir) = hosts_dir("a_corrupt_stored_blob_is_found_and_replaced") else {
        return;
    };
    let h = Hosts::open(dir);
    assert_ok(&push(&h, &[0], &[]));
    let ((layer, size), _) = layer_and_config();
    let corrupt = format!(
        "printf XXXX | dd of=/var/lib/ferry/blobs/sha256/{layer} bs=1 seek=1000 conv=notrunc 2>/dev/null"
    );

    // same name, same size, other bytes: only a hash finds it
    h.ssh_ok(0, &corrupt);
    let plain = push(&h, &[0], &[]);
    assert_ok(&plain);
    assert_eq!(
        plain.host(&h, 0)["blobs_sent"],
        0,
        "docker has the image, so a plain push trusts the store"
    );
    let p = push(&h, &[0], &["--verify"]);
    assert_ok(&p);
    let r = p.host(&h, 0);
    assert_eq!(
        (
            r["blobs_sent"].as_u64(),
            r["replaced"].as_u64(),
            r["bytes_sent"].as_u64()
        ),
        (Some(1), Some(1), Some(size)),
        "{r}"
    );
    assert!(
        p.stderr.contains("do not match their digest"),
        "{}",
        p.stderr
    );
    assert_eq!(sha256_on(&h, 0, &layer), layer);

    // when docker needs the image again, the store is checked before loading
    h.ssh_ok(
        0,
        &format!("{corrupt}; docker rmi -f {REFERENCE} >/dev/null"),
    );
    let p = push(&h, &[0], &[]);
    assert_ok(&p);
    let r = p.host(&h, 0);
    assert_eq!(
        (r["replaced"].as_u64(), r["loaded"].as_bool()),
        (Some(1), Some(true)),
        "{r}"
    );
    assert_eq!(sha256_on(&h, 0, &layer), layer);
    assert!(
        h.ssh_ok(0, &format!("docker run --rm --network none {REFERENCE}"))
            .contains("ferry")
    );
}

#[test]
fn an_interrupted_transfer_resumes_from_where_it_stopped() {
    let _turn = turn();
    let Some(dir) = hosts_dir("an_interrupted_transfer_resumes_from_where_it_stopped") else {
        return;
    };
    let h = Hosts::open(dir);
    h.reset(1);
    assert_ok(&push(&h, &[1], &[]));
    let ((layer, size), _) = layer_and_config();
    let half = size / 2;
    h.ssh_ok(1, &format!("cd /var/lib/ferry/blobs/sha256 && mv {layer} {layer}.part && truncate -s {half} {layer}.part"));

    let p = push(&h, &[1], &[]);
    assert_ok(&p);
    let r = p.host(&h, 1);
    assert_eq!(
        (
            r["blobs_sent"].as_u64(),
            r["resumed"].as_u64(),
            r["bytes_sent"].as_u64()
        ),
        (Some(1), Some(1), Some(size - half)),
        "only the missing half is sent: {r}"
    );
    assert_eq!(sha256_on(&h, 1, &layer), layer);
    assert_eq!(
        h.ssh_ok(
            1,
            &format!("ls /var/lib/ferry/blobs/sha256/ | grep -c '{layer}.part' || true")
        )
        .trim(),
        "0"
    );

    // a .part whose bytes are wrong is detected on the host and sent again whole
    h.ssh_ok(1, &format!("cd /var/lib/ferry/blobs/sha256 && mv {layer} {layer}.part && truncate -s {half} {layer}.part && printf XXXX | dd of={layer}.part bs=1 seek=10 conv=notrunc 2>/dev/null"));
    let p = push(&h, &[1], &[]);
    assert_ok(&p);
    assert_eq!(
        p.host(&h, 1)["bytes_sent"].as_u64(),
        Some(size - half + size),
        "{}",
        p.json
    );
    assert_eq!(sha256_on(&h, 1, &layer), layer);
}

#[test]
fn host_keys_are_checked_and_new_ones_only_trusted_when_asked() {
    let _turn = turn();
    let Some(dir) = hosts_dir("host_keys_are_checked_and_new_ones_only_trusted_when_asked") else {
        return;
    };
    let h = Hosts::open(dir);
    h.reset(2);
    let tmp = tempfile::tempdir().unwrap();

    // a known_hosts whose key for host 3 is another host's
    let real = std::fs::read_to_string(h.dir.join("known_hosts")).unwrap();
    let other_key = real
        .lines()
        .find(|l| l.starts_with(&format!("{} ", h.addrs[0])))
        .unwrap()
        .split_once(' ')
        .unwrap()
        .1;
    let wrong = tmp.path().join("wrong_known_hosts");
    std::fs::write(&wrong, format!("{} {other_key}\n", h.addrs[2])).unwrap();
    let p = push_with(&h, &[2], &wrong, &[]);
    assert_eq!(p.code, 1, "{}", p.json);
    let r = p.host(&h, 2);
    let err = r["error"].as_str().unwrap();
    assert!(
        err.contains(&format!("`root@{}`", h.addrs[2]))
            && err.contains("does not match")
            && err.contains("nothing was sent"),
        "{err}"
    );
    assert_eq!(
        (r["blobs_sent"].as_u64(), r["bytes_sent"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(
        h.ssh_ok(2, "ls -A /var/lib/ferry").trim(),
        "",
        "the host's store was touched"
    );

    // an unknown host is refused, unless trust on first use is asked for
    let fresh = tmp.path().join("ssh/known_hosts");
    let p = push_with(&h, &[2], &fresh, &[]);
    assert_eq!(p.code, 1);
    let err = p.host(&h, 2)["error"].as_str().unwrap().to_string();
    assert!(
        err.contains("is not in")
            && err.contains("--accept-new-host-keys")
            && err.contains("SHA256:"),
        "{err}"
    );
    assert!(!fresh.exists());
    let p = push_with(&h, &[0, 2], &fresh, &["--accept-new-host-keys"]);
    assert_ok(&p);
    let recorded = std::fs::read_to_string(&fresh).unwrap();
    for i in [0, 2] {
        let key = real
            .lines()
            .find(|l| l.starts_with(&format!("{} ", h.addrs[i])))
            .unwrap();
        assert!(recorded.lines().any(|l| l.starts_with(key)), "{recorded}");
    }
    // and from then on it is checked
    assert_ok(&push_with(&h, &[0, 2], &fresh, &[]));
}

/// Starts host 3's sshd again even when the test fails.
struct RestartSshd<'a>(&'a Hosts, usize);
impl Drop for RestartSshd<'_> {
    fn drop(&mut self) {
        self.0
            .fixture_script(&["sshd-start", &(self.1 + 1).to_string()]);
    }
}

#[test]
fn a_host_without_sshd_fails_alone_and_a_rerun_converges() {
    let _turn = turn();
    let Some(dir) = hosts_dir("a_host_without_sshd_fails_alone_and_a_rerun_converges") else {
        return;
    };
    let h = Hosts::open(dir);
    (0..3).for_each(|i| h.reset(i));
    h.fixture_script(&["sshd-stop", "3"]);
    let restart = RestartSshd(&h, 2);
    let p = push(&h, &[0, 1, 2], &["--connect-timeout", "3"]);
    assert_eq!(p.code, 1, "{}", p.json);
    for i in [0, 1] {
        assert_eq!(p.host(&h, i)["ok"], true, "{}", p.json);
    }
    let err = p.host(&h, 2)["error"].as_str().unwrap();
    assert!(
        err.contains(&format!("cannot connect to `root@{}`", h.addrs[2]))
            && err.contains("check that sshd runs"),
        "{err}"
    );
    assert!(p.stderr.contains("1 of 3 host(s) failed"), "{}", p.stderr);
    drop(restart);

    let p = push(&h, &[0, 1, 2], &[]);
    assert_ok(&p);
    assert_eq!(p.host(&h, 0)["blobs_sent"], 0);
    assert_eq!(p.host(&h, 2)["loaded"], true);
}

#[test]
fn a_push_killed_mid_transfer_is_resumed_by_the_next() {
    let _turn = turn();
    let Some(dir) = hosts_dir("a_push_killed_mid_transfer_is_resumed_by_the_next") else {
        return;
    };
    let h = Hosts::open(dir);
    // an image with one big uncompressed layer, so the transfer takes a while
    let tmp = tempfile::tempdir().unwrap();
    let def = tmp.path().join("image.toml");
    let mut big = vec![0u8; 150 << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for chunk in big.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(tmp.path().join("big.bin"), &big).unwrap();
    drop(big);
    std::fs::write(
        &def,
        "name = \"ferry/big\"\ntag = \"1\"\ncreated = 0\ncompression = \"none\"\n[config]\ncmd = [\"/big.bin\"]\n[[layer]]\nname = \"big\"\n[[layer.source]]\npath = \"big.bin\"\ndest = \"/big.bin\"\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    let ferry = |args: &[&std::ffi::OsStr]| {
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(args)
            .arg("--cache")
            .arg(tmp.path().join("cache"))
            .output()
            .unwrap()
    };
    assert!(ferry(&["lock".as_ref(), def.as_os_str()]).status.success());
    assert!(
        ferry(&[
            "build".as_ref(),
            def.as_os_str(),
            "--out".as_ref(),
            out.as_os_str()
        ])
        .status
        .success()
    );
    let push_big = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
        c.arg("push")
            .arg(&out)
            .arg(h.url(0))
            .arg("-i")
            .arg(h.dir.join("id_ed25519"));
        c.arg("--known-hosts")
            .arg(h.dir.join("known_hosts"))
            .arg("--json");
        c
    };
    let size = 150u64 << 20;
    let mut cut = None;
    for _attempt in 0..3 {
        h.ssh_ok(
            0,
            "rm -rf /var/lib/ferry/blobs; docker rmi -f ferry/big:1 >/dev/null 2>&1; true",
        );
        let mut child = push_big()
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // wait until the big blob is partly there, then kill the sender
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut part = 0;
        while part == 0
            && std::time::Instant::now() < deadline
            && child.try_wait().unwrap().is_none()
        {
            let ls = h.ssh_ok(0, "cd /var/lib/ferry/blobs/sha256 2>/dev/null && for f in *.part; do [ -f \"$f\" ] && stat -c %s \"$f\"; done; true");
            part = ls
                .lines()
                .filter_map(|l| l.trim().parse::<u64>().ok())
                .find(|&n| n > (1 << 20))
                .unwrap_or(0);
        }
        child.kill().unwrap();
        child.wait().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300)); // let the host's `cat` see the end of its input
        let left = h.ssh_ok(0, "cd /var/lib/ferry/blobs/sha256 && for f in *.part; do [ -f \"$f\" ] && stat -c %s \"$f\"; done; true");
        if let Some(n) = left
            .lines()
            .filter_map(|l| l.trim().parse::<u64>().ok())
            .find(|&n| n > 0 && n < size)
        {
            cut = Some(n);
            break;
        }
    }
    let cut = cut.expect("the push was never caught mid-transfer (3 tries)");
    let resumed = push_big().output().unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let v: Value = serde_json::from_slice(&resumed.stdout).unwrap();
    let r = &v["hosts"][0];
    assert_eq!(r["resumed"].as_u64(), Some(1), "{r}");
    let sent = r["bytes_sent"].as_u64().unwrap();
    assert!(
        sent < size + 4096 - cut + 4096 && sent > size - cut,
        "sent {sent} after {cut} of {size} were there: {r}"
    );
    assert_eq!(r["loaded"], true);
    h.ssh_ok(
        0,
        "docker rmi -f ferry/big:1 >/dev/null; rm -rf /var/lib/ferry/blobs",
    );
}

/// Bytes the root side of host `i`'s link has sent towards it.
fn bytes_to_host(i: usize) -> u64 {
    let dir = std::env::var("FERRY_E2E_HOSTS").expect("the fixture is up");
    let hosts = std::fs::read_to_string(Path::new(&dir).join("hosts")).unwrap();
    let veth = hosts
        .lines()
        .nth(i)
        .and_then(|l| l.split_whitespace().nth(2))
        .expect("hosts lines are `name address veth`");
    let p = format!("/sys/class/net/{veth}/statistics/tx_bytes");
    std::fs::read_to_string(&p)
        .map(|s| s.trim().parse().unwrap())
        .unwrap_or_else(|e| panic!("{p}: {e}"))
}

#[test]
fn the_spark_image_goes_to_three_hosts_with_no_more_than_its_bytes_on_the_wire() {
    let _turn = turn();
    let Some(dir) = hosts_dir("the_spark_image_goes_to_three_hosts") else {
        return;
    };
    let Some(spark) = std::env::var_os("FERRY_SPARK_LAYOUT").map(PathBuf::from) else {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "FERRY_SPARK_LAYOUT must be set under CI"
        );
        eprintln!(
            "\n*** SKIPPED the_spark_image_goes_to_three_hosts: FERRY_SPARK_LAYOUT is not set (tests/run.sh builds it) ***\n"
        );
        return;
    };
    let h = Hosts::open(dir);
    for i in 0..3 {
        h.ssh_ok(i, "rm -rf /var/lib/ferry/blobs /var/lib/ferry/tmp /var/lib/ferry/lock /var/lib/ferry/locks; docker rmi -f ferry/spark:3.5.3 >/dev/null 2>&1; true");
    }
    let payload: u64 = std::fs::read_dir(spark.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let before: Vec<u64> = (0..3).map(bytes_to_host).collect();
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .arg("push")
            .arg(&spark)
            .args((0..3).map(|i| h.url(i)))
            .arg("--identity")
            .arg(h.dir.join("id_ed25519"))
            .arg("--known-hosts")
            .arg(h.dir.join("known_hosts"))
            .arg("--json")
            .args(extra)
            .env_remove("SSH_AUTH_SOCK")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "push failed: {stderr}");
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let first = run(&[]);
    for (i, sent_before) in before.iter().enumerate() {
        let wire = bytes_to_host(i) - sent_before;
        eprintln!(
            "host {}: {wire} bytes on the wire for {payload} bytes of blobs ({:+.3}%)",
            i + 1,
            (wire as f64 / payload as f64 - 1.0) * 100.0
        );
        assert!(
            wire <= payload + payload / 100,
            "host {}: {wire} bytes on the wire for {payload} bytes of blobs",
            i + 1
        );
        let java = h.ssh(i, "docker run --rm ferry/spark:3.5.3 java -version");
        let said = String::from_utf8_lossy(&java.stderr);
        assert!(said.contains("version \"17."), "host {}: {said}", i + 1);
    }
    assert!(
        first["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["ok"] == true),
        "{first}"
    );
    let again = run(&[]);
    for r in again["hosts"].as_array().unwrap() {
        assert_eq!(
            (r["blobs_sent"].as_u64(), r["loaded"].as_bool()),
            (Some(0), Some(false)),
            "{r}"
        );
    }
}

/// Three versions of the busybox image, `/etc/motd` saying `version 1` to
/// `version 3`: they share the busybox layer and differ in the rest.
fn versions() -> &'static [PathBuf] {
    static V: OnceLock<(tempfile::TempDir, Vec<PathBuf>)> = OnceLock::new();
    &V.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let cache = std::env::var_os("FERRY_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| dir.path().join("cache"));
        let outs = (1..=3)
            .map(|n| {
                let def = dir.path().join(format!("def{n}"));
                std::fs::create_dir_all(def.join("files")).unwrap();
                for f in ["image.toml", "image.lock"] {
                    std::fs::copy(repo().join("images/busybox").join(f), def.join(f)).unwrap();
                }
                std::fs::write(def.join("files/motd"), format!("version {n}\n")).unwrap();
                let out = dir.path().join(format!("v{n}"));
                let built = Command::new(env!("CARGO_BIN_EXE_ferry"))
                    .arg("build")
                    .arg(def.join("image.toml"))
                    .arg("--out")
                    .arg(&out)
                    .arg("--cache")
                    .arg(&cache)
                    .output()
                    .unwrap();
                assert!(
                    built.status.success(),
                    "building version {n} failed: {}",
                    String::from_utf8_lossy(&built.stderr)
                );
                out
            })
            .collect();
        (dir, outs)
    })
    .1
}

fn layout_blobs(l: &Path) -> BTreeSet<String> {
    std::fs::read_dir(l.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn host_blobs(h: &Hosts, i: usize) -> BTreeSet<String> {
    h.ssh_ok(i, "ls /var/lib/ferry/blobs/sha256")
        .lines()
        .map(str::to_string)
        .collect()
}

fn gc(h: &Hosts, i: usize, extra: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("gc")
        .arg(h.url(i))
        .arg("--identity")
        .arg(h.dir.join("id_ed25519"))
        .arg("--known-hosts")
        .arg(h.dir.join("known_hosts"))
        .arg("--json")
        .args(extra)
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "gc failed: {stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["hosts"][0].clone()
}

#[test]
fn gc_keeps_the_newest_two_versions_and_removes_only_what_the_oldest_alone_needs() {
    let _turn = turn();
    let Some(dir) = hosts_dir("gc_keeps_the_newest_two_versions") else {
        return;
    };
    let h = Hosts::open(dir);
    h.reset(0);
    let v = versions();
    let known = h.dir.join("known_hosts");
    for l in v {
        assert_ok(&push_layout(l, &h, &[0], &known, &[]));
    }
    let records = h.ssh_ok(0, "ls /var/lib/ferry/images/ferry%2Fbusybox");
    assert_eq!(records.lines().count(), 3, "{records}");
    let before = host_blobs(&h, 0);
    let kept: BTreeSet<String> = layout_blobs(&v[1])
        .union(&layout_blobs(&v[2]))
        .cloned()
        .collect();
    let only_oldest: BTreeSet<String> = layout_blobs(&v[0]).difference(&kept).cloned().collect();
    assert_eq!(only_oldest.len(), 3, "manifest, config and the files layer");
    let removed = |r: &Value| -> BTreeSet<String> {
        r["removed_blobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                d.as_str()
                    .unwrap()
                    .trim_start_matches("sha256:")
                    .to_string()
            })
            .collect()
    };

    let dry = gc(&h, 0, &["--dry-run"]);
    assert_eq!(removed(&dry), only_oldest, "{dry}");
    assert_eq!(dry["dropped_images"].as_array().unwrap().len(), 1, "{dry}");
    assert_eq!(host_blobs(&h, 0), before, "--dry-run removed something");
    assert_eq!(
        h.ssh_ok(0, "ls /var/lib/ferry/images/ferry%2Fbusybox"),
        records
    );
    // the lines, for people
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["gc", "--dry-run", &h.url(0), "-i"])
        .arg(h.dir.join("id_ed25519"))
        .arg("--known-hosts")
        .arg(h.dir.join("known_hosts"))
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("drop ferry/busybox sha256:")
            && text.contains("would remove 3 blob(s) and 0 stale .part file(s)"),
        "{text}"
    );
    assert_eq!(host_blobs(&h, 0), before);

    let r = gc(&h, 0, &["--keep", "2"]);
    assert_eq!(removed(&r), only_oldest, "{r}");
    assert!(r["bytes_freed"].as_u64().unwrap() > 0, "{r}");
    let after = host_blobs(&h, 0);
    assert_eq!(after, before.difference(&only_oldest).cloned().collect());
    assert!(kept.is_subset(&after));
    assert_eq!(
        h.ssh_ok(0, "ls /var/lib/ferry/images/ferry%2Fbusybox")
            .lines()
            .count(),
        2
    );
    // nothing more to do
    let again = gc(&h, 0, &[]);
    assert!(removed(&again).is_empty(), "{again}");

    // the kept versions are whole: pushing them sends nothing, and they run
    for (n, l) in v.iter().enumerate().skip(1) {
        let p = push_layout(l, &h, &[0], &known, &[]);
        assert_ok(&p);
        assert_eq!(p.host(&h, 0)["blobs_sent"], 0, "{}", p.json);
        let said = h.ssh_ok(0, &format!("docker run --rm --network none {REFERENCE}"));
        assert_eq!(said, format!("version {}\n", n + 1));
    }
    h.reset(0);
}

/// The host `tests/hosts.sh up N --behind J` hides behind host J: (name, address, J as an index).
fn hidden(h: &Hosts) -> Option<(String, String, usize)> {
    let line = std::fs::read_to_string(h.dir.join("behind")).ok()?;
    let mut w = line.split_whitespace();
    let (name, addr, j) = (w.next()?, w.next()?, w.next()?.parse::<usize>().ok()?);
    Some((name.to_string(), addr.to_string(), j - 1))
}

fn skipped(test: &str, why: &str) {
    let _ = writeln!(
        std::io::stderr().lock(),
        "\n*** SKIPPED {test}: {why}; run `bash tests/push-e2e.sh` (it starts the hosts with `tests/hosts.sh up 3 --behind 1 --users`) ***\n"
    );
}

/// `ferry push` of the busybox image with any hosts and options; (exit code, JSON, stderr).
fn push_args(h: &Hosts, args: &[&str], known_hosts: &Path) -> (i32, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("push")
        .arg(layout())
        .args(args)
        .arg("--identity")
        .arg(h.dir.join("id_ed25519"))
        .arg("--known-hosts")
        .arg(known_hosts)
        .args(["--json", "--connect-timeout", "5"])
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("push printed no JSON ({e}): {stderr}"));
    (out.status.code().unwrap_or(-1), json, stderr)
}

/// known_hosts with `addr`'s key replaced by another host's.
fn known_hosts_lying_about(h: &Hosts, addr: &str, dir: &Path) -> PathBuf {
    let real = std::fs::read_to_string(h.dir.join("known_hosts")).unwrap();
    let key_of = |a: &str| {
        real.lines()
            .find(|l| l.starts_with(&format!("{a} ")))
            .unwrap()
            .split_once(' ')
            .unwrap()
            .1
            .to_string()
    };
    let other = if addr == h.addrs[2] {
        &h.addrs[1]
    } else {
        &h.addrs[2]
    };
    let lying: String = real
        .lines()
        .map(|l| {
            if l.starts_with(&format!("{addr} ")) {
                format!("{addr} {}\n", key_of(other))
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let p = dir.join(format!("known_hosts-{addr}"));
    std::fs::write(&p, lying).unwrap();
    p
}

#[test]
fn a_host_reachable_only_through_a_jump_host_gets_the_image_and_its_own_key_is_checked() {
    let _turn = turn();
    let test = "a_host_reachable_only_through_a_jump_host";
    let Some(dir) = hosts_dir(test) else {
        return;
    };
    let h = Hosts::open(dir);
    let Some((name, addr, j)) = hidden(&h) else {
        return skipped(test, "the fixture has no hidden host");
    };
    let url = format!("ssh://root@{addr}");
    let jump = format!("root@{}", h.addrs[j]);
    let known = h.dir.join("known_hosts");
    let docker = |args: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("docker -H unix:///run/{name}-docker.sock {args}"))
            .output()
            .unwrap()
    };
    docker(&format!("rmi -f {REFERENCE}"));
    let store = h.dir.join(format!("h{}b/store", j + 1));
    for d in ["blobs", "tmp", "images"] {
        let _ = std::fs::remove_dir_all(store.join(d));
    }

    // this machine has no route to it (nothing on the bridge): only host J does
    let route = Command::new("ip")
        .args(["route", "get", &addr])
        .output()
        .unwrap();
    let route = String::from_utf8_lossy(&route.stdout);
    assert!(
        !route.contains(" dev fb"),
        "reachable over the bridge: {route}"
    );
    let (code, json, _) = push_args(&h, &[&url], &known);
    assert_eq!(code, 1, "a direct push reached the hidden host: {json}");

    let (code, json, stderr) = push_args(&h, &[&url, "--jump", &jump], &known);
    assert_eq!(code, 0, "{json}\n{stderr}");
    let r = &json["hosts"][0];
    assert_eq!(
        (r["loaded"].as_bool(), r["jump"].as_str()),
        (Some(true), Some(jump.as_str())),
        "{r}"
    );
    let ran = docker(&format!("run --rm --network none {REFERENCE}"));
    let motd = std::fs::read_to_string(repo().join("images/busybox/files/motd")).unwrap();
    assert_eq!(String::from_utf8_lossy(&ran.stdout), motd, "{ran:?}");
    // a second push through the jump sends nothing
    let (code, json, _) = push_args(&h, &[&url, "--jump", &jump], &known);
    assert_eq!(code, 0);
    assert_eq!(json["hosts"][0]["blobs_sent"], 0, "{json}");

    // the hidden host's key is checked under its own name, and refused alone
    let tmp = tempfile::tempdir().unwrap();
    let wrong = known_hosts_lying_about(&h, &addr, tmp.path());
    let (code, json, _) = push_args(&h, &[&url, "--jump", &jump], &wrong);
    assert_eq!(code, 1);
    let err = json["hosts"][0]["error"].as_str().unwrap();
    assert!(
        err.starts_with(&format!("the host key of `root@{addr}`"))
            && err.contains("does not match")
            && err.contains("nothing was sent"),
        "{err}"
    );
    // a wrong key for the jump host: the error says which hop failed
    let wrong = known_hosts_lying_about(&h, &h.addrs[j], tmp.path());
    let (code, json, _) = push_args(&h, &[&url, "--jump", &jump], &wrong);
    assert_eq!(code, 1);
    let err = json["hosts"][0]["error"].as_str().unwrap();
    assert!(
        err.starts_with(&format!(
            "cannot reach `root@{addr}` via `{jump}`: the host key of `{jump}`"
        )) && err.contains("does not match"),
        "{err}"
    );

    // gc goes through the jump host too
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["gc", &url, "--jump", &jump, "--dry-run", "-i"])
        .arg(h.dir.join("id_ed25519"))
        .arg("--known-hosts")
        .arg(&known)
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("root@{addr}: keep ferry/busybox")),
        "{text}"
    );
    docker(&format!("rmi -f {REFERENCE}"));
}

/// (user with sudo, user without) of `tests/hosts.sh up N --users`.
fn users(h: &Hosts) -> Option<(String, String)> {
    let list = std::fs::read_to_string(h.dir.join("users")).ok()?;
    let find = |what: &str| {
        list.lines()
            .find(|l| l.ends_with(&format!(" {what}")))
            .and_then(|l| l.split_whitespace().next())
            .map(str::to_string)
    };
    Some((find("sudo")?, find("none")?))
}

#[test]
fn a_non_root_user_pushes_with_sudo_and_one_without_sudo_rights_is_told_what_to_do() {
    let _turn = turn();
    let test = "a_non_root_user_pushes_with_sudo";
    let Some(dir) = hosts_dir(test) else {
        return;
    };
    let h = Hosts::open(dir);
    let Some((op, plain)) = users(&h) else {
        return skipped(test, "the fixture has no login users");
    };
    h.reset(1);
    let known = h.dir.join("known_hosts");
    let url = format!("ssh://{op}@{}", h.addrs[1]);
    let (code, json, stderr) = push_args(&h, &[&url], &known);
    assert_eq!(code, 0, "{json}\n{stderr}");
    assert_eq!(json["hosts"][0]["loaded"], true, "{json}");
    let owners = h.ssh_ok(
        1,
        "find /var/lib/ferry/blobs /var/lib/ferry/images -exec stat -c %U {} + | sort -u",
    );
    assert_eq!(owners.trim(), "root", "the store is not root's alone");
    assert_eq!(
        h.ssh_ok(1, &format!("docker run --rm --network none {REFERENCE}")),
        std::fs::read_to_string(repo().join("images/busybox/files/motd")).unwrap()
    );

    // no sudo rights: one line naming the host, the user and the sudoers line
    let url = format!("ssh://{plain}@{}", h.addrs[2]);
    let (code, json, _) = push_args(&h, &[&url], &known);
    assert_eq!(code, 1, "{json}");
    let err = json["hosts"][0]["error"].as_str().unwrap();
    assert!(
        err.contains(&format!("on `{plain}@{}`, `sudo -n` refused", h.addrs[2]))
            && err.contains(&format!("{plain} ALL=(root) NOPASSWD: ALL"))
            && err.contains("--no-sudo")
            && !err.contains('\n'),
        "{err}"
    );
    // --no-sudo runs as the user, who cannot write the store
    let (code, json, _) = push_args(&h, &[&url, "--no-sudo"], &known);
    assert_eq!(code, 1, "{json}");
    let err = json["hosts"][0]["error"].as_str().unwrap();
    assert!(
        !err.contains("sudo") && err.contains("Permission denied"),
        "{err}"
    );

    // gc of two hosts at once, as root and as the sudo user: the summary table
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "gc",
            "--dry-run",
            &h.url(0),
            &format!("ssh://{op}@{}", h.addrs[1]),
            "-i",
        ])
        .arg(h.dir.join("id_ed25519"))
        .arg("--known-hosts")
        .arg(&known)
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("HOST"))
        .collect();
    assert_eq!(table.len(), 3, "{text}");
    assert!(
        table[0].contains("WOULD FREE") && table[0].ends_with("RESULT"),
        "{text}"
    );
    assert!(
        table[1].starts_with(&format!("root@{} ", h.addrs[0])) && table[1].ends_with(" ok"),
        "{text}"
    );
    assert!(
        table[2].starts_with(&format!("{op}@{} ", h.addrs[1])) && table[2].ends_with(" ok"),
        "{text}"
    );
    h.reset(1);
}
