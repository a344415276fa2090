use super::*;
use super::{check::*, image::*, plan::*, scripts::*, ssh::*};
use crate::ssh::Script;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

fn blob(c: char, size: u64) -> LocalBlob {
    LocalBlob {
        hex: c.to_string().repeat(64),
        size,
        path: PathBuf::from(format!("/layout/blobs/sha256/{}", c.to_string().repeat(64))),
    }
}

fn image() -> PushImage {
    PushImage {
        reference: "ferry/busybox:1.35".into(),
        config: blob('c', 100),
        layers: vec![blob('a', 1000), blob('b', 2000), blob('a', 1000)],
        manifest: blob('d', 50),
        diff_ids: vec!["sha256:1".into(), "sha256:2".into(), "sha256:3".into()],
    }
}

#[test]
fn blobs_are_listed_once() {
    let hexes: Vec<char> = image()
        .blobs()
        .iter()
        .map(|b| b.hex.chars().next().unwrap())
        .collect();
    assert_eq!(hexes, vec!['c', 'a', 'b', 'd']);
}

#[test]
fn host_state_parses_blobs_parts_and_docker() {
    let a = "a".repeat(64);
    let b = "b".repeat(64);
    let out = format!(
        "1000 {a}\n700 {b}.part\n5 junk\nx {a}\n{DOCKER_MARK}\nsha256:{}\n",
        "c".repeat(64)
    );
    let st = HostState::parse(&out);
    assert_eq!(st.blobs, BTreeMap::from([(a.clone(), 1000)]));
    assert_eq!(st.parts, BTreeMap::from([(b, 700)]));
    assert_eq!(st.docker_id, Some(format!("sha256:{}", "c".repeat(64))));
    assert!(st.has_docker);
    let st = HostState::parse(&format!("{NO_DOCKER_MARK}\n{DOCKER_MARK}\n"));
    assert!(!st.has_docker && st.docker_id.is_none());
    assert!(st.has_unpigz && !st.exact_head);
    let st = HostState::parse(&format!(
        "{EXACT_HEAD_MARK}\n{NO_UNPIGZ_MARK}\n{DOCKER_MARK}\n"
    ));
    assert!(!st.has_unpigz && st.exact_head);
}

#[test]
fn an_empty_host_gets_everything_and_a_load() {
    let p = plan(&image(), &HostState::default(), &BTreeSet::new());
    assert_eq!(
        p.sends.iter().map(|s| s.size).collect::<Vec<_>>(),
        vec![100, 1000, 2000, 50]
    );
    assert!(p.sends.iter().all(|s| s.offset == 0 && !s.replace));
    assert_eq!((p.present, p.load, p.bytes()), (0, true, 3150));
}

#[test]
fn a_complete_host_gets_nothing() {
    let img = image();
    let host = HostState {
        blobs: img
            .blobs()
            .iter()
            .map(|b| (b.hex.clone(), b.size))
            .collect(),
        docker_id: Some(img.config_id()),
        has_docker: true,
        ..HostState::default()
    };
    let p = plan(&img, &host, &BTreeSet::new());
    assert_eq!((p.sends.len(), p.present, p.load), (0, 4, false));
    assert!(to_verify(&img, &host, false, Runtime::Docker).is_empty());
    assert_eq!(to_verify(&img, &host, true, Runtime::Docker).len(), 4);
}

