//! Where a plan runs: a host that takes POSIX shell scripts and opens TCP
//! connections for health checks. Over SSH for a cluster's hosts, or this
//! machine itself for `--local`; the launcher cannot tell them apart.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::deliver::PushError;
use crate::ssh::Script;
use crate::ssh::Target;
use crate::ssh::{Remote, STDOUT_LIMIT, SshOptions, stderr_tail};

/// Why a step on a host failed. The text names the host (or this machine),
/// what was being done and why, on one line.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Over SSH: the session's own message (it names the host).
    #[error("{0}")]
    Ssh(String),
    #[error("this machine: {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("this machine: {what}: {source}")]
    Script {
        what: String,
        source: crate::ssh::script::NulInValue,
    },
    #[error("this machine: {what}: cannot run `sh`: {source}")]
    NoShell {
        what: String,
        source: std::io::Error,
    },
    #[error(
        "this machine: {what}: its output passed {mib} MiB, more than any of ferry's scripts prints; stopped it"
    )]
    TooLong { what: String, mib: u64 },
    #[error("this machine: {what} failed ({status}): {stderr}")]
    Failed {
        what: String,
        status: std::process::ExitStatus,
        /// The script's stderr, trimmed.
        stderr: String,
    },
    /// A health check's connection from this machine.
    #[error("{0}")]
    Connect(std::io::Error),
    #[error("`{addr}` has no address")]
    NoAddress { addr: String },
    #[error(
        "{addr}:{port} answered a health check with more than 1 MiB: not what a health check answers"
    )]
    AnswerTooLong { addr: String, port: u16 },
}

/// The fleet keeps a host's failure as its text.
impl From<HostError> for String {
    fn from(e: HostError) -> String {
        e.to_string()
    }
}

pub trait ClusterHost: Send + Sync {
    /// Runs `script` under `sh` with `stdin`; its stdout, or a one-line
    /// error naming the host, what was being done and the script's stderr.
    fn run(&self, what: &str, script: &Script, stdin: &[u8]) -> Result<String, HostError>;
    /// Runs `script`, copying its output to `out` as it comes; the exit status.
    fn stream(
        &self,
        what: &str,
        script: &Script,
        stdin: &[u8],
        out: &mut dyn Write,
    ) -> Result<i32, HostError>;
    /// Connects from the host to `addr:port`, sends `request`, and returns
    /// the answer up to the server's close.
    fn exchange(&self, addr: &str, port: u16, request: &[u8]) -> Result<Vec<u8>, HostError>;
}

/// How long one health-check connection may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The most a health check reads of an answer (ZooKeeper's `srvr`, a
/// master's `/json/`), so a hostile or broken server cannot fill memory.
pub const PROBE_LIMIT: usize = 1024 * 1024;

/// This machine, for `--local`.
pub struct LocalHost;

impl ClusterHost for LocalHost {
    fn run(&self, what: &str, script: &Script, stdin: &[u8]) -> Result<String, HostError> {
        let (mut child, feeder) = spawn_sh(what, script, stdin, Stdio::piped())?;
        let mut err = child.stderr.take().expect("stderr is piped");
        let stderr = std::thread::spawn(move || stderr_tail(&mut err));
        let mut stdout = Vec::new();
        let read = {
            // dropped before the wait: a writer past the bound gets SIGPIPE
            let from = child.stdout.take().expect("stdout is piped");
            from.take(STDOUT_LIMIT + 1).read_to_end(&mut stdout)
        };
        let too_long = stdout.len() as u64 > STDOUT_LIMIT;
        if too_long {
            let _ = child.kill();
        }
        let status = child.wait().map_err(|source| HostError::Io {
            what: what.into(),
            source,
        })?;
        let stderr = stderr.join().unwrap_or_default();
        let _ = feeder.join();
        if too_long {
            return Err(HostError::TooLong {
                what: what.into(),
                mib: STDOUT_LIMIT >> 20,
            });
        }
        read.map_err(|source| HostError::Io {
            what: what.into(),
            source,
        })?;
        if status.success() {
            Ok(String::from_utf8_lossy(&stdout).into_owned())
        } else {
            Err(HostError::Failed {
                what: what.into(),
                status,
                stderr: stderr.trim().to_string(),
            })
        }
    }

