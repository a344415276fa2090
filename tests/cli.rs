//! The integration tests: each drives the real `ferry` executable, the way a
//! user does, against real inputs (Debian's busybox-static package) and real
//! consumers (skopeo, umoci, a Docker daemon). Where a consumer is missing on
//! a developer's machine the test says so loudly; under CI (`CI=true`) a
//! missing tool is a failure, since the test runner installs them all.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

mod common;
use common::{ferry, ok, repo};

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("command runs")
}

fn stderr_of(cmd: &mut Command) -> (i32, String) {
    let out = run(cmd);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Skips (loudly) on a developer box, fails under CI.
fn require(tool: &str, works: bool) -> bool {
    if works {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "`{tool}` is required under CI: run the tests through `bash tests/run.sh`, which installs it"
        );
    }
    eprintln!(
        "\n*** SKIPPED: `{tool}` is not available; run `bash tests/run.sh` to install it ***\n"
    );
    false
}

fn has(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// A vendored bundle of the busybox image's inputs, made once per test run.
/// When the committed lock names a package version the Debian archive no
/// longer serves, the bundle is made from a fresh lock of a copy instead,
/// with a loud notice (the committed lock is never rewritten by tests).
struct Fixture {
    _dir: tempfile::TempDir,
    /// A copy of images/busybox with a lock whose inputs are in `bundle`.
    image: PathBuf,
    bundle: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("busybox");
        copy_dir(&repo().join("images/busybox"), &image);
        // the runner's shared download cache, so a warm run downloads nothing
        let cache = std::env::var_os("FERRY_CACHE").map(PathBuf::from).unwrap_or_else(|| dir.path().join("cache"));
        let bundle = dir.path().join("bundle");
        let def = image.join("image.toml");
        let (code, err) = stderr_of(ferry().arg("vendor").arg(&def).arg("--to").arg(&bundle).arg("--cache").arg(&cache));
        if code != 0 {
            eprintln!("\n*** NOTICE: the committed images/busybox/image.lock cannot be fetched ({err}); testing with a fresh lock of a copy ***\n");
            ok(ferry().arg("lock").arg(&def).arg("--update").arg("--cache").arg(&cache));
            ok(ferry().arg("vendor").arg(&def).arg("--to").arg(&bundle).arg("--cache").arg(&cache));
        }
        Fixture { _dir: dir, image, bundle }
    })
}

/// Builds the fixture image (from the bundle, offline) into `out` with its own cache.
fn build_fixture(image: &Path, cache: &Path, out: &Path, extra: &[&str]) -> Value {
    let json = ok(ferry()
        .arg("build")
        .arg(image.join("image.toml"))
        .arg("--out")
        .arg(out)
        .arg("--cache")
        .arg(cache)
        .args(["--offline", "--mirror"])
        .arg(&fixture().bundle)
        .arg("--json")
        .args(extra));
    serde_json::from_str(&json).unwrap()
}

