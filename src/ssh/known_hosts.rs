//! known_hosts, read by ferry rather than by libssh2: libssh2 fails the
//! whole file on one line it cannot parse (or one over 4 KB), reads
//! `@revoked` and `@cert-authority` as host names, and does not tell which
//! key types a host is known by. This module owns the OpenSSH format (host
//! patterns with `*`, `?` and `!`, `[host]:port`, hashed `|1|salt|hash`
//! names, the two markers), the verdict for a host's key, and the line
//! trust-on-first-use appends. It never prints: lines it skips come back as
//! [`Warning`]s for the command to show. It does not write the file.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};

/// What a line's marker says about its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    /// The host's own key.
    Plain,
    /// The key must be refused, whatever other line trusts it.
    Revoked,
    /// A CA whose certificates the host presents (not supported yet).
    CertAuthority,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Names {
    /// Comma-separated patterns, `!` negating.
    Patterns(Vec<String>),
    /// `|1|salt|hmac-sha1(salt, name)`, as `HashKnownHosts` writes them.
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
}

#[derive(Debug, Clone)]
struct Entry {
    /// 1-based, for messages.
    line: usize,
    marker: Marker,
    names: Names,
    /// The key type the key blob itself names (`ssh-ed25519`, ...).
    key_type: String,
    /// The decoded public key blob, as the host sends it.
    key: Vec<u8>,
}

/// A line that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub path: PathBuf,
    pub line: usize,
    pub reason: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "skipped line {} of `{}`: {}",
            self.line,
            self.path.display(),
            self.reason
        )
    }
}

/// What known_hosts says of the key a host presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A line for this host holds this key.
    Known,
    /// A `@revoked` line holds this key (checked before any other).
    Revoked { line: usize },
    /// The host is known only through a `@cert-authority` line.
    CertAuthority { line: usize },
    /// Lines for this host hold other keys: the first of them.
    Mismatch { line: usize },
    /// No line names this host.
    Unknown,
}

/// The parsed file: its usable lines, and the ones skipped.
#[derive(Debug, Clone)]
pub struct KnownHosts {
    entries: Vec<Entry>,
    pub warnings: Vec<Warning>,
}

/// The host-key algorithms libssh2 can negotiate for a key type, in the
/// order they are asked for (an RSA key signs with SHA-2 first).
fn algorithms(key_type: &str) -> &'static [&'static str] {
    match key_type {
        "ssh-ed25519" => &["ssh-ed25519"],
        "ecdsa-sha2-nistp256" => &["ecdsa-sha2-nistp256"],
        "ecdsa-sha2-nistp384" => &["ecdsa-sha2-nistp384"],
        "ecdsa-sha2-nistp521" => &["ecdsa-sha2-nistp521"],
        "ssh-rsa" => &["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
        _ => &[],
    }
}

/// The preference order of key types, strongest first.
const KEY_TYPES: [&str; 5] = [
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
];

impl KnownHosts {
    /// Reads `path`; a missing file knows no host.
    pub fn read(path: &Path) -> std::io::Result<KnownHosts> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(KnownHosts::parse(path, &bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KnownHosts::parse(path, b"")),
            Err(e) => Err(e),
        }
    }

    /// Parses the text of `path`, skipping (with a warning) what cannot be used.
    pub fn parse(path: &Path, bytes: &[u8]) -> KnownHosts {
        let mut kh = KnownHosts {
            entries: Vec::new(),
            warnings: Vec::new(),
        };
        for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
            let skip = |reason: String| Warning {
                path: path.to_path_buf(),
                line: i + 1,
                reason,
            };
            let Ok(text) = std::str::from_utf8(raw) else {
                kh.warnings.push(skip("it is not UTF-8".into()));
                continue;
            };
            let text = text.trim();
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            match parse_line(text, i + 1) {
                Ok(e) => kh.entries.push(e),
                Err(reason) => kh.warnings.push(skip(reason.to_string())),
            }
        }
        kh
    }

    fn for_host<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries.iter().filter(move |e| e.names.matches(name))
    }

    /// The host-key algorithms to ask `name` for: those of the keys its
    /// plain lines hold and no `@revoked` line names, strongest first;
    /// empty when it has none (then libssh2's default order stands).
    pub fn algorithms_for(&self, name: &str) -> Vec<&'static str> {
        let lines: Vec<&Entry> = self.for_host(name).collect();
        let revoked = |key: &[u8]| {
            lines
                .iter()
                .any(|e| e.marker == Marker::Revoked && e.key == key)
        };
        let known: Vec<&str> = lines
            .iter()
            .filter(|e| e.marker == Marker::Plain && !revoked(&e.key))
            .map(|e| e.key_type.as_str())
            .collect();
        KEY_TYPES
            .iter()
            .filter(|t| known.contains(t))
            .flat_map(|t| algorithms(t).iter().copied())
            .collect()
    }

    /// What the file says of `key` (a public key blob) presented by `name`.
    pub fn check(&self, name: &str, key: &[u8]) -> Verdict {
        let lines: Vec<&Entry> = self.for_host(name).collect();
        if let Some(e) = lines
            .iter()
            .find(|e| e.marker == Marker::Revoked && e.key == key)
        {
            return Verdict::Revoked { line: e.line };
        }
        let plain = || lines.iter().filter(|e| e.marker == Marker::Plain);
        if plain().any(|e| e.key == key) {
            return Verdict::Known;
        }
        if let Some(e) = plain().next() {
            return Verdict::Mismatch { line: e.line };
        }
        if let Some(e) = lines.iter().find(|e| e.marker == Marker::CertAuthority) {
            return Verdict::CertAuthority { line: e.line };
        }
        Verdict::Unknown
    }
}

