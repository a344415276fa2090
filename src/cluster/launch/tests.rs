//! The launcher's scripts run by a real `sh` against stand-in tools:
//! hostile values stay data, and folders are made, kept and purged as planned.

use super::down::remove_script;
use super::gate::*;
use super::probe::*;
use super::scripts::*;
use super::submit::*;
use super::up::{
    ImageFound, ensure_script, image_found, image_id_script, write_files_script, zookeeper_password,
};
use super::*;
use crate::cluster::plan::{HostPlan, ImageRef, Plan, SECRET_VAR};
use crate::ssh::Script;
use std::collections::BTreeMap;
use std::io::Write;

#[test]
fn addresses_and_urls_split() {
    assert_eq!(split_addr("10.0.0.1:2181"), Some(("10.0.0.1".into(), 2181)));
    assert_eq!(split_addr("[::1]:2181"), Some(("::1".into(), 2181)));
    assert_eq!(split_addr("nohost"), None);
    assert_eq!(
        split_url("http://10.0.0.1:8080/json/"),
        Some(("10.0.0.1".into(), 8080, "/json/".into()))
    );
    assert_eq!(split_url("https://x:1/"), None);
}

#[test]
fn jaas_files_travel_in_the_tar_never_in_the_script() {
    let text = include_str!("../../../examples/ha.toml")
        .replace("[zookeeper]\n", "[zookeeper]\nauth = \"sasl\"\n");
    let file =
        super::super::file::ClusterFile::parse(&text, std::path::Path::new("c.toml")).unwrap();
    let plan = super::super::plan::plan(&file, &super::super::plan::ImageFacts::builtin()).unwrap();
    let secret = format!("{SECRET_VAR}={}\n", "ab".repeat(32));
    let password = zookeeper_password(&secret);
    assert_eq!(password.len(), 64);
    assert_ne!(password, "ab".repeat(32));
    assert_eq!(password, zookeeper_password(&secret), "derived, so stable");
    // node1: a ZooKeeper server and a master
    let (script, tar) = write_files_script(STATE_ROOT, &plan, &plan.hosts[0], Some(&secret));
    let line = script.command_line().unwrap();
    assert!(!line.contains(&password) && !line.contains(&"ab".repeat(32)));
    let mut entries = BTreeMap::new();
    for e in tar::Archive::new(tar.as_slice()).entries().unwrap() {
        let mut e = e.unwrap();
        let mut body = String::new();
        std::io::Read::read_to_string(&mut e, &mut body).unwrap();
        entries.insert(e.path().unwrap().display().to_string(), body);
    }
    assert!(entries["jaas0"].contains(&format!("user_spark=\"{password}\"")));
    assert!(entries["jaas1"].contains(&format!("password=\"{password}\"")));
    for path in [
        "/etc/ferry/ha/zookeeper-secret/zookeeper-server.jaas",
        "/etc/ferry/ha/secret/zookeeper-client.jaas",
    ] {
        assert!(script.values().iter().any(|v| v == path), "{script:?}");
    }
    // a worker's host gets no login
    let (_, tar) = write_files_script(STATE_ROOT, &plan, &plan.hosts[3], Some(&secret));
    let names: Vec<String> = tar::Archive::new(tar.as_slice())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with("jaas")), "{names:?}");
}

#[test]
fn an_image_under_the_planned_tag_must_be_the_planned_one() {
    let config = format!("sha256:{}", "c".repeat(64));
    let manifest = format!("sha256:{}", "m".repeat(64));
    let image = ImageRef {
        reference: "ferry/spark:3.5.3".into(),
        digest: manifest.clone(),
        config_digest: config.clone(),
    };
    let s = image_id_script(&image.reference);
    assert_eq!(
        s.text(),
        r#"docker image inspect --format '{{.Id}}' -- "$1" 2>/dev/null || true"#
    );
    assert_eq!(s.values(), ["ferry/spark:3.5.3"]);
    assert_eq!(image_found(&image, ""), ImageFound::Missing);
    assert_eq!(image_found(&image, "\n"), ImageFound::Missing);
    assert_eq!(
        image_found(&image, &format!("{config}\n")),
        ImageFound::Planned
    );
    // Podman prints the bare hex; a containerd store, the manifest digest
    assert_eq!(image_found(&image, &"c".repeat(64)), ImageFound::Planned);
    assert_eq!(image_found(&image, &manifest), ImageFound::Planned);
    let stale = format!("sha256:{}", "5".repeat(64));
    assert_eq!(
        image_found(&image, &format!("{stale}\n")),
        ImageFound::Other(stale.clone())
    );
}

/// The HA example with its workers' `work_dir` in `/data/spark`.
fn ha_with_work_dir() -> Plan {
    let text = include_str!("../../../examples/ha.toml").replace(
        "[spark.workers]\n",
        "[spark.workers]\nwork_dir = \"/data/spark\"\n",
    );
    let file =
        super::super::file::ClusterFile::parse(&text, std::path::Path::new("c.toml")).unwrap();
    super::super::plan::plan(&file, &super::super::plan::ImageFacts::builtin()).unwrap()
}

