//! Where ferry logs in: [`Target`], a host as `ssh://user@host[:port]`
//! with its jump hosts, parsed from the command line or mapped from a
//! cluster file's host. It owns the parsing and the names messages and
//! known_hosts give a host; it does not connect (see [`super::session`]).

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("`{target}` is not an ssh address: {message}; write it as `ssh://user@host[:port]`")]
    BadTarget { target: String, message: String },
}

/// A host as written on the command line: `ssh://user@host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub user: String,
    pub host: String,
    pub port: u16,
    /// The host to tunnel through, as OpenSSH's ProxyJump does (it may have
    /// a jump of its own). This host's name is resolved, and its key
    /// checked, as written here: the jump host only forwards the bytes.
    pub jump: Option<Box<Target>>,
    /// Run scripts as root with `sudo -n`; [`Target::new`] turns it on for
    /// every user but root.
    pub sudo: bool,
}

impl Target {
    /// A host reached directly, with sudo when `user` is not root.
    pub fn new(user: &str, host: &str, port: u16) -> Target {
        Target {
            user: user.to_string(),
            host: host.to_string(),
            port,
            jump: None,
            sudo: user != "root",
        }
    }

    /// Parses a jump as OpenSSH's `-J` takes it: `[ssh://][user@]host[:port]`,
    /// or several separated by commas, the first hop first. The result is the
    /// last hop, reached through the ones before it.
    pub fn parse_jump(s: &str, default_user: &str) -> Result<Target, TargetError> {
        let mut via: Option<Box<Target>> = None;
        for hop in s.split(',') {
            let url = if hop.starts_with("ssh://") {
                hop.to_string()
            } else {
                format!("ssh://{hop}")
            };
            let mut t = Target::parse(&url, default_user).map_err(|e| match e {
                TargetError::BadTarget { message, .. } => TargetError::BadTarget {
                    target: s.to_string(),
                    message,
                },
            })?;
            t.jump = via;
            via = Some(Box::new(t));
        }
        Ok(*via.expect("split yields at least one hop"))
    }

    /// Parses `ssh://[user@]host[:port]`; IPv6 addresses go in brackets.
    pub fn parse(s: &str, default_user: &str) -> Result<Target, TargetError> {
        let bad = |m: &str| TargetError::BadTarget {
            target: s.to_string(),
            message: m.to_string(),
        };
        let rest = s
            .strip_prefix("ssh://")
            .ok_or_else(|| bad("it does not start with `ssh://`"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            return Err(bad("it has a path; only `user@host:port` is allowed"));
        }
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) if !u.is_empty() => (u.to_string(), h),
            Some(_) => return Err(bad("the user before `@` is empty")),
            None => (default_user.to_string(), rest),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("`[` without `]`"))?;
            (h, after.strip_prefix(':'))
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(bad("the host is empty"));
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?,
            None => 22,
        };
        Ok(Target::new(&user, host, port))
    }

    /// How messages name the host: `user@host`, with `:port` when not 22.
    pub fn label(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 22 {
            format!("{}@{host}", self.user)
        } else {
            format!("{}@{host}:{}", self.user, self.port)
        }
    }

    /// The name known_hosts files use: `host`, or `[host]:port` when not 22.
    pub fn known_hosts_entry(&self) -> String {
        if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }
}

/// The user a cluster file's host logs in as when its `[hosts.ssh]` names
/// none: a plan's hosts are `root@…` too.
pub const CLUSTER_DEFAULT_USER: &str = "root";

/// A host as a cluster file writes it: its name, its address and the
/// `[hosts.ssh]` fields that say how to log in.
#[derive(Debug, Clone, Copy)]
pub struct ClusterHost<'a> {
    pub name: &'a str,
    pub address: &'a str,
    pub user: Option<&'a str>,
    pub port: Option<u16>,
    /// Another host of the cluster by name, or `[user@]host[:port]`.
    pub jump: Option<&'a str>,
}

impl ClusterHost<'_> {
    /// The host reached directly: its user (else [`CLUSTER_DEFAULT_USER`]),
    /// its address and its port (else 22).
    fn direct(&self) -> Target {
        Target::new(
            self.user.unwrap_or(CLUSTER_DEFAULT_USER),
            self.address,
            self.port.unwrap_or(22),
        )
    }
}