#[test]
fn parts_resume_and_bad_or_wrong_sized_blobs_are_replaced() {
    let img = image();
    let (a, b, c, d) = (
        "a".repeat(64),
        "b".repeat(64),
        "c".repeat(64),
        "d".repeat(64),
    );
    let host = HostState {
        blobs: BTreeMap::from([(a.clone(), 1000), (c.clone(), 99), (d.clone(), 50)]),
        parts: BTreeMap::from([(b.clone(), 1500), (d.clone(), 10)]),
        docker_id: Some("sha256:other".into()),
        has_docker: true,
        docker_layers: vec![],
        exact_head: true,
        has_unpigz: true,
    };
    let p = plan(&img, &host, &BTreeSet::from([a.clone()]));
    let got: Vec<(String, u64, bool)> = p
        .sends
        .iter()
        .map(|s| (s.hex.clone(), s.offset, s.replace))
        .collect();
    assert_eq!(
        got,
        vec![(c, 0, true), (a, 0, true), (b.clone(), 1500, false)]
    );
    assert_eq!((p.present, p.load, p.bytes()), (1, true, 100 + 1000 + 500));
    // a .part as long as the blob (or longer) cannot be trusted: start over
    let host = HostState {
        parts: BTreeMap::from([(b.clone(), 2000)]),
        ..HostState::default()
    };
    let p = plan(&img, &host, &BTreeSet::new());
    assert_eq!(p.sends.iter().find(|s| s.hex == b).unwrap().offset, 0);
    // the blobs Docker will read are verified before a load
    let host = HostState {
        blobs: BTreeMap::from([("a".repeat(64), 1000), ("b".repeat(64), 1)]),
        ..HostState::default()
    };
    assert_eq!(
        to_verify(&img, &host, false, Runtime::Docker),
        vec!["a".repeat(64)]
    );
    // a load reads neither the manifest nor the layers Docker has as a
    // chain (unless one comes again above it); --verify and podman read all
    let mut host = HostState {
        blobs: img
            .blobs()
            .iter()
            .map(|b| (b.hex.clone(), b.size))
            .collect(),
        docker_layers: vec![vec!["sha256:1".into(), "sha256:2".into()]],
        ..HostState::default()
    };
    let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
    assert_eq!(
        to_verify(&img, &host, false, Runtime::Docker),
        vec![c.clone(), a.clone()]
    );
    assert_eq!(to_verify(&img, &host, true, Runtime::Docker).len(), 4);
    assert_eq!(
        to_verify(&img, &host, false, Runtime::Podman),
        vec![c.clone(), a.clone(), b.clone()]
    );
    host.docker_layers = vec![vec![
        "sha256:1".into(),
        "sha256:2".into(),
        "sha256:3".into(),
    ]];
    assert_eq!(to_verify(&img, &host, false, Runtime::Docker), vec![c]);
}

#[test]
fn sha256sum_output_names_the_bad_blobs() {
    let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
    let out = format!("{a}  {a}\n{}  {b}\n", "f".repeat(64));
    let asked = vec![a, b.clone(), c.clone()];
    assert_eq!(bad_blobs(&out, &asked), BTreeSet::from([b, c]));
}

