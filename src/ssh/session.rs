//! One SSH session to one host: connect with a deadline (directly, or
//! through jump hosts as OpenSSH's ProxyJump does), check each hop's host key
//! against known_hosts (parsed by [`known_hosts`], not libssh2; the host is
//! asked for the key types known for it; trust on first use only when
//! asked), log in with
//! ssh-agent, key files or a password, and run POSIX shell scripts with data
//! on stdin, as root through `sudo -n` when the target asks for it. It knows
//! nothing of images or stores.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use ssh2::{Channel, HashType, MethodType, Session};

use super::SshError;
use super::known_hosts::{self, KnownHosts, Verdict};
use super::output::{ANSWER_LIMIT, ReadError, STDOUT_LIMIT, read_answer, read_stderr, read_stdout};
use super::script::Script;
use super::target::Target;
use super::tunnel::{Hop, Tunnel};

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
    // dropped before the tunnel it may run through
    sess: Session,
    _tunnel: Option<Tunnel>,
    label: String,
    user: String,
    sudo: bool,
    command_timeout: Duration,
}

/// Connects to `t` over TCP, or through a channel of its jump host, and logs in.
fn open(t: &Target, o: &SshOptions) -> Result<Hop, SshError> {
    let Some(jump) = &t.jump else {
        let tcp = tcp_connect(t, o)?;
        let fd = tcp
            .try_clone()
            .map_err(|source| SshError::Connect {
                host: t.label(),
                source,
            })?
            .into();
        let sess = login(tcp, t, o)?;
        return Ok(Hop {
            sess,
            fd,
            tunnel: None,
        });
    };
    let via = |source| SshError::Jump {
        host: t.label(),
        via: jump.label(),
        source: Box::new(source),
    };
    let bastion = open(jump, o).map_err(via)?;
    let what = format!("opening a tunnel to `{}`", t.known_hosts_entry());
    let channel = bastion
        .sess
        .channel_direct_tcpip(&t.host, t.port, None)
        .map_err(|e| via(ssh_error(&jump.label(), &what, e, o.connect_timeout)))?;
    let local = |source| {
        via(SshError::Channel {
            host: jump.label(),
            what: what.clone(),
            source,
        })
    };
    let (ours, theirs) = UnixStream::pair().map_err(local)?;
    let fd = ours.try_clone().map_err(local)?.into();
    let tunnel = Tunnel::start(bastion, channel, theirs).map_err(local)?;
    // from here on a failure is this host's own: the jump host did its part
    let sess = login(ours, t, o)?;
    Ok(Hop {
        sess,
        fd,
        tunnel: Some(tunnel),
    })
}

