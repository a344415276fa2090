//! Grammars for the values that come from outside and reach hosts, paths
//! or tools: user names, paths, command lines, host addresses, ZooKeeper
//! paths, cluster names, image references, digests, Debian and PyPI names and
//! versions (and PEP 503 name normalisation), and the keys and values of config
//! files. The cluster file, the plan (image labels), pushes and pulls (a
//! host's answers) and the lock all check against these, so one value is
//! held to one grammar wherever it is read.
//!
//! A value from an image label, a cluster file or a host reaches host
//! scripts (as data: see `crate::ssh::script`) and config files the daemons read
//! (as text, where a newline starts a new setting). So it is checked where ferry
//! reads it, against the narrowest grammar that fits what it names; each
//! check here says what is wrong in words the caller puts after the value
//! (`` `x` is not a user name (...) ``). Nothing here knows where a value
//! came from: the callers name the label or field. It depends on no other
//! module of ferry.

/// The longest path (Linux's `PATH_MAX`) and user name (`useradd`'s limit)
/// ferry accepts.
const MAX_PATH: usize = 4096;
const MAX_USER: usize = 32;

/// Whether `s` is a sha256 in lower-case hex, as blob files are named.
pub fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A user of an image: `[a-z_][a-z0-9_-]*`, at most 32 characters.
pub fn user(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= MAX_USER
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "is not a user name (`[a-z_][a-z0-9_-]*`, at most {MAX_USER} characters)"
        ))
    }
}

/// What a name in a path may hold: letters, digits and `._+@-`; never a
/// space, a quote, a `$`, a `:` (Docker's `--volume` separator) or a `,`.
fn path_name(c: &str) -> bool {
    !c.is_empty()
        && c != "."
        && c != ".."
        && c.chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "._+@-".contains(ch))
}

/// An absolute, normal path on a host or in an image: `/a/b`, with no `.`
/// or `..` name, no `//`, no trailing `/`, and names of [`path_name`]'s
/// characters only (so it reads the same in a config file, a sourced shell
/// file and a `--volume` argument).
pub fn path(s: &str) -> Result<(), String> {
    let ok = s.len() <= MAX_PATH
        && s.strip_prefix('/')
            .is_some_and(|rest| rest.split('/').all(path_name));
    if ok {
        Ok(())
    } else {
        Err(
            "is not an absolute, normal path (`/a/b`, names of letters, digits and `._+@-`; no `.` or `..` names, `//` or trailing `/`)"
                .into(),
        )
    }
}

/// A command line from a label: an absolute program path, then arguments
/// split at white space; no control characters (no second line).
pub fn command(s: &str) -> Result<(), String> {
    let program_ok = s.split_whitespace().next().is_some_and(|p| path(p).is_ok());
    if program_ok && !has_control(s) {
        Ok(())
    } else {
        Err("is not a command line ferry can run (an absolute, normal program path, then arguments; no control characters)".into())
    }
}

/// A key of a Java properties file (spark-defaults.conf): letters, digits
/// and `._-`, so no `=`, `:` or white space ends it early.
pub fn property_key(s: &str) -> Result<(), String> {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        Ok(())
    } else {
        Err("is not a property name (letters, digits and `._-`)".into())
    }
}

/// A value of a Java properties file: one line of it. Java ends a line at
/// `\n` or `\r`, and a trailing `\` joins the next line to this one.
pub fn property_value(s: &str) -> Result<(), String> {
    if has_control(s) {
        Err("holds a control character: a newline or carriage return would start a new line of spark-defaults.conf".into())
    } else if s.ends_with('\\') {
        Err("ends with `\\`, which would join the next line of spark-defaults.conf to it".into())
    } else {
        Ok(())
    }
}

/// The folders of the push store, which shares `/var/lib/ferry` (the
/// default store) with the clusters' state, one folder per cluster name.
const PUSH_STORE_FOLDERS: &[&str] = &["blobs", "images", "lock", "locks", "tmp"];

/// A cluster name: letters, digits, `-` and `_`, starting with a letter or
/// digit, at most 63 characters (it names containers and folders), and not
/// a folder of the push store.
pub fn cluster_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        Err("is not a usable cluster name: use letters, digits, `-` and `_`, starting with a letter or digit, at most 63 characters (it names containers and folders)".into())
    } else if PUSH_STORE_FOLDERS.contains(&s) {
        Err("is a folder of the push store beside the cluster's state in /var/lib/ferry; choose another cluster name".into())
    } else {
        Ok(())
    }
}

