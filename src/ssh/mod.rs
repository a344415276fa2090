//! The transport every host-talking part of ferry uses: one SSH session to
//! one host ([`session`]), known_hosts read by ferry ([`known_hosts`]), and
//! the scripts run there, constant text with their values apart
//! ([`script`]). It knows nothing of images, stores or clusters, and never
//! prints: pushes, pulls, gc and the cluster launcher all reach hosts
//! through it.

pub mod known_hosts;
mod output;
pub mod script;
pub mod session;
pub mod target;
mod tunnel;

pub use output::{STDOUT_LIMIT, shown, stderr_tail};
pub use script::Script;
pub use session::{Remote, Running, SshOptions, default_identities};
pub use target::{Target, TargetError};

use std::path::PathBuf;

/// Why a host could not be reached, logged in to, or could not run a script.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error(
        "cannot connect to `{host}`: {source}; check that sshd runs there and that the address and port are right"
    )]
    Connect {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "connecting to `{host}` timed out after {secs}s; check the address, or raise --connect-timeout"
    )]
    ConnectTimeout { host: String, secs: u64 },
    #[error(
        "the host key of `{host}` ({fingerprint}) is not in `{}`; check the fingerprint on the host (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`) and add it, or pass --accept-new-host-keys to trust it on first use",
        known_hosts.display()
    )]
    UnknownHostKey {
        host: String,
        fingerprint: String,
        known_hosts: PathBuf,
    },
    #[error(
        "the host key of `{host}` ({fingerprint}) does not match `{}:{line}`: the connection may be intercepted, or the host was reinstalled; nothing was sent. If the new key is right, remove the old one with `ssh-keygen -f {} -R '{entry}'`",
        known_hosts.display(), known_hosts.display()
    )]
    HostKeyMismatch {
        host: String,
        entry: String,
        fingerprint: String,
        known_hosts: PathBuf,
        /// The first line with another key for the host.
        line: usize,
    },
    #[error(
        "the host key of `{host}` ({fingerprint}) is revoked in `{}:{line}`; nothing was sent. Ask the host's administrator for its new key",
        known_hosts.display()
    )]
    HostKeyRevoked {
        host: String,
        fingerprint: String,
        known_hosts: PathBuf,
        line: usize,
    },
    #[error(
        "`{host}` is known only through a `@cert-authority` line (`{}:{line}`): certificate host keys are not supported yet; add the host's own key to known_hosts",
        known_hosts.display()
    )]
    HostCertificate {
        host: String,
        known_hosts: PathBuf,
        line: usize,
    },
    #[error("cannot read `{}`", path.display())]
    KnownHostsRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot record the host key of `{host}` in `{}`", path.display())]
    KnownHostsWrite {
        host: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot log in to `{host}` as `{user}` (tried: {tried}); load a key into ssh-agent, pass --identity FILE, or set FERRY_SSH_PASSWORD"
    )]
    Auth {
        host: String,
        user: String,
        tried: String,
    },
    #[error("ssh to `{host}` failed while {what}: {source}")]
    Ssh {
        host: String,
        what: String,
        #[source]
        source: ssh2::Error,
    },
    #[error("ssh to `{host}` failed while {what}: {source}")]
    Channel {
        host: String,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "`{host}` made no progress for {secs}s while {what}; check the host, or raise --command-timeout"
    )]
    Timeout {
        host: String,
        what: String,
        secs: u64,
    },
    #[error("on `{host}`, {what} failed (exit status {status}): {stderr}")]
    Remote {
        host: String,
        what: String,
        status: i32,
        stderr: String,
    },
    #[error("cannot reach `{host}` via `{via}`: {source}")]
    Jump {
        host: String,
        via: String,
        #[source]
        source: Box<SshError>,
    },
    #[error(
        "on `{host}`, `sudo -n` refused `{user}` (it wants a password, or `{user}` may not use sudo); ferry runs its scripts as root with `sudo -n`: allow it without a password there (`echo '{user} ALL=(root) NOPASSWD: ALL' > /etc/sudoers.d/ferry`), or pass --no-sudo when `{user}` is in the docker group and can write the store"
    )]
    SudoRefused { host: String, user: String },
    #[error(
        "`sudo` is not installed on `{host}`, and `{user}` is not root; install sudo there, log in as root, or pass --no-sudo when `{user}` is in the docker group and can write the store"
    )]
    NoSudo { host: String, user: String },
    #[error(
        "the login shell of `{user}` on `{host}` does not read POSIX quoting (a test value came back as {got:?}): ferry passes every value quoted for `sh`, and another shell (fish, csh) could read a value as code; make that user's login shell /bin/sh or bash (`chsh -s /bin/bash {user}`)"
    )]
    LoginShell {
        host: String,
        user: String,
        got: String,
    },
    #[error(
        "on `{host}`, {what} sent more than {limit} bytes on {stream}; nothing more was read (a damaged or hostile host?)"
    )]
    TooMuchOutput {
        host: String,
        what: String,
        stream: &'static str,
        limit: u64,
    },
    /// What a script was fed could not be produced (a local file that
    /// could not be read, say): the cause, whatever the script said.
    #[error(transparent)]
    Feed(Box<dyn std::error::Error + Send + Sync>),
}
