//! End-to-end tests of `nix` sources: small closures (a chain and a diamond,
//! tests/nix/closures.nix) are built with the host's Nix, locked and built
//! into images by the real `ferry`, and the images are checked with skopeo,
//! umoci and Docker. Run by `bash tests/nix/closure-e2e.sh`, which installs
//! what is missing; without `nix-store` every test skips loudly.
//!
//! Nix runs as root with no daemon under a private nix.conf (no build users,
//! no sandbox, no binary cache), as tests/nix/check.sh sets it up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A loud notice straight to the stream (the test harness hides `eprintln!`
/// of passing tests); in CI, where everything is installed, a failure.
fn skip(test: &str, why: &str) {
    use std::io::Write;
    let notice =
        format!("*** SKIPPED {test}: {why}; run `bash tests/nix/closure-e2e.sh` to install it ***");
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{notice}");
    let _ = writeln!(std::io::stderr().lock(), "\n{notice}\n");
}

/// The private Nix configuration every `nix` call (ours and ferry's) uses.
fn nix_conf() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ferry-nix-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("nix.conf"),
            "build-users-group =\nsandbox = false\nsubstituters =\nflake-registry =\nexperimental-features = nix-command flakes\n",
        )
        .unwrap();
        dir
    })
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .env("NIX_CONF_DIR", nix_conf())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout)
        .unwrap()
        .trim()
        .to_string()
}

/// A static busybox: the only program the images may run.
fn busybox() -> Option<PathBuf> {
    let p = PathBuf::from(
        std::env::var_os("FERRY_TEST_BUSYBOX").unwrap_or_else(|| "/bin/busybox".into()),
    );
    let bytes = std::fs::read(&p).ok()?;
    // a dynamic executable names its loader; a static one does not
    let dynamic = bytes.windows(11).any(|w| w == b"/lib64/ld-l");
    (!dynamic).then_some(p)
}

/// Why these tests cannot run here, if they cannot.
fn missing() -> Option<String> {
    if !have("nix-store") || !have("nix-build") || !have("nix") {
        return Some("`nix-store` is not installed (Debian: nix-bin)".into());
    }
    if busybox().is_none() {
        return Some("no static busybox at /bin/busybox (Debian: busybox-static)".into());
    }
    None
}

/// Builds attribute `attr` of tests/nix/closures.nix; `tag` makes new paths.
fn nix_build(attr: &str, tag: &str, out_link: Option<&Path>) -> String {
    let mut cmd = Command::new("nix-build");
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nix/closures.nix"))
        .arg("--arg")
        .arg("busybox")
        .arg(busybox().unwrap())
        .args(["--argstr", "tag", tag, "-A", attr]);
    match out_link {
        Some(l) => cmd.arg("--out-link").arg(l),
        None => cmd.arg("--no-out-link"),
    };
    stdout(&mut cmd)
}

fn closure_of(path: &str) -> BTreeSet<String> {
    stdout(Command::new("nix-store").args(["-qR", path]))
        .lines()
        .map(String::from)
        .collect()
}

fn references_of(path: &str) -> BTreeSet<String> {
    stdout(Command::new("nix-store").args(["-q", "--references", path]))
        .lines()
        .filter(|r| *r != path)
        .map(String::from)
        .collect()
}

fn ferry(cache: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
    c.env("FERRY_CACHE", cache);
    c
}

/// Writes a definition with one `nix` layer and returns its path.
fn definition(dir: &Path, name: &str, nix: &[&str], extra: &str, entrypoint: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let list: Vec<String> = nix.iter().map(|p| format!("\"{p}\"")).collect();
    let text = format!(
        "name = \"ferry/{name}\"\ntag = \"1\"\ncreated = \"2024-01-01T00:00:00Z\"\n\n[config]\nentrypoint = [\"{entrypoint}\"]\n\n[[layer]]\nname = \"nix\"\n[[layer.source]]\nnix = [{}]\n{extra}",
        list.join(", ")
    );
    let p = dir.join("image.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// The image's layers bottom first: (digest, store paths) from the manifest.
fn layers(layout: &Path) -> Vec<(String, Vec<String>)> {
    let read =
        |p: PathBuf| -> Value { serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap() };
    let index = read(layout.join("index.json"));
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest = read(layout.join("blobs/sha256").join(&digest[7..]));
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let paths = l["annotations"]["io.ferry.nix.store-paths"]
                .as_str()
                .unwrap_or("")
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            (l["digest"].as_str().unwrap().to_string(), paths)
        })
        .collect()
}