    fn stream(
        &self,
        what: &str,
        script: &Script,
        stdin: &[u8],
        out: &mut dyn Write,
    ) -> Result<i32, HostError> {
        let (mut child, feeder) = spawn_sh(what, script, stdin, Stdio::inherit())?;
        let mut from = child.stdout.take().expect("stdout is piped");
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                        break;
                    }
                }
            }
        }
        let status = child.wait().map_err(|source| HostError::Io {
            what: what.into(),
            source,
        })?;
        let _ = feeder.join();
        Ok(status.code().unwrap_or(128))
    }

    fn exchange(&self, addr: &str, port: u16, request: &[u8]) -> Result<Vec<u8>, HostError> {
        let sock = (addr, port)
            .to_socket_addrs()
            .map_err(HostError::Connect)?
            .next()
            .ok_or_else(|| HostError::NoAddress { addr: addr.into() })?;
        let mut c = TcpStream::connect_timeout(&sock, PROBE_TIMEOUT).map_err(HostError::Connect)?;
        c.set_read_timeout(Some(PROBE_TIMEOUT))
            .map_err(HostError::Connect)?;
        c.write_all(request).map_err(HostError::Connect)?;
        let mut answer = Vec::new();
        // one byte more than allowed tells an answer at the bound from one past it
        (&mut c)
            .take(PROBE_LIMIT as u64 + 1)
            .read_to_end(&mut answer)
            .map_err(HostError::Connect)?;
        if answer.len() > PROBE_LIMIT {
            return Err(HostError::AnswerTooLong {
                addr: addr.into(),
                port,
            });
        }
        Ok(answer)
    }
}

/// `sh -c script` with its stdout piped and `stdin` fed from a thread (so a
/// large input cannot block against a full stdout pipe).
fn spawn_sh(
    what: &str,
    script: &Script,
    stdin: &[u8],
    stderr: Stdio,
) -> Result<(std::process::Child, std::thread::JoinHandle<()>), HostError> {
    script.check().map_err(|source| HostError::Script {
        what: what.into(),
        source,
    })?;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script.text())
        .arg("sh")
        .args(script.values())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|source| HostError::NoShell {
            what: what.into(),
            source,
        })?;
    let mut input = child.stdin.take().expect("stdin is piped");
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    Ok((child, feeder))
}

/// A cluster host reached over SSH.
pub struct SshHost {
    remote: Remote,
}

impl SshHost {
    pub fn connect(target: &Target, opts: &SshOptions) -> Result<SshHost, PushError> {
        Ok(SshHost {
            remote: Remote::connect(target, opts)?,
        })
    }
}

impl ClusterHost for SshHost {
    fn run(&self, what: &str, script: &Script, stdin: &[u8]) -> Result<String, HostError> {
        self.remote
            .run_ok(what, script, stdin)
            .map(|o| String::from_utf8_lossy(&o).into_owned())
            .map_err(|e| HostError::Ssh(e.to_string()))
    }

    fn stream(
        &self,
        what: &str,
        script: &Script,
        stdin: &[u8],
        out: &mut dyn Write,
    ) -> Result<i32, HostError> {
        self.remote
            .run_streaming(what, script, stdin, out)
            .map_err(|e| HostError::Ssh(e.to_string()))
    }

    fn exchange(&self, addr: &str, port: u16, request: &[u8]) -> Result<Vec<u8>, HostError> {
        self.remote
            .exchange(addr, port, request, PROBE_TIMEOUT)
            .map_err(|e| HostError::Ssh(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A server on loopback that reads a request and answers `size` bytes.
    fn answering(size: usize) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = [0u8; 4];
            let _ = s.read_exact(&mut req);
            // the client may stop reading: a failed write is its refusal
            let _ = s.write_all(&vec![b'x'; size]);
        });
        port
    }

    /// `--local` reads a script's output as the SSH side does: stdout up
    /// to 16 MiB, the end of stderr with its control characters escaped.
    #[test]
    fn local_output_is_bounded_and_escaped() {
        let e = LocalHost
            .run(
                "testing",
                &Script::new("printf 'boom\\033[2J\\033]0;owned\\007\\n' >&2; exit 3"),
                &[],
            )
            .unwrap_err()
            .to_string();
        assert!(!e.chars().any(|c| c.is_control()), "{e:?}");
        assert!(e.contains("boom\\u{1b}[2J"), "{e:?}");
        let e = LocalHost
            .run(
                "testing",
                &Script::new("head -c 17000000 /dev/zero; i=0; while [ $i -lt 1100 ]; do printf '%064d\\n' $i >&2; i=$((i+1)); done; exit 1"),
                &[],
            )
            .err()
            .unwrap_or_else(|| panic!("a failed script"))
            .to_string();
        assert!(e.len() < (64 << 10) + 200, "{}", e.len());
        let e = LocalHost
            .run("testing", &Script::new("head -c 17000000 /dev/zero"), &[])
            .err()
            .unwrap_or_else(|| panic!("17 MB of stdout was taken"))
            .to_string();
        assert!(e.contains("16 MiB"), "{e}");
    }

    #[test]
    fn a_health_answer_is_read_up_to_one_mib() {
        let port = answering(PROBE_LIMIT);
        let a = LocalHost.exchange("127.0.0.1", port, b"srvr").unwrap();
        assert_eq!(a.len(), PROBE_LIMIT);
        let port = answering(PROBE_LIMIT + 1);
        let e = LocalHost
            .exchange("127.0.0.1", port, b"srvr")
            .map(|a| a.len())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "127.0.0.1:{port} answered a health check with more than 1 MiB: not what a health check answers"
            )
        );
    }
}