fn blobs(layout: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn help_shows_examples_for_every_command() {
    for cmd in [
        "lock", "build", "verify", "inspect", "vendor", "push", "gc", "plan", "up", "submit",
        "down",
    ] {
        let out = ok(ferry().args([cmd, "--help"]));
        assert!(
            out.contains("Example"),
            "`ferry {cmd} --help` has no example:\n{out}"
        );
    }
}

#[test]
fn same_inputs_give_the_same_bytes_whatever_the_checkout() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    // two checkouts: different permissions, times and environment
    let a = tmp.path().join("a/busybox");
    let b = tmp.path().join("b/busybox");
    copy_dir(&f.image, &a);
    copy_dir(&f.image, &b);
    let motd = b.join("files/motd");
    std::fs::set_permissions(&motd, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(b.join("files"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(86_400 * 400);
    std::fs::File::options()
        .append(true)
        .open(&motd)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let ja = build_fixture(
        &a,
        &tmp.path().join("cache-a"),
        &tmp.path().join("out-a"),
        &["-j", "1"],
    );
    let jb = {
        let json = ok(ferry()
            .arg("build")
            .arg(b.join("image.toml"))
            .arg("--out")
            .arg(tmp.path().join("out-b"))
            .arg("--cache")
            .arg(tmp.path().join("cache-b"))
            .args(["--offline", "--mirror"])
            .arg(&f.bundle)
            .args(["--json", "-j", "3"])
            .env("TZ", "Asia/Kathmandu")
            .env("LC_ALL", "C.UTF-8")
            .env("SOURCE_DATE_EPOCH", "12345"));
        serde_json::from_str::<Value>(&json).unwrap()
    };
    assert_eq!(ja["manifest_digest"], jb["manifest_digest"]);
    let (ba, bb) = (
        blobs(&tmp.path().join("out-a")),
        blobs(&tmp.path().join("out-b")),
    );
    assert_eq!(ba.len(), bb.len());
    for (x, y) in ba.iter().zip(&bb) {
        assert_eq!(x.0, y.0);
        assert!(x.1 == y.1, "blob {} differs", x.0);
    }
    ok(ferry().arg("verify").arg(tmp.path().join("out-a")));
    // what is published is readable by others, whatever the temp files were
    use std::os::unix::fs::MetadataExt;
    let layout = tmp.path().join("out-a");
    assert_eq!(std::fs::metadata(&layout).unwrap().mode() & 0o777, 0o755);
    for (name, _) in &ba {
        let m = std::fs::metadata(layout.join("blobs/sha256").join(name))
            .unwrap()
            .mode()
            & 0o777;
        assert_eq!(m, 0o644, "blob {name}");
    }
}

#[test]
fn unchanged_layers_come_from_the_cache_and_an_edit_is_noticed() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("busybox");
    copy_dir(&f.image, &img);
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("out");
    let first = build_fixture(&img, &cache, &out, &[]);
    assert!(
        first["layers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["cached"] == false)
    );
    let again = build_fixture(&img, &cache, &out, &[]);
    assert!(
        again["layers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["cached"] == true)
    );
    assert_eq!(first["manifest_digest"], again["manifest_digest"]);
    std::fs::write(img.join("files/motd"), "edited\n").unwrap();
    let edited = build_fixture(&img, &cache, &out, &[]);
    let cached: Vec<bool> = edited["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["cached"].as_bool().unwrap())
        .collect();
    assert_eq!(cached, [true, false], "only the files layer is rebuilt");
    assert_ne!(first["manifest_digest"], edited["manifest_digest"]);
    assert_eq!(first["layers"][0]["digest"], edited["layers"][0]["digest"]);
}

#[test]
fn the_image_works_in_skopeo_umoci_and_docker() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("busybox");
    let tar = tmp.path().join("busybox.tar");
    let j = build_fixture(
        &f.image,
        &tmp.path().join("cache"),
        &out,
        &["--docker-archive", tar.to_str().unwrap()],
    );
    let reference = j["reference"].as_str().unwrap().to_string();
    let tag = reference.rsplit(':').next().unwrap();
    let inspect = ferry()
        .arg("inspect")
        .arg(&out)
        .arg("--json")
        .output()
        .unwrap();
    let inspect: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(inspect["layers"][0]["name"], "busybox");
    assert_eq!(inspect["entrypoint"][0], "/bin/busybox");

    if require("skopeo", has("skopeo", "--version")) {
        let s = ok(Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}:{tag}", out.display())));
        let v: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["Digest"], j["manifest_digest"]);
    }
    if require("umoci", has("umoci", "--version")) {
        let bundle = tmp.path().join("unpacked");
        ok(Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:{tag}", out.display()))
            .arg(&bundle));
        let motd = std::fs::read_to_string(bundle.join("rootfs/etc/motd")).unwrap();
        assert_eq!(motd, "hello from ferry\n");
        let sh = std::fs::read_link(bundle.join("rootfs/bin/sh")).unwrap();
        assert_eq!(sh, Path::new("busybox"));
    }
    if require("docker", has("docker", "info")) {
        ok(Command::new("docker").arg("load").arg("-i").arg(&tar));
        let said = ok(Command::new("docker").args(["run", "--rm", &reference]));
        assert_eq!(said, "hello from ferry\n");
        let who = ok(Command::new("docker").args([
            "run",
            "--rm",
            "--user",
            "app",
            &reference,
            "sh",
            "-c",
            "id -un; stat -c %U:%a /home/app",
        ]));
        assert_eq!(who, "app\napp:750\n");
    }
}

#[test]
fn offline_build_in_a_network_namespace_gives_the_same_digest() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let online = build_fixture(
        &f.image,
        &tmp.path().join("c1"),
        &tmp.path().join("o1"),
        &[],
    );
    // the same bundle as one .tar, as an operator would carry it
    let bundle_tar = tmp.path().join("bundle.tar");
    ok(ferry()
        .arg("vendor")
        .arg(f.image.join("image.toml"))
        .arg("--to")
        .arg(&bundle_tar)
        .args(["--offline", "--mirror"])
        .arg(&f.bundle)
        .arg("--cache")
        .arg(tmp.path().join("c1")));
    let unshare_works = Command::new("unshare")
        .args(["-n", "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !require("unshare -n (root)", unshare_works) {
        return;
    }
    let empty_cache = tmp.path().join("empty-cache");
    let out = ok(Command::new("unshare")
        .arg("-n")
        .arg(env!("CARGO_BIN_EXE_ferry"))
        .arg("build")
        .arg(f.image.join("image.toml"))
        .arg("--out")
        .arg(tmp.path().join("o2"))
        .arg("--cache")
        .arg(&empty_cache)
        .args(["--offline", "--mirror"])
        .arg(&bundle_tar)
        .arg("--json"));
    let offline: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(online["manifest_digest"], offline["manifest_digest"]);
    // and without the bundle, offline says exactly what is missing
    let (code, err) = stderr_of(
        ferry()
            .arg("build")
            .arg(f.image.join("image.toml"))
            .arg("--out")
            .arg(tmp.path().join("o3"))
            .arg("--cache")
            .arg(tmp.path().join("another-empty-cache"))
            .arg("--offline"),
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("--offline forbids downloading") && err.contains("busybox-static"),
        "{err}"
    );
    assert!(!tmp.path().join("o3").exists(), "no partial output");
}

#[test]
fn verify_finds_a_corrupt_blob() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("img");
    let j = build_fixture(&f.image, &tmp.path().join("cache"), &out, &[]);
    ok(ferry().arg("verify").arg(&out));
    let layer = j["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let p = out.join("blobs/sha256").join(&layer);
    // the blob is a hard link into the cache: replace it, do not edit in place
    let mut bytes = std::fs::read(&p).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::remove_file(&p).unwrap();
    std::fs::write(&p, &bytes).unwrap();
    let (code, err) = stderr_of(ferry().arg("verify").arg(&out));
    assert_eq!(code, 1);
    assert!(
        err.contains("digest mismatch") && err.contains(&layer),
        "{err}"
    );
    std::fs::remove_file(&p).unwrap();
    let (code, err) = stderr_of(ferry().arg("verify").arg(&out));
    assert_eq!(code, 1);
    assert!(err.contains(&layer), "{err}");
}

#[test]
fn bad_inputs_get_one_line_errors_naming_the_place() {
    let tmp = tempfile::tempdir().unwrap();
    let def = tmp.path().join("image.toml");
    std::fs::write(
        &def,
        "name = \"x\"\ntag = \"1\"\n[[layer]]\nname = \"a\"\nsoruce = 1\n",
    )
    .unwrap();
    let (code, err) = stderr_of(ferry().arg("build").arg(&def));
    assert_eq!(code, 2);
    assert!(
        err.contains("image.toml:5:") && err.contains("soruce"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    std::fs::write(&def, "name = \"x\"\ntag = \"1\"\n[[layer]]\nname = \"a\"\n[[layer.source]]\nurl = \"file:///nonexistent/x.tar\"\n").unwrap();
    let (code, err) = stderr_of(ferry().arg("build").arg(&def));
    assert_eq!(code, 2);
    assert!(
        err.contains("image.lock") && err.contains("ferry lock"),
        "{err}"
    );
    let (code, err) = stderr_of(
        ferry()
            .arg("lock")
            .arg(&def)
            .arg("--cache")
            .arg(tmp.path().join("c")),
    );
    assert_eq!(code, 2);
    assert!(err.contains("file:///nonexistent/x.tar"), "{err}");
    let (code, _) = stderr_of(ferry().arg("lock").arg(&def).arg("--check"));
    assert_eq!(code, 1);
}

/// Writes a tar whose second member climbs out of its folder.
fn evil_tar(path: &Path) {
    let mut out = Vec::new();
    for (name, body) in [
        ("ok.txt", &b"fine\n"[..]),
        ("../../../tmp/ferry-pwned", &b"pwned\n"[..]),
    ] {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let field = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
            let s = format!("{:0w$o}\0", v, w = len - 1);
            h[at..at + len].copy_from_slice(s.as_bytes());
        };
        field(&mut h, 100, 8, 0o644);
        field(&mut h, 108, 8, 0);
        field(&mut h, 116, 8, 0);
        field(&mut h, 124, 12, body.len() as u64);
        field(&mut h, 136, 12, 0);
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| *b as u32).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(body);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    std::fs::write(path, out).unwrap();
}

#[test]
fn a_hostile_archive_is_refused_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = tmp.path().join("evil.tar");
    evil_tar(&tar);
    let def = tmp.path().join("image.toml");
    std::fs::write(
        &def,
        format!("name = \"evil\"\ntag = \"1\"\n[[layer]]\nname = \"a\"\n[[layer.source]]\nurl = \"file://{}\"\ndest = \"/opt\"\n", tar.display()),
    )
    .unwrap();
    let cache = tmp.path().join("cache");
    ok(ferry().arg("lock").arg(&def).arg("--cache").arg(&cache));
    let out = tmp.path().join("out");
    let (code, err) = stderr_of(
        ferry()
            .arg("build")
            .arg(&def)
            .arg("--out")
            .arg(&out)
            .arg("--cache")
            .arg(&cache),
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("evil.tar") && err.contains("../../../tmp/ferry-pwned") && err.contains(".."),
        "{err}"
    );
    assert!(!out.exists(), "no layout may appear");
    assert!(!Path::new("/tmp/ferry-pwned").exists());
}

#[test]
fn a_base_image_is_kept_byte_for_byte_and_extended() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let cache = tmp.path().join("cache");
    let b = build_fixture(
        &f.image,
        &cache,
        &base,
        &[
            "--docker-archive",
            tmp.path().join("base.tar").to_str().unwrap(),
        ],
    );
    let def = tmp.path().join("app/image.toml");
    std::fs::create_dir_all(def.parent().unwrap()).unwrap();
    let write_def = |base_line: &str, compression: &str| {
        std::fs::write(
            &def,
            format!(
                "name = \"app\"\ntag = \"1\"\ncompression = \"{compression}\"\n{base_line}\n[config]\ncmd = [\"cat\", \"/app/greeting\"]\n[[layer]]\nname = \"app\"\n[[layer.file]]\npath = \"/app/greeting\"\ncontent = \"on top of busybox\\n\"\n"
            ),
        )
        .unwrap();
    };
    let build = |out: &str| -> Value {
        ok(ferry().arg("lock").arg(&def).arg("--cache").arg(&cache));
        let j = ok(ferry()
            .arg("build")
            .arg(&def)
            .arg("--out")
            .arg(tmp.path().join(out))
            .arg("--cache")
            .arg(&cache)
            .arg("--json")
            .args([
                "--docker-archive",
                tmp.path().join(format!("{out}.tar")).to_str().unwrap(),
            ]));
        ok(ferry().arg("verify").arg(tmp.path().join(out)));
        serde_json::from_str(&j).unwrap()
    };
    for compression in ["gzip", "zstd", "none"] {
        write_def(
            &format!("base = {{ oci = \"{}\" }}", base.display()),
            compression,
        );
        let app = build(&format!("app-oci-{compression}"));
        let layers = app["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 3);
        assert_eq!(
            layers[0]["digest"], b["layers"][0]["digest"],
            "base layers are kept as they are"
        );
        assert_eq!(layers[1]["digest"], b["layers"][1]["digest"]);
    }
    if require("docker", has("docker", "info")) {
        // a base from `docker save` (Docker 20.10 writes the old manifest.json format)
        ok(Command::new("docker")
            .arg("load")
            .arg("-i")
            .arg(tmp.path().join("base.tar")));
        let saved = tmp.path().join("saved.tar");
        ok(Command::new("docker")
            .args(["save", "-o"])
            .arg(&saved)
            .arg(b["reference"].as_str().unwrap()));
        write_def(
            &format!("base = {{ docker_archive = \"{}\" }}", saved.display()),
            "gzip",
        );
        let app = build("app-docker");
        assert_eq!(app["layers"][0]["diff_id"], b["layers"][0]["diff_id"]);
        ok(Command::new("docker")
            .arg("load")
            .arg("-i")
            .arg(tmp.path().join("app-docker.tar")));
        let said = ok(Command::new("docker").args(["run", "--rm", "app:1"]));
        assert_eq!(said, "on top of busybox\n");
    }
}

#[test]
fn plan_prints_the_same_plan_and_refuses_bad_clusters_in_one_line() {
    let ha = repo().join("examples/ha.toml");
    let a = ok(ferry().arg("plan").arg(&ha));
    assert_eq!(a, ok(ferry().arg("plan").arg(&ha)));
    assert!(a.contains("spark://10.0.0.11:7077,10.0.0.12:7077"), "{a}");
    let json: Value =
        serde_json::from_str(&ok(ferry().arg("plan").arg(&ha).arg("--json"))).unwrap();
    assert_eq!(json["hosts"].as_array().unwrap().len(), 5);

    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("even.toml");
    let text = std::fs::read_to_string(&ha).unwrap().replace(
        "hosts = [\"node1\", \"node2\", \"node3\"]",
        "hosts = [\"node1\", \"node2\"]",
    );
    std::fs::write(&bad, text).unwrap();
    let (code, err) = stderr_of(ferry().arg("plan").arg(&bad));
    assert_eq!(code, 2);
    assert!(err.contains("even.toml:39: `zookeeper.hosts`"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // the flat config, converted, plans the same as the cluster file it wrote
    let written = tmp.path().join("wefe.toml");
    let from_cfg = ok(ferry()
        .args(["plan", "--from-env-cfg"])
        .arg(repo().join("examples/wefe.cfg"))
        .arg("--write-cluster")
        .arg(&written));
    assert_eq!(from_cfg, ok(ferry().arg("plan").arg(&written)));
}

#[test]
fn the_committed_locks_match_their_definitions() {
    for image in ["busybox", "spark"] {
        let def = repo().join("images").join(image).join("image.toml");
        let out = ok(ferry().arg("lock").arg(&def).arg("--check"));
        assert!(out.contains("is up to date"), "{out}");
    }
}

#[test]
fn a_bad_jump_host_is_refused_before_any_connection() {
    let out = ferry()
        .args(["gc", "ssh://root@node1", "--jump", "root@bastion:0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("`root@bastion:0` is not an ssh address: the port"),
        "{err}"
    );
    for cmd in ["push", "gc"] {
        let help = ok(ferry().args([cmd, "--help"]));
        assert!(
            help.contains("--jump <[USER@]HOST[:PORT]>") && help.contains("--no-sudo"),
            "{help}"
        );
    }
}

#[test]
fn a_reader_that_goes_away_ends_ferry_quietly() {
    // `ferry plan ... | head -0`: the pipe's reading end is closed before
    // ferry writes a byte
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = ferry()
        .arg("plan")
        .arg(repo().join("examples/ha.toml"))
        .stdout(writer)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(141), "{err}");
}

/// `ferry up --local --image LAYOUT` when Docker holds another image under
/// the layout's tag (a rebuild that was not loaded): the host fails with
/// the tag and both ids, and nothing is written or started. Docker is a
/// stand-in here that answers `image inspect` only and logs every call.
#[test]
fn up_refuses_a_stale_image_under_the_planned_tag() {
    let tmp = tempfile::tempdir().unwrap();
    // the fixture image, with the labels the launcher reads
    let image = tmp.path().join("labelled");
    copy_dir(&fixture().image, &image);
    let def = image.join("image.toml");
    let text = std::fs::read_to_string(&def).unwrap();
    let labels = "labels = { \"org.opencontainers.image.title\" = \"busybox by ferry\" }";
    assert!(text.contains(labels), "{text}");
    std::fs::write(
        &def,
        text.replace(
            labels,
            "labels = { \"ferry.spark.home\" = \"/opt/spark\", \"ferry.spark.user\" = \"app\" }",
        ),
    )
    .unwrap();
    let layout = tmp.path().join("layout");
    let built = build_fixture(&image, &tmp.path().join("cache"), &layout, &[]);
    let config = built["config_digest"].as_str().unwrap();
    assert!(config.starts_with("sha256:"), "{built:#}");

    // a cluster of its own name, so that no other cluster's files are near;
    // what a broken check would let `up` write here goes, even on a panic
    const MADE: [&str; 2] = [
        "/etc/ferry/ferry-cli-stale-image",
        "/var/lib/ferry/ferry-cli-stale-image",
    ];
    struct Clean;
    impl Drop for Clean {
        fn drop(&mut self) {
            for d in MADE {
                let _ = std::fs::remove_dir_all(d);
            }
        }
    }
    let _clean = Clean;
    let cluster = tmp.path().join("stale.toml");
    std::fs::write(
        &cluster,
        "name = \"ferry-cli-stale-image\"\n\n[[host]]\nname = \"here\"\naddress = \"127.0.0.1\"\n\n[spark.masters]\nhosts = [\"here\"]\n\n[spark.workers]\nhosts = [\"here\"]\n",
    )
    .unwrap();
    let plan = ok(ferry()
        .arg("plan")
        .arg(&cluster)
        .arg("--image")
        .arg(&layout));
    assert!(plan.contains(&format!(", config {config})")), "{plan}");

    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let calls = tmp.path().join("docker-calls");
    let stale = format!("sha256:{}", "5".repeat(64));
    let docker = bin.join("docker");
    std::fs::write(
        &docker,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nif [ \"$1 $2\" = 'image inspect' ]; then echo {stale}; exit 0; fi\nexit 1\n",
            calls.display()
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&docker).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&docker, perms).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let t0 = std::time::Instant::now();
    let out = run(ferry()
        .args(["up", "--local"])
        .arg(&cluster)
        .arg("--image")
        .arg(&layout)
        .env("PATH", path));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error: host `here`: "))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        line.contains(&format!(
            "docker there has another image under `ferry/busybox:1.35` (id {stale}; the plan's image is {config}, from `{}`)",
            layout.display()
        )) && line.contains("docker load -i"),
        "{line}"
    );
    // no gate waited on a host that is not there
    assert!(t0.elapsed().as_secs() < 30, "{:?}", t0.elapsed());
    let called = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(
        called, "image inspect --format {{.Id}} -- ferry/busybox:1.35\n",
        "docker was asked for more than the image"
    );
    for d in MADE {
        assert!(!Path::new(d).exists(), "`up` wrote {d}");
    }
}

/// A small image with no downloads: two layers of files, locked.
fn tiny_image(dir: &Path) -> PathBuf {
    let def = dir.join("tiny/image.toml");
    std::fs::create_dir_all(def.parent().unwrap()).unwrap();
    let mut text =
        String::from("name = \"tiny\"\ntag = \"1\"\ncreated = \"2024-01-01T00:00:00Z\"\n");
    for layer in ["one", "two"] {
        text.push_str(&format!("[[layer]]\nname = \"{layer}\"\n"));
        for i in 0..200 {
            text.push_str(&format!(
                "[[layer.file]]\npath = \"/{layer}/{i}\"\ncontent = \"{}\\n\"\n",
                format!("{layer} {i} ").repeat(50)
            ));
        }
    }
    std::fs::write(&def, text).unwrap();
    ok(ferry()
        .arg("lock")
        .arg(&def)
        .arg("--cache")
        .arg(dir.join("lock-cache")));
    def
}

/// Reads `child`'s stderr on a thread; lines arrive on the channel.
fn stderr_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (with a deadline, no sleeps) for a line of `lines` containing `what`.
fn wait_for_line(lines: &std::sync::mpsc::Receiver<String>, what: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) if l.contains(what) => return l,
            Ok(l) => seen.push(l),
            Err(e) => panic!("no line with `{what}` ({e}); stderr was: {seen:?}"),
        }
    }
}