/// A ZooKeeper path (`spark.deploy.zookeeper.dir`): absolute, not the root,
/// no trailing `/`, no empty, `.` or `..` name, names as in [`path`].
pub fn znode(s: &str) -> Result<(), String> {
    // the same names and shape as a path; only the message differs
    if path(s).is_ok() {
        Ok(())
    } else {
        Err("is not a ZooKeeper path (`/a/b`, names of letters, digits and `._+@-`; not `/` alone, no `.` or `..` names, `//` or trailing `/`)".into())
    }
}

/// A login on a host over SSH: `[A-Za-z_][A-Za-z0-9._-]*`, at most 32
/// characters (it is written `user@address`).
pub fn login(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= MAX_USER
        && s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "is not a login name (`[A-Za-z_][A-Za-z0-9._-]*`, at most {MAX_USER} characters)"
        ))
    }
}

/// A name the cluster file gives a host: letters, digits and `._-`, not
/// starting with `.` or `-`, at most 63 characters.
pub fn host_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && !s.starts_with(['.', '-'])
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err("is not a usable host name (letters, digits and `._-`, not starting with `.` or `-`, at most 63 characters)".into())
    }
}

/// An address every host reaches: an IPv4 address or a DNS name (labels of
/// letters, digits, `-` and `_`, not starting or ending with `-`). IPv6 is
/// left out: ferry writes `address:port` everywhere, unbracketed.
pub fn address(s: &str) -> Result<(), String> {
    let dns = s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if dns || s.parse::<std::net::Ipv4Addr>().is_ok() {
        Ok(())
    } else {
        Err("is not an IPv4 address or a host name".into())
    }
}

/// An image reference as Docker reads one:
/// `[registry[:port]/]name[/name...][:tag][@sha256:<64 hex>]`, names of
/// lower-case letters and digits joined by `.`, `_` or `-`; or a bare
/// `sha256:<64 hex>`.
pub fn image_reference(s: &str) -> Result<(), String> {
    let hex64 = is_hex64;
    let ok = (|| {
        if let Some(d) = s.strip_prefix("sha256:") {
            return hex64(d);
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d)),
            None => (s, None),
        };
        if digest.is_some_and(|d| !d.strip_prefix("sha256:").is_some_and(hex64)) {
            return false;
        }
        let (name, tag) = match rest.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, Some(t)),
            _ => (rest, None),
        };
        let tag_ok = tag.is_none_or(|t| {
            t.len() <= 128
                && t.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        });
        let mut parts: Vec<&str> = name.split('/').collect();
        if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
            let registry = parts.remove(0);
            let (host, port) = registry.split_once(':').unwrap_or((registry, "1"));
            if address(host).is_err() || port.parse::<u16>().map_or(true, |p| p == 0) {
                return false;
            }
        }
        let component = |c: &str| {
            !c.is_empty()
                && c.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
                && c.ends_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
                && c.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
        };
        tag_ok && name.len() <= 255 && parts.iter().all(|c| component(c))
    })();
    if ok {
        Ok(())
    } else {
        Err("is not an image reference (`[registry/]name[:tag][@sha256:...]`, names of lower-case letters, digits and `._-`)".into())
    }
}

/// A content digest: `sha256:` and 64 lower-case hex digits.
pub fn digest(s: &str) -> Result<(), String> {
    let ok = s.strip_prefix("sha256:").is_some_and(is_hex64);
    if ok {
        Ok(())
    } else {
        Err("is not a digest (`sha256:` and 64 lower-case hex digits)".into())
    }
}

/// An object-store endpoint: `http://` or `https://`, an address, an
/// optional port, nothing after but an optional `/`.
pub fn endpoint(s: &str) -> Result<(), String> {
    let ok = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .map(|r| r.strip_suffix('/').unwrap_or(r))
        .is_some_and(|r| {
            let (host, port) = r.split_once(':').unwrap_or((r, "1"));
            address(host).is_ok() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
    if ok {
        Ok(())
    } else {
        Err("is not an endpoint (`https://host[:port]`)".into())
    }
}

/// A region name: lower-case letters, digits and `-`, starting with a letter.
pub fn region(s: &str) -> Result<(), String> {
    let ok = s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(
            "is not a region name (lower-case letters, digits and `-`, starting with a letter)"
                .into(),
        )
    }
}

/// An object-store prefix (the part of a `delivery` URL after the bucket):
/// names as in [`path`], joined by `/`.
pub fn prefix(s: &str) -> Result<(), String> {
    let p = s.trim_matches('/');
    if p.is_empty() || p.split('/').all(path_name) {
        Ok(())
    } else {
        Err("has a prefix ferry does not take (names of letters, digits and `._+@-`, joined by `/`)".into())
    }
}

/// Whether `s` holds a control character (a newline, a carriage return, an
/// escape, NUL...).
pub fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// A Debian package name (policy 5.6.1): `[a-z0-9][a-z0-9+.-]+`.
pub fn is_deb_name(n: &str) -> bool {
    let b = n.as_bytes();
    b.len() >= 2
        && b.len() <= 255
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"+.-".contains(c))
}

