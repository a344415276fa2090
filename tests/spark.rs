//! End-to-end tests of the default Spark image, in a real Docker daemon.
//!
//! The image is big, so the test runner (`tests/run.sh`) builds it once per
//! run and shares it through the environment: `FERRY_SPARK_LAYOUT` (the OCI
//! layout), `FERRY_SPARK_ARCHIVE` (its docker-archive), `FERRY_SPARK_DEF`
//! (the definition it was built from) and `FERRY_SPARK_FRESH=1` when the
//! committed lock could not be fetched and a fresh lock of a copy was used.
//! Without them the tests skip loudly (and fail under CI).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{SAMPLE_ANSWER, ferry, ok};

struct Image {
    layout: PathBuf,
    archive: PathBuf,
    def: PathBuf,
    fresh: bool,
}

fn image(test: &str) -> Option<&'static Image> {
    static IMG: OnceLock<Option<Image>> = OnceLock::new();
    let img = IMG.get_or_init(|| {
        let layout = std::env::var_os("FERRY_SPARK_LAYOUT")?;
        Some(Image {
            layout: layout.into(),
            archive: std::env::var_os("FERRY_SPARK_ARCHIVE")?.into(),
            def: std::env::var_os("FERRY_SPARK_DEF")?.into(),
            fresh: std::env::var("FERRY_SPARK_FRESH").is_ok_and(|v| v == "1"),
        })
    });
    if img.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "{test}: FERRY_SPARK_LAYOUT is not set: run the tests through `bash tests/run.sh`"
            );
        }
        eprintln!(
            "\n*** SKIPPED {test}: the Spark image is built by `bash tests/run.sh` (FERRY_SPARK_LAYOUT is not set) ***\n"
        );
    }
    img.as_ref()
}

/// Loads the image into Docker once per test binary; returns its reference.
fn loaded(img: &Image) -> &'static str {
    static REF: OnceLock<String> = OnceLock::new();
    REF.get_or_init(|| {
        ok(Command::new("docker")
            .arg("load")
            .arg("-i")
            .arg(&img.archive));
        let j: Value =
            serde_json::from_str(&ok(ferry().arg("inspect").arg(&img.layout).arg("--json")))
                .unwrap();
        let labels = &j["labels"];
        assert_eq!(labels["ferry.spark.version"], "3.5.3");
        "ferry/spark:3.5.3".to_string()
    })
}

fn docker(args: &[&str]) -> String {
    ok(Command::new("docker").args(args))
}

/// Polls `f` every 500 ms until it returns Some or `limit` passes.
fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Removes containers and networks a test made, even when it fails.
struct Cleanup(Vec<&'static str>, Vec<&'static str>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.0 {
            let _ = Command::new("docker").args(["rm", "-f", c]).output();
        }
        for n in &self.1 {
            let _ = Command::new("docker").args(["network", "rm", n]).output();
        }
    }
}