/// The line trust-on-first-use appends for `key`.
pub fn line_for(name: &str, key: &[u8], comment: &str) -> Option<String> {
    let key_type = blob_type(key)?;
    Some(format!("{name} {key_type} {} {comment}", B64.encode(key)))
}

/// The key type a public key blob starts with (an SSH `string`).
fn blob_type(key: &[u8]) -> Option<String> {
    let len = u32::from_be_bytes(key.get(..4)?.try_into().ok()?) as usize;
    let name = key.get(4..4usize.checked_add(len)?)?;
    let name = std::str::from_utf8(name).ok()?;
    (!name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic())).then(|| name.to_string())
}

/// Why a line of known_hosts is skipped.
#[derive(Debug, thiserror::Error)]
enum BadLine {
    #[error("unknown marker `{0}`")]
    Marker(String),
    #[error("no host names after the marker")]
    NoNames,
    #[error("no key type")]
    NoKeyType,
    #[error("no key")]
    NoKey,
    #[error("the `{0}` key is not valid base64")]
    NotBase64(String),
    #[error("the `{0}` key is not an SSH key")]
    NotSshKey(String),
    #[error("the key is `{found}`, not `{declared}`")]
    KeyType { found: String, declared: String },
    #[error("a hashed name without its hash")]
    HashMissing,
    #[error("a hashed name with a bad salt")]
    BadSalt,
    #[error("a hashed name with a bad hash")]
    BadHash,
    #[error("a hashed name whose salt or hash is not 20 bytes")]
    HashSize,
    #[error("a hashed name of an unknown kind (only `|1|` is known)")]
    HashKind,
    #[error("an empty host pattern")]
    EmptyPattern,
}

fn parse_line(text: &str, line: usize) -> Result<Entry, BadLine> {
    let mut fields = text.split_ascii_whitespace();
    let mut first = fields.next().unwrap_or_default();
    let marker = match first {
        "@revoked" => Marker::Revoked,
        "@cert-authority" => Marker::CertAuthority,
        m if m.starts_with('@') => return Err(BadLine::Marker(m.to_string())),
        _ => Marker::Plain,
    };
    if marker != Marker::Plain {
        first = fields.next().ok_or(BadLine::NoNames)?;
    }
    let names = parse_names(first)?;
    let declared = fields.next().ok_or(BadLine::NoKeyType)?;
    let encoded = fields.next().ok_or(BadLine::NoKey)?;
    let key = B64
        .decode(encoded)
        .map_err(|_| BadLine::NotBase64(declared.to_string()))?;
    let key_type = blob_type(&key).ok_or_else(|| BadLine::NotSshKey(declared.to_string()))?;
    if key_type != declared {
        return Err(BadLine::KeyType {
            found: key_type,
            declared: declared.to_string(),
        });
    }
    Ok(Entry {
        line,
        marker,
        names,
        key_type,
        key,
    })
}