#[test]
fn docker_manifest_names_config_tags_and_layers_in_order() {
    let m: serde_json::Value = serde_json::from_slice(&docker_manifest(&image())).unwrap();
    let p = |c: char| format!("blobs/sha256/{}", c.to_string().repeat(64));
    assert_eq!(
        m,
        json!([{"Config": p('c'), "RepoTags": ["ferry/busybox:1.35"], "Layers": [p('a'), p('b'), p('a')]}])
    );
    // canonical: the same bytes every time, keys sorted
    let s = String::from_utf8(docker_manifest(&image())).unwrap();
    assert!(
        s.starts_with(r#"[{"Config":"#) && s.find("\"Layers\"") < s.find("\"RepoTags\""),
        "{s}"
    );
}

/// The blobs to hash can be many (every blob of a large image with
/// `--verify`): they go on stdin, not in the one command-line argument
/// sshd hands the login shell (Linux refuses one over 128 KiB).
#[test]
fn hashing_5000_blobs_fits_a_command_line() {
    let hexes: Vec<String> = (0..5000u64).map(|i| format!("{i:064x}")).collect();
    let (s, _) = verify_script("/var/lib/ferry", &hexes).unwrap();
    let line = s.command_line().unwrap();
    assert!(line.len() < 100 << 10, "{} bytes", line.len());
}

#[test]
fn scripts_are_constant_text_and_values_are_arguments() {
    let s = list_script("/srv/my store", "a:b", Runtime::Docker).unwrap();
    assert_eq!(s.text(), LIST);
    assert_eq!(s.values(), ["/srv/my store", "a:b", "docker"]);
    // the marks the parser looks for are the ones the scripts print
    for mark in [
        DOCKER_MARK,
        NO_DOCKER_MARK,
        EXACT_HEAD_MARK,
        NO_UNPIGZ_MARK,
        LAYERS_MARK,
    ] {
        assert!(LIST.contains(&format!("echo {mark}\n")), "{mark}");
    }
    // and so are the verdicts
    for code in [EXIT_NO_HASHER, EXIT_DIGEST, EXIT_PART_MOVED, EXIT_BUSY] {
        assert!(UPLOAD.contains(&format!("echo \"{code} $")), "{code}");
    }
    assert!(UPLOAD.contains(&format!("exit {EXIT_SHORT}; }}")));
    // layers Docker already has as a chain stay out of the archive,
    // unless the same blob is needed again further up
    let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
    let s = load_script("/var/lib/ferry", &image(), 2, Runtime::Docker).unwrap();
    assert_eq!(s.text(), LOAD);
    assert_eq!(
        s.values(),
        ["/var/lib/ferry", "docker", "ferry/busybox:1.35", &a, &c]
    );
    let s = load_script("/var/lib/ferry", &image(), 0, Runtime::Docker).unwrap();
    assert_eq!(&s.values()[3..], [a.clone(), b.clone(), c.clone()]);
    let (s, names) = verify_script("/var/lib/ferry", std::slice::from_ref(&a)).unwrap();
    assert_eq!(s.values(), ["/var/lib/ferry"]);
    assert_eq!(names, format!("{a}\n").into_bytes());
}

#[test]
fn values_with_a_grammar_are_checked() {
    for ok in [
        "/var/lib/ferry",
        "/srv/my store",
        "/",
        "/srv/ferry/",
        "/srv/$(x)",
    ] {
        assert_eq!(check_store(ok), Ok(()), "{ok}");
    }
    for bad in ["", "var/lib", "-rf", "/a/../b", "/a/./b", "/a//b", "/a\nb"] {
        let e = check_store(bad).unwrap_err().to_string();
        assert!(e.starts_with("the store path `"), "{e}");
    }
    for ok in [
        "busybox",
        "ferry/busybox:1.35",
        "reg.example:5000/ferry/spark:3.5.2-r1",
        "localhost/a__b/c-d.e:T_1",
        &format!("a/b@sha256:{}", "f".repeat(64)),
        &format!("a/b:t@sha256:{}", "f".repeat(64)),
    ] {
        assert_eq!(check_reference(ok), Ok(()), "{ok}");
    }
    for bad in [
        "",
        "-x",
        "--help",
        "a b",
        "a\nb",
        "A/b",
        "a/b:",
        "a/b:-t",
        "a//b",
        "a/../b",
        "a/b@sha256:xyz",
        "reg:x/a",
        "$(touch x)",
    ] {
        let e = check_reference(bad).unwrap_err().to_string();
        assert!(e.starts_with("the image reference `"), "{e}");
    }
    let e = BadValue::new("image reference", "a\nb", "is bad").on("root@node1");
    assert_eq!(
        e.to_string(),
        "refusing to run a script on `root@node1`: the image reference `a\\nb` is bad"
    );
    assert!(check_hex("blob digest", &"A".repeat(64)).is_err());
}

#[test]
fn podman_gets_its_own_commands_every_layer_and_bare_hex_ids() {
    let s = list_script("/var/lib/ferry", "a:b", Runtime::Podman).unwrap();
    assert_eq!(s.values()[2], "podman");
    // podman opens every layer of the archive, even one it has
    let s = load_script("/var/lib/ferry", &image(), 2, Runtime::Podman).unwrap();
    assert_eq!(s.values()[1], "podman");
    assert_eq!(s.values().len(), 3 + 3);
    let id = "c".repeat(64);
    let st = HostState::parse(&format!("{DOCKER_MARK}\n{id}\n"));
    assert_eq!(st.docker_id, Some(format!("sha256:{id}")));
    assert_eq!(image_id("sha256:nothex"), None);
    let st = HostState::parse(&format!("{NO_DOCKER_MARK}\n{DOCKER_MARK}\n"));
    assert!(!st.has_docker);
}

#[test]
fn the_upload_script_resumes_and_keeps_only_what_matches() {
    // with the host's `openssl`, and with `sha256sum` when `openssl`
    // fails (a stand-in first on the PATH)
    let stub = tempfile::tempdir().unwrap();
    let broken = stub.path().join("openssl");
    crate::ssh::script::tests::write_stand_in(&broken, "#!/bin/sh\nexit 1\n");
    let system_path = std::env::var("PATH").unwrap_or_default();
    let no_openssl = format!("{}:{system_path}", stub.path().display());
    for path in [system_path.as_str(), no_openssl.as_str()] {
        upload_script_case(path);
    }
    // a host where neither tool hashes says so, rather than calling the blob damaged
    std::fs::copy(&broken, stub.path().join("sha256sum")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
    let blob = b"a small blob";
    let hex = hex::encode(Sha256::digest(blob));
    let mut input = upload_header(&hex, 0, blob.len() as u64).into_bytes();
    input.extend_from_slice(blob);
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(
            upload_script(dir.path().to_str().unwrap())
                .unwrap()
                .command_line()
                .unwrap(),
        )
        .env("PATH", &no_openssl)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        upload_verdicts(&String::from_utf8_lossy(&out.stdout)).get(hex.as_str()),
        Some(&EXIT_NO_HASHER)
    );
    assert!(!dir.path().join("blobs/sha256").join(&hex).exists());
}

fn upload_script_case(path: &str) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().to_str().unwrap();
    std::fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let hex = hex::encode(Sha256::digest(&data));
    let small = b"a small blob".to_vec();
    let small_hex = hex::encode(Sha256::digest(&small));
    // blobs as (hex, offset, size, the bytes sent): one stream
    let run = |blobs: &[(&str, u64, u64, &[u8])]| {
        let mut input = Vec::new();
        for (hex, offset, size, bytes) in blobs {
            input.extend_from_slice(upload_header(hex, *offset, *size).as_bytes());
            input.extend_from_slice(bytes);
        }
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(upload_script(store).unwrap().command_line().unwrap())
            .env("PATH", path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // the script may stop before it reads all: a broken pipe is its answer
        let _ = child.stdin.take().unwrap().write_all(&input);
        let out = child.wait_with_output().unwrap();
        let verdicts: BTreeMap<String, i32> =
            upload_verdicts(&String::from_utf8_lossy(&out.stdout))
                .into_iter()
                .map(|(h, c)| (h.to_string(), c))
                .collect();
        (out.status.code(), verdicts)
    };
    let size = data.len() as u64;
    let blob = dir.path().join("blobs/sha256").join(&hex);
    let part = dir.path().join(format!("blobs/sha256/{hex}.part"));
    // cut short: the .part stays, and the next run resumes from it
    assert_eq!(
        run(&[(&hex, 0, size, &data[..1_000_000])]),
        (Some(EXIT_SHORT), BTreeMap::new())
    );
    assert_eq!(std::fs::metadata(&part).unwrap().len(), 1_000_000);
    // a .part of another size than the plan saw is left alone, and the
    // blobs after it in the stream still arrive
    assert_eq!(
        run(&[
            (&hex, 999, size, &data[999..]),
            (&small_hex, 0, small.len() as u64, &small)
        ]),
        (
            Some(0),
            BTreeMap::from([(hex.clone(), EXIT_PART_MOVED), (small_hex.clone(), 0)])
        ),
        "PATH={path}"
    );
    assert_eq!(std::fs::metadata(&part).unwrap().len(), 1_000_000);
    assert_eq!(
        run(&[(&hex, 1_000_000, size, &data[1_000_000..])]),
        (Some(0), BTreeMap::from([(hex.clone(), 0)])),
        "PATH={path}"
    );
    assert_eq!(std::fs::read(&blob).unwrap(), data);
    assert!(!part.exists());
    // the stored blob checks out; a damaged one and a missing one do not
    let other = "e".repeat(64);
    std::fs::write(dir.path().join("blobs/sha256").join(&other), b"x").unwrap();
    let asked = vec![hex.clone(), other.clone(), "f".repeat(64)];
    let (verify, names) = verify_script(store, &asked).unwrap();
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(verify.command_line().unwrap())
        .env("PATH", path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&names).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        bad_blobs(&String::from_utf8_lossy(&out.stdout), &asked),
        BTreeSet::from([other, "f".repeat(64)]),
        "PATH={path}"
    );
    // the right length with other bytes: removed, never renamed
    std::fs::remove_file(&blob).unwrap();
    let mut bad = data.clone();
    bad[5] ^= 1;
    assert_eq!(
        run(&[(&hex, 0, size, &bad)]),
        (Some(0), BTreeMap::from([(hex.clone(), EXIT_DIGEST)]))
    );
    assert!(!part.exists() && !blob.exists());
    // a damaged prefix from an earlier run is caught too
    std::fs::write(&part, &bad[..1_000_000]).unwrap();
    assert_eq!(
        run(&[(&hex, 1_000_000, size, &data[1_000_000..])]),
        (Some(0), BTreeMap::from([(hex.clone(), EXIT_DIGEST)]))
    );
    assert!(!part.exists() && !blob.exists());
    // a header that is not one stops the script before it writes anything
    assert_eq!(run(&[("../x", 0, 1, b"x")]).0, Some(2));
}