fn in_container(name: &str, script: &str) -> Option<String> {
    let out = Command::new("docker")
        .args(["exec", name, "bash", "-c", script])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An HTTP GET from inside a container (the image has bash, no curl).
fn http_get(container: &str, port: u16, path: &str) -> Option<String> {
    let body = in_container(
        container,
        &format!(
            "exec 3<>/dev/tcp/127.0.0.1/{port}; printf 'GET {path} HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n' >&3; cat <&3"
        ),
    )?;
    body.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

#[test]
fn the_image_has_the_committed_digest_and_verifies() {
    let Some(img) = image("committed digest") else {
        return;
    };
    let j: Value =
        serde_json::from_str(&ok(ferry().arg("inspect").arg(&img.layout).arg("--json"))).unwrap();
    let committed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("images/spark/image.digest"),
    )
    .unwrap();
    if img.fresh {
        eprintln!(
            "\n*** NOTICE: the committed lock of images/spark is stale upstream; checking that a fresh lock builds to the same digest twice instead ***\n"
        );
        let tmp = tempfile::tempdir().unwrap();
        let bundle = tmp.path().join("bundle");
        ok(ferry().arg("vendor").arg(&img.def).arg("--to").arg(&bundle));
        let again = ok(ferry()
            .arg("build")
            .arg(&img.def)
            .arg("--out")
            .arg(tmp.path().join("again"))
            .arg("--cache")
            .arg(tmp.path().join("cache"))
            .args(["--offline", "--mirror"])
            .arg(&bundle)
            .arg("--json"));
        let again: Value = serde_json::from_str(&again).unwrap();
        assert_eq!(again["manifest_digest"], j["manifest_digest"]);
    } else {
        assert_eq!(
            j["manifest_digest"].as_str().unwrap(),
            committed.trim(),
            "the committed lock no longer builds to images/spark/image.digest"
        );
        let config = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("images/spark/config.digest"),
        )
        .unwrap();
        assert_eq!(
            j["config_digest"].as_str().unwrap(),
            config.trim(),
            "images/spark/config.digest is not the config of images/spark/image.digest's image"
        );
    }
    ok(ferry().arg("verify").arg(&img.layout));
    let names: Vec<&str> = j["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "userland",
            "jdk",
            "python",
            "spark-jars",
            "spark",
            "zookeeper",
            "ferry"
        ]
    );
}

#[test]
fn java_python_and_a_local_spark_job_run_as_the_spark_user() {
    let Some(img) = image("local job") else {
        return;
    };
    let r = loaded(img);
    assert_eq!(docker(&["run", "--rm", r, "id", "-un"]).trim(), "spark");
    let java = Command::new("docker")
        .args(["run", "--rm", r, "java", "-version"])
        .output()
        .unwrap();
    let java = String::from_utf8_lossy(&java.stderr);
    assert!(java.contains("version \"17."), "{java}");
    let py = docker(&[
        "run",
        "--rm",
        r,
        "python3",
        "-c",
        "import pyspark, numpy, pandas; print(pyspark.__version__, numpy.__version__ < '2')",
    ]);
    assert_eq!(py.trim(), "3.5.3 True");
    let out = docker(&[
        "run",
        "--rm",
        r,
        "spark-submit",
        "--master",
        "local[2]",
        "/opt/ferry/jobs/sample.py",
    ]);
    assert!(out.lines().any(|l| l == SAMPLE_ANSWER), "{out}");
}

#[test]
fn zookeeper_starts_from_the_image_as_its_own_user() {
    let Some(img) = image("zookeeper") else {
        return;
    };
    let r = loaded(img);
    let _c = Cleanup(vec!["ferry-test-zk"], vec![]);
    let _ = Command::new("docker")
        .args(["rm", "-f", "ferry-test-zk"])
        .output();
    let labels: Value =
        serde_json::from_str(&ok(ferry().arg("inspect").arg(&img.layout).arg("--json"))).unwrap();
    let start = labels["labels"]["ferry.zookeeper.start"]
        .as_str()
        .unwrap()
        .replace(
            "{conf}",
            labels["labels"]["ferry.zookeeper.conf"].as_str().unwrap(),
        );
    let mut args = vec![
        "run",
        "-d",
        "--name",
        "ferry-test-zk",
        "--user",
        "zookeeper",
        r,
    ];
    args.extend(start.split_whitespace());
    docker(&args);
    let srvr = poll(Duration::from_secs(60), || {
        in_container(
            "ferry-test-zk",
            "exec 3<>/dev/tcp/127.0.0.1/2181; echo srvr >&3; cat <&3",
        )
        .filter(|s| s.contains("Mode:"))
    });
    let srvr = srvr.unwrap_or_else(|| {
        panic!(
            "no answer to srvr; logs:\n{}",
            docker(&["logs", "ferry-test-zk"])
        )
    });
    assert!(srvr.contains("Mode: standalone"), "{srvr}");
    assert_eq!(
        in_container("ferry-test-zk", "ps -o user= -p 1 || id -un")
            .unwrap()
            .trim(),
        "zookeeper"
    );
}