#[test]
fn folders_outside_the_clusters_own_are_marked_and_purged_by_mark() {
    let plan = ha_with_work_dir();
    // node1: ZooKeeper and a master; node4: a worker
    let (node1, node4) = (&plan.hosts[0], &plan.hosts[3]);
    let (up, _) = write_files_script(STATE_ROOT, &plan, node4, None);
    assert_eq!(up.values()[..2], ["/var/lib/ferry/ha", "ferry/spark:3.5.3"]);
    assert!(
        has_run(&up, &["dir", "/data/spark", "0750", "spark", "0"]),
        "{up:?}"
    );
    assert!(
        has_run(&up, &["dir", "/etc/ferry/ha/secret", "0700", "spark", "1"]),
        "{up:?}"
    );
    let (up1, _) = write_files_script(STATE_ROOT, &plan, node1, None);
    assert!(
        has_run(
            &up1,
            &[
                "dir",
                "/var/lib/ferry/ha/zookeeper",
                "0750",
                "zookeeper",
                "1"
            ]
        ),
        "{up1:?}"
    );
    let down = remove_script(STATE_ROOT, &plan, node4, true);
    assert!(has_run(&down, &["purge", "/data/spark", "1"]), "{down:?}");
    assert!(!has_run(&down, &["own", "/data/spark"]), "{down:?}");
    // a host without a worker now may have had one: checked, by record
    let down1 = remove_script(STATE_ROOT, &plan, node1, true);
    assert!(has_run(&down1, &["purge", "/data/spark", "0"]), "{down1:?}");
    assert!(
        has_run(&down1, &["own", "/var/lib/ferry/ha/zookeeper"]),
        "{down1:?}"
    );
    assert!(
        has_run(&down1, &["tidy", "rmdir", "/etc/ferry/ha"]),
        "{down1:?}"
    );
    assert!(
        has_run(&down1, &["rmdir", "/var/lib/ferry/ha"]),
        "{down1:?}"
    );
    assert_eq!(
        remove_script(STATE_ROOT, &plan, node4, false)
            .values()
            .len(),
        4
    );
    assert!(in_own_folders("ha", "/etc/ferry/ha"));
    assert!(in_own_folders("ha", "/var/lib/ferry/ha/x"));
    assert!(!in_own_folders("ha", "/var/lib/ferry/hadoop"));
    assert!(!in_own_folders("ha", "/var/lib/ferry"));
}

/// Whether the script's values hold `run`, in a row.
fn has_run(s: &Script, run: &[&str]) -> bool {
    s.values().windows(run.len()).any(|w| w == run)
}

/// Runs `script` under `sh`, in `bin`'s parent folder, with stand-ins
/// first on the PATH: a `docker` whose `run` runs the command it is
/// given here, without the image, and an `id` that says the image's
/// users (`spark`, `zookeeper`) are this test's own user (so folders can
/// be given to them without root); `docker` lists no container.
fn run_sh(script: &str, stdin: &[u8], bin: &std::path::Path) -> (i32, String, String) {
    run_sh_with(script, stdin, bin, STAND_IN_DOCKER)
}

const STAND_IN_DOCKER: &str = "#!/bin/sh\ncase \"$1\" in\n  run) shift; ep=; while [ $# -gt 0 ]; do case $1 in --entrypoint) ep=$2; shift 2 ;; --network) shift 2 ;; --) shift; break ;; -*) shift ;; *) break ;; esac; done; shift; exec \"$ep\" \"$@\" ;;\n  ps) ;;\n  *) exit 1 ;;\nesac\n";

/// The image's users are this test's own user, or uid and gid 4242
/// when it runs as root (`up` gives no folder to uid 0).
const STAND_IN_ID: &str = "#!/bin/sh\nflag=$1; shift\n[ \"${1-}\" = -- ] && shift\n[ $# = 0 ] && exec /usr/bin/id \"$flag\"\ncase $1 in spark|zookeeper) [ \"$(/usr/bin/id -u)\" = 0 ] && echo 4242 && exit 0; exec /usr/bin/id \"$flag\" ;; *) echo \"id: $1: no such user\" >&2; exit 1 ;; esac\n";

/// Gives `p` to the image's users as the stand-in `id` says them (a
/// folder the user made for them).
fn give_to_image_user(p: &std::path::Path) {
    let (u, g) = image_ids();
    std::os::unix::fs::chown(p, u.parse().ok(), g.parse().ok()).unwrap();
}

