//! End to end: a highly available Spark cluster on three namespaced hosts
//! (tests/hosts.sh: own sshd and dockerd each), launched with the real
//! `ferry` over SSH (h3 through h1, as through a bastion): 3 ZooKeeper
//! servers, 2 masters, 2 workers; and one whose ensemble admits only its
//! masters (`zookeeper.auth = "sasl"`). The tests share the hosts (and their
//! ports), so they take turns. Each runs when
//! `FERRY_E2E_HOSTS` names the fixture and `FERRY_SPARK_LAYOUT` the built
//! default image (tests/run.sh and tests/push-e2e.sh set both); otherwise it
//! says loudly that it was skipped, and under CI it fails instead.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{SAMPLE_ANSWER, assert_sample_answer, ferry, repo};

struct Fixture {
    dir: PathBuf,
    addrs: Vec<String>,
    cluster: PathBuf,
    _tmp: tempfile::TempDir,
    // dropped after `Drop::drop` has taken the cluster down
    _turn: std::sync::MutexGuard<'static, ()>,
}

/// One cluster on the hosts at a time.
static HOSTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The roles of the HA cluster.
const HA_ROLES: &str = r#"
[zookeeper]
hosts = ["h1", "h2", "h3"]
jvm_options = ["-Xmx128m"]

[spark.masters]
hosts = ["h1", "h2"]
jvm_options = ["-Xmx256m"]

[spark.workers]
hosts = ["h2", "h3"]
cores = 1
memory = "512m"
jvm_options = ["-Xmx128m"]
work_dir = "/var/lib/ferry/e2e-work"
"#;

/// The HA cluster's workers' folder: outside the cluster's own folders, in
/// the hosts' private /var/lib/ferry. On h2 it is a user's folder, made
/// before the first `up`.
const WORK: &str = "/var/lib/ferry/e2e-work";

