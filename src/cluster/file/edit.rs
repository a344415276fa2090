//! `ferry scale`'s edit of a cluster file: a worker added to or removed
//! from `spark.workers.hosts`, the rest of the text as it was written.

use std::path::Path;

use super::{At, ClusterError, ClusterFile, WorkerSize};

/// The cluster file's text with `host` added to (or removed from)
/// `spark.workers.hosts`, everything else as it was written; a host that is
/// not a `[[host]]` yet is appended as one when `address` is given. The
/// result is checked like any cluster file.
pub fn edit_workers(
    text: &str,
    path: &Path,
    add: Option<(&str, Option<&str>)>,
    size: &WorkerSize,
    remove: Option<&str>,
) -> Result<String, ClusterError> {
    let file = ClusterFile::parse(text, path)?;
    let at = At { text, path };
    let hosts = &file.spark.workers.hosts;
    let mut out = text.to_string();
    if let Some((host, address)) = add {
        if hosts.iter().any(|h| h.get_ref() == host) {
            return Err(at.err(
                Some(hosts[0].span().start),
                "spark.workers.hosts",
                format!("`{host}` is a worker already"),
            ));
        }
        let last = hosts.last().expect("checked: at least one worker");
        let added = format!(", {}", toml_string(host));
        out.insert_str(last.span().end, &added);
        // a span of `text`, where it is in `out` now
        let (at_end, by) = (last.span().end, added.len());
        let shift = |r: std::ops::Range<usize>| {
            if r.start >= at_end {
                r.start + by..r.end + by
            } else {
                r
            }
        };
        if file.host(host).is_none() {
            let Some(address) = address else {
                return Err(at.err(
                    None,
                    "host",
                    format!(
                        "`{host}` is not a [[host]] of the cluster; give its address with --address"
                    ),
                ));
            };
            if !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&format!(
                "\n[[host]]\nname = {}\naddress = {}\n",
                toml_string(host),
                toml_string(address)
            ));
            if let Some(t) = size_table(size) {
                out.push_str(&format!("worker = {t}\n"));
            }
        } else if let Some(t) = size_table(size) {
            let h = file.host(host).expect("checked above");
            match &h.worker {
                Some(old) if text[old.span()].starts_with('{') => {
                    out.replace_range(shift(old.span()), &t);
                }
                Some(old) => {
                    return Err(at.spanned(
                        old,
                        &format!("host `{host}`.worker"),
                        "is not an inline table (`worker = { cores = 2 }`); change its size by hand".into(),
                    ));
                }
                None => {
                    let name_end = shift(h.name.span()).end;
                    let line_end = out[name_end..]
                        .find('\n')
                        .map_or(out.len(), |i| name_end + i);
                    out.insert_str(line_end, &format!("\nworker = {t}"));
                }
            }
        }
    }
    if let Some(host) = remove {
        let Some(h) = hosts.iter().find(|h| h.get_ref() == host) else {
            return Err(at.err(
                Some(hosts[0].span().start),
                "spark.workers.hosts",
                format!("`{host}` is not a worker"),
            ));
        };
        let (s, e) = (h.span().start, h.span().end);
        let after = &out[e..];
        let trimmed = after.trim_start();
        let (start, end) = if let Some(rest) = trimmed.strip_prefix(',') {
            // `"a", "b"`: take the element, its comma and the space after
            let rest_ws = rest.len() - rest.trim_start().len();
            (s, e + (after.len() - trimmed.len()) + 1 + rest_ws)
        } else {
            // the last element: take the comma before it
            let before = out[..s].trim_end();
            match before.strip_suffix(',') {
                Some(b) => (b.len(), e),
                None => (s, e),
            }
        };
        out.replace_range(start..end, "");
    }
    ClusterFile::parse(&out, path)?;
    Ok(out)
}