/// The uid and gid the stand-in `id` gives the image's users.
fn image_ids() -> (String, String) {
    let id = |flag: &str| {
        let out = std::process::Command::new("id").arg(flag).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    match id("-u").as_str() {
        "0" => ("4242".into(), "4242".into()),
        _ => (id("-u"), id("-g")),
    }
}

fn stand_in(bin: &std::path::Path, name: &str, body: &str) {
    crate::ssh::script::tests::write_stand_in(&bin.join(name), body);
}

fn run_sh_with(
    script: &str,
    stdin: &[u8],
    bin: &std::path::Path,
    docker: &str,
) -> (i32, String, String) {
    std::fs::create_dir_all(bin).unwrap();
    stand_in(bin, "docker", docker);
    stand_in(bin, "id", STAND_IN_ID);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("PATH", path)
        .current_dir(bin.parent().unwrap())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `up` files script for `host` as the line a host runs, with
/// ferry's own records under `state`, and the tar it reads.
fn up_line(plan: &Plan, host: &HostPlan, state: &std::path::Path) -> (String, Vec<u8>) {
    let (s, tar) = write_files_script(&state.display().to_string(), plan, host, None);
    (s.command_line().unwrap(), tar)
}

/// The `down --purge` script for `host`, as the line a host runs.
fn purge_line(plan: &Plan, host: &HostPlan, state: &std::path::Path) -> String {
    remove_script(&state.display().to_string(), plan, host, true)
        .command_line()
        .unwrap()
}

/// Every path under `root`, links not followed, sorted.
fn tree(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A one-host plan of its own name whose host has `dirs` and `files`
/// (and no secret), folders of the HA example's ZooKeeper host.
fn scratch_plan(dirs: Vec<super::super::plan::Dir>, files: Vec<(String, &str)>) -> Plan {
    let mut plan = ha_with_work_dir();
    plan.cluster = format!("ferry-unit-{}", std::process::id());
    let mut host = plan.hosts[0].clone();
    host.dirs = dirs;
    host.files = files
        .into_iter()
        .map(|(path, content)| super::super::plan::FilePlan {
            path,
            mode: "0644".into(),
            sha256: String::new(),
            content: content.into(),
        })
        .collect();
    host.secret = None;
    host.jaas.clear();
    plan.hosts = vec![host];
    plan
}

fn zk_dir(path: &std::path::Path) -> super::super::plan::Dir {
    super::super::plan::Dir {
        path: path.display().to_string(),
        owner: "zookeeper".into(),
        mode: "0750".into(),
    }
}

/// A ZooKeeper container owns its data folder, and `up` writes `myid`
/// there as root: a link it plants where `up` stages the file, or as
/// the file itself, is replaced, never written through or chmodded.
#[test]
fn a_link_planted_in_a_containers_folder_is_replaced_never_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (bin, state) = (t.join("bin"), t.join("state"));
    let zk = t.join("zk");
    let myid = zk.join("myid");
    let victim = t.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    set_mode(&victim, 0o640);
    let up = |content: &str| {
        let plan = scratch_plan(
            vec![zk_dir(&zk)],
            vec![(myid.display().to_string(), content)],
        );
        let (line, tar) = up_line(&plan, &plan.hosts[0], &state);
        run_sh(&line, &tar, &bin)
    };
    let (code, _, err) = up("1\n");
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&myid).unwrap(), "1\n");

    // the container plants `myid.ferry-new -> victim`
    std::os::unix::fs::symlink(&victim, zk.join("myid.ferry-new")).unwrap();
    let (code, _, err) = up("2\n");
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(mode(&victim), 0o640);
    assert_eq!(std::fs::read_to_string(&myid).unwrap(), "2\n");

    // ... or makes `myid` itself the link
    std::fs::remove_file(&myid).unwrap();
    std::os::unix::fs::symlink(&victim, &myid).unwrap();
    let (code, _, err) = up("3\n");
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(mode(&victim), 0o640);
    assert!(!std::fs::symlink_metadata(&myid).unwrap().is_symlink());
    assert_eq!(std::fs::read_to_string(&myid).unwrap(), "3\n");
}

/// A planned folder that is a link (to a folder elsewhere) is refused:
/// nothing is written or chmodded through it.
#[test]
fn a_planned_folder_that_is_a_link_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (bin, state) = (t.join("bin"), t.join("state"));
    let elsewhere = t.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    set_mode(&elsewhere, 0o755);
    let zk = t.join("zk");
    std::os::unix::fs::symlink(&elsewhere, &zk).unwrap();
    let plan = scratch_plan(
        vec![zk_dir(&zk)],
        vec![(zk.join("myid").display().to_string(), "1\n")],
    );
    let (line, tar) = up_line(&plan, &plan.hosts[0], &state);
    let (code, out, err) = run_sh(&line, &tar, &bin);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains(&format!("`{}`", zk.display())), "{err}");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    assert_eq!(mode(&elsewhere), 0o755);
}

/// A container can write a `.ferry-created` mark into a folder of the
/// user's that it mounts: `down --purge` must not take it for ferry's.
#[test]
fn a_forged_mark_does_not_make_purge_remove_a_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (bin, state) = (t.join("bin"), t.join("state"));
    let theirs = t.join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::write(theirs.join("data.csv"), "user data\n").unwrap();
    set_mode(&theirs, 0o755);
    give_to_image_user(&theirs);
    let made = t.join("made");
    let plan = scratch_plan(vec![zk_dir(&theirs), zk_dir(&made)], vec![]);
    let (line, tar) = up_line(&plan, &plan.hosts[0], &state);
    let (code, _, err) = run_sh(&line, &tar, &bin);
    assert_eq!(code, 0, "{err}");
    assert!(made.is_dir());
    // the container forges ferry's mark in the user's folder
    std::fs::write(theirs.join(".ferry-created"), format!("{}\n", plan.cluster)).unwrap();
    let (code, out, err) = run_sh(&purge_line(&plan, &plan.hosts[0], &state), &[], &bin);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read_to_string(theirs.join("data.csv")).unwrap(),
        "user data\n",
        "{out}"
    );
    assert!(!made.exists(), "{out}");
}