/// The one mapping from a cluster file's host to where ferry logs in. A
/// jump that names another host of the cluster (in `hosts`) goes through
/// that host as it is reached directly (its own jump is not followed);
/// any other jump is parsed as `-J` takes it, with the same default user.
pub fn cluster_target(host: &ClusterHost, hosts: &[ClusterHost]) -> Result<Target, TargetError> {
    let mut t = host.direct();
    if let Some(j) = host.jump {
        t.jump = Some(Box::new(match hosts.iter().find(|o| o.name == j) {
            Some(o) => o.direct(),
            None => Target::parse_jump(j, CLUSTER_DEFAULT_USER)?,
        }));
    }
    Ok(t)
}

/// The operator's home folder: `$HOME`, else `/root`.
pub fn operator_home() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
}

/// A `~` first in a path (a cluster file's key) is the operator's `home`.
pub fn expand_home(path: &Path, home: &Path) -> PathBuf {
    match path.strip_prefix("~") {
        Ok(rest) => home.join(rest),
        Err(_) => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_user_port_and_ipv6() {
        let t = Target::parse("ssh://spark@10.0.0.5:2222", "root").unwrap();
        assert_eq!(
            (t.user.as_str(), t.host.as_str(), t.port),
            ("spark", "10.0.0.5", 2222)
        );
        assert_eq!(t.label(), "spark@10.0.0.5:2222");
        assert_eq!(t.known_hosts_entry(), "[10.0.0.5]:2222");
        let t = Target::parse("ssh://node1", "root").unwrap();
        assert_eq!(
            (t.user.as_str(), t.port, t.label()),
            ("root", 22, "root@node1".to_string())
        );
        assert_eq!(t.known_hosts_entry(), "node1");
        let t = Target::parse("ssh://me@[fe80::1]:23/", "root").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("fe80::1", 23));
        assert_eq!(t.label(), "me@[fe80::1]:23");
        for bad in [
            "node1",
            "ssh://",
            "ssh://@h",
            "ssh://h:0",
            "ssh://h:x",
            "ssh://h/path",
            "ssh://[::1",
        ] {
            let e = Target::parse(bad, "root").unwrap_err().to_string();
            assert!(
                e.contains(&format!("`{bad}`")) && e.contains("ssh://user@host[:port]"),
                "{e}"
            );
        }
    }

    #[test]
    fn cluster_hosts_default_to_root_and_jump_by_name() {
        let bastion = ClusterHost {
            name: "gw",
            address: "10.0.0.1",
            user: Some("ops"),
            port: Some(2200),
            jump: Some("elsewhere"),
        };
        let node = ClusterHost {
            name: "n1",
            address: "10.0.0.5",
            user: None,
            port: None,
            jump: Some("gw"),
        };
        let hosts = [bastion, node];
        let t = cluster_target(&node, &hosts).unwrap();
        assert_eq!((t.label(), t.sudo), ("root@10.0.0.5".to_string(), false));
        let j = t.jump.unwrap();
        assert_eq!(j.label(), "ops@10.0.0.1:2200");
        assert!(
            j.jump.is_none(),
            "a named jump host's own jump is not followed"
        );
        let far = ClusterHost {
            jump: Some("a@h1,h2:23"),
            user: Some("spark"),
            ..node
        };
        let t = cluster_target(&far, &hosts).unwrap();
        assert!(t.sudo);
        let j = t.jump.unwrap();
        assert_eq!(j.label(), "root@h2:23");
        assert_eq!(j.jump.unwrap().label(), "a@h1");
        let bad = ClusterHost {
            jump: Some("ssh://"),
            ..node
        };
        assert!(cluster_target(&bad, &hosts).is_err());
    }

    #[test]
    fn home_is_expanded_once() {
        let home = Path::new("/home/op");
        for (p, want) in [
            ("~/.ssh/id", "/home/op/.ssh/id"),
            ("~", "/home/op"),
            ("/keys/id", "/keys/id"),
            ("~other/id", "~other/id"),
            ("keys/~/id", "keys/~/id"),
        ] {
            assert_eq!(expand_home(Path::new(p), home), PathBuf::from(want), "{p}");
        }
    }
}
