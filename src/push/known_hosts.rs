//! known_hosts, read by ferry itself rather than by libssh2.

#[cfg(test)]
mod sshd_tests {
    //! Against a real sshd on 127.0.0.1 with an ed25519 and an ECDSA host
    //! key, logged in to through [`Remote::connect`].

    use std::net::{TcpListener, TcpStream};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use crate::push::ssh::{Remote, SshOptions};
    use crate::push::{PushError, Target};

    /// Kills the sshd when the test ends, also when it panics.
    struct Sshd {
        child: Child,
        port: u16,
        dir: tempfile::TempDir,
    }

    impl Drop for Sshd {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl Sshd {
        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        /// The public host key of type `kind` (`ed25519`, `ecdsa`), as `type base64`.
        fn host_key(&self, kind: &str) -> String {
            let text = std::fs::read_to_string(self.path(&format!("host_{kind}.pub"))).unwrap();
            let mut f = text.split_whitespace();
            format!("{} {}", f.next().unwrap(), f.next().unwrap())
        }

        fn entry(&self) -> String {
            format!("[127.0.0.1]:{}", self.port)
        }

        fn connect(&self, known_hosts: &str) -> Result<Remote, PushError> {
            let kh = self.path("known_hosts");
            std::fs::write(&kh, known_hosts).unwrap();
            let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
            let t = Target::new(&user, "127.0.0.1", self.port);
            let o = SshOptions {
                identities: vec![self.path("client")],
                known_hosts: kh,
                accept_new_host_keys: false,
                connect_timeout: Duration::from_secs(10),
                command_timeout: Duration::from_secs(10),
                password: None,
                passphrase: None,
            };
            Remote::connect(&t, &o)
        }
    }

    fn keygen(kind: &str, path: &Path) {
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-t", kind, "-N", "", "-f"])
            .arg(path)
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "ssh-keygen -t {kind}");
    }

    /// An sshd of its own, or `None` (said loudly) when sshd is not installed.
    fn sshd() -> Option<Sshd> {
        let bin = Path::new("/usr/sbin/sshd");
        if !bin.exists() {
            eprintln!("SKIPPED: /usr/sbin/sshd is not installed (apt-get install openssh-server)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        keygen("ed25519", &d.join("host_ed25519"));
        keygen("ecdsa", &d.join("host_ecdsa"));
        keygen("ed25519", &d.join("client"));
        std::fs::copy(d.join("client.pub"), d.join("authorized_keys")).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "ListenAddress 127.0.0.1:{port}\nHostKey {d}/host_ed25519\nHostKey {d}/host_ecdsa\n\
             AuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\nUsePAM no\n\
             StrictModes no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n",
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let child = Command::new(bin)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut s = Sshd { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(s.child.try_wait().unwrap().is_none(), "sshd exited");
            assert!(Instant::now() < deadline, "sshd did not listen on {port}");
            std::thread::yield_now();
        }
        Some(s)
    }

    #[test]
    fn a_host_known_by_ed25519_only_is_asked_for_ed25519() {
        let Some(s) = sshd() else { return };
        let r = s.connect(&format!("{} {}\n", s.entry(), s.host_key("ed25519")));
        assert!(r.is_ok(), "{}", r.err().unwrap());
        // and by its ECDSA key only, for ECDSA
        let r = s.connect(&format!("{} {}\n", s.entry(), s.host_key("ecdsa")));
        assert!(r.is_ok(), "{}", r.err().unwrap());
    }

    #[test]
    fn a_bad_line_and_a_long_line_are_skipped() {
        let Some(s) = sshd() else { return };
        let long = format!("longhost ssh-ed25519 {}\n", "A".repeat(5000));
        let text = format!(
            "this is not a known_hosts line\n{long}{} {}\n",
            s.entry(),
            s.host_key("ed25519")
        );
        let r = s.connect(&text);
        assert!(r.is_ok(), "{}", r.err().unwrap());
    }

    #[test]
    fn a_revoked_host_key_is_refused_naming_the_line() {
        let Some(s) = sshd() else { return };
        let text = format!(
            "{e} {ed}\n{e} {ec}\n@revoked * {ed}\n@revoked * {ec}\n",
            e = s.entry(),
            ed = s.host_key("ed25519"),
            ec = s.host_key("ecdsa")
        );
        let err = s.connect(&text).err().expect("a revoked key is refused");
        let msg = err.to_string();
        assert!(msg.contains("revoked"), "{msg}");
        assert!(msg.contains("127.0.0.1"), "{msg}");
        assert!(msg.contains("known_hosts:3") || msg.contains("known_hosts:4"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn a_cert_authority_line_is_refused_clearly() {
        let Some(s) = sshd() else { return };
        let text = format!("@cert-authority {} {}\n", s.entry(), s.host_key("ed25519"));
        let err = s.connect(&text).err().expect("certificates are not supported");
        assert!(
            err.to_string().contains("certificate"),
            "{err}"
        );
    }
}