fn parse_names(field: &str) -> Result<Names, BadLine> {
    if let Some(rest) = field.strip_prefix("|1|") {
        let (salt, hash) = rest.split_once('|').ok_or(BadLine::HashMissing)?;
        let salt = B64.decode(salt).map_err(|_| BadLine::BadSalt)?;
        let hash = B64.decode(hash).map_err(|_| BadLine::BadHash)?;
        if salt.len() != 20 || hash.len() != 20 {
            return Err(BadLine::HashSize);
        }
        return Ok(Names::Hashed { salt, hash });
    }
    if field.starts_with('|') {
        return Err(BadLine::HashKind);
    }
    let patterns: Vec<String> = field.split(',').map(str::to_ascii_lowercase).collect();
    if patterns.iter().any(|p| p.is_empty() || p == "!") {
        return Err(BadLine::EmptyPattern);
    }
    Ok(Names::Patterns(patterns))
}

impl Names {
    /// Whether `name` (`host` or `[host]:port`) is named: a hashed name by
    /// its HMAC, patterns as OpenSSH matches them (any negated pattern that
    /// matches excludes the host; otherwise one plain pattern must match).
    fn matches(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        match self {
            Names::Hashed { salt, hash } => {
                let mut mac = Hmac::<sha1::Sha1>::new_from_slice(salt).expect("any key length");
                mac.update(name.as_bytes());
                mac.verify_slice(hash).is_ok()
            }
            Names::Patterns(ps) => {
                let mut hit = false;
                for p in ps {
                    if let Some(neg) = p.strip_prefix('!') {
                        if wildcard(neg.as_bytes(), name.as_bytes()) {
                            return false;
                        }
                    } else if wildcard(p.as_bytes(), name.as_bytes()) {
                        hit = true;
                    }
                }
                hit
            }
        }
    }
}

