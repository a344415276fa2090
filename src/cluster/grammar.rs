//! Grammars for the values a plan carries to hosts: user names, paths,
//! command lines, host addresses, ZooKeeper paths, image references and
//! the keys and values of config files.
//!
//! A value from an image label or a cluster file reaches host scripts (as
//! data: see `crate::script`) and config files the daemons read (as text,
//! where a newline starts a new setting). So it is checked where ferry
//! reads it, against the narrowest grammar that fits what it names; each
//! check here says what is wrong in words the caller puts after the value
//! (`` `x` is not a user name (...) ``). Nothing here knows where a value
//! came from: the callers name the label or field.

/// The longest path (Linux's `PATH_MAX`) and user name (`useradd`'s limit)
/// ferry accepts.
const MAX_PATH: usize = 4096;
const MAX_USER: usize = 32;

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

/// A ZooKeeper path (`spark.deploy.zookeeper.dir`): absolute, not the root,
/// no trailing `/`, no empty, `.` or `..` name, names as in [`path`].
pub fn znode(s: &str) -> Result<(), String> {
    let ok = s.len() <= MAX_PATH
        && s.strip_prefix('/')
            .is_some_and(|rest| rest.split('/').all(path_name));
    if ok {
        Ok(())
    } else {
        Err("is not a ZooKeeper path (`/a/b`, names of letters, digits and `._+@-`; not `/` alone, no `.` or `..` names, `//` or trailing `/`)".into())
    }
}

/// Whether `s` holds a control character (a newline, a carriage return, an
/// escape, NUL...).
pub fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn commands() {
        command("/usr/share/zookeeper/bin/zkServer.sh --config {conf} start-foreground").unwrap();
        command("zkServer.sh start").unwrap_err();
        command("/bin/x\nrm -rf /").unwrap_err();
        command("").unwrap_err();
    }
}
