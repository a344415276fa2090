//! Carries out a plan on this machine's Docker (`ferry up --local`): writes
//! the plan's folders and files, starts its containers in the plan's order
//! and waits on each step's gate. Also `submit` and `down` against such a
//! cluster. It runs the `docker` CLI; launching on other hosts over SSH is
//! not here yet.
//!
//! Idempotent: a container whose `ferry.spec` label matches the plan is left
//! running; one whose spec changed is replaced.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::plan::{Action, Container, Gate, Plan};

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("`docker {args}` failed: {message}")]
    Docker { args: String, message: String },
    #[error("cannot write `{}`", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "image `{0}` is not in the local Docker; build and load it: `ferry build --docker-archive out/spark.tar && docker load -i out/spark.tar`"
    )]
    NoImage(String),
    #[error("`--local` runs a one-host cluster on this machine; {0}")]
    NotLocal(String),
    #[error("gate `{gate}` not met within {secs}s: {last}\n{logs}")]
    Gate {
        gate: String,
        secs: u32,
        last: String,
        logs: String,
    },
}

/// A plan `--local` can run: one host, on a loopback address.
pub fn check_local(plan: &Plan) -> Result<(), LaunchError> {
    let busy: Vec<_> = plan
        .hosts
        .iter()
        .filter(|h| !h.containers.is_empty())
        .collect();
    if busy.len() != 1 {
        return Err(LaunchError::NotLocal(format!(
            "this plan has roles on {} hosts (use a file like examples/local.toml)",
            busy.len()
        )));
    }
    let a = &busy[0].address;
    if !(a.starts_with("127.") || a == "localhost" || a == "::1") {
        return Err(LaunchError::NotLocal(format!(
            "host `{}` has the address `{a}`, not a loopback one",
            busy[0].name
        )));
    }
    Ok(())
}