#[test]
fn two_builds_on_one_empty_cache_at_once_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let def = tiny_image(tmp.path());
    let cache = tmp.path().join("cache");
    let start = |out: &str| {
        ferry()
            .arg("build")
            .arg(&def)
            .arg("--out")
            .arg(tmp.path().join(out))
            .arg("--cache")
            .arg(&cache)
            .arg("--json")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (start("a"), start("b"));
    let digest = |c: std::process::Child| -> String {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["manifest_digest"].as_str().unwrap().to_string()
    };
    let (da, db) = (digest(a), digest(b));
    assert_eq!(da, db);
    ok(ferry().arg("verify").arg(tmp.path().join("a")));
    ok(ferry().arg("verify").arg(tmp.path().join("b")));
}

#[test]
fn gc_of_the_cache_waits_for_a_build_and_a_build_for_gc() {
    use rustix::fs::{FlockOperation, flock};
    let tmp = tempfile::tempdir().unwrap();
    let def = tiny_image(tmp.path());
    let cache = tmp.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let lock_file = || std::fs::File::create(cache.join("lock")).unwrap();
    // the test holds the cache as a build does (shared) while gc starts
    let held = lock_file();
    flock(&held, FlockOperation::LockShared).unwrap();
    let mut gc = ferry()
        .args(["gc", "--local", "--cache"])
        .arg(&cache)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut gc);
    let said = wait_for_line(&lines, "waiting");
    assert!(said.contains(&cache.display().to_string()), "{said}");
    assert!(gc.try_wait().unwrap().is_none(), "gc went on: {said}");
    drop(held);
    assert!(gc.wait().unwrap().success());
    // and a build waits while gc holds it (exclusively)
    let held = lock_file();
    flock(&held, FlockOperation::LockExclusive).unwrap();
    let mut build = ferry()
        .arg("build")
        .arg(&def)
        .arg("--out")
        .arg(tmp.path().join("out"))
        .arg("--cache")
        .arg(&cache)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut build);
    let said = wait_for_line(&lines, "waiting");
    assert!(said.contains("gc"), "{said}");
    assert!(
        build.try_wait().unwrap().is_none(),
        "the build went on: {said}"
    );
    drop(held);
    assert!(build.wait().unwrap().success());
}