/// `{ cores = 4, memory = "8g" }`, with what is given; `None` if nothing is.
fn size_table(size: &WorkerSize) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(c) = size.cores {
        parts.push(format!("cores = {c}"));
    }
    if let Some(m) = &size.memory {
        parts.push(format!("memory = {}", toml_string(m)));
    }
    (!parts.is_empty()).then(|| format!("{{ {} }}", parts.join(", ")))
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod edit_tests {
    use super::*;

    const TEXT: &str = "name = \"c\" # the cluster\n\n[[host]]\nname = \"a\"\naddress = \"10.0.0.1\"\n\n[[host]]\nname = \"b\"\naddress = \"10.0.0.2\"\n\n[spark.masters]\nhosts = [\"a\"]\n\n[spark.workers]\nhosts = [\"a\", \"b\"]  # two for now\ncores = 2\n";

    fn edit(add: Option<(&str, Option<&str>)>, remove: Option<&str>) -> Result<String, String> {
        edit_workers(
            TEXT,
            Path::new("c.toml"),
            add,
            &WorkerSize::default(),
            remove,
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn adding_and_removing_workers_keeps_the_rest_of_the_file() {
        let added = edit(Some(("c", Some("10.0.0.3"))), None).unwrap();
        assert!(
            added.contains("hosts = [\"a\", \"b\", \"c\"]  # two for now\n"),
            "{added}"
        );
        assert!(
            added.ends_with("[[host]]\nname = \"c\"\naddress = \"10.0.0.3\"\n"),
            "{added}"
        );
        assert!(added.starts_with("name = \"c\" # the cluster\n"));
        let removed = edit(None, Some("b")).unwrap();
        assert!(
            removed.contains("hosts = [\"a\"]  # two for now\n"),
            "{removed}"
        );
        let removed = edit(None, Some("a")).unwrap();
        assert!(
            removed.contains("hosts = [\"b\"]  # two for now\n"),
            "{removed}"
        );
        // an existing host needs no address
        let back = edit_workers(
            &removed,
            Path::new("c.toml"),
            Some(("a", None)),
            &WorkerSize::default(),
            None,
        )
        .unwrap();
        assert!(back.contains("hosts = [\"b\", \"a\"]"), "{back}");
    }

    #[test]
    fn refuses_what_would_not_make_sense() {
        assert!(
            edit(Some(("b", None)), None)
                .unwrap_err()
                .contains("a worker already")
        );
        assert!(
            edit(Some(("z", None)), None)
                .unwrap_err()
                .contains("--address")
        );
        assert!(edit(None, Some("z")).unwrap_err().contains("not a worker"));
        // the last worker cannot go: the file would be refused
        let one = edit(None, Some("b")).unwrap();
        let e = edit_workers(
            &one,
            Path::new("c.toml"),
            None,
            &WorkerSize::default(),
            Some("a"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("no worker"), "{e}");
    }

    #[test]
    fn an_added_worker_gets_its_own_size_in_its_host_table() {
        let big = WorkerSize {
            cores: Some(8),
            memory: Some("30g".into()),
        };
        let new = edit_workers(
            TEXT,
            Path::new("c.toml"),
            Some(("c", Some("10.0.0.3"))),
            &big,
            None,
        )
        .unwrap();
        assert!(
            new.ends_with(
                "name = \"c\"\naddress = \"10.0.0.3\"\nworker = { cores = 8, memory = \"30g\" }\n"
            ),
            "{new}"
        );
        let f = ClusterFile::parse(&new, Path::new("c.toml")).unwrap();
        assert_eq!(f.worker_size("c"), (8, "30g".into()));
        assert_eq!(f.worker_size("b").0, 2);
        // a host the file has: the line goes under its name; an inline size is replaced
        let removed = edit_workers(
            TEXT,
            Path::new("c.toml"),
            None,
            &WorkerSize::default(),
            Some("a"),
        )
        .unwrap();
        let four = WorkerSize {
            cores: Some(4),
            memory: None,
        };
        let back = edit_workers(
            &removed,
            Path::new("c.toml"),
            Some(("a", None)),
            &four,
            None,
        )
        .unwrap();
        assert!(
            back.contains("name = \"a\"\nworker = { cores = 4 }\naddress"),
            "{back}"
        );
        let f = ClusterFile::parse(&back, Path::new("c.toml")).unwrap();
        assert_eq!(f.worker_size("a"), (4, "1g".into()));
        let again = edit_workers(
            &removed.replace("name = \"a\"", "name = \"a\"\nworker = { cores = 3 }"),
            Path::new("c.toml"),
            Some(("a", None)),
            &big,
            None,
        )
        .unwrap();
        assert!(
            again.contains("worker = { cores = 8, memory = \"30g\" }\naddress"),
            "{again}"
        );
        // a bad size is refused naming the host's field
        let bad = WorkerSize {
            cores: None,
            memory: Some("lots".into()),
        };
        let e = edit_workers(
            TEXT,
            Path::new("c.toml"),
            Some(("c", Some("10.0.0.3"))),
            &bad,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("host `c`.worker.memory") && e.contains("`lots`"),
            "{e}"
        );
        let small = WorkerSize {
            cores: None,
            memory: Some("384m".into()),
        };
        let e = edit_workers(
            TEXT,
            Path::new("c.toml"),
            Some(("c", Some("10.0.0.3"))),
            &small,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("`384m` is too small: Spark needs at least 450m"),
            "{e}"
        );
    }
}