#[test]
fn a_master_and_a_worker_form_a_cluster_that_runs_numpy_and_pandas_on_executors() {
    let Some(img) = image("standalone cluster") else {
        return;
    };
    let r = loaded(img);
    let _c = Cleanup(
        vec!["ferry-test-master", "ferry-test-worker"],
        vec!["ferry-test-net"],
    );
    for c in ["ferry-test-master", "ferry-test-worker"] {
        let _ = Command::new("docker").args(["rm", "-f", c]).output();
    }
    let _ = Command::new("docker")
        .args(["network", "rm", "ferry-test-net"])
        .output();
    docker(&["network", "create", "ferry-test-net"]);
    docker(&[
        "run",
        "-d",
        "--name",
        "ferry-test-master",
        "--hostname",
        "ferry-test-master",
        "--network",
        "ferry-test-net",
        r,
        "spark-class",
        "org.apache.spark.deploy.master.Master",
        "--host",
        "ferry-test-master",
        "--port",
        "7077",
        "--webui-port",
        "8080",
    ]);
    docker(&[
        "run",
        "-d",
        "--name",
        "ferry-test-worker",
        "--network",
        "ferry-test-net",
        r,
        "spark-class",
        "org.apache.spark.deploy.worker.Worker",
        "--cores",
        "2",
        "--memory",
        "1g",
        "spark://ferry-test-master:7077",
    ]);
    // `/json` redirects; `/json/` answers
    let status = poll(Duration::from_secs(90), || {
        let body = http_get("ferry-test-master", 8080, "/json/")?;
        let v: Value = serde_json::from_str(&body).ok()?;
        (v["status"] == "ALIVE" && v["aliveworkers"] == 1).then_some(v)
    });
    let status = status.unwrap_or_else(|| {
        panic!(
            "no ALIVE master with one worker; master logs:\n{}",
            docker(&["logs", "ferry-test-master"])
        )
    });
    assert_eq!(status["workers"][0]["state"], "ALIVE");
    let out = docker(&[
        "run",
        "--rm",
        "--network",
        "ferry-test-net",
        r,
        "spark-submit",
        "--master",
        "spark://ferry-test-master:7077",
        "/opt/ferry/jobs/sample.py",
    ]);
    assert!(out.lines().any(|l| l == SAMPLE_ANSWER), "{out}");
    let apps = http_get("ferry-test-master", 8080, "/json/").unwrap();
    let v: Value = serde_json::from_str(&apps).unwrap();
    assert_eq!(
        v["completedapps"][0]["name"], "ferry-sample",
        "the job ran on the cluster"
    );
    for c in ["ferry-test-master", "ferry-test-worker"] {
        assert_eq!(in_container(c, "id -un").unwrap().trim(), "spark");
    }
}