#[test]
fn a_bad_known_hosts_line_is_shown_once_naming_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let kh = tmp.path().join("known_hosts");
    std::fs::write(&kh, "# ok\nnot a known_hosts line\n").unwrap();
    // closed ports on loopback: each connection fails at once
    let closed = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("ssh://root@127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    let out = ferry()
        .args(["gc", &closed(), &closed(), "--known-hosts"])
        .arg(&kh)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let warning = format!("warning: skipped line 2 of `{}`: ", kh.display());
    assert_eq!(err.matches(&warning).count(), 1, "{err}");
}

#[test]
fn a_build_never_runs_an_sdist_before_its_hash_is_checked() {
    if !require("python3 -m pip", has("python3", "-mpip")) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // an index (a find-links folder) serving an sdist whose setup.py runs code
    let pkg = tmp.path().join("evilpkg-1.0");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(
        pkg.join("setup.py"),
        "import os\nopen(os.environ['EVIL_MARKER'], 'w').write('ran')\nfrom setuptools import setup\nsetup(name='evilpkg', version='1.0')\n",
    )
    .unwrap();
    std::fs::write(
        pkg.join("PKG-INFO"),
        "Metadata-Version: 2.1\nName: evilpkg\nVersion: 1.0\n",
    )
    .unwrap();
    let links = tmp.path().join("links");
    std::fs::create_dir_all(&links).unwrap();
    let sdist = links.join("evilpkg-1.0.tar.gz");
    ok(Command::new("tar")
        .arg("-czf")
        .arg(&sdist)
        .arg("-C")
        .arg(tmp.path())
        .arg("evilpkg-1.0"));
    let size = std::fs::metadata(&sdist).unwrap().len();
    // the lock pins other bytes (the honest sdist) than the index serves
    let def = tmp.path().join("image.toml");
    std::fs::write(
        &def,
        "name = \"evil\"\ntag = \"1\"\n[[layer]]\nname = \"py\"\n[[layer.source]]\npypi = [\"evilpkg==1.0\"]\nsite_packages = \"/site\"\n",
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("image.lock"),
        format!(
            "version = 1\n[[artifact]]\nkind = \"pypi\"\nname = \"evilpkg\"\nversion = \"1.0\"\nfile = \"evilpkg-1.0.tar.gz\"\nsize = {size}\nsha256 = \"{}\"\n",
            "ab".repeat(32)
        ),
    )
    .unwrap();
    let marker = tmp.path().join("marker");
    let (code, err) = stderr_of(
        ferry()
            .arg("build")
            .arg(&def)
            .arg("--out")
            .arg(tmp.path().join("out"))
            .arg("--cache")
            .arg(tmp.path().join("cache"))
            .env("PIP_NO_INDEX", "1")
            .env("PIP_FIND_LINKS", &links)
            // without isolation pip runs setup.py here, as it would with a real index
            .env("PIP_NO_BUILD_ISOLATION", "0")
            .env("EVIL_MARKER", &marker),
    );
    assert_ne!(code, 0, "{err}");
    assert!(
        !marker.exists(),
        "the sdist's setup.py ran before its hash was checked: {err}"
    );
    assert!(err.contains("evilpkg"), "{err}");
}