/// `up` asks the image for its user's ids with a `docker run` that
/// never pulls (a tag gone from the host is not fetched from a
/// registry) and reads at most 64 bytes of its answer.
#[test]
fn the_owner_is_asked_of_the_local_image_with_a_bounded_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (bin, state) = (t.join("bin"), t.join("state"));
    let plan = scratch_plan(vec![zk_dir(&t.join("zk"))], vec![]);
    let (line, tar) = up_line(&plan, &plan.hosts[0], &state);
    let (code, _, err) = run_sh_with(&line, &tar, &bin, LOGGING_DOCKER);
    assert_eq!(code, 0, "{err}");
    let runs: Vec<Vec<String>> = docker_calls(&bin)
        .into_iter()
        .filter(|c| c.first().is_some_and(|a| a == "run"))
        .collect();
    assert!(!runs.is_empty());
    for r in &runs {
        assert!(r.iter().any(|a| a == "--pull=never"), "{r:?}");
    }
    // an image that answers without end
    let t = tmp.path().join("endless");
    let (bin, state) = (t.join("bin"), t.join("state"));
    let plan = scratch_plan(vec![zk_dir(&t.join("zk"))], vec![]);
    let (line, tar) = up_line(&plan, &plan.hosts[0], &state);
    let endless = "#!/bin/sh\n[ \"$1\" = run ] && exec yes 1\nexit 1\n";
    let (code, _, err) = run_sh_with(&line, &tar, &bin, endless);
    assert_ne!(code, 0);
    assert!(err.contains("user `zookeeper`"), "{err}");
    assert!(err.len() < 1024, "{err}");
}

/// An image whose user is uid 0 would own its folders as root: links it
/// plants there would pass for root's. `up` gives no folder to it.
#[test]
fn an_image_user_of_uid_0_gets_no_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (bin, state) = (t.join("bin"), t.join("state"));
    let zk = t.join("zk");
    let plan = scratch_plan(vec![zk_dir(&zk)], vec![]);
    let (line, tar) = up_line(&plan, &plan.hosts[0], &state);
    let as_root = "#!/bin/sh\n[ \"$1\" = run ] && printf '0\\n0\\n'\n";
    let (code, _, err) = run_sh_with(&line, &tar, &bin, as_root);
    assert_ne!(code, 0);
    assert!(
        err.contains("`zookeeper` is uid 0") && err.contains("`ferry.zookeeper.user`"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!zk.exists());
}

/// A folder on the way to a planned folder, or to a file's folder, that
/// others than root may change (a container's, or one open to all) is
/// refused: its entries could be swapped for links between check and
/// act. A sticky folder open to all (`/tmp`) is passed when the next
/// name on the way is root's.
#[test]
fn a_folder_others_may_write_on_the_way_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (bin, state) = (t.join("bin"), t.join("state"));
    let open = t.join("open");
    std::fs::create_dir(&open).unwrap();
    set_mode(&open, 0o777);
    let zk = open.join("zk");
    let plan = scratch_plan(vec![zk_dir(&zk)], vec![]);
    let (line, tar) = up_line(&plan, &plan.hosts[0], &state);
    let (code, _, err) = run_sh(&line, &tar, &bin);
    assert_ne!(code, 0);
    assert!(err.contains(&format!("`{}`", open.display())), "{err}");
    assert!(!zk.exists());
    // a file whose folder lies in such a folder
    let conf = open.join("conf");
    std::fs::create_dir(&conf).unwrap();
    set_mode(&conf, 0o755);
    let cfg = conf.join("zoo.cfg");
    let plan = scratch_plan(vec![], vec![(cfg.display().to_string(), "x\n")]);
    let (line, tar) = up_line(&plan, &plan.hosts[0], &state);
    let (code, _, err) = run_sh(&line, &tar, &bin);
    assert_ne!(code, 0);
    assert!(err.contains(&format!("`{}`", open.display())), "{err}");
    assert!(!cfg.exists());
    // closed again, both go through
    set_mode(&open, 0o755);
    let plan = scratch_plan(vec![zk_dir(&zk)], vec![(cfg.display().to_string(), "x\n")]);
    let (line, tar) = up_line(&plan, &plan.hosts[0], &state);
    let (code, _, err) = run_sh(&line, &tar, &bin);
    assert_eq!(code, 0, "{err}");
    assert!(zk.is_dir() && cfg.is_file());
}

/// `down --purge` removes what `up` made only through folders root
/// alone may change: a name on the way could else be a link planted
/// since, and `rm -rf` would follow it.
#[test]
fn purge_keeps_a_folder_on_a_way_others_may_change() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (bin, state) = (t.join("bin"), t.join("state"));
    let open = t.join("open");
    std::fs::create_dir(&open).unwrap();
    set_mode(&open, 0o755);
    let zk = open.join("zk");
    let plan = scratch_plan(vec![zk_dir(&zk)], vec![]);
    let (line, tar) = up_line(&plan, &plan.hosts[0], &state);
    let (code, _, err) = run_sh(&line, &tar, &bin);
    assert_eq!(code, 0, "{err}");
    assert!(zk.is_dir());
    set_mode(&open, 0o777);
    let (code, out, err) = run_sh(&purge_line(&plan, &plan.hosts[0], &state), &[], &bin);
    assert_eq!(code, 0, "{err}");
    assert!(zk.is_dir(), "{out}");
    assert!(out.contains(&format!("`{}`", open.display())), "{out}");
}