#[test]
fn the_list_script_tells_whether_head_reads_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let list = |path: &str| {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(
                list_script(store.to_str().unwrap(), "a:b", Runtime::Docker)
                    .unwrap()
                    .command_line()
                    .unwrap(),
            )
            .env("PATH", path)
            .output()
            .unwrap();
        HostState::parse(&String::from_utf8_lossy(&out.stdout)).exact_head
    };
    let system_path = std::env::var("PATH").unwrap_or_default();
    assert!(
        list(&system_path),
        "GNU head reads no more than it is asked"
    );
    // a `head` that reads ahead, as busybox's does
    let stub = dir.path().join("bin");
    std::fs::create_dir_all(&stub).unwrap();
    crate::ssh::script::tests::write_stand_in(&stub.join("head"), "#!/bin/sh\ncat >/dev/null\n");
    assert!(!list(&format!("{}:{system_path}", stub.display())));
}

/// Runs a host script as an SSH server would (`sh -c LINE`) in `dir`,
/// with `bin` (stand-ins) first on the PATH: its exit status and stdout.
pub(crate) fn sh_run(
    script: &Script,
    dir: &std::path::Path,
    bin: &std::path::Path,
    stdin: &[u8],
) -> (Option<i32>, String) {
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(script.command_line().unwrap())
        .current_dir(dir)
        .env("PATH", path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Starts a lock script with a local `sh` (as an SSH server would run
/// it) and waits until it holds the lock: the running script, whose
/// stdin's end releases it; or its exit status when it got no lock.
#[allow(clippy::zombie_processes)] // the caller waits, in `release`
pub(crate) fn hold(script: &Script) -> Result<std::process::Child, Option<i32>> {
    use std::io::BufRead;
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(script.command_line().unwrap())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            drop(child.stdin.take());
            return Err(child.wait().unwrap().code());
        }
        if line.trim_end() == LOCKED_MARK {
            return Ok(child);
        }
    }
}

/// Ends a held lock, as closing its channel does.
pub(crate) fn release(mut child: std::process::Child) {
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
}

#[test]
fn the_store_lock_is_shared_by_pushes_and_exclusive_for_gc() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("store");
    let st = st.to_str().unwrap();
    let shared = || store_lock_script(st, LockMode::Shared, 0).unwrap();
    let exclusive = store_lock_script(st, LockMode::Exclusive, 0).unwrap();
    let a = hold(&shared()).unwrap();
    let b = hold(&shared()).unwrap();
    assert_eq!(hold(&exclusive).unwrap_err(), Some(EXIT_LOCKED));
    release(a);
    release(b);
    let gc = hold(&exclusive).unwrap();
    assert_eq!(hold(&shared()).unwrap_err(), Some(EXIT_LOCKED));
    // a push waits for gc, up to its deadline
    let st_owned = st.to_string();
    let waiting = std::thread::spawn(move || {
        let s = store_lock_script(&st_owned, LockMode::Shared, 30).unwrap();
        hold(&s).map(release)
    });
    release(gc);
    assert_eq!(waiting.join().unwrap(), Ok(()));
    // a host without `flock`: a stand-in PATH with `sh` and `mkdir` only
    let bin = tempfile::tempdir().unwrap();
    for t in ["sh", "mkdir", "cat", "sleep"] {
        let from = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| std::path::Path::new(d).join(t))
            .find(|p| p.exists())
            .unwrap();
        std::os::unix::fs::symlink(from, bin.path().join(t)).unwrap();
    }
    let out = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(STORE_LOCK)
        .arg("sh")
        .args(shared().values())
        .env("PATH", bin.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(EXIT_NO_FLOCK));
    assert!(STORE_LOCK.contains(&format!("exit {EXIT_NO_FLOCK}\n")));
    assert!(STORE_LOCK.contains(&format!("exit {EXIT_LOCKED}\n")));
    assert!(STORE_LOCK.contains(&format!("echo {LOCKED_MARK}\n")));
}

