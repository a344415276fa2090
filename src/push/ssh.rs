//! One SSH session to one host: connect with a deadline, check the host key
//! against known_hosts (trust on first use only when asked), log in with
//! ssh-agent, key files or a password, and run POSIX shell scripts with data
//! on stdin. It knows nothing of images or stores.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use ssh2::{CheckResult, HashType, KnownHostFileKind, Session};

use super::{PushError, Target, sh_quote};

pub struct SshOptions {
    /// Private keys to try, in order, after ssh-agent's (missing files are skipped).
    pub identities: Vec<PathBuf>,
    pub known_hosts: PathBuf,
    /// Record the key of a host missing from known_hosts instead of refusing it.
    pub accept_new_host_keys: bool,
    pub connect_timeout: Duration,
    /// The longest a command may go without progress (no bytes either way).
    pub command_timeout: Duration,
    pub password: Option<String>,
    pub passphrase: Option<String>,
}

/// The keys tried when no `--identity` is given: `~/.ssh/id_ed25519`, then `~/.ssh/id_rsa`.
pub fn default_identities(home: &Path) -> Vec<PathBuf> {
    ["id_ed25519", "id_rsa"]
        .iter()
        .map(|n| home.join(".ssh").join(n))
        .collect()
}

/// Hosts are pushed to in parallel and may all append to one known_hosts file.
static KNOWN_HOSTS_WRITE: Mutex<()> = Mutex::new(());

/// A logged-in session to one host.
pub struct Remote {
    sess: Session,
    label: String,
    command_timeout: Duration,
}

fn secs(d: Duration) -> u64 {
    d.as_secs().max(1)
}

fn is_timeout(e: &ssh2::Error) -> bool {
    matches!(e.code(), ssh2::ErrorCode::Session(-9)) // LIBSSH2_ERROR_TIMEOUT
}

/// OpenSSH's way of showing a fingerprint: `SHA256:` and unpadded base64.
fn fingerprint(hash: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::from("SHA256:");
    for chunk in hash.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            s.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    s
}

impl Remote {
    pub fn connect(t: &Target, o: &SshOptions) -> Result<Remote, PushError> {
        let label = t.label();
        let connect_err = |source| PushError::Connect {
            host: label.clone(),
            source,
        };
        let addrs: Vec<_> = (t.host.as_str(), t.port)
            .to_socket_addrs()
            .map_err(connect_err)?
            .collect();
        let mut last = std::io::Error::new(ErrorKind::NotFound, "the name has no address");
        let mut tcp = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, o.connect_timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let tcp = match tcp {
            Some(s) => s,
            None if last.kind() == ErrorKind::TimedOut => {
                return Err(PushError::ConnectTimeout {
                    host: label,
                    secs: secs(o.connect_timeout),
                });
            }
            None => return Err(connect_err(last)),
        };
        let _ = tcp.set_nodelay(true);
        let ssh_err = |what: &str, e: ssh2::Error| {
            if is_timeout(&e) {
                PushError::ConnectTimeout {
                    host: label.clone(),
                    secs: secs(o.connect_timeout),
                }
            } else {
                PushError::Ssh {
                    host: label.clone(),
                    what: what.to_string(),
                    source: e,
                }
            }
        };
        let mut sess = Session::new().map_err(|e| ssh_err("starting a session", e))?;
        sess.set_tcp_stream(tcp);
        sess.set_timeout(o.connect_timeout.as_millis().min(u128::from(u32::MAX)) as u32);
        sess.handshake().map_err(|e| ssh_err("the handshake", e))?;
        check_host_key(&sess, t, o)?;
        authenticate(&sess, t, o).map_err(|e| match e {
            Err(e) => ssh_err("logging in", e),
            Ok(tried) => PushError::Auth {
                host: label.clone(),
                user: t.user.clone(),
                tried,
            },
        })?;
        sess.set_timeout(o.command_timeout.as_millis().min(u128::from(u32::MAX)) as u32);
        Ok(Remote {
            sess,
            label,
            command_timeout: o.command_timeout,
        })
    }

    pub fn label(&self) -> String {
        self.label.clone()
    }

    /// Names a failed read or write on a channel, telling a timeout apart.
    pub fn io_error(&self, what: &str, e: std::io::Error) -> PushError {
        if e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::WouldBlock {
            PushError::Timeout {
                host: self.label.clone(),
                what: what.to_string(),
                secs: secs(self.command_timeout),
            }
        } else {
            PushError::Channel {
                host: self.label.clone(),
                what: what.to_string(),
                source: e,
            }
        }
    }

    fn ssh_error(&self, what: &str, e: ssh2::Error) -> PushError {
        if is_timeout(&e) {
            PushError::Timeout {
                host: self.label.clone(),
                what: what.to_string(),
                secs: secs(self.command_timeout),
            }
        } else {
            PushError::Ssh {
                host: self.label.clone(),
                what: what.to_string(),
                source: e,
            }
        }
    }