/// Every file of a layout, by relative path, with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Locks and builds `def` into `out` (and a docker-archive beside it).
fn lock_and_build(def: &Path, cache: &Path, out: &Path) {
    run(ferry(cache).arg("lock").arg(def));
    run(ferry(cache)
        .arg("build")
        .arg(def)
        .arg("--out")
        .arg(out)
        .arg("--docker-archive")
        .arg(out.with_extension("tar")));
}

/// One layer per store path, the layers are the closure, and every path
/// sits above the paths it refers to.
fn assert_one_layer_per_path_in_reference_order(out: &Path, root: &str) {
    let layers = layers(out);
    assert!(layers.iter().all(|(_, p)| p.len() == 1), "{layers:?}");
    let in_image: Vec<String> = layers.iter().map(|(_, p)| p[0].clone()).collect();
    let as_set: BTreeSet<String> = in_image.iter().cloned().collect();
    assert_eq!(as_set.len(), in_image.len(), "a path in two layers");
    assert_eq!(
        as_set,
        closure_of(root),
        "the layers are not `nix-store -qR`"
    );
    for (i, p) in in_image.iter().enumerate() {
        for r in references_of(p) {
            let j = in_image.iter().position(|x| *x == r).unwrap();
            assert!(
                j < i,
                "`{p}` (layer {i}) is below its reference `{r}` (layer {j})"
            );
        }
    }
}

fn check_with_tools(test: &str, out: &Path, work: &Path, program: &str, expected: &str) {
    if have("skopeo") {
        let info = stdout(
            Command::new("skopeo")
                .arg("inspect")
                .arg(format!("oci:{}:1", out.display())),
        );
        let v: Value = serde_json::from_str(&info).unwrap();
        assert_eq!(v["Layers"].as_array().unwrap().len(), layers(out).len());
    } else {
        skip(
            test,
            "`skopeo` is not installed; the layout was NOT checked by skopeo",
        );
    }
    if have("umoci") {
        let bundle = work.join("bundle");
        run(Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:1", out.display()))
            .arg(&bundle));
        let unpacked = bundle.join("rootfs").join(program.trim_start_matches('/'));
        assert!(unpacked.is_file(), "`{}` not unpacked", unpacked.display());
    } else {
        skip(
            test,
            "`umoci` is not installed; the layout was NOT unpacked by umoci",
        );
    }
    let docker_up = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    if !docker_up {
        skip(
            test,
            "no Docker daemon answers `docker info`; the image was NOT run",
        );
        return;
    }
    let loaded = stdout(
        Command::new("docker")
            .arg("load")
            .arg("-i")
            .arg(out.with_extension("tar")),
    );
    assert!(loaded.contains("Loaded image"), "{loaded}");
    let image = loaded.rsplit(' ').next().unwrap().to_string();
    let said = stdout(Command::new("docker").args(["run", "--rm", "--network", "none", &image]));
    let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
    assert_eq!(said, expected);
}

/// The whole story for one closure: lock, build twice from cold caches,
/// compare bytes, check the layers against Nix, hand it to the tools.
fn closure_image(test: &str, attr: &str, program: &str, expected: &str) {
    if let Some(why) = missing() {
        return skip(test, &why);
    }
    let work = tempfile::tempdir().unwrap();
    let root = nix_build(attr, "1", None);
    let entry = format!("{root}{program}");
    let def = definition(&work.path().join("def"), attr, &[&root], "", &entry);
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    lock_and_build(&def, &work.path().join("cache-a"), &a);
    lock_and_build(&def, &work.path().join("cache-b"), &b);
    assert!(
        files(&a) == files(&b),
        "two builds of the same closure differ"
    );
    assert_eq!(
        std::fs::read(a.with_extension("tar")).unwrap(),
        std::fs::read(b.with_extension("tar")).unwrap(),
        "two docker-archives of the same closure differ"
    );
    assert_one_layer_per_path_in_reference_order(&a, &root);
    let shown = stdout(ferry(&work.path().join("cache-a")).arg("inspect").arg(&a));
    let base = root.rsplit('/').next().unwrap();
    assert!(shown.contains(&format!("nix-{base}")), "{shown}");
    check_with_tools(test, &a, work.path(), &entry, expected);
}