fn tcp_connect(t: &Target, o: &SshOptions) -> Result<TcpStream, SshError> {
    let label = t.label();
    let connect_err = |source| SshError::Connect {
        host: label.clone(),
        source,
    };
    let addrs: Vec<_> = (t.host.as_str(), t.port)
        .to_socket_addrs()
        .map_err(connect_err)?
        .collect();
    let mut last = std::io::Error::new(ErrorKind::NotFound, "the name has no address");
    for a in &addrs {
        match TcpStream::connect_timeout(a, o.connect_timeout) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    if last.kind() == ErrorKind::TimedOut {
        return Err(SshError::ConnectTimeout {
            host: label,
            secs: secs(o.connect_timeout),
        });
    }
    Err(connect_err(last))
}

/// An ssh2 error while connecting, telling a timeout apart.
fn ssh_error(host: &str, what: &str, e: ssh2::Error, timeout: Duration) -> SshError {
    if is_timeout(&e) {
        SshError::ConnectTimeout {
            host: host.to_string(),
            secs: secs(timeout),
        }
    } else {
        SshError::Ssh {
            host: host.to_string(),
            what: what.to_string(),
            source: e,
        }
    }
}

/// The handshake, the host key check and the login over `stream`; the
/// session keeps the connect timeout.
fn login(stream: impl AsRawFd + 'static, t: &Target, o: &SshOptions) -> Result<Session, SshError> {
    let label = t.label();
    let ssh_err = |what: &str, e| ssh_error(&label, what, e, o.connect_timeout);
    let known = KnownHosts::read(&o.known_hosts).map_err(|source| SshError::KnownHostsRead {
        path: o.known_hosts.clone(),
        source,
    })?;
    let mut sess = Session::new().map_err(|e| ssh_err("starting a session", e))?;
    sess.set_tcp_stream(stream);
    sess.set_timeout(o.connect_timeout.as_millis().min(u128::from(u32::MAX)) as u32);
    // ask a known host for the key types known_hosts holds for it: libssh2's
    // own order (ECDSA first) makes a host known by ed25519 only look like
    // an interception
    let algorithms = known.algorithms_for(&t.known_hosts_entry()).join(",");
    let asked =
        !algorithms.is_empty() && sess.method_pref(MethodType::HostKey, &algorithms).is_ok();
    let handshake = if asked {
        format!(
            "the handshake (asking for the host-key types known_hosts has for it: {algorithms})"
        )
    } else {
        "the handshake".to_string()
    };
    sess.handshake().map_err(|e| ssh_err(&handshake, e))?;
    check_host_key(&sess, t, o, &known)?;
    authenticate(&sess, t, o).map_err(|e| match e {
        Err(e) => ssh_err("logging in", e),
        Ok(tried) => SshError::Auth {
            host: label.clone(),
            user: t.user.clone(),
            tried,
        },
    })?;
    Ok(sess)
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
    /// Logs in to `t`, through its jump hosts when it has them.
    pub fn connect(t: &Target, o: &SshOptions) -> Result<Remote, SshError> {
        let hop = open(t, o)?;
        hop.sess
            .set_timeout(o.command_timeout.as_millis().min(u128::from(u32::MAX)) as u32);
        let remote = Remote {
            sess: hop.sess,
            _tunnel: hop.tunnel,
            label: t.label(),
            user: t.user.clone(),
            sudo: t.sudo,
            command_timeout: o.command_timeout,
        };
        remote.check_login_shell()?;
        Ok(remote)
    }

    /// sshd hands every command line to the user's login shell, and the
    /// values in it are quoted for a POSIX shell: a shell that reads quotes
    /// otherwise (fish reads `\'` inside single quotes as a quote, csh
    /// expands `!`) could take a value for code. So before any script runs,
    /// one value holding every character that matters must come back as
    /// itself, and a host whose login shell mangles it is refused. (Only
    /// the login shell parses the line: behind `sudo`, `sh -c` gets its
    /// arguments as they are.)
    fn check_login_shell(&self) -> Result<(), SshError> {
        let what = "checking the login shell";
        let line = Script::new(SHELL_PROBE)
            .arg(SHELL_PROBE_VALUE)
            .command_line()
            .expect("the probe holds no NUL");
        let mut ch = self
            .sess
            .channel_session()
            .map_err(|e| self.ssh_error(what, e))?;
        ch.exec(&line).map_err(|e| self.ssh_error(what, e))?;
        let _ = ch.send_eof();
        let mut out = Vec::new();
        (&mut ch)
            .take(4096)
            .read_to_end(&mut out)
            .map_err(|e| self.io_error(what, e))?;
        let _ = ch.wait_close();
        if login_shell_reads_posix_quotes(&out) {
            Ok(())
        } else {
            Err(SshError::LoginShell {
                host: self.label.clone(),
                user: self.user.clone(),
                got: String::from_utf8_lossy(&out).into_owned(),
            })
        }
    }

    pub fn label(&self) -> String {
        self.label.clone()
    }

    /// Names a failed read or write on a channel, telling a timeout apart.
    pub fn io_error(&self, what: &str, e: std::io::Error) -> SshError {
        if e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::WouldBlock {
            SshError::Timeout {
                host: self.label.clone(),
                what: what.to_string(),
                secs: secs(self.command_timeout),
            }
        } else {
            SshError::Channel {
                host: self.label.clone(),
                what: what.to_string(),
                source: e,
            }
        }
    }

    fn ssh_error(&self, what: &str, e: ssh2::Error) -> SshError {
        if is_timeout(&e) {
            SshError::Timeout {
                host: self.label.clone(),
                what: what.to_string(),
                secs: secs(self.command_timeout),
            }
        } else {
            SshError::Ssh {
                host: self.label.clone(),
                what: what.to_string(),
                source: e,
            }
        }
    }

    /// The command line for `script` on this host, or why it cannot be run.
    fn line(&self, what: &str, script: &Script) -> Result<String, SshError> {
        command_line(script, self.sudo).map_err(|e| SshError::Remote {
            host: self.label.clone(),
            what: what.to_string(),
            status: -1,
            stderr: e.to_string(),
        })
    }

    /// Runs `script` with `stdin` and returns its stdout; any exit status but 0 is an error.
    pub fn run_ok(&self, what: &str, script: &Script, stdin: &[u8]) -> Result<Vec<u8>, SshError> {
        let mut feed = |w: &mut dyn Write| w.write_all(stdin).map_err(|e| self.io_error(what, e));
        self.run_checked(what, script, &mut feed, &[0])
    }

    /// Runs `script` under `sh` (whatever the user's login shell), lets `feed`
    /// write its stdin, and returns its stdout when the exit status is one of `ok`.
    pub fn run_checked(
        &self,
        what: &str,
        script: &Script,
        feed: &mut dyn FnMut(&mut dyn Write) -> Result<(), SshError>,
        ok: &[i32],
    ) -> Result<Vec<u8>, SshError> {
        let mut running = self.start(what, script)?;
        running.feed(feed);
        running.finish(ok)
    }

    /// Starts `script` under `sh` and returns at once: the host's shell may
    /// still be starting. Several may run at a time on one session (sshd
    /// allows 10 by default), so the round trips and shell start-up of one
    /// overlap with the bytes of another.
    pub fn start(&self, what: &str, script: &Script) -> Result<Running<'_>, SshError> {
        let line = self.line(what, script)?;
        let mut ch = self
            .sess
            .channel_session()
            .map_err(|e| self.ssh_error(what, e))?;
        ch.exec(&line).map_err(|e| self.ssh_error(what, e))?;
        Ok(Running {
            remote: self,
            ch,
            what: what.to_string(),
            fed: Ok(()),
        })
    }
}

