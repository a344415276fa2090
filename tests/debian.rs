//! ferry reads a Debian archive itself: a real archive made here (real .debs
//! from `dpkg-deb`, a `Packages.xz`, an `InRelease` clear-signed by `gpg`
//! with a key made for the test) and served over HTTP on loopback by two
//! mirrors. A tampered index, a badly signed `InRelease` and a tampered .deb
//! are each refused with one line naming the file; a pinned file the first
//! mirror lacks comes from the second.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;
use common::ferry;

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sha256(p: &Path) -> String {
    let out = sh(Command::new("sha256sum").arg(p));
    out.split_whitespace().next().unwrap().to_string()
}

/// Serves `root` over HTTP on loopback until the test ends: GET only, a
/// path under `root` or 404.
fn serve(root: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let root = root.clone();
            std::thread::spawn(move || {
                let mut line = String::new();
                let mut r = BufReader::new(conn.try_clone().unwrap());
                if r.read_line(&mut line).is_err() {
                    return;
                }
                // the headers, up to the empty line
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let file = root.join(path.trim_start_matches('/'));
                let ok = !path.contains("..") && file.is_file();
                if ok {
                    let body = std::fs::read(&file).unwrap();
                    let _ = write!(
                        conn,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(&body);
                } else {
                    let _ = conn.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            });
        }
    });
    format!("http://127.0.0.1:{port}")
}

/// A test archive: suite `ferrytest`, component `main`, amd64.
struct Archive {
    _dir: tempfile::TempDir,
    /// Mirror roots: the first has everything, the second too (served apart).
    m1: PathBuf,
    m2: PathBuf,
    gnupg: PathBuf,
    keyring: PathBuf,
    def: PathBuf,
}

fn deb(work: &Path, name: &str, version: &str, depends: &str, file: &str, body: &str) -> PathBuf {
    let root = work.join(format!("{name}-root"));
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(root.join("usr/share/ferrytest")).unwrap();
    std::fs::write(root.join("usr/share/ferrytest").join(file), body).unwrap();
    let dep = if depends.is_empty() {
        String::new()
    } else {
        format!("Depends: {depends}\n")
    };
    std::fs::write(
        root.join("DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: amd64\nMaintainer: ferry tests <t@localhost>\n{dep}Description: a test package\n"
        ),
    )
    .unwrap();
    let out = work.join(format!("{name}_{version}_amd64.deb"));
    sh(Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group", "-Zxz"])
        .arg(&root)
        .arg(&out));
    out
}

impl Archive {
    fn new() -> Archive {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let gnupg = dir.path().join("gnupg");
        std::fs::create_dir_all(&gnupg).unwrap();
        std::fs::set_permissions(&gnupg, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        sh(Command::new("gpg").arg("--homedir").arg(&gnupg).args([
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            "ferry test archive <archive@localhost>",
            "ed25519",
            "sign",
            "never",
        ]));
        let keyring = dir.path().join("image/archive.gpg");
        std::fs::create_dir_all(keyring.parent().unwrap()).unwrap();
        let key = Command::new("gpg")
            .arg("--homedir")
            .arg(&gnupg)
            .args(["--export"])
            .output()
            .unwrap()
            .stdout;
        assert!(!key.is_empty());
        std::fs::write(&keyring, key).unwrap();

        let m1 = dir.path().join("m1");
        let pool = m1.join("pool/main/f/ferrytest");
        std::fs::create_dir_all(&pool).unwrap();
        let mut stanzas = String::new();
        for (name, dep, file, body) in [
            (
                "ferry-hello",
                "ferry-lib (>= 1.0)",
                "hello.txt",
                "hello from a test deb\n",
            ),
            ("ferry-lib", "", "lib.txt", "a library\n"),
        ] {
            let d = deb(&work, name, "1.0-1", dep, file, body);
            let fname = d.file_name().unwrap().to_string_lossy().into_owned();
            std::fs::copy(&d, pool.join(&fname)).unwrap();
            let size = std::fs::metadata(&d).unwrap().len();
            let depends = if dep.is_empty() {
                String::new()
            } else {
                format!("Depends: {dep}\n")
            };
            stanzas += &format!(
                "Package: {name}\nVersion: 1.0-1\nArchitecture: amd64\n{depends}Filename: pool/main/f/ferrytest/{fname}\nSize: {size}\nSHA256: {}\nDescription: a test package\n\n",
                sha256(&d)
            );
        }
        let bin = m1.join("dists/ferrytest/main/binary-amd64");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("Packages"), &stanzas).unwrap();
        sh(Command::new("xz")
            .args(["-k", "-9"])
            .arg(bin.join("Packages")));
        let a = Archive {
            m2: dir.path().join("m2"),
            _dir: dir,
            m1,
            gnupg,
            keyring,
            def: PathBuf::new(),
        };
        a.sign();
        sh(Command::new("cp").arg("-a").arg(&a.m1).arg(&a.m2));
        let def = a.keyring.parent().unwrap().join("image.toml");
        std::fs::write(
            &def,
            r#"name = "ferry/debtest"
tag = "1"
created = 0

[debian]
suites = ["ferrytest"]
components = ["main"]
keyring = "archive.gpg"

[[layer]]
name = "hello"
[[layer.source]]
deb = ["ferry-hello"]
closure = true
"#,
        )
        .unwrap();
        Archive { def, ..a }
    }