#[test]
fn chain_closure_is_one_layer_per_path_and_runs() {
    closure_image("chain", "app", "/bin/app", "hello from the chain");
}

#[test]
fn diamond_closure_is_one_layer_per_path_and_runs() {
    closure_image("diamond", "top", "/bin/top", "hello from the diamond");
}

#[test]
fn a_small_budget_puts_the_least_popular_paths_in_one_top_layer() {
    if let Some(why) = missing() {
        return skip("budget", &why);
    }
    let work = tempfile::tempdir().unwrap();
    let top = nix_build("top", "1", None);
    let def = definition(work.path(), "budget", &[&top], "max_layers = 3\n", "/x");
    let out = work.path().join("out");
    lock_and_build(&def, &work.path().join("cache"), &out);
    let layers = layers(&out);
    assert_eq!(layers.len(), 3, "{layers:?}");
    let solo: Vec<&String> = layers[..2].iter().map(|(_, p)| &p[0]).collect();
    assert!(solo[0].ends_with("-busybox"), "{solo:?}");
    assert!(solo[1].ends_with("-bottom-1.0"), "{solo:?}");
    let rest: BTreeSet<&str> = layers[2].1.iter().map(String::as_str).collect();
    let all: BTreeSet<String> = closure_of(&top);
    let expected: BTreeSet<&str> = all
        .iter()
        .map(String::as_str)
        .filter(|p| !solo.iter().any(|s| s == p))
        .collect();
    assert_eq!(rest, expected);
}

#[test]
fn adding_a_package_keeps_every_other_layer_and_the_cache_serves_them() {
    if let Some(why) = missing() {
        return skip("stability", &why);
    }
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let (app, top) = (nix_build("app", "1", None), nix_build("top", "1", None));
    let one = definition(&work.path().join("one"), "one", &[&app], "", "/x");
    let two = definition(&work.path().join("two"), "two", &[&app, &top], "", "/x");
    lock_and_build(&one, &cache, &work.path().join("one-out"));
    run(ferry(&cache).arg("lock").arg(&two));
    let built = run(ferry(&cache)
        .arg("build")
        .arg(&two)
        .arg("--out")
        .arg(work.path().join("two-out")));
    let before: BTreeSet<String> = layers(&work.path().join("one-out"))
        .into_iter()
        .map(|l| l.0)
        .collect();
    let after: BTreeSet<String> = layers(&work.path().join("two-out"))
        .into_iter()
        .map(|l| l.0)
        .collect();
    assert!(before.is_subset(&after), "{before:?} not in {after:?}");
    // busybox is the one shared path the diamond adds nothing to: from the cache
    let log = String::from_utf8_lossy(&built.stderr).to_string()
        + &String::from_utf8_lossy(&built.stdout);
    let busybox_line = log
        .lines()
        .find(|l| l.contains("-busybox`"))
        .unwrap_or_else(|| panic!("no busybox layer in\n{log}"));
    assert!(busybox_line.contains("cached"), "{log}");
}

#[test]
fn lock_check_notices_an_installable_that_now_names_another_build() {
    if let Some(why) = missing() {
        return skip("lock --check", &why);
    }
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let link = work.path().join("result");
    nix_build("app", "1", Some(&link));
    // relative to the definition's folder, not to where ferry runs
    let def = definition(work.path(), "check", &["./result"], "", "/x");
    run(ferry(&cache).arg("lock").arg(&def));
    run(ferry(&cache).args(["lock", "--check"]).arg(&def));
    let lock = std::fs::read_to_string(def.with_file_name("image.lock")).unwrap();
    assert!(lock.contains("nar_hash = \"sha256"), "{lock}");
    // the out-link now points at another build of the chain
    nix_build("app", "2", Some(&link));
    let out = ferry(&cache)
        .args(["lock", "--check"])
        .arg(&def)
        .env("NIX_CONF_DIR", nix_conf())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "--check passed on a changed closure");
    assert!(err.contains("not the locked one"), "{err}");
    run(ferry(&cache).arg("lock").arg(&def).arg("--update"));
    run(ferry(&cache).args(["lock", "--check"]).arg(&def));
}