/// The cluster `e2e` on the fixture's hosts with `roles` (TOML).
fn fixture(test: &str, roles: &str) -> Option<Fixture> {
    let hosts = std::env::var_os("FERRY_E2E_HOSTS").map(PathBuf::from);
    let layout = std::env::var_os("FERRY_SPARK_LAYOUT").map(PathBuf::from);
    let (Some(dir), Some(layout)) = (hosts, layout) else {
        let msg = format!(
            "{test}: FERRY_E2E_HOSTS and FERRY_SPARK_LAYOUT must name the test hosts and the built Spark image; run `bash tests/run.sh` (or tests/push-e2e.sh with FERRY_SPARK_LAYOUT set)"
        );
        assert!(std::env::var("CI").is_err(), "{msg}");
        let _ = writeln!(std::io::stderr().lock(), "\n*** SKIPPED {msg} ***\n");
        return None;
    };
    let addrs: Vec<String> = std::fs::read_to_string(dir.join("hosts"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect();
    assert!(addrs.len() >= 3, "the fixture needs 3 hosts");
    let tmp = tempfile::tempdir().unwrap();
    let key = dir.join("id_ed25519");
    let mut text = format!(
        "name = \"e2e\"\n\n[image]\nlayout = \"{}\"\n",
        layout.display()
    );
    for (i, a) in addrs.iter().take(3).enumerate() {
        // h3 is reached through h1, as a host behind a bastion would be
        let jump = if i == 2 { ", jump = \"h1\"" } else { "" };
        text += &format!(
            "\n[[host]]\nname = \"h{}\"\naddress = \"{a}\"\nssh = {{ key = \"{}\"{jump} }}\n",
            i + 1,
            key.display()
        );
    }
    text += roles;
    let cluster = tmp.path().join("e2e.toml");
    std::fs::write(&cluster, text).unwrap();
    // a test that failed holding the hosts has taken its cluster down
    let turn = HOSTS.lock().unwrap_or_else(|e| e.into_inner());
    Some(Fixture {
        dir,
        addrs,
        cluster,
        _tmp: tmp,
        _turn: turn,
    })
}

impl Fixture {
    /// `ferry ARGS CLUSTER --known-hosts ...`
    fn ferry(&self, args: &[&str]) -> Command {
        let mut c = ferry();
        c.args(args)
            .arg(&self.cluster)
            .arg("--known-hosts")
            .arg(self.dir.join("known_hosts"));
        c
    }

    /// `ferry ARGS CLUSTER MORE --known-hosts ...`, which must succeed.
    fn ok_args(&self, args: &[&str], more: &[&str]) -> String {
        let out = self.ferry(args).args(more).output().expect("ferry runs");
        assert!(
            out.status.success(),
            "ferry {args:?} {more:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn run(&self, args: &[&str]) -> Output {
        self.ferry(args).output().expect("ferry runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "ferry {args:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn ssh(&self, i: usize, cmd: &str) -> String {
        let out = Command::new("ssh")
            .arg("-i")
            .arg(self.dir.join("id_ed25519"))
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.dir.join("known_hosts").display()
            ))
            .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=5"])
            .arg(format!("root@{}", self.addrs[i]))
            .arg(cmd)
            .output()
            .expect("ssh runs");
        assert!(
            out.status.success(),
            "`{cmd}` on h{}: {}",
            i + 1,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every container of the cluster on every host, `host name id` lines.
    fn containers(&self) -> String {
        (0..3)
            .map(|i| {
                self.ssh(
                    i,
                    "docker ps --all --filter label=ferry.cluster=e2e --format '{{.Names}} {{.ID}} {{.State}}' | sort",
                )
                .lines()
                .map(|l| format!("h{} {l}\n", i + 1))
                .collect::<String>()
            })
            .collect()
    }

    fn status(&self) -> Value {
        let out = self.run(&["status", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "status --json: {e}: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// Polls `status` until `want` holds, for at most `secs`.
    fn wait_status(&self, what: &str, secs: u64, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.status();
            if want(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {secs}s; last status: {s:#}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The fixture's FERRY_NET, as `up` wrote it in `env`: hosts.sh needs
    /// it to name the namespaces (else it takes another set's, 231).
    fn net(&self) -> Option<(&'static str, String)> {
        let env = std::fs::read_to_string(self.dir.join("env")).ok()?;
        let net = env.lines().find_map(|l| l.strip_prefix("FERRY_NET="))?;
        Some(("FERRY_NET", net.trim().to_string()))
    }

    fn hosts_script(&self, args: &[&str]) {
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

    fn submit_sample(&self) {
        assert_sample_answer(&self.run(&["submit"]));
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // leave the hosts as they were found, also when a step failed
        let _ = self.run(&["down", "--purge"]);
    }
}

/// Each master's `status` from its `/json/` (`down` when it does not answer),
/// asked straight from this machine.
fn master_states(addrs: &[String]) -> Vec<String> {
    master_json(addrs)
        .iter()
        .map(|j| j["status"].as_str().unwrap_or("down").to_string())
        .collect()
}

/// Builds, in `dir`, the Spark image with one file of the sample job
/// changed (from FERRY_SPARK_DEF, the definition tests/run.sh built, else
/// images/spark; the download cache makes it quick) and returns its layout.
fn changed_image(dir: &Path) -> PathBuf {
    let def = std::env::var_os("FERRY_SPARK_DEF")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("images/spark/image.toml"));
    let src = def.parent().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let copy = dir.join("def");
    let cp = Command::new("cp")
        .arg("-r")
        .arg(src)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(cp.success(), "copying {}", src.display());
    let job = copy.join("files/opt/ferry/jobs/sample.py");
    let mut text = std::fs::read_to_string(&job).unwrap();
    text.push_str("# changed for the rolling upgrade test\n");
    std::fs::write(&job, text).unwrap();
    let out_dir = dir.join("layout");
    let out = ferry()
        .arg("build")
        .arg(copy.join(def.file_name().unwrap()))
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "building the changed image: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out_dir
}

/// Whether a master shows an application RUNNING.
fn an_app_runs(addrs: &[String]) -> bool {
    master_json(addrs).iter().any(|j| {
        j["activeapps"]
            .as_array()
            .is_some_and(|a| a.iter().any(|app| app["state"] == "RUNNING"))
    })
}

/// Each master's `/json/` (`null` when it does not answer).
fn master_json(addrs: &[String]) -> Vec<Value> {
    use std::io::Read;
    addrs
        .iter()
        .take(2)
        .map(|a| {
            let get = || -> std::io::Result<String> {
                let sock = format!("{a}:8080").parse().unwrap();
                let mut c = std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(1))?;
                c.set_read_timeout(Some(Duration::from_secs(2)))?;
                c.write_all(format!("GET /json/ HTTP/1.0\r\nHost: {a}\r\n\r\n").as_bytes())?;
                let mut body = String::new();
                c.read_to_string(&mut body)?;
                Ok(body)
            };
            get()
                .ok()
                .and_then(|b| serde_json::from_str(b.split_once("\r\n\r\n")?.1).ok())
                .unwrap_or(Value::Null)
        })
        .collect()
}

const LONG_JOB: &str = r#"
import time
from pyspark.sql import SparkSession
spark = SparkSession.builder.appName("ferry-long").getOrCreate()
def slow(x):
    time.sleep(1.0)
    return x * x
total = spark.sparkContext.parallelize(range(120), 24).map(slow).sum()
print(f"ferry-long: {total}")
spark.stop()
"#;

fn alive_master(s: &Value) -> Option<String> {
    s["containers"]
        .as_array()?
        .iter()
        .find(|c| c["role"] == "master" && c["health"] == "ALIVE")
        .and_then(|c| c["host"].as_str().map(str::to_string))
}

fn all_registered(s: &Value) -> bool {
    s["workers_registered"] == 2 && alive_master(s).is_some()
}

#[test]
fn an_ha_cluster_starts_runs_jobs_fails_over_and_converges() {
    let Some(f) = fixture(
        "an_ha_cluster_starts_runs_jobs_fails_over_and_converges",
        HA_ROLES,
    ) else {
        return;
    };
    let _ = f.run(&["down", "--purge"]);
    // h2's work folder is a user's, with a file of theirs
    f.ssh(
        1,
        &format!("mkdir -p {WORK} && echo mine > {WORK}/user-file && chown 185:185 {WORK} && chmod 0755 {WORK}"),
    );

    // first `up`: the image goes to the hosts that lack it
    let t0 = Instant::now();
    let first = f.ok(&["up", "--json"]);
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["ok"], true, "{first:#}");
    // `up` made h3's work folder and recorded it (in root's record, not in
    // the folder); h2's is used as it was
    let work = |i: usize| {
        f.ssh(
            i,
            &format!("stat -c '%a %u' {WORK}; grep -qxF -- {WORK} /var/lib/ferry/e2e/made && echo recorded || true"),
        )
    };
    assert_eq!(work(2), "750 185\nrecorded\n");
    assert_eq!(work(1), "755 185\n");
    eprintln!(
        "first up (image delivered where missing): {:.1}s",
        t0.elapsed().as_secs_f64()
    );

    // down and up again with the image in place: the launch itself
    f.ok(&["down"]);
    assert_eq!(f.containers(), "", "down left containers");
    let t0 = Instant::now();
    f.ok(&["up"]);
    let launch = t0.elapsed().as_secs_f64();
    let _ = writeln!(
        std::io::stderr().lock(),
        "up with the image on the hosts -> every worker registered: {launch:.1}s (3 ZooKeeper, 2 masters, 2 workers)"
    );
    let s = f.status();
    assert_eq!(s["healthy"], true, "{s:#}");
    let memory: Vec<String> = (0..3)
        .map(|i| {
            f.ssh(
                i,
                "docker stats --no-stream --format '{{.Name}} {{.MemUsage}}'",
            )
        })
        .collect();
    let _ = writeln!(
        std::io::stderr().lock(),
        "memory in use:\n{}",
        memory.concat()
    );

    // a PySpark job through `ferry submit`
    f.submit_sample();

    // security: listeners on the cluster addresses only; the secret in a
    // 0600 file of the image's user, in no plan or output; a client without
    // it cannot register an application
    for i in 0..3 {
        let ss = f.ssh(i, "ss -Hltn");
        for l in ss.lines() {
            let local = l.split_whitespace().nth(3).unwrap_or("");
            let wild = local.starts_with("0.0.0.0:")
                || local.starts_with("*:")
                || local.starts_with("[::]:");
            let port = local.rsplit(':').next().unwrap_or("");
            assert!(
                !(wild && ["2181", "2888", "3888", "7077", "7078", "8080", "8081"].contains(&port)),
                "h{}: a ferry-started listener on every interface: {l}",
                i + 1
            );
        }
    }
    assert_eq!(
        f.ssh(1, "stat -c '%a %u' /etc/ferry/e2e/secret/spark.env")
            .trim(),
        "600 185"
    );
    let secret = f.ssh(
        1,
        "sed -n 's/^_SPARK_AUTH_SECRET=//p' /etc/ferry/e2e/secret/spark.env",
    );
    let secret = secret.trim();
    assert_eq!(secret.len(), 64, "a 256-bit secret");
    let plan = ferry().arg("plan").arg(&f.cluster).output().unwrap();
    let again_json = f.ok(&["up", "--json"]);
    for (what, text) in [
        ("plan", String::from_utf8_lossy(&plan.stdout).into_owned()),
        ("up --json", again_json.clone()),
        (
            "container config",
            f.ssh(
                1,
                "docker inspect --format '{{.Args}} {{.Config.Cmd}}' ferry-e2e-master",
            ),
        ),
    ] {
        assert!(!text.contains(secret), "the secret is in the {what}");
    }
    let stranger = f.ssh(
        0,
        &format!(
            "timeout 150 docker run --rm --network host --user spark ferry/spark:3.5.3 /opt/spark/bin/spark-submit --master spark://{a}:7077,{b}:7077 --conf spark.driver.host={a} --conf spark.executor.memory=512m /opt/ferry/jobs/sample.py 2>&1; echo exit=$?",
            a = f.addrs[0],
            b = f.addrs[1]
        ),
    );
    assert!(
        !stranger.contains(SAMPLE_ANSWER) && !stranger.contains("exit=0"),
        "a client without the secret ran a job: {stranger}"
    );

    // failover drills: graceful, then a crash
    for how in [
        &["drill", "failover", "--json"][..],
        &["drill", "failover", "--kill", "--json"],
    ] {
        let r: Value = serde_json::from_str(&f.ok(how)).unwrap();
        let _ = writeln!(
            std::io::stderr().lock(),
            "drill {}: {} -> {}: new leader {:.1}s, workers back {:.1}s, old leader a standby {:.1}s",
            r["how"],
            r["old_leader"],
            r["new_leader"],
            r["seconds_to_new_leader"].as_f64().unwrap(),
            r["seconds_to_workers"].as_f64().unwrap(),
            r["seconds_old_back"].as_f64().unwrap()
        );
        assert_ne!(r["old_leader"], r["new_leader"]);
        f.wait_status("the cluster is whole after the drill", 60, |s| {
            s["healthy"] == true
        });
    }
    f.submit_sample();

    // a rolling upgrade while a long job runs: the job finishes right, and
    // masters are polled all along
    let job = f.cluster.with_file_name("long.py");
    std::fs::write(&job, LONG_JOB).unwrap();
    let mut long = f.ferry(&["submit"]);
    long.arg(&job)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let running = long.spawn().unwrap();
    f.wait_status("the long job is running", 120, |_| an_app_runs(&f.addrs));
    // the upgrade: a changed image (the sample job's file gains a line, so
    // one layer differs; `up` pushes it) and changed JVM options
    let layout = std::env::var("FERRY_SPARK_LAYOUT").unwrap();
    let changed = changed_image(&f.cluster.with_file_name("upgrade"));
    let text = std::fs::read_to_string(&f.cluster)
        .unwrap()
        .replace(&layout, &changed.display().to_string())
        .replace("-Xmx128m", "-Xmx144m")
        .replace("-Xmx256m", "-Xmx288m");
    assert!(text.contains(&*changed.to_string_lossy()), "{text}");
    std::fs::write(&f.cluster, text).unwrap();
    let dry = f.ok(&["up", "--dry-run"]);
    assert!(
        dry.contains("rolling 1/3") && dry.contains("rolling 2/2"),
        "{dry}"
    );
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (samples, upgrade_secs) = std::thread::scope(|sc| {
        let poller = sc.spawn(|| {
            let mut samples = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                samples.push((Instant::now(), master_states(&f.addrs)));
                std::thread::sleep(Duration::from_millis(100));
            }
            samples
        });
        let t0 = Instant::now();
        let out = f.run(&["up"]);
        let secs = t0.elapsed().as_secs_f64();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let samples = poller.join().unwrap();
        // a timeline for the log: what `up` did, and the masters' states
        // whenever they changed
        let said = String::from_utf8_lossy(&out.stderr);
        let mut timeline: Vec<String> = said
            .lines()
            .filter(|l| l.contains("rolling") || l.contains("latch") || l.contains("gate"))
            .map(|l| format!("  up: {}", l.trim()))
            .collect();
        let mut last: Option<&Vec<String>> = None;
        for (t, st) in &samples {
            if last != Some(st) {
                let at = t.saturating_duration_since(t0).as_secs_f64();
                timeline.push(format!("  {at:6.1}s  masters: {st:?}"));
                last = Some(st);
            }
        }
        let _ = writeln!(std::io::stderr().lock(), "{}", timeline.join("\n"));
        assert!(out.status.success(), "up during the long job:\n{said}");
        (samples, secs)
    });
    let both = samples
        .iter()
        .filter(|(_, s)| s.iter().all(|x| x == "ALIVE"))
        .count();
    assert_eq!(both, 0, "two masters ALIVE at once");
    // the longest run of samples in which no master was in `states`
    let longest_without = |states: &[&str]| {
        let (mut gap, mut longest, mut since) = (false, 0.0f64, Instant::now());
        for (t, s) in &samples {
            let none = !s.iter().any(|x| states.contains(&x.as_str()));
            if none && !gap {
                since = *t;
            }
            if !none && gap {
                longest = longest.max(t.duration_since(since).as_secs_f64());
            }
            gap = none;
        }
        longest
    };
    let longest = longest_without(&["ALIVE"]);
    // an elected master recovers (reads ZooKeeper, hears from every worker
    // and application) before it is ALIVE
    let leaderless = longest_without(&["ALIVE", "RECOVERING", "COMPLETING_RECOVERY"]);
    let out = running.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let _ = writeln!(
        std::io::stderr().lock(),
        "rolling upgrade (3 ZooKeeper, 2 masters, 2 workers) under a running job: {upgrade_secs:.1}s; {} samples; longest time with no ALIVE master: {longest:.1}s, with no elected one: {leaderless:.1}s",
        samples.len()
    );
    assert!(
        out.status.success() && stdout.contains("ferry-long: 568820"),
        "the long job across the rolling upgrade: {stdout}"
    );

    // Ctrl-C on `ferry submit` removes the driver's container from its host
    let mut interrupted = f.ferry(&["submit"]);
    interrupted
        .arg(&job)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let child = interrupted.spawn().unwrap();
    f.wait_status("the job to interrupt is running", 120, |_| {
        an_app_runs(&f.addrs)
    });
    let drivers = "docker ps --all --quiet --filter label=ferry.driver=e2e";
    assert_ne!(
        format!("{}{}", f.ssh(0, drivers), f.ssh(1, drivers)).trim(),
        "",
        "the driver's container is on a master's host"
    );
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted: removing the driver"), "{err}");
    for i in 0..2 {
        assert_eq!(f.ssh(i, drivers).trim(), "", "a driver left on h{}", i + 1);
    }

    // `up` again: nothing is replaced
    let before = f.containers();
    let again = f.ok(&["up", "--json"]);
    assert!(again.contains("\"ok\": true"), "{again}");
    assert_eq!(f.containers(), before, "a second `up` changed containers");

    // the leading master stops; the standby takes over; jobs still run
    // (the leader as of now: the drills and the upgrade moved it)
    let now = f.wait_status("a leading master", 60, |s| alive_master(s).is_some());
    let leader = alive_master(&now).expect("a leader");
    let li = if leader == "h1" { 0 } else { 1 };
    assert_eq!(
        master_states(&f.addrs)[li],
        "ALIVE",
        "the master about to be stopped, on {leader}, leads: {:?}",
        master_states(&f.addrs)
    );
    let t0 = Instant::now();
    f.ssh(li, "docker stop ferry-e2e-master >/dev/null");
    let after = f.wait_status("a standby master takes over", 120, |s| {
        alive_master(s).is_some_and(|m| m != leader) && s["workers_registered"] == 2
    });
    let _ = writeln!(
        std::io::stderr().lock(),
        "failover after stopping {leader}'s master: {:.1}s to a new leader with both workers",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(after["healthy"], false, "a stopped master is not healthy");
    f.submit_sample();
    // `up` starts the stopped master again, as a standby
    f.ok(&["up"]);
    f.wait_status("the cluster is whole again", 60, |s| s["healthy"] == true);

    // every container stopped, then started on all hosts at once, as after
    // a power cut: workers that start while their master recovers can be
    // ignored by it for good; `up` restarts those and the cluster is whole
    let every = |cmd: &'static str| {
        std::thread::scope(|sc| {
            for i in 0..3 {
                let f = &f;
                sc.spawn(move || f.ssh(i, cmd));
            }
        })
    };
    // first a power cut: everything killed at once, nothing deregistered;
    // `up` clears the recovery state the dead left in ZooKeeper, so the
    // masters need not wait out their worker timeout (60 s)
    every("docker kill $(docker ps -q --filter label=ferry.cluster=e2e) >/dev/null");
    let t0 = Instant::now();
    let out = f.run(&["up"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "up after a power cut: {err}");
    assert!(
        err.contains("cleared the recovery state it left in ZooKeeper ("),
        "{err}"
    );
    let _ = writeln!(
        std::io::stderr().lock(),
        "up after a power cut (every container killed): {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    f.wait_status("whole after a power cut", 60, all_registered);
    // then every container stopped and started at once, by hand
    every("docker stop --time 5 $(docker ps -q --filter label=ferry.cluster=e2e) >/dev/null");
    every("docker start $(docker ps -aq --filter label=ferry.cluster=e2e) >/dev/null");
    let t0 = Instant::now();
    let out = f.run(&["up"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "up after a restart of everything: {err}"
    );
    let restarted = err.lines().filter(|l| l.contains("restarted it")).count();
    let _ = writeln!(
        std::io::stderr().lock(),
        "up after every container restarted at once: {:.1}s, {restarted} stranded workers restarted",
        t0.elapsed().as_secs_f64()
    );
    f.wait_status("whole after a restart of everything", 60, |s| {
        s["healthy"] == true && all_registered(s)
    });
    f.submit_sample();

    // a host whose sshd is down fails alone; the rest are checked
    f.hosts_script(&["sshd-stop", "3"]);
    let out = f.run(&["up"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("error: host `h3`"), "{err}");
    assert!(!err.contains("error: host `h1`"), "{err}");
    assert!(err.contains("gate workers-registered"), "{err}");
    // after a change to the workers, a rerun with h3 back converges
    f.hosts_script(&["sshd-start", "3"]);
    let text = std::fs::read_to_string(&f.cluster)
        .unwrap()
        .replace("cores = 1", "cores = 2");
    std::fs::write(&f.cluster, text).unwrap();
    let before = f.containers();
    f.ok(&["up"]);
    let after = f.containers();
    let changed: Vec<&str> = before
        .lines()
        .zip(after.lines())
        .filter(|(a, b)| a != b)
        .map(|(a, _)| a)
        .collect();
    assert_eq!(
        changed.len(),
        2,
        "only the workers are replaced: {changed:?}"
    );
    assert!(changed.iter().all(|l| l.contains("-worker")), "{changed:?}");
    f.wait_status("the changed cluster is whole", 60, all_registered);

    // scale out by a worker on h1, run a job on all three, scale back in:
    // the cluster file and the hosts agree
    // (a bigger one: its own size goes into its [[host]])
    f.ok_args(&["scale"], &["--add-worker", "h1", "--memory", "640m"]);
    let text = std::fs::read_to_string(&f.cluster).unwrap();
    assert!(text.contains("hosts = [\"h2\", \"h3\", \"h1\"]"), "{text}");
    assert!(text.contains("worker = { memory = \"640m\" }"), "{text}");
    let s = f.wait_status("three workers", 90, |s| s["workers_registered"] == 3);
    assert_eq!(s["workers_planned"], 3);
    let args = f.ssh(
        0,
        "docker inspect --format '{{json .Args}}' ferry-e2e-worker",
    );
    assert!(args.contains("\"--memory\",\"640m\""), "{args}");
    f.submit_sample();
    f.ok_args(&["scale"], &["--remove-worker", "h1", "--drain-secs", "60"]);
    assert!(
        std::fs::read_to_string(&f.cluster)
            .unwrap()
            .contains("hosts = [\"h2\", \"h3\"]")
    );
    assert!(
        !f.containers().contains("h1 ferry-e2e-worker"),
        "{}",
        f.containers()
    );
    f.wait_status("two workers again", 90, |s| {
        s["healthy"] == true && s["workers_planned"] == 2
    });

    // logs of one container
    let logs = String::from_utf8_lossy(
        &f.ferry(&["logs"])
            .args(["h3", "zookeeper", "--tail", "200"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        logs.contains("zookeeper") || logs.contains("ZooKeeper"),
        "{logs}"
    );

    // a user's folder that the daemon's user cannot write fails its host
    f.ssh(1, &format!("chown 0:0 {WORK}"));
    let out = f.run(&["up"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.lines().any(|l| l.starts_with("error: host `h2`: ")
            && l.contains(&format!("`{WORK}` was not made by ferry and the image's user `spark` (uid 185) cannot write it: give it to that user (`chown 185:185 {WORK}` there)"))),
        "{err}"
    );
    assert!(!err.contains("error: host `h3`"), "{err}");

    // down --purge: no containers, no folders but the user's, which it names
    let purged = f.ok(&["down", "--purge"]);
    assert_eq!(f.containers(), "");
    assert_eq!(
        f.ssh(0, "ls /etc/ferry /var/lib/ferry | grep -c '^e2e$' || true")
            .trim(),
        "0"
    );
    assert!(
        purged.contains(&format!("h2: kept {WORK}: it was there before ferry")),
        "{purged}"
    );
    assert_eq!(f.ssh(1, &format!("cat {WORK}/user-file")), "mine\n");
    // h1's too, a worker's folder since `scale --remove-worker`
    for i in [0, 2] {
        assert_eq!(
            f.ssh(i, &format!("ls -d {WORK} 2>/dev/null || echo gone")),
            "gone\n",
            "h{}",
            i + 1
        );
    }
    f.ssh(1, &format!("rm -rf {WORK}"));
    assert!(Path::new(&f.cluster).exists());
}

/// A ZooKeeper client from the image, run on host `i`: `zkCli.sh ls PATH`
/// against `server`, logged in with the masters' JAAS file when `login`.
fn zk_ls(f: &Fixture, i: usize, server: &str, path: &str, login: bool) -> String {
    let login = if login {
        "--user spark --volume /etc/ferry/e2e/secret:/s:ro --env CLIENT_JVMFLAGS=-Djava.security.auth.login.config=/s/zookeeper-client.jaas"
    } else {
        "--user zookeeper"
    };
    f.ssh(
        i,
        &format!(
            "timeout 120 docker run --rm --network host {login} --entrypoint /usr/share/zookeeper/bin/zkCli.sh ferry/spark:3.5.3 -server {server}:2181 ls {path} 2>&1; echo exit=$?"
        ),
    )
}

#[test]
fn a_sasl_ensemble_admits_only_the_masters() {
    let Some(f) = fixture(
        "a_sasl_ensemble_admits_only_the_masters",
        r#"
[zookeeper]
hosts = ["h1", "h2", "h3"]
auth = "sasl"
jvm_options = ["-Xmx128m"]

[spark.masters]
hosts = ["h1", "h2"]
jvm_options = ["-Xmx256m"]

[spark.workers]
hosts = ["h3"]
cores = 1
memory = "512m"
jvm_options = ["-Xmx128m"]
"#,
    ) else {
        return;
    };
    let _ = f.run(&["down", "--purge"]);
    let t0 = Instant::now();

    // every command line on the hosts (and of ferry and its ssh) while the
    // cluster starts, runs a job and fails over: the password is made
    // during `up`, so they are checked once it can be read
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (outputs, seen) = std::thread::scope(|sc| {
        let watcher = sc.spawn(|| {
            let mut seen = std::collections::BTreeSet::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                seen.extend(common::hosts_command_lines(&f.dir, 3));
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        });
        let mut outputs = Vec::new();
        let mut run = |what: &str, args: &[&str]| {
            let out = f.run(args);
            let text = format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "ferry {what}: {text}");
            outputs.push((what.to_string(), text));
        };
        run("up", &["up"]);
        // elected through authenticated sessions; the worker registered
        let s = f.status();
        assert_eq!(s["healthy"], true, "{s:#}");
        assert!(
            alive_master(&s).is_some() && s["workers_registered"] == 1,
            "{s:#}"
        );
        run("status", &["status"]);
        run("submit", &["submit"]);
        run("drill failover", &["drill", "failover", "--json"]);
        f.wait_status("the cluster is whole after the drill", 60, |s| {
            s["healthy"] == true
        });
        run("up again", &["up", "--json"]);
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        (outputs, watcher.join().unwrap())
    });
    let _ = writeln!(
        std::io::stderr().lock(),
        "sasl ensemble: up, job, failover drill, up again: {:.1}s; {} command lines watched",
        t0.elapsed().as_secs_f64(),
        seen.len()
    );
    assert!(
        outputs
            .iter()
            .any(|(what, out)| what == "submit" && out.lines().any(|l| l == SAMPLE_ANSWER)),
        "the sample job's answer: {outputs:?}"
    );
    // the planned failover's handover logged in to the ensemble too
    assert!(
        outputs.iter().any(|(what, out)| what == "drill failover"
            && out.contains("its leader latch node")
            && out.contains("deleted")),
        "the drill's handover: {outputs:?}"
    );
    assert!(
        seen.iter()
            .any(|l| l.contains("org.apache.spark.deploy.master.Master")),
        "the watcher never saw a master"
    );

    // the JAAS files: 0600, the daemons' users, one password
    for i in 0..3 {
        assert_eq!(
            f.ssh(
                i,
                "stat -c '%a %u' /etc/ferry/e2e/zookeeper-secret/zookeeper-server.jaas"
            )
            .trim(),
            "600 186",
            "h{}",
            i + 1
        );
    }
    let password = f.ssh(
        0,
        "stat -c '%a %u' /etc/ferry/e2e/secret/zookeeper-client.jaas; sed -n 's/^ *password=\"\\(.*\\)\";$/\\1/p' /etc/ferry/e2e/secret/zookeeper-client.jaas",
    );
    let (mode, password) = password.trim().split_once('\n').unwrap();
    assert_eq!(mode, "600 185");
    assert_eq!(password.len(), 64, "{password:?}");
    assert!(
        f.ssh(
            2,
            "cat /etc/ferry/e2e/zookeeper-secret/zookeeper-server.jaas"
        )
        .contains(&format!("user_spark=\"{password}\";"))
    );

    // a client without the password gets no session, on any server; with
    // the masters' login it lists Spark's znodes
    for (i, server) in f.addrs.iter().take(3).enumerate() {
        let stranger = zk_ls(&f, 2 - i, server, "/ferry/e2e", false);
        assert!(
            stranger.contains("Session closed because client failed to authenticate")
                && !stranger.contains("leader_election")
                && !stranger.contains("exit=0"),
            "a client without the password on {server}: {stranger}"
        );
    }
    let member = zk_ls(&f, 0, &f.addrs[1], "/ferry/e2e", true);
    assert!(
        member.contains("[leader_election, master_status]"),
        "the masters' login: {member}"
    );

    // the password is in no plan, output, argv, container config or log
    let plan = ferry().arg("plan").arg(&f.cluster).output().unwrap();
    let plan_json = ferry()
        .args(["plan", "--json"])
        .arg(&f.cluster)
        .output()
        .unwrap();
    let mut places = outputs;
    places.push(("plan".into(), String::from_utf8_lossy(&plan.stdout).into()));
    places.push((
        "plan --json".into(),
        String::from_utf8_lossy(&plan_json.stdout).into(),
    ));
    for i in 0..3 {
        places.push((
            format!("h{} container configs and logs", i + 1),
            f.ssh(
                i,
                "for c in $(docker ps --all --quiet --filter label=ferry.cluster=e2e); do docker inspect --format '{{.Args}} {{.Config.Cmd}} {{.Config.Env}}' $c; docker logs $c 2>&1; done",
            ),
        ));
    }
    for line in &seen {
        places.push(("a process's command line".into(), line.clone()));
    }
    for (what, text) in &places {
        assert!(
            !text.contains(password),
            "the ZooKeeper password is in the {what}"
        );
    }
    assert!(
        String::from_utf8_lossy(&plan.stdout)
            .contains("jaas  /etc/ferry/e2e/secret/zookeeper-client.jaas 0600 owner spark"),
        "the plan names the JAAS files"
    );

    // down --purge: no containers, no folders (the JAAS files' too)
    f.ok(&["down", "--purge"]);
    assert_eq!(f.containers(), "");
    for i in 0..3 {
        assert_eq!(
            f.ssh(i, "ls /etc/ferry /var/lib/ferry | grep -c '^e2e$' || true")
                .trim(),
            "0"
        );
    }
}