    /// Writes and clear-signs `dists/ferrytest/InRelease` of mirror 1 for
    /// the index files it has now.
    fn sign(&self) {
        let dists = self.m1.join("dists/ferrytest");
        let mut text = String::from(
            "Origin: ferry\nSuite: ferrytest\nCodename: ferrytest\nArchitectures: amd64\nComponents: main\nDate: Sat, 11 Jul 2026 10:16:37 UTC\nSHA256:\n",
        );
        for f in [
            "main/binary-amd64/Packages",
            "main/binary-amd64/Packages.xz",
        ] {
            let p = dists.join(f);
            text += &format!(
                " {} {} {f}\n",
                sha256(&p),
                std::fs::metadata(&p).unwrap().len()
            );
        }
        let mut child = Command::new("gpg")
            .arg("--homedir")
            .arg(&self.gnupg)
            .args(["--batch", "--yes", "--clearsign", "-o"])
            .arg(dists.join("InRelease"))
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
    }

    fn lock(&self, mirrors: &[&str], cache: &Path) -> (bool, String) {
        let mut cmd = ferry();
        cmd.arg("lock").arg(&self.def).env("FERRY_CACHE", cache);
        cmd.env_remove("FERRY_DEBIAN_MIRROR");
        for m in mirrors {
            cmd.args(["--debian-mirror", m]);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn build(&self, mirrors: &[&str], cache: &Path) -> (bool, String) {
        let mut cmd = ferry();
        cmd.arg("build")
            .arg(&self.def)
            .arg("--out")
            .arg(cache.join("out"))
            .env("FERRY_CACHE", cache)
            .env("FERRY_DEBIAN_MIRROR", mirrors.join(" "));
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn tools() -> bool {
    let ok = ["gpg", "dpkg-deb", "xz", "sha256sum"]
        .iter()
        .all(|t| Command::new(t).arg("--version").output().is_ok());
    if !ok {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "gpg, dpkg-deb and xz are needed under CI"
        );
        eprintln!("*** SKIPPED: gpg, dpkg-deb or xz is missing ***");
    }
    ok
}

/// The line of stderr that says `error:`.
fn error_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert!(!lines.is_empty(), "no error line in: {stderr}");
    eprintln!("refused as expected: {}", lines.join(" / "));
    lines.join("\n")
}

#[test]
fn locks_and_builds_from_a_signed_archive_and_refuses_tampering() {
    if !tools() {
        return;
    }
    let a = Archive::new();
    let m1 = serve(a.m1.clone());
    let m2 = serve(a.m2.clone());
    let cache = tempfile::tempdir().unwrap();
    let lock_file = a.def.with_file_name("image.lock");

    // the closure comes from the index: ferry-hello needs ferry-lib
    let (ok, err) = a.lock(&[&m1], cache.path());
    assert!(ok, "{err}");
    let lock = std::fs::read_to_string(&lock_file).unwrap();
    assert!(
        lock.contains("name = \"ferry-lib\"")
            && lock.contains("path = \"pool/main/f/ferrytest/ferry-lib_1.0-1_amd64.deb\""),
        "{lock}"
    );
    // and the build downloads both from the mirror, with no apt-get
    let (ok, err) = a.build(&[&m1], &cache.path().join("b1"));
    assert!(ok, "{err}");

    // a pinned file the first mirror lacks comes from the second
    let pool = "pool/main/f/ferrytest/ferry-lib_1.0-1_amd64.deb";
    std::fs::remove_file(a.m1.join(pool)).unwrap();
    let (ok, err) = a.build(&[&m1, &m2], &cache.path().join("b2"));
    assert!(ok, "{err}");
    // and with neither having it, the error names the file
    let (ok, err) = a.build(&[&m1], &cache.path().join("b3"));
    assert!(!ok);
    let line = error_line(&err);
    assert!(
        line.contains(pool) && line.contains("cannot download"),
        "{line}"
    );

    // a tampered .deb: the right size, other bytes
    let deb = a.m2.join(pool);
    let mut bytes = std::fs::read(&deb).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&deb, &bytes).unwrap();
    let (ok, err) = a.build(&[&m1, &m2], &cache.path().join("b4"));
    assert!(!ok);
    let line = error_line(&err);
    assert!(
        line.contains("sha256 mismatch") && line.contains(&format!("{m2}/{pool}")),
        "{line}"
    );
    assert!(
        !cache.path().join("b4/out/index.json").exists(),
        "no image is written from a tampered input"
    );

    // a tampered index: InRelease still signed, Packages.xz altered
    let before = std::fs::read_to_string(&lock_file).unwrap();
    let xz = a.m1.join("dists/ferrytest/main/binary-amd64/Packages.xz");
    let good_xz = std::fs::read(&xz).unwrap();
    let mut bad = good_xz.clone();
    bad[good_xz.len() / 2] ^= 0x01;
    std::fs::write(&xz, &bad).unwrap();
    let fresh = cache.path().join("l2");
    std::fs::remove_file(&lock_file).unwrap();
    let (ok, err) = a.lock(&[&m1], &fresh);
    assert!(!ok);
    let line = error_line(&err);
    assert!(
        line.contains("dists/ferrytest/main/binary-amd64/Packages.xz") && line.contains("altered"),
        "{line}"
    );
    assert!(
        !lock_file.exists(),
        "no lock is written from a tampered index"
    );
    std::fs::write(&xz, &good_xz).unwrap();

    // a tampered InRelease: one byte of the signed text changed
    let inrelease = a.m1.join("dists/ferrytest/InRelease");
    let good = std::fs::read_to_string(&inrelease).unwrap();
    std::fs::write(&inrelease, good.replace("Origin: ferry", "Origin: ferrx")).unwrap();
    let (ok, err) = a.lock(&[&m1], &fresh);
    assert!(!ok);
    let line = error_line(&err);
    assert!(
        line.contains(&format!("{m1}/dists/ferrytest/InRelease"))
            && line.contains("signature does not verify"),
        "{line}"
    );
    // nor does a text signed by another key verify against the keyring
    std::fs::write(&inrelease, &good).unwrap();
    let other = tempfile::tempdir().unwrap();
    let p = other.path().join("g");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    sh(Command::new("gpg").arg("--homedir").arg(&p).args([
        "--batch",
        "--passphrase",
        "",
        "--quick-gen-key",
        "someone else <x@localhost>",
        "ed25519",
        "sign",
        "never",
    ]));
    let plain = Command::new("gpg")
        .arg("--homedir")
        .arg(&a.gnupg)
        .args(["--batch", "--decrypt"])
        .arg(&inrelease)
        .output()
        .unwrap()
        .stdout;
    let mut child = Command::new("gpg")
        .arg("--homedir")
        .arg(&p)
        .args(["--batch", "--yes", "--clearsign", "-o"])
        .arg(&inrelease)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&plain).unwrap();
    assert!(child.wait().unwrap().success());
    let (ok, err) = a.lock(&[&m1], &fresh);
    assert!(!ok);
    assert!(
        error_line(&err).contains("signature does not verify"),
        "{err}"
    );
    std::fs::write(&inrelease, &good).unwrap();
    std::fs::write(&lock_file, &before).unwrap();
    let (ok, err) = a.lock(&[&m1], &fresh);
    assert!(ok, "the restored archive locks again: {err}");
}