/// A Debian version (policy 5.6.12): `[epoch:]upstream[-revision]`, the
/// epoch digits, the upstream part starting with a digit, the whole made of
/// `[A-Za-z0-9.+~:-]`.
pub fn is_deb_version(v: &str) -> bool {
    let upstream = match v.split_once(':') {
        Some((epoch, rest)) => {
            if epoch.is_empty() || !epoch.bytes().all(|c| c.is_ascii_digit()) {
                return false;
            }
            rest
        }
        None => v,
    };
    v.len() <= 255
        && upstream.bytes().next().is_some_and(|c| c.is_ascii_digit())
        && upstream
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b".+~:-".contains(&c))
}

/// A Debian architecture (`amd64`, `arm64`, `all`, ...).
pub fn is_deb_arch(a: &str) -> bool {
    let b = a.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// A PyPI project name (PEP 508): ASCII letters and digits, with `.`, `_`
/// and `-` only between them.
pub fn is_pypi_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 255
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
}

/// A PyPI version in PEP 440's normalised form:
/// `[N!]N(.N)*[{a|b|rc}N][.postN][.devN][+local]`.
pub fn is_pypi_version(v: &str) -> bool {
    fn digits(s: &[u8], i: &mut usize) -> bool {
        let start = *i;
        while *i < s.len() && s[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    }
    fn word(s: &[u8], i: &mut usize, w: &[u8]) -> bool {
        if s[*i..].starts_with(w) {
            *i += w.len();
            true
        } else {
            false
        }
    }
    let lower = v.to_ascii_lowercase();
    let s = lower.as_bytes();
    if s.len() > 128 {
        return false;
    }
    let mut i = 0;
    if !digits(s, &mut i) {
        return false;
    }
    if word(s, &mut i, b"!") && !digits(s, &mut i) {
        return false;
    }
    while i < s.len() && s[i] == b'.' && s.get(i + 1).is_some_and(u8::is_ascii_digit) {
        i += 1;
        digits(s, &mut i);
    }
    if (word(s, &mut i, b"rc") || word(s, &mut i, b"a") || word(s, &mut i, b"b"))
        && !digits(s, &mut i)
    {
        return false;
    }
    if word(s, &mut i, b".post") && !digits(s, &mut i) {
        return false;
    }
    if word(s, &mut i, b".dev") && !digits(s, &mut i) {
        return false;
    }
    if word(s, &mut i, b"+") {
        let local = &s[i..];
        if local.is_empty()
            || local.starts_with(b".")
            || local.ends_with(b".")
            || local.windows(2).any(|w| w == b"..")
            || !local
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'.')
        {
            return false;
        }
        i = s.len();
    }
    i == s.len()
}

/// Splits `name=version` (or `name==version`) into its parts.
pub fn split_req<'a>(s: &'a str, sep: &str) -> (&'a str, Option<&'a str>) {
    match s.split_once(sep) {
        Some((n, v)) => (n.trim(), Some(v.trim())),
        None => (s.trim(), None),
    }
}