    /// Runs `script` with `stdin` and returns its stdout; any exit status but 0 is an error.
    pub fn run_ok(&self, what: &str, script: &str, stdin: &[u8]) -> Result<Vec<u8>, PushError> {
        let mut feed = |w: &mut dyn Write| w.write_all(stdin).map_err(|e| self.io_error(what, e));
        self.run_checked(what, script, &mut feed, &[0])
    }

    /// Runs `script` under `sh` (whatever the user's login shell), lets `feed`
    /// write its stdin, and returns its stdout when the exit status is one of `ok`.
    pub fn run_checked(
        &self,
        what: &str,
        script: &str,
        feed: &mut dyn FnMut(&mut dyn Write) -> Result<(), PushError>,
        ok: &[i32],
    ) -> Result<Vec<u8>, PushError> {
        let mut ch = self
            .sess
            .channel_session()
            .map_err(|e| self.ssh_error(what, e))?;
        ch.exec(&format!("sh -c {}", sh_quote(script)))
            .map_err(|e| self.ssh_error(what, e))?;
        let fed = feed(&mut ch);
        // after a failed write the script may have exited early: its status says more
        let _ = ch.send_eof();
        let mut stdout = Vec::new();
        let read = ch.read_to_end(&mut stdout);
        let mut stderr = String::new();
        let _ = ch.stderr().read_to_string(&mut stderr);
        let closed = ch.wait_close();
        let status = ch.exit_status().ok().filter(|_| closed.is_ok());
        match (status, fed) {
            (Some(s), Ok(())) if ok.contains(&s) => {
                read.map_err(|e| self.io_error(what, e))?;
                Ok(stdout)
            }
            (Some(s), _) if !ok.contains(&s) => Err(PushError::Remote {
                host: self.label.clone(),
                what: what.to_string(),
                status: s,
                stderr: stderr.trim().to_string(),
            }),
            (_, Err(e)) => Err(e),
            _ => Err(match (read, closed) {
                (Err(e), _) => self.io_error(what, e),
                (_, Err(e)) => self.ssh_error(what, e),
                _ => self.io_error(
                    what,
                    std::io::Error::other("the channel closed without an exit status"),
                ),
            }),
        }
    }
}

impl Remote {
    /// Runs `script` with `stdin`, copying its stdout (and stderr, when the
    /// script redirects it) to `out` as it comes; returns the exit status.
    /// No command timeout applies: a job or `logs --follow` may be quiet
    /// for long.
    pub fn run_streaming(
        &self,
        what: &str,
        script: &str,
        stdin: &[u8],
        out: &mut dyn Write,
    ) -> Result<i32, PushError> {
        let mut ch = self
            .sess
            .channel_session()
            .map_err(|e| self.ssh_error(what, e))?;
        ch.exec(&format!("sh -c {}", sh_quote(script)))
            .map_err(|e| self.ssh_error(what, e))?;
        ch.write_all(stdin).map_err(|e| self.io_error(what, e))?;
        ch.send_eof().map_err(|e| self.ssh_error(what, e))?;
        self.sess.set_timeout(0);
        let mut buf = vec![0u8; 64 * 1024];
        let copied = loop {
            match ch.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    // a closed terminal ends the copy, not the command's report
                    if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                        break Ok(());
                    }
                }
                Err(e) => break Err(e),
            }
        };
        self.sess
            .set_timeout(self.command_timeout.as_millis().min(u128::from(u32::MAX)) as u32);
        copied.map_err(|e| self.io_error(what, e))?;
        ch.wait_close().map_err(|e| self.ssh_error(what, e))?;
        ch.exit_status().map_err(|e| self.ssh_error(what, e))
    }

    /// Opens a TCP connection from the host to `host:port` (SSH port
    /// forwarding), sends `request` and returns everything the server sends
    /// until it closes, within `timeout`. Health checks use it, so they see
    /// what the host sees, bastions and firewalls included.
    pub fn exchange(
        &self,
        host: &str,
        port: u16,
        request: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, PushError> {
        let what = format!("connecting from the host to {host}:{port}");
        self.sess
            .set_timeout(timeout.as_millis().min(u128::from(u32::MAX)) as u32);
        let result = (|| {
            let mut ch = self
                .sess
                .channel_direct_tcpip(host, port, None)
                .map_err(|e| self.ssh_error(&what, e))?;
            ch.write_all(request).map_err(|e| self.io_error(&what, e))?;
            let mut answer = Vec::new();
            ch.read_to_end(&mut answer)
                .map_err(|e| self.io_error(&what, e))?;
            let _ = ch.close();
            Ok(answer)
        })();
        self.sess
            .set_timeout(self.command_timeout.as_millis().min(u128::from(u32::MAX)) as u32);
        result
    }
}