fn docker(args: &[String]) -> Result<String, LaunchError> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| LaunchError::Docker {
            args: args.join(" "),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(LaunchError::Docker {
            args: args.join(" "),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// `docker run` arguments for a planned container.
pub fn run_args(c: &Container) -> Vec<String> {
    let mut a = s(&["run", "--detach", "--name", &c.name]);
    a.extend(s(&[
        "--network",
        &c.network,
        "--restart",
        &c.restart,
        "--user",
        &c.user,
    ]));
    for (k, v) in &c.labels {
        a.push("--label".into());
        a.push(format!("{k}={v}"));
    }
    for (k, v) in &c.env {
        a.push("--env".into());
        a.push(format!("{k}={v}"));
    }
    for m in &c.mounts {
        a.push("--volume".into());
        let ro = if m.read_only { ":ro" } else { "" };
        a.push(format!("{}:{}{ro}", m.source, m.target));
    }
    a.push(c.image.clone());
    a.extend(c.command.iter().cloned());
    a
}

/// Runs the plan's steps on this machine; `p` gets one line per event.
pub fn up_local(plan: &Plan, p: &dyn Fn(&str)) -> Result<(), LaunchError> {
    check_local(plan)?;
    let host = plan
        .hosts
        .iter()
        .find(|h| !h.containers.is_empty())
        .expect("checked: one busy host");
    for step in &plan.steps {
        match step.action {
            Action::DeliverImage => {
                docker(&s(&[
                    "image",
                    "inspect",
                    "--format",
                    "{{.Id}}",
                    &plan.image.reference,
                ]))
                .map_err(|_| LaunchError::NoImage(plan.image.reference.clone()))?;
                p(&format!(
                    "image `{}` is in the local Docker",
                    plan.image.reference
                ));
            }
            Action::WriteFiles => {
                let mut uids: BTreeMap<String, String> = BTreeMap::new();
                for d in &host.dirs {
                    let path = Path::new(&d.path);
                    std::fs::create_dir_all(path).map_err(|source| LaunchError::Io {
                        path: path.to_path_buf(),
                        source,
                    })?;
                    if d.owner != "root" && !uids.contains_key(&d.owner) {
                        // the image's user, by its uid inside the image
                        let id = docker(&s(&[
                            "run",
                            "--rm",
                            "--entrypoint",
                            "id",
                            &plan.image.reference,
                            "-u",
                            &d.owner,
                        ]))?;
                        uids.insert(d.owner.clone(), id);
                    }
                    let owner = uids.get(&d.owner).map(String::as_str).unwrap_or("0");
                    let status = Command::new("chown")
                        .arg(format!("{owner}:{owner}"))
                        .arg(path)
                        .status();
                    let mode = u32::from_str_radix(&d.mode, 8).unwrap_or(0o755);
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(
                        |source| LaunchError::Io {
                            path: path.to_path_buf(),
                            source,
                        },
                    )?;
                    if !status.is_ok_and(|s| s.success()) {
                        return Err(LaunchError::Io {
                            path: path.to_path_buf(),
                            source: std::io::Error::other(format!("chown to {owner} failed")),
                        });
                    }
                }
                for f in &host.files {
                    let path = Path::new(&f.path);
                    crate::fsutil::write_atomic(path, f.content.as_bytes()).map_err(|source| {
                        LaunchError::Io {
                            path: path.to_path_buf(),
                            source,
                        }
                    })?;
                }
                p(&format!(
                    "wrote {} folders and {} files",
                    host.dirs.len(),
                    host.files.len()
                ));
            }
            Action::StartZookeeper | Action::StartMasters | Action::StartWorkers => {
                let role = match step.action {
                    Action::StartZookeeper => super::plan::Role::Zookeeper,
                    Action::StartMasters => super::plan::Role::Master,
                    _ => super::plan::Role::Worker,
                };
                for c in host.containers.iter().filter(|c| c.role == role) {
                    ensure(c, p)?;
                }
                if let Some(g) = &step.gate {
                    let names: Vec<&str> = host
                        .containers
                        .iter()
                        .filter(|c| c.role == role)
                        .map(|c| c.name.as_str())
                        .collect();
                    wait(g, &names, p)?;
                }
            }
        }
    }
    Ok(())
}

/// Starts `c` unless a container of that name already runs its spec.
fn ensure(c: &Container, p: &dyn Fn(&str)) -> Result<(), LaunchError> {
    let want = &c.labels["ferry.spec"];
    let found = docker(&s(&[
        "container",
        "inspect",
        "--format",
        "{{index .Config.Labels \"ferry.spec\"}} {{.State.Running}}",
        &c.name,
    ]))
    .ok();
    if let Some(found) = found {
        if found == format!("{want} true") {
            p(&format!("{} is up to date", c.name));
            return Ok(());
        }
        docker(&s(&["rm", "--force", &c.name]))?;
        p(&format!("{}: spec changed, replacing it", c.name));
    }
    docker(&run_args(c))?;
    p(&format!("started {}", c.name));
    Ok(())
}

fn logs(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| {
            let out = Command::new("docker")
                .args(["logs", "--tail", "15", n])
                .output()
                .map(|o| {
                    format!(
                        "{}{}",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    )
                })
                .unwrap_or_default();
            format!("--- last lines of {n}:\n{}", out.trim_end())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn wait(g: &Gate, names: &[&str], p: &dyn Fn(&str)) -> Result<(), LaunchError> {
    let (label, deadline) = match g {
        Gate::ZookeeperLeader { deadline_secs, .. } => ("zookeeper-leader", *deadline_secs),
        Gate::OneMasterAlive { deadline_secs, .. } => ("one-master-alive", *deadline_secs),
        Gate::WorkersRegistered { deadline_secs, .. } => ("workers-registered", *deadline_secs),
    };
    let start = Instant::now();
    loop {
        let last = match check(g) {
            Ok(what) => {
                p(&format!(
                    "gate {label}: {what} ({:.1}s)",
                    start.elapsed().as_secs_f64()
                ));
                return Ok(());
            }
            Err(why) => why,
        };
        if start.elapsed() > Duration::from_secs(deadline.into()) {
            return Err(LaunchError::Gate {
                gate: label.into(),
                secs: deadline,
                last,
                logs: logs(names),
            });
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// One look at a gate: what is true, or why not yet.
fn check(g: &Gate) -> Result<String, String> {
    match g {
        Gate::ZookeeperLeader { servers, .. } => {
            let modes: Vec<String> = servers
                .iter()
                .map(|s| srvr_mode(s).map_err(|e| format!("`srvr` on {s}: {e}")))
                .collect::<Result<_, _>>()?;
            let leaders = modes.iter().filter(|m| *m == "leader").count();
            let ok = (modes.len() == 1 && modes[0] == "standalone")
                || (leaders == 1 && modes.iter().all(|m| m == "leader" || m == "follower"));
            if ok {
                Ok(format!("modes {}", modes.join(", ")))
            } else {
                Err(format!("modes {}", modes.join(", ")))
            }
        }
        Gate::OneMasterAlive { status_urls, .. } => {
            let alive = alive_masters(status_urls);
            match alive.len() {
                1 => Ok(format!("{} is ALIVE", alive[0].0)),
                n => Err(format!("{n} masters ALIVE")),
            }
        }
        Gate::WorkersRegistered {
            status_urls,
            workers,
            ..
        } => {
            let alive = alive_masters(status_urls);
            let Some((url, json)) = alive.first() else {
                return Err("no master is ALIVE".into());
            };
            let registered: Vec<String> = json["workers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|w| w["state"] == "ALIVE")
                .map(|w| format!("{}:{}", w["host"].as_str().unwrap_or(""), w["port"]))
                .collect();
            let missing: Vec<&String> =
                workers.iter().filter(|w| !registered.contains(w)).collect();
            if missing.is_empty() {
                Ok(format!("{} workers registered with {url}", workers.len()))
            } else {
                Err(format!("not yet registered with {url}: {missing:?}"))
            }
        }
    }
}

fn srvr_mode(server: &str) -> Result<String, String> {
    let addr = server
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    let mut c =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    c.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    c.write_all(b"srvr").map_err(|e| e.to_string())?;
    let mut out = String::new();
    c.read_to_string(&mut out).map_err(|e| e.to_string())?;
    out.lines()
        .find_map(|l| l.strip_prefix("Mode: "))
        .map(|m| m.trim().to_string())
        .ok_or_else(|| format!("no `Mode:` in the answer ({})", out.trim()))
}

fn alive_masters(status_urls: &[String]) -> Vec<(String, serde_json::Value)> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("an HTTP client builds");
    status_urls
        .iter()
        .filter_map(|u| {
            let body = client.get(u).send().ok()?.text().ok()?;
            let json: serde_json::Value = serde_json::from_str(&body).ok()?;
            (json["status"] == "ALIVE").then(|| (u.clone(), json))
        })
        .collect()
}

/// Runs `spark-submit` in a throwaway container of the cluster's image on
/// the host's network; the driver's output goes to this terminal.
/// A `job` that is a file here is mounted; otherwise it is a path in the image.
pub fn submit_local(
    plan: &Plan,
    spark_home: &str,
    spark_user: &str,
    job: &str,
    args: &[String],
) -> Result<std::process::ExitStatus, LaunchError> {
    let mut a = s(&["run", "--rm", "--network", "host", "--user", spark_user]);
    let local = Path::new(job);
    let job_in = if local.is_file() {
        let abs = std::fs::canonicalize(local).map_err(|source| LaunchError::Io {
            path: local.to_path_buf(),
            source,
        })?;
        let name = abs
            .file_name()
            .expect("a file has a name")
            .to_string_lossy()
            .into_owned();
        a.push("--volume".into());
        a.push(format!("{}:/opt/ferry/submit/{name}:ro", abs.display()));
        format!("/opt/ferry/submit/{name}")
    } else {
        job.to_string()
    };
    a.extend([
        plan.image.reference.clone(),
        format!("{spark_home}/bin/spark-submit"),
        "--master".into(),
        plan.master_url.clone(),
        job_in,
    ]);
    a.extend(args.iter().cloned());
    Command::new("docker")
        .args(&a)
        .status()
        .map_err(|e| LaunchError::Docker {
            args: a.join(" "),
            message: e.to_string(),
        })
}

/// Removes every container labelled with the cluster's name; returns their names.
pub fn down_local(cluster: &str) -> Result<Vec<String>, LaunchError> {
    let names = docker(&s(&[
        "ps",
        "--all",
        "--filter",
        &format!("label=ferry.cluster={cluster}"),
        "--format",
        "{{.Names}}",
    ]))?;
    let mut names: Vec<String> = names.lines().map(str::to_string).collect();
    names.sort();
    if !names.is_empty() {
        let mut a = s(&["rm", "--force"]);
        a.extend(names.iter().cloned());
        docker(&a)?;
    }
    Ok(names)
}