/// The path of the host's own `tool`.
fn real(tool: &str) -> String {
    let out = std::process::Command::new("sh")
        .args(["-c", "command -v \"$1\"", "sh", tool])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// On a host whose `mv` has no `-T` and whose `stat` has no `%m`
/// (busybox), `up` still puts files in place, also on a file system of
/// their own (here a stand-in `stat` says `other` is one), staging them
/// at that file system's top; a folder (or a link to one) where a file
/// goes is refused, never moved into.
#[test]
fn up_puts_files_with_a_busybox_mv_and_stat() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (bin, state) = (t.join("bin"), t.join("state"));
    let other = t.join("other");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir(&other).unwrap();
    set_mode(&other, 0o755);
    stand_in(
        &bin,
        "mv",
        &format!(
            "#!/bin/sh\nfor a in \"$@\"; do case $a in --) break ;; -*T*) echo \"mv: invalid option -- 'T'\" >&2; exit 1 ;; esac; done\nexec {} \"$@\"\n",
            real("mv")
        ),
    );
    stand_in(
        &bin,
        "stat",
        &format!(
            "#!/bin/sh\nfor a in \"$@\"; do case $a in *%m*) echo \"stat: unknown format\" >&2; exit 1 ;; esac; done\nif [ \"$1 $2 $3\" = \"-c %d --\" ]; then case $4 in {o}|{o}/*) echo 999; exit 0 ;; esac; fi\nexec {} \"$@\"\n",
            real("stat"),
            o = other.display()
        ),
    );
    let zk = other.join("zk");
    let myid = zk.join("myid");
    let up = |content: &str| {
        let plan = scratch_plan(
            vec![zk_dir(&zk)],
            vec![(myid.display().to_string(), content)],
        );
        let (line, tar) = up_line(&plan, &plan.hosts[0], &state);
        run_sh(&line, &tar, &bin)
    };
    let (code, _, err) = up("1\n");
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&myid).unwrap(), "1\n");
    assert!(other.join(".ferry-stage").is_dir());
    // a link the container planted as the file is replaced
    let victim = t.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::fs::remove_file(&myid).unwrap();
    std::os::unix::fs::symlink(&victim, &myid).unwrap();
    let (code, _, err) = up("2\n");
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(std::fs::read_to_string(&myid).unwrap(), "2\n");
    // a link to a folder, or a folder, is refused: nothing goes into it
    let elsewhere = t.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::remove_file(&myid).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &myid).unwrap();
    let (code, _, err) = up("3\n");
    assert_ne!(code, 0);
    assert!(err.contains(&format!("`{}`", myid.display())), "{err}");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    std::fs::remove_file(&myid).unwrap();
    std::fs::create_dir(&myid).unwrap();
    let (code, _, err) = up("4\n");
    assert_ne!(code, 0);
    assert!(err.contains(&format!("`{}`", myid.display())), "{err}");
    assert_eq!(std::fs::read_dir(&myid).unwrap().count(), 0);
}

/// A container's log reaches the operator's terminal in a gate's
/// failure: its control characters are shown escaped (lines stay
/// lines), and a host's part is bounded.
#[test]
fn gate_logs_cannot_drive_the_terminal() {
    let shown = gate_logs(vec![(
        "node1".into(),
        "--- last lines of c:\n\u{1b}]0;owned\u{7}\u{1b}[2Jline\r\n".into(),
    )]);
    assert!(
        !shown.chars().any(|c| c.is_control() && c != '\n'),
        "{shown:?}"
    );
    assert!(
        shown.starts_with("node1:\n--- last lines of c:\n"),
        "{shown:?}"
    );
    assert!(shown.contains("\\u{1b}[2Jline"), "{shown:?}");
    let long = gate_logs(vec![("node1".into(), "x".repeat(1 << 20))]);
    assert!(long.len() <= (64 << 10) + 64, "{}", long.len());
}

/// A value that makes sed run a command, if it is ever part of a sed
/// program.
const SED_E: &str = ".*/touch pwned-sed-e/e;#";

/// Hostile owners (from the image's `ferry.*.user` labels) and image
/// references reach the `up` script as data: whether docker answers or
/// not, the script runs none of them and makes no file but the plan's.
#[test]
fn hostile_labels_and_image_references_run_nothing_in_the_up_script() {
    let docker_fails = "#!/bin/sh\nexit 1\n";
    let values: Vec<&str> = crate::ssh::script::tests::HOSTILE
        .iter()
        .copied()
        .chain([SED_E])
        .filter(|v| !v.contains('\0'))
        .collect();
    for v in values {
        for (field, docker) in [
            ("owner", STAND_IN_DOCKER),
            ("image", docker_fails),
            ("image", STAND_IN_DOCKER),
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let t = tmp.path();
            let (bin, state) = (t.join("bin"), t.join("state"));
            let zk = t.join("zk");
            let mut d = zk_dir(&zk);
            let mut plan;
            if field == "owner" {
                d.owner = v.to_string();
                plan = scratch_plan(vec![d], vec![]);
            } else {
                plan = scratch_plan(vec![d], vec![]);
                plan.image.reference = v.to_string();
            }
            let (line, tar) = up_line(&plan, &plan.hosts[0], &state);
            let _ = run_sh_with(&line, &tar, &bin, docker);
            let found: Vec<String> = tree(t)
                .into_iter()
                .filter(|p| {
                    !(p.starts_with("bin") || p.starts_with("state") || p.starts_with("zk"))
                })
                .collect();
            assert!(found.is_empty(), "{field} {v:?}: {found:?}");
            let pwned: Vec<String> = tree(t)
                .into_iter()
                .filter(|p| p.contains("pwned"))
                .collect();
            assert!(pwned.is_empty(), "{field} {v:?}: {pwned:?}");
        }
    }
}

fn mode(p: &std::path::Path) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions()) & 0o7777
}

fn set_mode(p: &std::path::Path, m: u32) {
    let mut perms = std::fs::metadata(p).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, m);
    std::fs::set_permissions(p, perms).unwrap();
}