#[test]
fn an_edited_output_blob_does_not_poison_the_cache() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("out");
    let first = build_fixture(&f.image, &cache, &out, &[]);
    let layer = first["layers"][0]["digest"].as_str().unwrap().to_string();
    let hex = layer.trim_start_matches("sha256:").to_string();
    // edited in place, as an editor or a stray script would: same inode, same size
    let poison = |p: &Path| {
        use std::io::Write;
        let mut w = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        w.write_all(b"poisoned").unwrap();
    };
    let check = |build: &Value, what: &str| {
        let cached_blob = std::fs::read(cache.join("blobs/sha256").join(&hex)).unwrap_or_default();
        assert!(
            build["layers"][0]["cached"] == false || hex_sha256(&cached_blob) == hex,
            "{what}: the poisoned blob was reported as cached"
        );
        assert_eq!(first["manifest_digest"], build["manifest_digest"], "{what}");
        for (name, bytes) in blobs(&out) {
            assert_eq!(
                hex_sha256(&bytes),
                name,
                "{what}: blob `{name}` does not match its name"
            );
        }
    };
    // an edit under the output cannot reach the cache
    poison(&out.join("blobs/sha256").join(&hex));
    let again = build_fixture(&f.image, &cache, &out, &[]);
    check(&again, "edited output");
    // an edit of the cached blob itself is noticed before it is reused
    poison(&cache.join("blobs/sha256").join(&hex));
    let third = build_fixture(&f.image, &cache, &out, &[]);
    assert_eq!(
        third["layers"][0]["cached"], false,
        "the edited cache blob was reused"
    );
    check(&third, "edited cache");
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn a_build_never_fetches_or_runs_the_build_backend_an_sdist_names() {
    if !require("python3 -m pip", has("python3", "-mpip")) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("marker");
    let links = tmp.path().join("links");
    std::fs::create_dir_all(&links).unwrap();
    // the index serves a build backend (an sdist, as `--no-binary :all:`
    // asks for, that builds itself) whose code writes the marker...
    let backend = tmp.path().join("evilbackend-1.0");
    std::fs::create_dir_all(&backend).unwrap();
    std::fs::write(
        backend.join("evilbackend.py"),
        "import os\nopen(os.environ['EVIL_MARKER'], 'w').write('ran')\n",
    )
    .unwrap();
    std::fs::write(
        backend.join("pyproject.toml"),
        "[build-system]\nrequires = []\nbuild-backend = \"evilbackend\"\nbackend-path = [\".\"]\n",
    )
    .unwrap();
    std::fs::write(
        backend.join("PKG-INFO"),
        "Metadata-Version: 2.1\nName: evilbackend\nVersion: 1.0\n",
    )
    .unwrap();
    ok(Command::new("tar")
        .arg("-czf")
        .arg(links.join("evilbackend-1.0.tar.gz"))
        .arg("-C")
        .arg(tmp.path())
        .arg("evilbackend-1.0"));
    // ...and the locked sdist (its hash is right) names that backend
    let pkg = tmp.path().join("goodpkg-1.0");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(
        pkg.join("pyproject.toml"),
        "[build-system]\nrequires = [\"evilbackend\"]\nbuild-backend = \"evilbackend\"\n",
    )
    .unwrap();
    std::fs::write(
        pkg.join("PKG-INFO"),
        "Metadata-Version: 2.1\nName: goodpkg\nVersion: 1.0\n",
    )
    .unwrap();
    let sdist = links.join("goodpkg-1.0.tar.gz");
    ok(Command::new("tar")
        .arg("-czf")
        .arg(&sdist)
        .arg("-C")
        .arg(tmp.path())
        .arg("goodpkg-1.0"));
    let bytes = std::fs::read(&sdist).unwrap();
    let def = tmp.path().join("image.toml");
    std::fs::write(
        &def,
        "name = \"good\"\ntag = \"1\"\n[[layer]]\nname = \"py\"\n[[layer.source]]\npypi = [\"goodpkg==1.0\"]\nsite_packages = \"/site\"\n",
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("image.lock"),
        format!(
            "version = 1\n[[artifact]]\nkind = \"pypi\"\nname = \"goodpkg\"\nversion = \"1.0\"\nfile = \"goodpkg-1.0.tar.gz\"\nsize = {}\nsha256 = \"{}\"\n",
            bytes.len(),
            hex_sha256(&bytes)
        ),
    )
    .unwrap();
    let (_, err) = stderr_of(
        ferry()
            .arg("build")
            .arg(&def)
            .arg("--out")
            .arg(tmp.path().join("out"))
            .arg("--cache")
            .arg(tmp.path().join("cache"))
            .env("PIP_NO_INDEX", "1")
            .env("PIP_FIND_LINKS", &links)
            .env("EVIL_MARKER", &marker),
    );
    assert!(
        !marker.exists(),
        "the build backend the sdist names was fetched from the index and run: {err}"
    );
}