/// A script running on the host, started by [`Remote::start`].
pub struct Running<'a> {
    remote: &'a Remote,
    ch: Channel,
    what: String,
    fed: Result<(), SshError>,
}

impl Running<'_> {
    /// What the script does, as messages name it.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// Reads the script's stdout until a line `mark` arrives (`Ok(true)`)
    /// or the script's stdout ends (`Ok(false)`: [`Running::finish`] then
    /// says why), with stdin still open. Other lines are progress (they keep
    /// the command timeout from firing) and are dropped; no more than
    /// `limit` bytes are read.
    pub fn wait_for_line(&mut self, mark: &str, limit: usize) -> Result<bool, SshError> {
        let mut seen = Vec::new();
        let mut buf = [0u8; 512];
        loop {
            let n = self
                .ch
                .read(&mut buf)
                .map_err(|e| self.remote.io_error(&self.what, e))?;
            if n == 0 {
                return Ok(false);
            }
            seen.extend_from_slice(&buf[..n]);
            if seen.split(|b| *b == b'\n').any(|l| l == mark.as_bytes()) {
                return Ok(true);
            }
            if seen.len() > limit {
                return Err(SshError::TooMuchOutput {
                    host: self.remote.label.clone(),
                    what: self.what.clone(),
                    stream: "stdout",
                    limit: limit as u64,
                });
            }
        }
    }

    /// Lets `feed` write the script's stdin, then closes it. A failed write
    /// is kept for [`Running::finish`]: the script may have exited early,
    /// and its status says more.
    pub fn feed(&mut self, feed: &mut dyn FnMut(&mut dyn Write) -> Result<(), SshError>) {
        self.fed = feed(&mut self.ch);
        let _ = self.ch.send_eof();
    }

    /// Waits for the script to end and returns its stdout when the exit
    /// status is one of `ok`. A local file that could not be read is the
    /// error whatever the script said, as it is the cause.
    pub fn finish(self, ok: &[i32]) -> Result<Vec<u8>, SshError> {
        let Running {
            remote,
            mut ch,
            what,
            fed,
        } = self;
        let what = what.as_str();
        let (read, stdout) = match read_stdout(&mut ch) {
            Ok(out) => (Ok(()), out),
            Err(ReadError::Io(e)) => (Err(e), Vec::new()),
            Err(ReadError::TooLong) => {
                return Err(SshError::TooMuchOutput {
                    host: remote.label.clone(),
                    what: what.to_string(),
                    stream: "stdout",
                    limit: STDOUT_LIMIT,
                });
            }
        };
        let stderr = read_stderr(&mut ch.stderr());
        let closed = ch.wait_close();
        let status = ch.exit_status().ok().filter(|_| closed.is_ok());
        match (status, fed) {
            (_, Err(e @ SshError::Feed(_))) => Err(e),
            (Some(s), Ok(())) if ok.contains(&s) => {
                read.map_err(|e| remote.io_error(what, e))?;
                Ok(stdout)
            }
            (Some(s), _) if remote.sudo && stderr.contains(SUDO_MARK) && s == EXIT_SUDO_REFUSED => {
                Err(SshError::SudoRefused {
                    host: remote.label.clone(),
                    user: remote.user.clone(),
                })
            }
            (Some(s), _) if remote.sudo && stderr.contains(SUDO_MARK) && s == EXIT_NO_SUDO => {
                Err(SshError::NoSudo {
                    host: remote.label.clone(),
                    user: remote.user.clone(),
                })
            }
            (Some(s), _) if !ok.contains(&s) => Err(SshError::Remote {
                host: remote.label.clone(),
                what: what.to_string(),
                status: s,
                stderr: stderr.trim().to_string(),
            }),
            (_, Err(e)) => Err(e),
            _ => Err(match (read, closed) {
                (Err(e), _) => remote.io_error(what, e),
                (_, Err(e)) => remote.ssh_error(what, e),
                _ => remote.io_error(
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
        script: &Script,
        stdin: &[u8],
        out: &mut dyn Write,
    ) -> Result<i32, SshError> {
        let line = self.line(what, script)?;
        let mut ch = self
            .sess
            .channel_session()
            .map_err(|e| self.ssh_error(what, e))?;
        // nothing reads its stderr (a script that wants it seen redirects
        // it): libssh2 would otherwise queue every byte of it in memory
        ch.handle_extended_data(ssh2::ExtendedData::Ignore)
            .map_err(|e| self.ssh_error(what, e))?;
        ch.exec(&line).map_err(|e| self.ssh_error(what, e))?;
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
    ) -> Result<Vec<u8>, SshError> {
        let what = format!("connecting from the host to {host}:{port}");
        self.sess
            .set_timeout(timeout.as_millis().min(u128::from(u32::MAX)) as u32);
        let result = (|| {
            let mut ch = self
                .sess
                .channel_direct_tcpip(host, port, None)
                .map_err(|e| self.ssh_error(&what, e))?;
            ch.write_all(request).map_err(|e| self.io_error(&what, e))?;
            let answer = read_answer(&mut ch).map_err(|e| match e {
                ReadError::Io(e) => self.io_error(&what, e),
                ReadError::TooLong => SshError::TooMuchOutput {
                    host: self.label.clone(),
                    what: what.clone(),
                    stream: "the connection",
                    limit: ANSWER_LIMIT,
                },
            })?;
            let _ = ch.close();
            Ok(answer)
        })();
        self.sess
            .set_timeout(self.command_timeout.as_millis().min(u128::from(u32::MAX)) as u32);
        result
    }
}

/// Prints its one value as it arrived.
const SHELL_PROBE: &str = r#"printf '%s' "$1""#;
/// Every character POSIX quoting must carry and other shells read otherwise.
const SHELL_PROBE_VALUE: &str = "a'b\\c\\\\d\\'e\"f$g`h!i *?[j]~{k,l}\n#m\\";

/// Whether the probe's value came back as itself.
fn login_shell_reads_posix_quotes(out: &[u8]) -> bool {
    out == SHELL_PROBE_VALUE.as_bytes()
}

/// Exit status of [`command_line`] when `sudo -n` refuses the user.
const EXIT_SUDO_REFUSED: i32 = 97;
/// Exit status of [`command_line`] when there is no `sudo`.
const EXIT_NO_SUDO: i32 = 98;
/// Printed on stderr with those statuses, so a script's own exit is not mistaken for them.
const SUDO_MARK: &str = "--ferry-sudo--";

/// The command a script runs as: `sh -c` as the login user (whatever its
/// login shell), or with `sudo` as root, never prompting (`-n`). `sudo`
/// drops the environment, so `DOCKER_HOST` is passed on when the login sets
/// it: the script then talks to the Docker the user would.
pub fn command_line(script: &Script, sudo: bool) -> Result<String, crate::ssh::script::NulInValue> {
    let sh = script.command_line()?;
    if !sudo {
        return Ok(sh);
    }
    Ok(format!(
        "command -v sudo >/dev/null 2>&1 || {{ echo {SUDO_MARK} >&2; exit {EXIT_NO_SUDO}; }}; \
sudo -n true 2>/dev/null || {{ echo {SUDO_MARK} >&2; exit {EXIT_SUDO_REFUSED}; }}; \
exec sudo -n env ${{DOCKER_HOST+\"DOCKER_HOST=$DOCKER_HOST\"}} {sh}"
    ))
}

/// Checks the key `sess` was shown against `known` (read before the
/// handshake); an unknown host is recorded when trust on first use is on.
fn check_host_key(
    sess: &Session,
    t: &Target,
    o: &SshOptions,
    known: &KnownHosts,
) -> Result<(), SshError> {
    let label = t.label();
    let (key, _) = sess.host_key().ok_or_else(|| SshError::Ssh {
        host: label.clone(),
        what: "reading the host key".into(),
        source: ssh2::Error::unknown(),
    })?;
    let fp = fingerprint(sess.host_key_hash(HashType::Sha256).unwrap_or_default());
    let entry = t.known_hosts_entry();
    match known.check(&entry, key) {
        Verdict::Known => Ok(()),
        Verdict::Revoked { line } => Err(SshError::HostKeyRevoked {
            host: label,
            fingerprint: fp,
            known_hosts: o.known_hosts.clone(),
            line,
        }),
        Verdict::CertAuthority { line } => Err(SshError::HostCertificate {
            host: label,
            known_hosts: o.known_hosts.clone(),
            line,
        }),
        Verdict::Mismatch { line } => Err(SshError::HostKeyMismatch {
            host: label,
            entry,
            fingerprint: fp,
            known_hosts: o.known_hosts.clone(),
            line,
        }),
        Verdict::Unknown if !o.accept_new_host_keys => Err(SshError::UnknownHostKey {
            host: label,
            fingerprint: fp,
            known_hosts: o.known_hosts.clone(),
        }),
        Verdict::Unknown => {
            let line =
                known_hosts::line_for(&entry, key, "added by ferry push").ok_or_else(|| {
                    SshError::Ssh {
                        host: label.clone(),
                        what: "reading the host key".into(),
                        source: ssh2::Error::unknown(),
                    }
                })?;
            append_known_host(&o.known_hosts, &line).map_err(|source| SshError::KnownHostsWrite {
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

    /// The probe passes through POSIX shells and catches the others: run as
    /// sshd would, `SHELL -c LINE`.
    #[test]
    fn a_login_shell_that_is_not_posix_is_caught() {
        let line = Script::new(SHELL_PROBE)
            .arg(SHELL_PROBE_VALUE)
            .command_line()
            .unwrap();
        let through = |shell: &str| {
            std::process::Command::new(shell)
                .arg("-c")
                .arg(&line)
                .output()
                .ok()
                .map(|o| login_shell_reads_posix_quotes(&o.stdout))
        };
        for posix in ["sh", "bash"] {
            assert_eq!(through(posix), Some(true), "{posix}");
        }
        for other in ["fish", "tcsh"] {
            match through(other) {
                Some(ok) => assert!(!ok, "{other} read the probe as sh does"),
                None => eprintln!("SKIPPED: `{other}` is not installed (tests/run.sh installs it)"),
            }
        }
    }

    #[test]
    fn scripts_run_under_sh_or_sudo_n_with_docker_host_kept() {
        let hi = Script::new("echo \"$1\"").arg("'hi'");
        assert_eq!(
            command_line(&hi, false).unwrap(),
            r#"sh -c 'echo "$1"' sh ''\''hi'\'''"#
        );
        let c = command_line(&hi, true).unwrap();
        assert!(
            c.ends_with(
                r#"exec sudo -n env ${DOCKER_HOST+"DOCKER_HOST=$DOCKER_HOST"} sh -c 'echo "$1"' sh ''\''hi'\'''"#
            ),
            "{c}"
        );
        assert!(!c.contains('\n'), "one line: {c}");
        // run it, with a stand-in `sudo` first on the PATH
        let dir = tempfile::tempdir().unwrap();
        let run = |sudo: &str, docker_host: Option<&str>| {
            let fake = dir.path().join("sudo");
            crate::ssh::script::tests::write_stand_in(&fake, sudo);
            let mut cmd = std::process::Command::new("sh");
            cmd.arg("-c")
                .arg(command_line(&Script::new("echo \"[$DOCKER_HOST]\"; exit 3"), true).unwrap())
                .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
                .env_remove("DOCKER_HOST");
            if let Some(d) = docker_host {
                cmd.env("DOCKER_HOST", d);
            }
            let out = cmd.output().unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).trim().to_string(),
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            )
        };
        // a sudo that lets the user in drops the environment, as the real one does
        let pass = "#!/bin/sh\n[ \"$1\" = -n ] || exit 9\nshift\nexec env -u DOCKER_HOST \"$@\"\n";
        assert_eq!(
            run(pass, Some("unix:///run/d.sock")),
            (Some(3), "[unix:///run/d.sock]".into(), String::new())
        );
        assert_eq!(run(pass, None), (Some(3), "[]".into(), String::new()));
        let refuse = "#!/bin/sh\necho 'sudo: a password is required' >&2\nexit 1\n";
        assert_eq!(
            run(refuse, None),
            (Some(EXIT_SUDO_REFUSED), String::new(), SUDO_MARK.into())
        );
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