/// The generated scripts themselves, on folders in a temporary tree: a
/// worker's host whose work folder `up` makes, and one whose work
/// folder the user had made (with a file of theirs in it).
#[test]
fn up_records_what_it_makes_and_purge_keeps_what_it_did_not() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (bin, root) = (t.join("bin"), t.join("state"));
    let mut plan = ha_with_work_dir();
    // a name of its own: the purge script also clears the cluster's
    // folders under /etc/ferry and /var/lib/ferry, of which it has none
    plan.cluster = format!("ferry-unit-{}", std::process::id());
    let mut host = plan.hosts[3].clone();
    let dir = |name: &str, owner: &str| super::super::plan::Dir {
        path: t.join(name).display().to_string(),
        owner: owner.into(),
        mode: "0750".into(),
    };
    host.dirs = vec![dir("made/work", "spark"), dir("theirs", "spark")];
    host.files.clear();
    host.secret = None;
    host.jaas.clear();
    plan.hosts = vec![host.clone()];
    let theirs = t.join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::write(theirs.join("data.csv"), "user data\n").unwrap();
    set_mode(&theirs, 0o755);
    give_to_image_user(&theirs);

    let (script, tar) = up_line(&plan, &host, &root);
    let (code, _, err) = run_sh(&script, &tar, &bin);
    assert_eq!(code, 0, "{err}");
    let made = t.join("made/work");
    let record = root.join(&plan.cluster).join("made");
    // the record is root's, outside every folder a container mounts
    assert_eq!(
        std::fs::read_to_string(&record).unwrap(),
        format!("{}\n", made.display())
    );
    assert_eq!(mode(&root.join(&plan.cluster)), 0o755);
    assert_eq!(mode(&root.join(&plan.cluster).join(".stage")), 0o700);
    assert_eq!(std::fs::read_dir(&made).unwrap().count(), 0);
    assert_eq!(mode(&made), 0o750);
    // the user's folder: used as it is, not recorded, its mode kept
    assert_eq!(mode(&theirs), 0o755);

    // a folder its daemon's user cannot write fails the host
    set_mode(&theirs, 0o555);
    let (code, _, err) = run_sh(&script, &tar, &bin);
    set_mode(&theirs, 0o755);
    assert_eq!(code, 1, "{err}");
    let (uid, gid) = image_ids();
    assert_eq!(
        err.trim(),
        format!(
            "`{p}` was not made by ferry and the image's user `spark` (uid {u}) cannot write it: give it to that user (`chown {u}:{g} {p}` there) or name a folder that does not exist yet (ferry makes it)",
            p = theirs.display(),
            u = uid.trim(),
            g = gid.trim()
        )
    );

    // another cluster's folder, and one the plan has on other hosts only
    let other = t.join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::create_dir(root.join("another")).unwrap();
    std::fs::write(root.join("another/made"), format!("{}\n", other.display())).unwrap();
    let elsewhere = t.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let mut purged = plan.clone();
    let mut h = host.clone();
    h.dirs.push(dir("other", "spark"));
    let mut away = host.clone();
    away.name = "away".into();
    away.dirs = vec![dir("elsewhere", "spark"), dir("made/work", "spark")];
    purged.hosts = vec![h.clone(), away];
    let (code, out, err) = run_sh(&purge_line(&purged, &h, &root), &[], &bin);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!(
            "{made}\nkept {other}: cluster `another` made it, not `{c}`\nkept {theirs}: it was there before ferry (ferry has no record of making it), so what the cluster wrote in it stays too\n",
            made = made.display(),
            other = other.display(),
            theirs = theirs.display(),
            c = plan.cluster
        )
    );
    assert!(!made.exists() && t.join("made").exists());
    assert_eq!(
        std::fs::read_to_string(theirs.join("data.csv")).unwrap(),
        "user data\n"
    );
    assert!(other.exists() && elsewhere.exists());
    // the record and the stage go with what they were for
    assert!(!root.join(&plan.cluster).exists());
}

/// A `docker` stand-in that keeps each call's arguments (NUL-ended) in
/// a file of its own next to it, answers `run --entrypoint` by running
/// the entry point here, finds nothing that is asked about, and does
/// everything else.
const LOGGING_DOCKER: &str = "#!/bin/sh\nlog=$(mktemp \"${0%/*}/call.XXXXXX\")\nfor a in \"$@\"; do printf '%s\\0' \"$a\"; done > \"$log\"\ncase $1 in\n  run) shift; ep=; while [ $# -gt 0 ]; do case $1 in --entrypoint) ep=$2; shift 2 ;; --network) shift 2 ;; --) shift; break ;; -*) shift ;; *) break ;; esac; done; [ -n \"$ep\" ] || exit 0; shift; exec \"$ep\" \"$@\" ;;\n  inspect|container|image|logs) exit 1 ;;\n  *) exit 0 ;;\nesac\n";

/// The arguments of each call the logging `docker` got.
fn docker_calls(bin: &std::path::Path) -> Vec<Vec<String>> {
    std::fs::read_dir(bin)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("call.")
        })
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            let mut args: Vec<String> = text.split('\0').map(str::to_string).collect();
            args.pop();
            args
        })
        .collect()
}