fn check_host_key(sess: &Session, t: &Target, o: &SshOptions) -> Result<(), PushError> {
    let label = t.label();
    let ssh_err = |e| PushError::Ssh {
        host: label.clone(),
        what: "reading known_hosts".into(),
        source: e,
    };
    let (key, key_type) = sess.host_key().ok_or_else(|| PushError::Ssh {
        host: label.clone(),
        what: "reading the host key".into(),
        source: ssh2::Error::unknown(),
    })?;
    let fp = fingerprint(sess.host_key_hash(HashType::Sha256).unwrap_or_default());
    let mut kh = sess.known_hosts().map_err(ssh_err)?;
    if o.known_hosts.exists() {
        kh.read_file(&o.known_hosts, KnownHostFileKind::OpenSSH)
            .map_err(ssh_err)?;
    }
    match kh.check_port(&t.host, t.port, key) {
        CheckResult::Match => Ok(()),
        CheckResult::Mismatch => Err(PushError::HostKeyMismatch {
            host: label,
            entry: t.known_hosts_entry(),
            fingerprint: fp,
            known_hosts: o.known_hosts.clone(),
        }),
        CheckResult::NotFound | CheckResult::Failure if !o.accept_new_host_keys => {
            Err(PushError::UnknownHostKey {
                host: label,
                fingerprint: fp,
                known_hosts: o.known_hosts.clone(),
            })
        }
        CheckResult::NotFound | CheckResult::Failure => {
            // a fresh collection renders just this host's line
            let mut one = sess.known_hosts().map_err(ssh_err)?;
            one.add(
                &t.known_hosts_entry(),
                key,
                "added by ferry push",
                key_type.into(),
            )
            .map_err(ssh_err)?;
            let host = one
                .hosts()
                .map_err(ssh_err)?
                .into_iter()
                .next()
                .ok_or_else(|| ssh_err(ssh2::Error::unknown()))?;
            let line = one
                .write_string(&host, KnownHostFileKind::OpenSSH)
                .map_err(ssh_err)?;
            append_known_host(&o.known_hosts, &line).map_err(|source| PushError::KnownHostsWrite {
                host: label,
                path: o.known_hosts.clone(),
                source,
            })
        }
    }
}

fn append_known_host(path: &Path, line: &str) -> std::io::Result<()> {
    let _guard = KNOWN_HOSTS_WRITE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let needs_newline = f.metadata()?.len() > 0 && !std::fs::read(path)?.ends_with(b"\n");
    let line = line.trim_end();
    f.write_all(format!("{}{line}\n", if needs_newline { "\n" } else { "" }).as_bytes())?;
    f.sync_all()
}

/// Tries ssh-agent, the key files, then the password. `Ok(tried)` when all
/// were refused (the list of what was tried, for the message); `Err` when
/// the session itself failed.
fn authenticate(
    sess: &Session,
    t: &Target,
    o: &SshOptions,
) -> Result<(), Result<String, ssh2::Error>> {
    let mut tried = Vec::new();
    if std::env::var_os("SSH_AUTH_SOCK").is_some() {
        let agent = sess
            .agent()
            .and_then(|mut a| a.connect().and_then(|()| a.list_identities()).map(|()| a));
        if let Ok(agent) = agent {
            let ids = agent.identities().unwrap_or_default();
            tried.push(format!("ssh-agent ({} keys)", ids.len()));
            for id in &ids {
                if agent.userauth(&t.user, id).is_ok() {
                    return Ok(());
                }
            }
        }
    }
    for path in o.identities.iter().filter(|p| p.exists()) {
        tried.push(format!("`{}`", path.display()));
        if sess
            .userauth_pubkey_file(&t.user, None, path, o.passphrase.as_deref())
            .is_ok()
        {
            return Ok(());
        }
    }
    if let Some(pw) = &o.password {
        tried.push("FERRY_SSH_PASSWORD".into());
        if sess.userauth_password(&t.user, pw).is_ok() {
            return Ok(());
        }
    }
    if sess.authenticated() {
        return Ok(());
    }
    if tried.is_empty() {
        tried.push("no ssh-agent, no key file, no password".into());
    }
    Err(Ok(tried.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_look_like_openssh() {
        // `ssh-keygen -lf` prints unpadded base64 of the sha256
        assert_eq!(fingerprint(b"\x00\x00\x00"), "SHA256:AAAA");
        assert_eq!(fingerprint(b"foob"), "SHA256:Zm9vYg");
        assert_eq!(fingerprint(b"fooba"), "SHA256:Zm9vYmE");
        assert_eq!(fingerprint(&[0xff; 32]).len(), 7 + 43);
    }

    #[test]
    fn known_hosts_lines_are_appended_on_their_own_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/known_hosts");
        append_known_host(&p, "a ssh-ed25519 AAAA\n").unwrap();
        std::fs::write(&p, "a ssh-ed25519 AAAA").unwrap();
        append_known_host(&p, "b ssh-ed25519 BBBB").unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "a ssh-ed25519 AAAA\nb ssh-ed25519 BBBB\n"
        );
    }
}
