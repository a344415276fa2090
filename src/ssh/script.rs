//! Host scripts: constant text, and every value as a positional parameter.
//!
//! Whatever runs on a host (or on this machine, for `--local`) is a
//! [`Script`]: text made only of `&'static str` pieces written in ferry's
//! source, plus the values it works on (paths, names, image references,
//! anything that came from a cluster file, a label, a lock or a host). The
//! script reads the values as `"$1"`, `"$2"`, …; they are quoted once, here,
//! into the command line `sh -c TEXT sh VALUE...`, and are never part of the
//! text. So no value, whatever it holds (`$(...)`, quotes, newlines, a leading
//! `-`, sed's `e` flag), can become code: the worst it can do is be a strange
//! argument to a command that the script quotes where it uses it.
//!
//! This is the one place that quotes for a shell; nothing else in ferry may.
//! A value holding NUL cannot be carried by `exec` and is refused.

use std::fmt;

/// A script to run under `sh`, with its values apart from its text.
#[derive(Clone, PartialEq, Eq)]
pub struct Script {
    text: Vec<&'static str>,
    args: Vec<String>,
}

/// A value a script cannot carry.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a value for the host script holds a NUL byte ({shown:?}): no shell can carry it")]
pub struct NulInValue {
    pub shown: String,
}

impl Script {
    /// A script of constant text, with no values yet.
    pub fn new(text: &'static str) -> Script {
        Script {
            text: vec![text],
            args: Vec::new(),
        }
    }

    /// Adds more constant text (a function library, a step), on a line of its own.
    pub fn then(mut self, text: &'static str) -> Script {
        self.text.push(text);
        self
    }

    /// Adds a value: the next positional parameter.
    pub fn arg(mut self, value: impl AsRef<str>) -> Script {
        self.args.push(value.as_ref().to_string());
        self
    }

    /// Adds values, in order.
    pub fn args<I, S>(mut self, values: I) -> Script
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.args
            .extend(values.into_iter().map(|v| v.as_ref().to_string()));
        self
    }

    /// The script's text, its pieces one per line.
    pub fn text(&self) -> String {
        self.text.join("\n")
    }

    /// The values, as `$1`, `$2`, … see them.
    pub fn values(&self) -> &[String] {
        &self.args
    }

    /// Refuses a value no `exec` can carry.
    pub fn check(&self) -> Result<(), NulInValue> {
        match self.args.iter().find(|a| a.contains('\0')) {
            Some(a) => Err(NulInValue {
                shown: a.replace('\0', "\\0"),
            }),
            None => Ok(()),
        }
    }

    /// `sh -c TEXT sh VALUE...`, every word quoted: the command an SSH
    /// server hands to the login shell.
    pub fn command_line(&self) -> Result<String, NulInValue> {
        self.check()?;
        let mut line = format!("sh -c {} sh", quote(&self.text()));
        for a in &self.args {
            line.push(' ');
            line.push_str(&quote(a));
        }
        Ok(line)
    }
}

/// Scripts show as their text and values, apart, as they are (for test
/// failures and `--dry-run` readers): never as one joined string.
impl fmt::Debug for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Script")
            .field("text", &self.text())
            .field("values", &self.args)
            .finish()
    }
}

/// Quotes a word for a POSIX shell: `'...'`, each `'` as `'\''`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    /// Writes an executable stand-in (a fake `docker`, `sudo`, `openssl`)
    /// for a test. A child process writes it, so this process never holds
    /// the file open for writing: the unit tests run on many threads, and a
    /// write descriptor inherited by another test's child between its fork
    /// and its exec makes running the stand-in fail with ETXTBSY ("text file
    /// busy"), after which sh takes the next one on the PATH, the real one.
    pub fn write_stand_in(path: &std::path::Path, body: &str) {
        let mut child = Command::new("sh")
            .args(["-c", "cat >\"$1\" && chmod 755 \"$1\"", "sh"])
            .arg(path)
            .stdin(Stdio::piped())
            .spawn()
            .expect("sh runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "writing {path:?}");
    }

    /// Values a hostile label, cluster file or host might send.
    pub const HOSTILE: &[&str] = &[
        "$(touch pwned-subst)",
        "`touch pwned-tick`",
        "; touch pwned-semi",
        "& touch pwned-amp",
        "| touch pwned-pipe",
        "\ntouch pwned-nl\n",
        "'; touch pwned-q1; '",
        "\"; touch pwned-q2; \"",
        "\\",
        "x\\",
        "s/a/touch pwned-sed/e",
        "1e touch pwned-sed2",
        "-rf",
        "--help",
        "$HOME",
        "${IFS}touch${IFS}pwned-ifs",
        "*",
        "",
        " ",
        "a b",
        "é\u{7}\u{1b}[2J",
    ];

    /// Runs the command line as an SSH server would (`sh -c LINE`) in `dir`.
    pub fn run_line(line: &str, dir: &std::path::Path) -> (i32, String) {
        let out = Command::new("sh")
            .arg("-c")
            .arg(line)
            .current_dir(dir)
            .output()
            .expect("sh runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    #[test]
    fn every_value_arrives_as_itself_and_runs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let script = Script::new(r#"for v in "$@"; do printf '%s\0' "$v"; done"#).args(HOSTILE);
        let (code, out) = run_line(&script.command_line().unwrap(), dir.path());
        assert_eq!(code, 0);
        let got: Vec<&str> = out.split('\0').collect();
        assert_eq!(&got[..got.len() - 1], HOSTILE);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn pieces_are_lines_and_values_stay_apart() {
        let s = Script::new("a=$1").then("echo \"$a\"").arg("x y");
        assert_eq!(s.text(), "a=$1\necho \"$a\"");
        assert_eq!(s.values(), ["x y"]);
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(run_line(&s.command_line().unwrap(), dir.path()).1, "x y\n");
    }

    #[test]
    fn a_nul_is_refused() {
        let s = Script::new("true").arg("a\0b");
        assert_eq!(
            s.command_line(),
            Err(NulInValue {
                shown: "a\\0b".into()
            })
        );
    }
}