#[test]
fn a_built_derivation_stands_for_its_outputs() {
    if let Some(why) = missing() {
        return skip("derivation", &why);
    }
    let work = tempfile::tempdir().unwrap();
    let top = nix_build("top", "1", None);
    let drv = stdout(
        Command::new("nix-instantiate")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nix/closures.nix"))
            .arg("--arg")
            .arg("busybox")
            .arg(busybox().unwrap())
            .args(["--argstr", "tag", "1", "-A", "top"]),
    );
    assert!(drv.ends_with(".drv"), "{drv}");
    let def = definition(work.path(), "drv", &[&drv], "", "/x");
    let out = work.path().join("out");
    lock_and_build(&def, &work.path().join("cache"), &out);
    assert_one_layer_per_path_in_reference_order(&out, &top);
}

#[test]
fn two_nix_layers_share_store_paths_once_and_compose_with_other_layers() {
    if let Some(why) = missing() {
        return skip("two layers", &why);
    }
    let work = tempfile::tempdir().unwrap();
    let (app, top) = (nix_build("app", "1", None), nix_build("top", "1", None));
    let def = work.path().join("image.toml");
    std::fs::write(
        &def,
        format!(
            "name = \"ferry/two\"\ntag = \"1\"\ncreated = 0\n\n[config]\nentrypoint = [\"/bin/app\"]\n\n\
             [[layer]]\nname = \"chain\"\n[[layer.source]]\nnix = [\"{app}\"]\n\n\
             [[layer]]\nname = \"diamond\"\n[[layer.source]]\nnix = [\"{top}\"]\n\n\
             [[layer]]\nname = \"links\"\n[[layer.symlink]]\npath = \"/bin/app\"\ntarget = \"{app}/bin/app\"\n"
        ),
    )
    .unwrap();
    let out = work.path().join("out");
    lock_and_build(&def, &work.path().join("cache"), &out);
    let layers = layers(&out);
    let paths: Vec<&String> = layers.iter().flat_map(|l| &l.1).collect();
    let unique: BTreeSet<&String> = paths.iter().copied().collect();
    assert_eq!(paths.len(), unique.len(), "a store path in two layers");
    let both: BTreeSet<String> = closure_of(&app).union(&closure_of(&top)).cloned().collect();
    assert_eq!(unique.into_iter().cloned().collect::<BTreeSet<_>>(), both);
    // the diamond's layers start after the chain's, with the shared busybox left out
    let chain_len = closure_of(&app).len();
    assert!(
        layers[chain_len].1[0].ends_with("-bottom-1.0"),
        "{layers:?}"
    );
    assert_eq!(layers.len(), both.len() + 1, "the links layer is last");
    check_with_tools(
        "two layers",
        &out,
        work.path(),
        &format!("{app}/bin/app"),
        "hello from the chain",
    );
}

#[test]
fn build_refuses_a_locked_path_the_store_no_longer_has() {
    if let Some(why) = missing() {
        return skip("collected", &why);
    }
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    // a path of its own, so deleting it takes nothing from the other tests
    let tag = format!("gone-{}", std::process::id());
    let lib = nix_build("lib", &tag, None);
    let def = definition(work.path(), "collected", &[&lib], "", "/x");
    run(ferry(&cache).arg("lock").arg(&def));
    run(Command::new("nix-store").args(["--delete", &lib]));
    let out = ferry(&cache)
        .arg("build")
        .arg(&def)
        .arg("--out")
        .arg(work.path().join("out"))
        .env("NIX_CONF_DIR", nix_conf())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "built without `{lib}`");
    assert!(
        err.contains(&format!("`{lib}` is not in the Nix store")),
        "{err}"
    );
    assert!(!work.path().join("out").exists(), "a half-written image");
}