/// PEP 503 normalisation, for comparing distribution names.
pub fn normalize_name(n: &str) -> String {
    let mut out = String::new();
    let mut sep = false;
    for c in n.chars() {
        if c == '-' || c == '_' || c == '.' {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.extend(c.to_lowercase());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalise() {
        assert_eq!(normalize_name("Py4J"), "py4j");
        assert_eq!(normalize_name("typing_extensions"), "typing-extensions");
        assert_eq!(normalize_name("a.-_b"), "a-b");
    }

    #[test]
    fn users() {
        for ok in ["spark", "zookeeper", "_apt", "a-b_1"] {
            user(ok).unwrap();
        }
        for bad in [
            "",
            "Root",
            "1a",
            "-rf",
            "a b",
            "a;b",
            "x/;e touch /tmp/pwned;/",
        ] {
            user(bad).unwrap_err();
        }
        user(&"a".repeat(32)).unwrap();
        user(&"a".repeat(33)).unwrap_err();
    }

    #[test]
    fn paths() {
        for ok in [
            "/opt/spark",
            "/usr/lib/jvm/java-17-openjdk-amd64",
            "/tmp/.tmpA1_b/zk",
            "/a",
        ] {
            path(ok).unwrap();
        }
        for bad in [
            "", "/", "opt", "/a/", "//a", "/a//b", "/a/./b", "/a/../b", "/..", "/a b", "/a:b",
            "/a,b", "/a\nb", "/$(x)", "/a\\", "/é",
        ] {
            path(bad).unwrap_err();
        }
        path(&format!("/{}", "a".repeat(4095))).unwrap();
        path(&format!("/{}", "a".repeat(4096))).unwrap_err();
    }

    #[test]
    fn properties_and_znodes() {
        property_key("spark.worker.cleanup.appDataTtl").unwrap();
        for bad in ["", "a=b", "a:b", "a b", "a\nb", "#a", "!a"] {
            property_key(bad).unwrap_err();
        }
        property_value("a b=c:d \\t").unwrap();
        for bad in ["a\nb", "a\rb", "a\\", "\u{0}", "\u{85}"] {
            property_value(bad).unwrap_err();
        }
        znode("/spark").unwrap();
        znode("/ferry/ha-1").unwrap();
        for bad in [
            "", "/", "spark", "/spark/", "/a//b", "/a/../b", "/a b", "/spark\\",
        ] {
            znode(bad).unwrap_err();
        }
    }

    #[test]
    fn hosts_logins_and_addresses() {
        for ok in ["root", "first.last", "_x", "Admin"] {
            login(ok).unwrap();
        }
        for bad in ["", "root@evil", "-oX", "a b", "a:b"] {
            login(bad).unwrap_err();
        }
        for ok in ["node1", "node_1", "a.b-c"] {
            host_name(ok).unwrap();
        }
        for bad in ["", "-rf", ".x", "a b", "a$(x)", "a/b"] {
            host_name(bad).unwrap_err();
        }
        for ok in ["10.0.0.1", "localhost", "node-1.example.com", "a_b.lan"] {
            address(ok).unwrap();
        }
        for bad in [
            "",
            "-oProxyCommand=x",
            "a b",
            "10.0.0.1;x",
            "a..b",
            "a.",
            "x-.y",
            "::1",
            "a:1",
        ] {
            address(bad).unwrap_err();
        }
    }

    #[test]
    fn image_references() {
        let d = "0".repeat(64);
        for ok in [
            "ferry/spark:3.5.3".to_string(),
            "spark".into(),
            "registry.local:5000/a/b-c_d.e:v1.0-rc1".into(),
            "localhost/x".into(),
            format!("ferry/spark@sha256:{d}"),
            format!("ferry/spark:3.5.3@sha256:{d}"),
            format!("sha256:{d}"),
        ] {
            image_reference(&ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            "Ferry/spark",
            "-x",
            "ferry/spark:3.5.3 --privileged",
            "ferry/spark:",
            "ferry//spark",
            "ferry/spark@sha256:zz",
            "a:b:c",
            "$(x)",
        ] {
            image_reference(bad).unwrap_err();
        }
    }

    #[test]
    fn endpoints_regions_and_prefixes() {
        endpoint("https://s3.example.com").unwrap();
        endpoint("http://127.0.0.1:18333/").unwrap();
        for bad in [
            "s3.example.com",
            "http://a b",
            "http://h/path",
            "http://u@h",
            "http://h:0",
        ] {
            endpoint(bad).unwrap_err();
        }
        region("us-east-1").unwrap();
        region("us;x").unwrap_err();
        region("-rf").unwrap_err();
        prefix("images/spark/").unwrap();
        prefix("").unwrap();
        prefix("a/$(x)").unwrap_err();
        prefix("a//b").unwrap_err();
    }

    #[test]
    fn commands() {
        command("/usr/share/zookeeper/bin/zkServer.sh --config {conf} start-foreground").unwrap();
        command("zkServer.sh start").unwrap_err();
        command("/bin/x\nrm -rf /").unwrap_err();
        command("").unwrap_err();
    }
}