/// What one case of the property test builds from a hostile value and
/// the scratch folder: the script, its stdin, the paths (relative to
/// the scratch folder) the plan says it may make, and whether the
/// value must reach `docker` (as, or inside, one argument).
type Case = (
    &'static str,
    Box<dyn Fn(&str, &std::path::Path) -> (Script, Vec<u8>, Vec<String>, bool)>,
);

/// A case of the up script whose plan `edit` changes with the value.
fn up_edit(name: &'static str, reaches_docker: bool, edit: fn(&mut Plan, &str)) -> Case {
    (
        name,
        Box::new(move |v, t| {
            let (s, tar, p) = up_case(t, false, &|p| edit(p, v));
            (s, tar, p, reaches_docker)
        }),
    )
}

fn state_of(t: &std::path::Path) -> String {
    t.join("state").display().to_string()
}

/// The up script of a one-host plan changed by `change`, with the
/// planned paths it may make.
fn up_case(
    t: &std::path::Path,
    secret: bool,
    change: &dyn Fn(&mut Plan),
) -> (Script, Vec<u8>, Vec<String>) {
    let zk = t.join("zk");
    let mut plan = scratch_plan(
        vec![zk_dir(&zk)],
        vec![(zk.join("myid").display().to_string(), "1\n")],
    );
    if secret {
        plan.hosts[0].secret = Some(super::super::plan::SecretPlan {
            path: zk.join("secret").display().to_string(),
            owner: "zookeeper".into(),
            mode: "0600".into(),
        });
    }
    change(&mut plan);
    let host = &plan.hosts[0];
    let secret_line = format!("{SECRET_VAR}={}\n", "ab".repeat(32));
    let (s, tar) = write_files_script(
        &state_of(t),
        &plan,
        host,
        secret.then_some(secret_line.as_str()),
    );
    let planned = host
        .dirs
        .iter()
        .map(|d| d.path.clone())
        .chain(host.files.iter().map(|f| f.path.clone()))
        .chain(host.secret.iter().map(|s| s.path.clone()))
        .collect();
    (s, tar, planned)
}

fn cases() -> Vec<Case> {
    fn one(name: &'static str, text: &'static str) -> Case {
        (
            name,
            Box::new(move |v, _| (Script::new(text).arg(v), Vec::new(), Vec::new(), true)),
        )
    }
    let container = |v: &str| {
        let plan = ha_with_work_dir();
        let mut c = plan.hosts[3].containers[0].clone();
        // (ports are numbers ferry writes; the test's machine may use them)
        c.ports.clear();
        c.name = v.into();
        c.image = v.into();
        c.user = v.into();
        c.labels.insert("ferry.spec".into(), v.into());
        c.labels.insert(v.into(), v.into());
        c.env.insert("X".into(), v.into());
        c.env_file = Some(v.into());
        c.command.push(v.into());
        c.mounts.push(super::super::plan::Mount {
            source: v.into(),
            target: v.into(),
            read_only: true,
        });
        c
    };
    let mut cases: Vec<Case> = vec![
        up_edit("up: image reference", true, |p, v| {
            p.image.reference = v.into()
        }),
        up_edit(
            "up: a folder's owner (an image's user label)",
            false,
            |p, v| p.hosts[0].dirs[0].owner = v.into(),
        ),
        up_edit("up: a folder's mode", false, |p, v| {
            p.hosts[0].dirs[0].mode = v.into()
        }),
        up_edit("up: a file's mode", false, |p, v| {
            p.hosts[0].files[0].mode = v.into()
        }),
        (
            "up: a folder's and its file's path",
            Box::new(|v, t| {
                let dir = t.join("zk").join(v).display().to_string();
                let (s, tar, p) = up_case(t, false, &|p| {
                    p.hosts[0].dirs[0].path = dir.clone();
                    p.hosts[0].files[0].path = format!("{dir}/myid");
                });
                (s, tar, p, false)
            }),
        ),
        up_edit("up: the cluster's name", false, |p, v| p.cluster = v.into()),
        (
            "up: the secret's path and mode",
            Box::new(|v, t| {
                let path = t.join("zk").join(format!("s{v}")).display().to_string();
                let (s, tar, p) = up_case(t, true, &|p| {
                    let sec = p.hosts[0].secret.as_mut().unwrap();
                    sec.path = path.clone();
                    sec.mode = v.into();
                });
                (s, tar, p, false)
            }),
        ),
        (
            "down: the cluster's name",
            Box::new(|v, t| {
                let mut plan = scratch_plan(vec![], vec![]);
                plan.cluster = v.into();
                let s = remove_script(&state_of(t), &plan, &plan.hosts[0], false);
                (s, Vec::new(), Vec::new(), true)
            }),
        ),
        (
            "down --purge: a folder's path",
            Box::new(|v, t| {
                let plan = scratch_plan(vec![zk_dir(&t.join("keep").join(v))], vec![]);
                let s = remove_script(&state_of(t), &plan, &plan.hosts[0], true);
                (s, Vec::new(), Vec::new(), false)
            }),
        ),
        (
            "survey: a container's name",
            Box::new(|v, _| (Script::new(SURVEY_SH).arg(v), Vec::new(), Vec::new(), true)),
        ),
        (
            "ensure: every docker run argument",
            Box::new(move |v, _| (ensure_script(&container(v)), Vec::new(), Vec::new(), true)),
        ),
        (
            "image id: the reference",
            Box::new(|v, _| (image_id_script(v), Vec::new(), Vec::new(), true)),
        ),
        (
            "gate logs: a container's name",
            Box::new(|v, _| (logs_script(&[v], 15), Vec::new(), Vec::new(), true)),
        ),
        (
            "logs: the tail and the name",
            Box::new(|v, _| {
                let s = Script::new(LOGS_SH).arg(v).arg(v).arg(v);
                (s, Vec::new(), Vec::new(), true)
            }),
        ),
        (
            "down: the role filters",
            Box::new(|v, _| {
                let s = Script::new(STOP_ROLE_SH).arg(v).arg(v);
                (s, Vec::new(), Vec::new(), true)
            }),
        ),
        (
            "submit: every value",
            Box::new(|v, t| {
                let mut plan = ha_with_work_dir();
                plan.image.reference = v.into();
                plan.master_url = v.into();
                let mut on = plan.hosts[3].clone();
                let secret = t.join("keep").join("secret");
                std::fs::write(&secret, format!("{SECRET_VAR}={v}\n")).unwrap();
                on.secret.as_mut().unwrap().path = secret.display().to_string();
                on.address = v.into();
                let s = submit_script(&plan, &on, v, v, v, v, true, &[v.into()]);
                (s, b"job".to_vec(), Vec::new(), true)
            }),
        ),
    ];
    for (name, text) in [
        ("stop", handover::STOP),
        ("start", START_SH),
        ("restart", RESTART_SH),
        ("remove", REMOVE_SH),
        ("decommission", DECOMMISSION_SH),
        ("kill", KILL_SH),
        ("status", STATUS_SH),
    ] {
        cases.push(one(name, text));
    }
    cases.push((
        "read the secret: its path",
        Box::new(|v, _| (Script::new(READ_SH).arg(v), Vec::new(), Vec::new(), false)),
    ));
    cases
}

