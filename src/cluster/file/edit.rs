//! `ferry scale`'s edit of a cluster file: a worker added to or removed
//! from `spark.workers.hosts`, the rest of the text as it was written.

use std::path::Path;

use toml_edit::{Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table, value};

use super::{At, ClusterError, ClusterFile, WorkerSize};

/// The cluster file's text with `host` added to (or removed from)
/// `spark.workers.hosts`, everything else as it was written (comments and
/// layout too: the edit goes through `toml_edit`, which keeps them); a host
/// that is not a `[[host]]` yet is appended as one when `address` is given.
/// The result is checked like any cluster file.
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
    let mut doc: DocumentMut = text.parse().expect("the file parsed as TOML above");
    if let Some((host, address)) = add {
        if hosts.iter().any(|h| h.get_ref() == host) {
            return Err(at.err(
                Some(hosts[0].span().start),
                "spark.workers.hosts",
                format!("`{host}` is a worker already"),
            ));
        }
        workers(&mut doc).push(host);
        let planned = file.hosts.iter().position(|h| h.name.get_ref() == host);
        match planned {
            None => {
                let Some(address) = address else {
                    return Err(at.err(
                        None,
                        "host",
                        format!(
                            "`{host}` is not a [[host]] of the cluster; give its address with --address"
                        ),
                    ));
                };
                let mut t = Table::new();
                t.insert("name", value(host));
                t.insert("address", value(address));
                if let Some(w) = size_table(size) {
                    t.insert("worker", value(w));
                }
                // after everything, a blank line before it
                t.set_position(Some(isize::MAX));
                t.decor_mut().set_prefix("\n");
                host_tables(&mut doc, &at)?.push(t);
            }
            Some(i) => {
                if let Some(w) = size_table(size) {
                    if let Some(old) = &file.hosts[i].worker
                        && !text[old.span()].starts_with('{')
                    {
                        return Err(at.spanned(
                            old,
                            &format!("host `{host}`.worker"),
                            "is not an inline table (`worker = { cores = 2 }`); change its size by hand".into(),
                        ));
                    }
                    let tables = host_tables(&mut doc, &at)?;
                    let t = tables.get_mut(i).expect("a [[host]] of the file");
                    let new = !t.contains_key("worker");
                    t["worker"] = value(w);
                    if new {
                        // its line goes under the host's name
                        let mut order: Vec<String> = t
                            .iter()
                            .map(|(k, _)| k.to_string())
                            .filter(|k| k != "worker")
                            .collect();
                        let after = order.iter().position(|k| k == "name").map_or(0, |n| n + 1);
                        order.insert(after, "worker".into());
                        let rank = |k: &str| order.iter().position(|o| o == k);
                        t.sort_values_by(|a, _, b, _| rank(a.get()).cmp(&rank(b.get())));
                    }
                }
            }
        }
    }
    if let Some(host) = remove {
        let Some(i) = hosts.iter().position(|h| h.get_ref() == host) else {
            return Err(at.err(
                Some(hosts[0].span().start),
                "spark.workers.hosts",
                format!("`{host}` is not a worker"),
            ));
        };
        let list = workers(&mut doc);
        let gone = list.remove(i);
        // the next one takes the place (and the spacing) of the first
        if i == 0
            && let Some(first) = list.get_mut(0)
            && let Some(prefix) = gone.decor().prefix()
        {
            first.decor_mut().set_prefix(prefix.clone());
        }
    }
    let out = doc.to_string();
    ClusterFile::parse(&out, path)?;
    Ok(out)
}

/// `spark.workers.hosts` of a file that was checked.
fn workers(doc: &mut DocumentMut) -> &mut Array {
    doc["spark"]["workers"]["hosts"]
        .as_array_mut()
        .expect("checked: spark.workers.hosts is a list")
}

/// The file's `[[host]]` tables.
fn host_tables<'d>(
    doc: &'d mut DocumentMut,
    at: &At,
) -> Result<&'d mut ArrayOfTables, ClusterError> {
    doc.get_mut("host")
        .and_then(Item::as_array_of_tables_mut)
        .ok_or_else(|| {
            at.err(
                None,
                "host",
                "the hosts are not written as `[[host]]` tables: add the worker by hand".into(),
            )
        })
}

/// `{ cores = 4, memory = "8g" }`, with what is given; `None` if nothing is.
fn size_table(size: &WorkerSize) -> Option<InlineTable> {
    let mut t = InlineTable::new();
    if let Some(c) = size.cores {
        t.insert("cores", i64::from(c).into());
    }
    if let Some(m) = &size.memory {
        t.insert("memory", m.as_str().into());
    }
    (!t.is_empty()).then_some(t)
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

    /// Comments on their own lines, at the end of lines and inside the
    /// edited table all stay where they were.
    #[test]
    fn comments_survive_an_edit() {
        let text = TEXT
            .replace(
                "[[host]]\nname = \"b\"\n",
                "# the second host\n[[host]]\nname = \"b\" # by name\n",
            )
            .replace(
                "[spark.workers]\n",
                "[spark.workers] # who works\n# keep two\n",
            );
        let size = WorkerSize {
            cores: Some(3),
            memory: None,
        };
        let removed = edit_workers(&text, Path::new("c.toml"), None, &size, Some("b")).unwrap();
        let back = edit_workers(
            &removed,
            Path::new("c.toml"),
            Some(("b", None)),
            &size,
            None,
        )
        .unwrap();
        for comment in [
            "name = \"c\" # the cluster\n",
            "# the second host\n[[host]]\nname = \"b\" # by name\nworker = { cores = 3 }\n",
            "[spark.workers] # who works\n# keep two\nhosts = [\"a\", \"b\"]  # two for now\n",
        ] {
            assert!(back.contains(comment), "{comment:?} in:\n{back}");
        }
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