/// Glob matching with `*` (any run) and `?` (one byte), iteratively, so a
/// hostile pattern cannot make it take exponential time.
fn wildcard(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|b| *b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    // made with ssh-keygen; the hashed lines are `ssh-keygen -H` of the plain ones
    pub(super) const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMOlOW/dkiojrFgLBa4La4bYZS4f6UobF8b4tP+fzGfW";
    const EC: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBKGZHX3cm+f9H5foGfsWC5xWlPzvBo/ZKuxn6iJtBGS6bwK+34uqdWY0GmLw9yeDVK37QW3BxmyydWmQAYQGhYk=";
    const ED_HASHED: &str = "|1|4KJ0GtK6SA/JHJSVdHpla0VvTq0=|ljPL+DAcyslnTY4Wh1B862FWf4w="; // [example.com]:2222
    const EC_HASHED: &str = "|1|ZQGTatZ3jCFIxQpEDCZ2aLgXZYI=|B0wG0NtDXH7zlSutS9P9kCY0c5s="; // db.example.com

    fn blob(k: &str) -> Vec<u8> {
        B64.decode(k.split(' ').nth(1).unwrap()).unwrap()
    }

    fn kh(text: &str) -> KnownHosts {
        KnownHosts::parse(Path::new("/k/known_hosts"), text.as_bytes())
    }

    #[test]
    fn plain_names_patterns_negation_ports_and_lists() {
        let k = kh(&format!(
            "a.example.com,b.example.com {ED}\n*.db.example.com,!secret.db.example.com {EC}\n\
             [c.example.com]:2222 {ED}\nweb-?.example.com {EC}\n[d.example.com]:* {ED}\n"
        ));
        assert!(k.warnings.is_empty(), "{:?}", k.warnings);
        let known = |name: &str, key: &str| k.check(name, &blob(key)) == Verdict::Known;
        assert!(known("a.example.com", ED) && known("B.Example.COM", ED));
        assert!(known("x.db.example.com", EC));
        assert_eq!(
            k.check("secret.db.example.com", &blob(EC)),
            Verdict::Unknown
        );
        assert!(known("[c.example.com]:2222", ED));
        // the port is part of the name
        assert_eq!(k.check("c.example.com", &blob(ED)), Verdict::Unknown);
        assert_eq!(k.check("[c.example.com]:2223", &blob(ED)), Verdict::Unknown);
        assert!(known("web-1.example.com", EC));
        assert_eq!(k.check("web-12.example.com", &blob(EC)), Verdict::Unknown);
        assert!(known("[d.example.com]:7", ED));
        assert_eq!(
            k.check("a.example.com", &blob(EC)),
            Verdict::Mismatch { line: 1 }
        );
    }

    #[test]
    fn hashed_names_match_only_their_host() {
        let k = kh(&format!("{ED_HASHED} {ED}\n{EC_HASHED} {EC}\n"));
        assert!(k.warnings.is_empty(), "{:?}", k.warnings);
        assert_eq!(k.check("[example.com]:2222", &blob(ED)), Verdict::Known);
        assert_eq!(k.check("db.example.com", &blob(EC)), Verdict::Known);
        assert_eq!(k.check("example.com", &blob(ED)), Verdict::Unknown);
        assert_eq!(
            k.check("db.example.com", &blob(ED)),
            Verdict::Mismatch { line: 2 }
        );
        assert_eq!(k.algorithms_for("db.example.com"), ["ecdsa-sha2-nistp256"]);
    }

    #[test]
    fn bad_and_long_lines_are_skipped_naming_file_and_line() {
        let long = format!("h ssh-ed25519 {}", "A".repeat(5000));
        let k = kh(&format!(
            "# a comment\n\nnot a line\n{long}\nh ssh-ed25519 !!!\nh ssh-rsa {}\n@mark h {ED}\n\
             |2|x|y {ED}\n,h {ED}\nh {ED}\n",
            ED.split(' ').nth(1).unwrap()
        ));
        let lines: Vec<usize> = k.warnings.iter().map(|w| w.line).collect();
        assert_eq!(lines, [3, 4, 5, 6, 7, 8, 9]);
        let w = k.warnings[3].to_string();
        assert_eq!(
            w,
            "skipped line 6 of `/k/known_hosts`: the key is `ssh-ed25519`, not `ssh-rsa`"
        );
        assert_eq!(k.check("h", &blob(ED)), Verdict::Known);
    }

    #[test]
    fn revoked_keys_are_refused_whatever_trusts_them() {
        let k = kh(&format!("h {ED}\nh {EC}\n@revoked * {ED}\n"));
        assert_eq!(k.check("h", &blob(ED)), Verdict::Revoked { line: 3 });
        assert_eq!(k.check("h", &blob(EC)), Verdict::Known);
        // and a revoked line is not a key to ask the host for
        assert_eq!(k.algorithms_for("h"), ["ecdsa-sha2-nistp256"]);
    }

    #[test]
    fn cert_authorities_are_reported_not_trusted() {
        let k = kh(&format!("@cert-authority *.example.com {ED}\n"));
        assert_eq!(
            k.check("a.example.com", &blob(ED)),
            Verdict::CertAuthority { line: 1 }
        );
        assert!(k.algorithms_for("a.example.com").is_empty());
    }

    #[test]
    fn hosts_are_asked_for_the_key_types_known_for_them() {
        let rsa = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAAQC7";
        let k = kh(&format!("a {EC}\na {ED}\nb {rsa}\n"));
        assert!(k.warnings.is_empty(), "{:?}", k.warnings);
        assert_eq!(
            k.algorithms_for("a"),
            ["ssh-ed25519", "ecdsa-sha2-nistp256"]
        );
        assert_eq!(
            k.algorithms_for("b"),
            ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]
        );
        assert!(k.algorithms_for("c").is_empty());
    }

    #[test]
    fn first_use_lines_read_back_as_known() {
        let line = line_for("[h]:2222", &blob(ED), "added by ferry push").unwrap();
        assert_eq!(line, format!("[h]:2222 {ED} added by ferry push"));
        assert_eq!(kh(&line).check("[h]:2222", &blob(ED)), Verdict::Known);
        assert_eq!(line_for("h", b"\0\0", "c"), None);
    }

    #[test]
    fn wildcards_match_like_openssh_and_in_linear_time() {
        assert!(wildcard(b"*", b""));
        assert!(wildcard(b"a*b?c", b"axxbyc"));
        assert!(!wildcard(b"a*b?c", b"axxbc"));
        let p = "*a".repeat(50) + "b";
        assert!(!wildcard(p.as_bytes(), "a".repeat(5000).as_bytes()));
    }
}

#[cfg(test)]
mod sshd_tests {
    //! Against a real sshd on 127.0.0.1 with an ed25519 and an ECDSA host
    //! key, logged in to through [`Remote::connect`].