#[test]
fn the_air_gapped_path_builds_the_same_image_with_no_network() {
    let Some(img) = image("air-gapped build") else {
        return;
    };
    let unshare_works = Command::new("unshare")
        .args(["-n", "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !unshare_works {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "unshare -n must work under CI"
        );
        eprintln!("\n*** SKIPPED air-gapped build: `unshare -n` needs root ***\n");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle.tar");
    // vendoring takes the inputs from the shared cache the image was built with
    ok(ferry().arg("vendor").arg(&img.def).arg("--to").arg(&bundle));
    let out = ok(Command::new("unshare")
        .arg("-n")
        .arg(env!("CARGO_BIN_EXE_ferry"))
        .arg("build")
        .arg(&img.def)
        .arg("--out")
        .arg(tmp.path().join("offline"))
        .arg("--cache")
        .arg(tmp.path().join("empty-cache"))
        .args(["--offline", "--mirror"])
        .arg(&bundle)
        .arg("--json"));
    let offline: Value = serde_json::from_str(&out).unwrap();
    let online: Value =
        serde_json::from_str(&ok(ferry().arg("inspect").arg(&img.layout).arg("--json"))).unwrap();
    assert_eq!(
        offline["manifest_digest"], online["manifest_digest"],
        "same bytes, so the checks above hold for it too"
    );
}

#[test]
fn changing_a_late_layer_leaves_the_lower_layers_alone() {
    let Some(img) = image("layer stability") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("spark");
    let src = img.def.parent().unwrap();
    ok(Command::new("cp").arg("-r").arg(src).arg(&copy));
    let job = copy.join("files/opt/ferry/jobs/sample.py");
    let mut text = std::fs::read_to_string(&job).unwrap();
    text.push_str("\n# edited\n");
    std::fs::write(&job, text).unwrap();
    let before: Value =
        serde_json::from_str(&ok(ferry().arg("inspect").arg(&img.layout).arg("--json"))).unwrap();
    let after: Value = serde_json::from_str(&ok(ferry()
        .arg("build")
        .arg(copy.join("image.toml"))
        .arg("--out")
        .arg(tmp.path().join("out"))
        .arg("--json")))
    .unwrap();
    let (b, a) = (
        before["layers"].as_array().unwrap(),
        after["layers"].as_array().unwrap(),
    );
    for i in 0..6 {
        assert_eq!(
            b[i]["digest"], a[i]["digest"],
            "layer {} changed",
            b[i]["name"]
        );
        assert_eq!(a[i]["cached"], true, "layer {} was rebuilt", a[i]["name"]);
    }
    assert_ne!(b[6]["digest"], a[6]["digest"]);
}

/// `ferry up --local` on a one-host cluster: gates pass, the sample job
/// answers through `ferry submit`, a second `up` keeps every container, and
/// `ferry down` removes them. Uses ports the system gives as free, not the
/// defaults: the README's demo cluster may still hold those (the README
/// leaves it running), and a cluster on its ports would be refused.
#[test]
fn up_local_runs_the_sample_job_and_a_second_up_changes_nothing() {
    let Some(img) = image("up --local") else {
        return;
    };
    loaded(img);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().display().to_string();
    let cluster = tmp.path().join("cluster.toml");
    // seven ports free now, held together so they differ
    let held: Vec<std::net::TcpListener> = (0..7)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let p: Vec<u16> = held
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    drop(held);
    std::fs::write(
        &cluster,
        format!(
            "name = \"ferry-e2e\"\n[[host]]\nname = \"here\"\naddress = \"127.0.0.1\"\n[zookeeper]\nhosts = [\"here\"]\ndata_dir = \"{data}/zk\"\nclient_port = {}\npeer_port = {}\nelection_port = {}\n[spark.masters]\nhosts = [\"here\"]\nport = {}\nui_port = {}\n[spark.workers]\nhosts = [\"here\"]\nwork_dir = \"{data}/work\"\nport = {}\nui_port = {}\n",
            p[0], p[1], p[2], p[3], p[4], p[5], p[6]
        ),
    )
    .unwrap();
    struct Down<'a>(&'a Path);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = ferry().args(["down", "--local"]).arg(self.0).output();
        }
    }
    let _down = Down(&cluster);
    let with_image = |cmd: &str| {
        let mut c = ferry();
        c.args([cmd, "--local"])
            .arg(&cluster)
            .arg("--image")
            .arg(&img.layout);
        c
    };
    let ids = || {
        docker(&[
            "ps",
            "--filter",
            "label=ferry.cluster=ferry-e2e",
            "--format",
            "{{.ID}} {{.Names}}",
        ])
    };
    let start = Instant::now();
    let out = ok(&mut with_image("up"));
    eprintln!(
        "up --local: all workers registered in {:.1}s",
        start.elapsed().as_secs_f64()
    );
    assert!(out.contains("is up"), "{out}");
    let first = ids();
    assert_eq!(first.lines().count(), 3, "{first}");

    let job = ok(ferry()
        .args(["submit", "--local", "--cluster"])
        .arg(&cluster)
        .arg("--image")
        .arg(&img.layout));
    assert!(job.contains(SAMPLE_ANSWER), "{job}");

    ok(&mut with_image("up"));
    assert_eq!(ids(), first, "a second `up` replaced containers");

    let out = ok(&mut with_image("down"));
    assert!(out.contains("ferry-e2e-worker"), "{out}");
    assert_eq!(ids(), "");
}