/// A folder of stand-ins for the runtime: `docker`/`podman` read their
/// stdin and print nothing.
pub(crate) fn stand_ins() -> tempfile::TempDir {
    let bin = tempfile::tempdir().unwrap();
    for rt in ["docker", "podman"] {
        let p = bin.path().join(rt);
        crate::ssh::script::tests::write_stand_in(
            &p,
            "#!/bin/sh\n[ \"$2\" != load ] || cat >/dev/null\nexit 0\n",
        );
    }
    bin
}

/// Every path under `dir`, relative to it.
pub(crate) fn tree(dir: &std::path::Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.insert(p.strip_prefix(dir).unwrap().to_path_buf());
            if p.is_dir() && !p.is_symlink() {
                todo.push(p);
            }
        }
    }
    out
}

/// What a run may leave in the scratch folder: the store and the
/// folders above it, nothing else.
pub(crate) fn only_the_store(dir: &std::path::Path, store: &std::path::Path, case: &str) {
    let store = store.strip_prefix(dir).unwrap_or(store);
    for p in tree(dir) {
        assert!(
            p.starts_with(store) || store.starts_with(&p),
            "{case}: the script made `{}`",
            p.display()
        );
    }
}

/// Every value that reaches the push's scripts, drawn from shell
/// metacharacters: refused, or run by a real `sh` without making
/// anything but the store.
#[test]
fn hostile_values_in_push_scripts_run_nothing() {
    let bin = stand_ins();
    let d = "d".repeat(64);
    for v in crate::ssh::script::tests::HOSTILE {
        let case = format!("value {v:?}");
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir_all(store.join("blobs/sha256")).unwrap();
        std::fs::create_dir_all(store.join("tmp")).unwrap();
        let st = store.to_str().unwrap();
        let run = |r: Result<Script, BadValue>, stdin: &[u8]| {
            if let Ok(s) = r {
                sh_run(&s, dir.path(), bin.path(), stdin);
            }
        };
        // scripts whose list of names comes on stdin
        let with_stdin = |r: Result<(Script, Vec<u8>), BadValue>| {
            if let Ok((s, stdin)) = r {
                sh_run(&s, dir.path(), bin.path(), &stdin);
            }
        };
        // as the image reference: the grammar refuses every one
        assert!(check_reference(v).is_err(), "{case}");
        let mut img = image();
        img.reference = v.to_string();
        for rt in [Runtime::Docker, Runtime::Podman] {
            run(list_script(st, v, rt), b"");
            run(load_script(st, &img, 0, rt), b"[]");
        }
        run(gc::record_script(st, v, &d), b"");
        // as a blob name, from the image or from the host's listing
        let mut img = image();
        img.config.hex = v.to_string();
        with_stdin(verify_script(st, &[v.to_string()]));
        run(load_script(st, &img, 0, Runtime::Docker), b"[]");
        run(gc::record_script(st, "a:b", v), b"");
        let mut header = upload_header(v, 0, 1).into_bytes();
        header.push(b'x');
        run(upload_script(st), &header);
        run(
            crate::objstore::pull::fetch_script(st, v, 1),
            b"http://h/x\n",
        );
        let mut p = gc::Plan::default();
        p.remove.insert(v.to_string(), 1);
        with_stdin(gc::remove_script(st, &p));
        p.remove.clear();
        p.remove_parts.insert(v.to_string(), 1);
        with_stdin(gc::remove_script(st, &p));
        for path in [
            v.to_string(),
            format!("images/{v}/1-{d}"),
            format!("images/x/{v}"),
        ] {
            let mut p = gc::Plan::default();
            p.dropped.push(gc::Record {
                path,
                name: "x".into(),
                seq: 1,
                manifest: d.clone(),
                blobs: None,
            });
            with_stdin(gc::remove_script(st, &p));
        }
        only_the_store(dir.path(), &store, &case);
        // as the store, relative to the scratch folder and below it: a
        // relative one is refused, one below may be made
        for st in [v.to_string(), format!("{}/{v}", dir.path().display())] {
            run(list_script(&st, "a:b", Runtime::Docker), b"");
            run(upload_script(&st), b"");
            with_stdin(verify_script(&st, &["a".repeat(64)]));
            run(gc::record_script(&st, "a:b", &d), b"");
            run(gc::list_script(&st), b"");
            with_stdin(gc::remove_script(&st, &gc::Plan::default()));
            run(store_lock_script(&st, LockMode::Shared, 0), b"");
            run(crate::objstore::pull::fetch_script(&st, &d, 1), b"");
        }
        let allowed = dir.path().join(v);
        for p in tree(dir.path()) {
            let p = dir.path().join(p);
            assert!(
                p.starts_with(&store)
                    || store.starts_with(&p)
                    || p.starts_with(&allowed)
                    || allowed.starts_with(&p),
                "{case}: a script made `{}`",
                p.display()
            );
        }
    }
}