    use std::net::{TcpListener, TcpStream};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use super::KnownHosts;
    use crate::ssh::SshError;
    use crate::ssh::Target;
    use crate::ssh::{Remote, SshOptions};

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

        fn connect(&self, known_hosts: &str) -> Result<Remote, SshError> {
            std::fs::write(self.path("known_hosts"), known_hosts).unwrap();
            self.connect_as_is(false)
        }

        /// Connects with the known_hosts file as it is.
        fn connect_as_is(&self, accept_new_host_keys: bool) -> Result<Remote, SshError> {
            let kh = self.path("known_hosts");
            let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
            let t = Target::new(&user, "127.0.0.1", self.port);
            let o = SshOptions {
                identities: vec![self.path("client")],
                known_hosts: kh,
                accept_new_host_keys,
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
        sshd_with("")
    }

    /// An sshd with `extra` lines in its config.
    fn sshd_with(extra: &str) -> Option<Sshd> {
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
             StrictModes no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n{extra}",
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

    /// A login shell that reads quotes otherwise than `sh` (here fish, as
    /// sshd's ForceCommand makes it the shell of every command line) is
    /// refused before any script runs.
    #[test]
    fn a_host_whose_login_shell_is_not_posix_is_refused() {
        if !Path::new("/usr/bin/fish").exists() {
            eprintln!("SKIPPED: fish is not installed (tests/run.sh installs it)");
            return;
        }
        let force = "ForceCommand exec /usr/bin/fish -c \"$SSH_ORIGINAL_COMMAND\"\n";
        let Some(s) = sshd_with(force) else { return };
        let e = s
            .connect(&format!("{} {}\n", s.entry(), s.host_key("ed25519")))
            .err()
            .expect("a fish login shell is refused");
        assert!(matches!(e, SshError::LoginShell { .. }), "{e}");
        assert!(e.to_string().contains("chsh -s /bin/bash"), "{e}");
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
        let kh = KnownHosts::read(&s.path("known_hosts")).unwrap();
        let lines: Vec<usize> = kh.warnings.iter().map(|w| w.line).collect();
        assert_eq!(lines, [1, 2]);
        assert!(
            kh.warnings[0].to_string().contains("known_hosts`"),
            "{:?}",
            kh.warnings
        );
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
        assert!(
            msg.contains("known_hosts:3") || msg.contains("known_hosts:4"),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn a_cert_authority_line_is_refused_clearly() {
        let Some(s) = sshd() else { return };
        let text = format!("@cert-authority {} {}\n", s.entry(), s.host_key("ed25519"));
        let err = s
            .connect(&text)
            .err()
            .expect("certificates are not supported");
        assert!(err.to_string().contains("certificate"), "{err}");
    }

    #[test]
    fn a_key_trusted_on_first_use_is_known_next_time() {
        let Some(s) = sshd() else { return };
        let err = s
            .connect("")
            .err()
            .expect("unknown without --accept-new-host-keys");
        assert!(matches!(err, SshError::UnknownHostKey { .. }), "{err}");
        s.connect_as_is(true).unwrap();
        let text = std::fs::read_to_string(s.path("known_hosts")).unwrap();
        assert!(text.starts_with(&s.entry()), "{text}");
        assert_eq!(text.lines().count(), 1, "{text}");
        s.connect_as_is(false).unwrap();
    }

    #[test]
    fn another_key_for_the_host_is_a_mismatch_naming_the_line() {
        let Some(s) = sshd() else { return };
        let other = super::tests::ED; // a key this sshd does not have
        let err = s
            .connect(&format!("# mine\n{} {other}\n", s.entry()))
            .err()
            .expect("another key is refused");
        assert!(
            matches!(err, SshError::HostKeyMismatch { line: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("known_hosts:2`"), "{err}");
    }

    #[test]
    fn a_host_without_the_key_type_known_for_it_is_refused_saying_so() {
        let Some(s) = sshd() else { return };
        let rsa = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAAQC7";
        let err = s
            .connect(&format!("{} {rsa}\n", s.entry()))
            .err()
            .expect("the host has no RSA key");
        let msg = err.to_string();
        // "... failed while the handshake (asking for the host-key types
        // known_hosts has for it: rsa-sha2-512,rsa-sha2-256,ssh-rsa): ..."
        assert!(msg.contains("rsa-sha2-512,rsa-sha2-256,ssh-rsa"), "{msg}");
    }
}
