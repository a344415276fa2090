//! Import of the flat `KEY=value` file existing deploy scripts read
//! (`SPARK_MODE`, `SPARK_MASTER`, `SPARK_WORKERS`, ...), so their users can
//! switch in one step. The import writes cluster-file text, which then goes
//! through the same parser and checks as a hand-written cluster file.
//!
//! The result is one master without ZooKeeper: what those scripts start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum EnvCfgError {
    #[error("cannot read `{}`", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", file.display())]
    Invalid {
        file: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}: {message}", file.display())]
    Missing { file: PathBuf, message: String },
}

/// The cluster file made from a flat config, and notes on what was left out.
#[derive(Debug)]
pub struct Imported {
    pub toml: String,
    pub notes: Vec<String>,
}

/// Keys the import understands; anything else is reported and left out.
const KNOWN: &[&str] = &[
    "SPARK_MODE",
    "SPARK_MASTER",
    "SPARK_WORKERS",
    "SPARK_SUBMIT_PORT",
    "SPARK_MASTER_UI_PORT",
    "SPARK_WORKER_UI_PORTS",
    "SPARK_CLUSTER_DATA_PATH",
];

pub fn load(path: &Path) -> Result<Imported, EnvCfgError> {
    let text = std::fs::read_to_string(path).map_err(|source| EnvCfgError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    import(&text, path, &name)
}

/// Turns flat-config text into cluster-file text. `name` names the cluster
/// (the file's stem); characters a cluster name cannot hold become `-`.
pub fn import(text: &str, path: &Path, name: &str) -> Result<Imported, EnvCfgError> {
    let invalid = |line: usize, message: String| EnvCfgError::Invalid {
        file: path.to_path_buf(),
        line,
        message,
    };
    let mut vars: BTreeMap<String, (usize, String)> = BTreeMap::new();
    let mut notes = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            return Err(invalid(i + 1, format!("`{line}` is not `KEY=value`")));
        };
        let k = k.trim();
        let mut v = v.trim();
        for q in ['"', '\''] {
            if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
                v = &v[1..v.len() - 1];
            }
        }
        if !KNOWN.contains(&k) {
            notes.push(format!(
                "`{k}` (line {}) is left out: ferry runs containers on the hosts' network and needs no subnet or overlay",
                i + 1
            ));
            continue;
        }
        vars.insert(k.to_string(), (i + 1, v.to_string()));
    }
    // checked here, with their line, by the grammars the cluster file's
    // fields have (which check the written file again)
    for (k, (line, v)) in &vars {
        let check: fn(&str) -> Result<(), String> = match k.as_str() {
            "SPARK_MASTER" | "SPARK_WORKERS" => crate::grammar::address,
            "SPARK_CLUSTER_DATA_PATH" => crate::grammar::path,
            _ => |v| {
                if crate::grammar::has_control(v) {
                    Err("holds a control character".into())
                } else {
                    Ok(())
                }
            },
        };
        let items: Vec<&str> = if k == "SPARK_WORKERS" {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        } else {
            vec![v.as_str()]
        };
        for item in items.into_iter().filter(|i| !i.is_empty()) {
            if let Err(why) = check(item) {
                return Err(invalid(
                    *line,
                    format!(
                        "`{k}={}`: `{}` {why}",
                        v.escape_debug(),
                        item.escape_debug()
                    ),
                ));
            }
        }
    }
    let get = |k: &str| {
        vars.get(k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let port_of = |k: &str, default: u16| -> Result<u16, EnvCfgError> {
        match vars.get(k) {
            None => Ok(default),
            Some((line, v)) => v
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| invalid(*line, format!("`{k}={v}` is not a port"))),
        }
    };
    let list = |k: &str| -> Vec<String> {
        get(k)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mode = get("SPARK_MODE").unwrap_or("LOCAL");
    let submit = port_of("SPARK_SUBMIT_PORT", 7077)?;
    let master_ui = port_of("SPARK_MASTER_UI_PORT", 8080)?;
    let worker_uis: Vec<u16> = match vars.get("SPARK_WORKER_UI_PORTS") {
        None => Vec::new(),
        Some((line, _)) => list("SPARK_WORKER_UI_PORTS")
            .iter()
            .map(|p| {
                p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                    invalid(
                        *line,
                        format!("`{p}` in `SPARK_WORKER_UI_PORTS` is not a port"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    };

    // (host name, address), master first
    let mut hosts: Vec<(String, String)> = Vec::new();
    let mut workers: Vec<String> = Vec::new();
    match mode {
        "LOCAL" => {
            let address = get("SPARK_MASTER").unwrap_or("127.0.0.1");
            hosts.push(("local".into(), address.into()));
            workers.push("local".into());
            if !list("SPARK_WORKERS").is_empty() {
                notes.push("`SPARK_WORKERS` is left out: `SPARK_MODE=LOCAL` runs one worker beside the master".into());
            }
        }
        "STANDALONE" => {
            let Some(master) = get("SPARK_MASTER") else {
                return Err(EnvCfgError::Missing {
                    file: path.to_path_buf(),
                    message: "`SPARK_MODE=STANDALONE` needs `SPARK_MASTER=<address>`".into(),
                });
            };
            hosts.push(("master".into(), master.into()));
            let ips = list("SPARK_WORKERS");
            if ips.is_empty() {
                return Err(EnvCfgError::Missing {
                    file: path.to_path_buf(),
                    message: "`SPARK_MODE=STANDALONE` needs `SPARK_WORKERS=<address>,<address>`"
                        .into(),
                });
            }
            for (i, ip) in ips.iter().enumerate() {
                // a worker beside the master runs on the master's host
                match hosts.iter().find(|(_, a)| a == ip) {
                    Some((n, _)) => workers.push(n.clone()),
                    None => {
                        let n = format!("worker{}", i + 1);
                        hosts.push((n.clone(), ip.clone()));
                        workers.push(n);
                    }
                }
            }
        }
        other => {
            let line = vars.get("SPARK_MODE").map(|(l, _)| *l).unwrap_or(0);
            return Err(invalid(
                line,
                format!("`SPARK_MODE={other}`: expected `LOCAL` or `STANDALONE`"),
            ));
        }
    }
    if !worker_uis.is_empty() && worker_uis.len() != workers.len() {
        let line = vars
            .get("SPARK_WORKER_UI_PORTS")
            .map(|(l, _)| *l)
            .unwrap_or(0);
        return Err(invalid(
            line,
            format!(
                "{} worker UI ports for {} workers: give one port per worker, in the order of `SPARK_WORKERS`",
                worker_uis.len(),
                workers.len()
            ),
        ));
    }

    let cluster: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let qlist = |v: &[String]| {
        format!(
            "[{}]",
            v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
        )
    };
    let mut t = String::new();
    t.push_str(&format!(
        "# made by `ferry plan --from-env-cfg {}`: one master, no ZooKeeper\n",
        path.display()
    ));
    t.push_str(&format!("name = {}\n", q(&cluster)));
    for (n, a) in &hosts {
        // the scripts log in as root with keys set up by hand
        t.push_str(&format!(
            "\n[[host]]\nname = {}\naddress = {}\nssh = {{ user = \"root\" }}\n",
            q(n),
            q(a)
        ));
    }
    t.push_str(&format!(
        "\n[spark.masters]\nhosts = [{}]\nport = {submit}\nui_port = {master_ui}\n",
        q(&hosts[0].0)
    ));
    t.push_str(&format!("\n[spark.workers]\nhosts = {}\n", qlist(&workers)));
    if let Some(p) = get("SPARK_CLUSTER_DATA_PATH") {
        t.push_str(&format!("work_dir = {}\n", q(p)));
    }
    let mut ui_ports: BTreeMap<&str, u16> = BTreeMap::new();
    for (w, p) in workers.iter().zip(&worker_uis) {
        ui_ports.insert(w, *p);
    }
    if !ui_ports.is_empty() {
        let entries: Vec<String> = ui_ports
            .iter()
            .map(|(w, p)| format!("{} = {p}", q(w)))
            .collect();
        t.push_str(&format!("ui_ports = {{ {} }}\n", entries.join(", ")));
    }
    Ok(Imported { toml: t, notes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_comments_and_export_are_understood() {
        let i = import(
            "# wefe\nexport SPARK_MODE=\"STANDALONE\"\nSPARK_MASTER='10.0.0.1'\nSPARK_WORKERS=10.0.0.2, 10.0.0.3\n",
            Path::new("w.cfg"),
            "w",
        )
        .unwrap();
        assert!(i.toml.contains("address = \"10.0.0.3\""), "{}", i.toml);
    }

    #[test]
    fn a_worker_on_the_master_address_shares_its_host() {
        let i = import(
            "SPARK_MODE=STANDALONE\nSPARK_MASTER=10.0.0.1\nSPARK_WORKERS=10.0.0.1,10.0.0.2\n",
            Path::new("w.cfg"),
            "w",
        )
        .unwrap();
        assert!(
            i.toml.contains("hosts = [\"master\", \"worker2\"]"),
            "{}",
            i.toml
        );
    }

    #[test]
    fn unknown_mode_names_its_line() {
        let e = import("\nSPARK_MODE=MESOS\n", Path::new("w.cfg"), "w").unwrap_err();
        assert_eq!(
            e.to_string(),
            "w.cfg:2: `SPARK_MODE=MESOS`: expected `LOCAL` or `STANDALONE`"
        );
    }

    #[test]
    fn addresses_and_the_data_path_are_checked_naming_their_line() {
        let e = import(
            "SPARK_MODE=STANDALONE\nSPARK_MASTER=10.0.0.1;touch /tmp/pwned\nSPARK_WORKERS=10.0.0.2\n",
            Path::new("w.cfg"),
            "w",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "w.cfg:2: `SPARK_MASTER=10.0.0.1;touch /tmp/pwned`: `10.0.0.1;touch /tmp/pwned` is not an IPv4 address or a host name"
        );
        let e = import(
            "SPARK_MODE=STANDALONE\nSPARK_MASTER=10.0.0.1\nSPARK_WORKERS=10.0.0.2,-oProxyCommand=x\n",
            Path::new("w.cfg"),
            "w",
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("w.cfg:3: `SPARK_WORKERS"), "{e}");
        // a lone carriage return is not a line end to `lines()`
        let e = import(
            "SPARK_MODE=LOCAL\nSPARK_CLUSTER_DATA_PATH=/data/w\refe\n",
            Path::new("w.cfg"),
            "w",
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("w.cfg:2: `SPARK_CLUSTER_DATA_PATH=/data/w\\refe`: `/data/w\\refe` is not an absolute, normal path"),
            "{e}"
        );
    }

    #[test]
    fn worker_ui_ports_must_match_the_workers() {
        let e = import(
            "SPARK_MODE=STANDALONE\nSPARK_MASTER=a\nSPARK_WORKERS=b,c\nSPARK_WORKER_UI_PORTS=8081\n",
            Path::new("w.cfg"),
            "w",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("1 worker UI ports for 2 workers"),
            "{e}"
        );
    }
}