#[test]
fn a_file_url_reads_only_under_the_definitions_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, "the build machine's private key\n").unwrap();
    let images = tmp.path().join("image");
    std::fs::create_dir_all(&images).unwrap();
    // a link inside the folder to a file outside it is outside too
    std::os::unix::fs::symlink(&secret, images.join("inside-link")).unwrap();
    let def = images.join("image.toml");
    let lock = images.join("image.lock");
    for url in [
        format!("file://{}", secret.display()),
        format!("file://{}", images.join("inside-link").display()),
        format!("file://{}/../secret", images.display()),
    ] {
        std::fs::write(
            &def,
            format!("name = \"x\"\ntag = \"1\"\n[[layer]]\nname = \"a\"\n[[layer.source]]\nurl = \"{url}\"\nunpack = false\ndest = \"/k\"\n"),
        )
        .unwrap();
        let (code, err) = stderr_of(
            ferry()
                .arg("lock")
                .arg(&def)
                .arg("--cache")
                .arg(tmp.path().join("cache")),
        );
        assert_eq!(code, 2, "{url}: {err}");
        assert!(
            err.contains(&url) && err.contains("image.toml") && err.contains("copy"),
            "{url}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!lock.exists(), "{url}: the file was locked");
        // nor does a lock that came with the definition make a build read it
        let size = std::fs::metadata(&secret).unwrap().len();
        let file = url.rsplit('/').next().unwrap();
        std::fs::write(
            &lock,
            format!("version = 1\n[[artifact]]\nkind = \"url\"\nname = \"{file}\"\nfile = \"{file}\"\nsize = {size}\nsha256 = \"{}\"\n", "ab".repeat(32)),
        )
        .unwrap();
        let (code, err) = stderr_of(
            ferry()
                .arg("build")
                .arg(&def)
                .arg("--out")
                .arg(tmp.path().join("out"))
                .arg("--cache")
                .arg(tmp.path().join("cache")),
        );
        assert_eq!(code, 2, "{url}: {err}");
        assert!(
            err.contains(&url) && !err.contains("mismatch"),
            "{url}: {err}"
        );
        std::fs::remove_file(&lock).unwrap();
    }
    // a file under the folder is read as before
    std::fs::write(images.join("ok.txt"), "fine\n").unwrap();
    std::fs::write(
        &def,
        format!("name = \"x\"\ntag = \"1\"\n[[layer]]\nname = \"a\"\n[[layer.source]]\nurl = \"file://{}\"\nunpack = false\ndest = \"/k\"\n", images.join("ok.txt").display()),
    )
    .unwrap();
    ok(ferry()
        .arg("lock")
        .arg(&def)
        .arg("--cache")
        .arg(tmp.path().join("cache")));
}