/// Two pushes sending one blob at once (both found it missing): the
/// store ends with one blob, and it is the right one.
#[test]
fn two_uploads_of_one_blob_at_once_end_with_one_correct_blob() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().to_str().unwrap();
    std::fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
    std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let hex = hex::encode(Sha256::digest(&data));
    let size = data.len() as u64;
    let blob = dir.path().join("blobs/sha256").join(&hex);
    let part = dir.path().join(format!("blobs/sha256/{hex}.part"));
    let start = || {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(upload_script(store).unwrap().command_line().unwrap())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    // the first is half way through when the second starts
    let mut first = start();
    let mut first_in = first.stdin.take().unwrap();
    first_in
        .write_all(upload_header(&hex, 0, size).as_bytes())
        .unwrap();
    first_in.write_all(&data[..1_500_000]).unwrap();
    first_in.flush().unwrap();
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0) < 1_000_000 {
        assert!(
            Instant::now() < deadline,
            "the first upload never wrote its half"
        );
        std::thread::yield_now();
    }
    let mut second = start();
    let mut input = upload_header(&hex, 0, size).into_bytes();
    input.extend_from_slice(&data);
    second.stdin.take().unwrap().write_all(&input).unwrap();
    let second = second.wait_with_output().unwrap();
    // one that meant to resume the first's `.part` leaves it alone and
    // asks for the whole blob
    let part_len = std::fs::metadata(&part).unwrap().len();
    let mut third = start();
    let mut input = upload_header(&hex, 1_000_000, size).into_bytes();
    input.extend_from_slice(&data[1_000_000..]);
    third.stdin.take().unwrap().write_all(&input).unwrap();
    let third = third.wait_with_output().unwrap();
    assert_eq!(
        upload_verdicts(&String::from_utf8_lossy(&third.stdout)).get(hex.as_str()),
        Some(&EXIT_BUSY)
    );
    assert!(std::fs::metadata(&part).unwrap().len() >= part_len);
    first_in.write_all(&data[1_500_000..]).unwrap();
    drop(first_in);
    let first = first.wait_with_output().unwrap();
    for out in [&first, &second] {
        assert_eq!(
            upload_verdicts(&String::from_utf8_lossy(&out.stdout)).get(hex.as_str()),
            Some(&0),
            "{out:?}"
        );
    }
    assert!(
        std::fs::read(&blob).unwrap() == data,
        "the stored blob is damaged"
    );
    assert!(!part.exists());
}

#[test]
fn the_chain_docker_has_is_the_longest_shared_prefix() {
    let out = format!(
        "{DOCKER_MARK}\n{LAYERS_MARK}\n[\"sha256:1\",\"sha256:9\"]\n[\"sha256:1\",\"sha256:2\",\"sha256:7\"]\nnot json\n"
    );
    let st = HostState::parse(&out);
    assert_eq!(st.docker_layers.len(), 2);
    assert_eq!(st.present_prefix(&image().diff_ids), 2);
    assert_eq!(HostState::default().present_prefix(&image().diff_ids), 0);
}