/// Every value that reaches a script of the launcher (each cluster-file
/// string, label, image reference and path), drawn from hostile
/// values, run through the real script by `sh` in a scratch folder:
/// nothing runs, and no file is made or removed but the plan's.
#[test]
fn hostile_values_reach_every_launch_script_as_data() {
    let values: Vec<&str> = crate::ssh::script::tests::HOSTILE
        .iter()
        .copied()
        .chain([SED_E])
        .filter(|v| !v.contains('\0'))
        .collect();
    for (name, build) in cases() {
        for v in &values {
            let tmp = tempfile::tempdir().unwrap();
            let t = tmp.path();
            let bin = t.join("bin");
            std::fs::create_dir_all(t.join("keep/a")).unwrap();
            std::fs::write(t.join("keep/a/user-file"), "mine\n").unwrap();
            let (script, stdin, planned, reaches_docker) = build(v, t);
            let before = tree(t);
            let (_, out, err) = run_sh_with(
                &script.command_line().unwrap(),
                &stdin,
                &bin,
                LOGGING_DOCKER,
            );
            // a planned path, or a folder on the way to one
            let may = |p: &str| {
                p.starts_with("bin")
                    || p.starts_with("state")
                    || before.iter().any(|b| b == p)
                    || planned
                        .iter()
                        .any(|q| std::path::Path::new(q).starts_with(t.join(p)))
            };
            let made: Vec<String> = tree(t).into_iter().filter(|p| !may(p)).collect();
            assert!(
                made.is_empty(),
                "{name}, {v:?}: made {made:?}\n{out}\n{err}"
            );
            let gone: Vec<&String> = before
                .iter()
                .filter(|p| std::fs::symlink_metadata(t.join(p)).is_err())
                .collect();
            assert!(
                gone.is_empty(),
                "{name}, {v:?}: removed {gone:?}\n{out}\n{err}"
            );
            if reaches_docker {
                let calls = docker_calls(&bin);
                assert!(
                    calls.iter().flatten().any(|a| a.contains(v)),
                    "{name}, {v:?}: no docker argument holds it: {calls:?}\n{err}"
                );
            }
        }
    }
}

#[test]
fn memory_sizes_in_mib() {
    assert_eq!(mib("512m"), Some(512));
    assert_eq!(mib("2g"), Some(2048));
    assert_eq!(mib("2G"), Some(2048));
    assert_eq!(mib("1t"), Some(1024 * 1024));
    assert_eq!(mib("100"), None);
    assert_eq!(mib(""), None);
}

/// A docker that has no container yet (inspect fails) and notes each run.
const NOTING_DOCKER: &str = "#!/bin/sh\ncase $1 in\n  container) exit 1 ;;\n  run) echo run >> \"${0%/*}/runs\" ;;\nesac\nexit 0\n";

#[test]
fn a_container_is_not_started_on_a_port_another_program_listens_on() {
    let t = tempfile::tempdir().unwrap();
    let bin = t.path().join("bin");
    let plan = ha_with_work_dir();
    let mut c = plan.hosts[3].containers[0].clone();
    // a port someone else holds (this test), on IPv4 and IPv6 tables alike
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    c.ports = vec![super::super::plan::Port {
        port,
        purpose: "test".into(),
    }];
    let line = ensure_script(&c).command_line().unwrap();
    let (code, _, err) = run_sh_with(&line, b"", &bin, NOTING_DOCKER);
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("port {port} is already in use on this host")),
        "{err}"
    );
    assert!(!bin.join("runs").exists(), "docker run ran");
    // once it is free, the container starts
    drop(taken);
    let (code, out, err) = run_sh_with(&line, b"", &bin, NOTING_DOCKER);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("started "), "{out}");
    assert!(bin.join("runs").exists());
}
