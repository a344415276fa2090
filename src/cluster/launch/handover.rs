//! A planned failover that does not wait for ZooKeeper.
//!
//! Spark's masters elect their leader with Curator's leader latch: each
//! master holds an ephemeral, sequential node under
//! `<spark.deploy.zookeeper.dir>/leader_election`, and the lowest one leads.
//! A master that stops does not close its ZooKeeper session, so its node
//! outlives it until the session expires (up to `maxSessionTimeout`), and
//! no standby can take over before that: 10 s or more of a cluster with no
//! ALIVE master on every planned stop. Once the leader is stopped, ferry
//! deletes the node it left; the next standby in line is told at once.
//!
//! The node is noted while the leader still runs (the lowest is the
//! leader's, by the latch's definition) and deleted by name once it is
//! stopped, so a node another master made meanwhile is never touched.
//! The ZooKeeper command-line client in a ZooKeeper container does the
//! work: the cluster's own client, on the cluster's own network.

use crate::ssh::Script;
use std::time::{Duration, Instant};

use crate::cluster::file::LOGIN_CONFIG;
use crate::cluster::fleet::Fleet;
use crate::cluster::hosts::{ClusterHost, HostError};
use crate::cluster::plan::{JaasSection, Plan, Role, ZK_SECRET_IN, ZK_SERVER_JAAS};

/// Why a handover step failed.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("host `{host}` cannot be reached")]
    Unreachable { host: String },
    /// zkCli's answer to a delete it refused.
    #[error("deleting the leader's latch node `{node}`: {answer}")]
    Delete { node: String, answer: String },
    #[error("deleting `{state}`: {answer}")]
    ClearState { state: String, answer: String },
}

/// Where the masters' leader latch lives, and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Latch {
    /// The host whose ZooKeeper container runs the client.
    pub host: String,
    pub container: String,
    /// `zkCli.sh`, beside the server's start script.
    pub cli: String,
    /// `address:port` of that host's ZooKeeper server.
    pub server: String,
    /// `<spark.deploy.zookeeper.dir>/leader_election`.
    pub path: String,
    /// The JAAS file in the container that logs the client in, when the
    /// ensemble admits only logged-in sessions (`zookeeper.auth = "sasl"`).
    pub login: Option<String>,
}

/// The latch of a plan with masters under ZooKeeper; `None` without.
pub fn latch(plan: &Plan) -> Option<Latch> {
    let dir = plan
        .hosts
        .iter()
        .filter(|h| h.containers.iter().any(|c| c.role == Role::Master))
        .flat_map(|h| &h.files)
        .find_map(|f| {
            f.content.lines().find_map(|l| {
                let v = l.strip_prefix("spark.deploy.zookeeper.dir")?;
                v.starts_with([' ', '\t', '=']).then(|| {
                    v.trim_start_matches([' ', '\t', '='])
                        .trim()
                        .trim_end_matches('/')
                        .to_string()
                })
            })
        })?;
    let (host, zk) = plan.hosts.iter().find_map(|h| {
        h.containers
            .iter()
            .find(|c| c.role == Role::Zookeeper)
            .map(|c| (h, c))
    })?;
    let start = zk.command.first()?;
    let cli = format!("{}/zkCli.sh", start.rsplit_once('/')?.0);
    let port = zk.ports.first()?.port;
    let login = host
        .jaas
        .iter()
        .any(|j| j.section == JaasSection::Server)
        .then(|| format!("{ZK_SECRET_IN}/{ZK_SERVER_JAAS}"));
    Some(Latch {
        host: host.name.clone(),
        container: zk.name.clone(),
        cli,
        server: format!("{}:{port}", host.address),
        path: format!("{dir}/leader_election"),
        login,
    })
}

/// The latch's nodes, the leader's first (by their sequence numbers).
pub fn nodes(conn: &dyn ClusterHost, l: &Latch) -> Result<Vec<String>, HostError> {
    let out = conn.run(
        "listing the masters' leader latch",
        &cli(l, "ls", &l.path),
        &[],
    )?;
    Ok(parse_ls(&out))
}

/// Deletes one node; one that is gone already (its session expired) is fine.
pub fn delete(conn: &dyn ClusterHost, l: &Latch, node: &str) -> Result<(), HandoverError> {
    let out = conn.run(
        "handing the masters' leadership over",
        &cli(l, "delete", &format!("{}/{node}", l.path)),
        &[],
    )?;
    // zkCli exits 0 either way and says what went wrong on stdout; a node
    // that is gone already (its session expired meanwhile) is what we wanted
    if out.contains("Node does not exist")
        || !(out.contains("Exception") || out.contains("permission"))
    {
        Ok(())
    } else {
        Err(HandoverError::Delete {
            node: node.into(),
            answer: out.trim().into(),
        })
    }
}

/// `zkCli.sh VERB NODE` in the latch's ZooKeeper container: `$1` the
/// container, `$2` the client, `$3` the server, `$4` the JVM flag that
/// logs the client in (or nothing), `$5` the verb, `$6` the node.
const ZK_CLI: &str = r#"set -eu
container=$1 cli=$2 server=$3 login=$4 verb=$5 node=$6
set -- -- "$container" timeout 30 "$cli" -server "$server" "$verb" "$node"
if [ -n "$login" ]; then set -- "--env=CLIENT_JVMFLAGS=$login" "$@"; fi
# the client logs to stderr; its answer is on stdout
exec docker exec "$@" 2>/dev/null"#;

/// `zkCli.sh VERB NODE` in the latch's ZooKeeper container.
fn cli(l: &Latch, verb: &'static str, node: &str) -> Script {
    Script::new(ZK_CLI)
        .arg(&l.container)
        .arg(&l.cli)
        .arg(&l.server)
        .arg(login_flag(l))
        .arg(verb)
        .arg(node)
}

/// The JVM flag that points the client at its JAAS file, or nothing.
fn login_flag(l: &Latch) -> String {
    l.login
        .as_ref()
        .map_or(String::new(), |f| format!("-D{LOGIN_CONFIG}={f}"))
}

/// `ZK_CLI` for `ls` of a node that may not be there yet (a fresh
/// ensemble has no recovery state): zkCli's "Node does not exist" on
/// stderr is an empty answer; any other failure stays one. The client's
/// stderr is only searched for a constant string (`grep -F`), never run.
const ZK_LS: &str = r#"set -eu
container=$1 cli=$2 server=$3 login=$4 node=$5
set -- -- "$container" timeout 30 "$cli" -server "$server" ls "$node"
if [ -n "$login" ]; then set -- "--env=CLIENT_JVMFLAGS=$login" "$@"; fi
status=0
# the answer goes to fd 3 (stdout), the client's log into `errs`
exec 3>&1
errs=$(docker exec "$@" 2>&1 >&3 3>&-) || status=$?
exec 3>&-
if [ "$status" != 0 ]; then
  if printf '%s' "$errs" | grep -qF 'Node does not exist'; then exit 0; fi
  exit "$status"
fi"#;

/// `zkCli.sh ls NODE` for a node that may not be there yet.
fn listing(l: &Latch, node: &str) -> Script {
    Script::new(ZK_LS)
        .arg(&l.container)
        .arg(&l.cli)
        .arg(&l.server)
        .arg(login_flag(l))
        .arg(node)
}

/// The node names of a `ls` answer (`[a, b]`, possibly amid other output),
/// lowest sequence number first.
fn parse_ls(out: &str) -> Vec<String> {
    let mut v: Vec<String> = ls_names(out)
        .into_iter()
        .filter(|s| s.contains("latch-") && is_latch_node(s))
        .collect();
    let seq = |s: &String| s.rsplit('-').next().and_then(|n| n.parse::<u64>().ok());
    v.sort_by_key(|s| (seq(s), s.clone()));
    v
}

/// Whether `name` could be a node Curator's latch made
/// (`_c_<uuid>-latch-<sequence>`): the names come from ZooKeeper, which any
/// client of an ensemble without `auth = "sasl"` may write to, and one is
/// handed back to zkCli (which splits its command line at white space).
fn is_latch_node(name: &str) -> bool {
    !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Every name of a `ls` answer's list (the last `[...]` of its output).
fn ls_names(out: &str) -> Vec<String> {
    let Some(list) = out
        .rfind('[')
        .and_then(|i| out[i + 1..].split_once(']').map(|(l, _)| l))
    else {
        return Vec::new();
    };
    list.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Clears Spark's recovery state (`<dir>/master_status`: the workers,
/// applications and drivers the last leader knew) when nothing it names
/// can still be alive: no master, worker or `ferry submit` driver of the
/// cluster runs on any of its hosts, and every host answered. A leader
/// elected over such state waits `spark.worker.timeout` (60 s) for the
/// dead to answer before it is ALIVE; a cluster that was cut off at once
/// (a power cut, a killed Docker daemon) left exactly that. The masters
/// create the folder again when they start. Returns what it did.
pub fn clear_stale_recovery(fleet: &Fleet) -> Result<Option<String>, HandoverError> {
    let Some(latch) = latch(fleet.plan) else {
        return Ok(None);
    };
    let Some(dir) = latch.path.strip_suffix("/leader_election") else {
        return Ok(None);
    };
    let running = running(&fleet.plan.cluster);
    let names: Vec<String> = fleet.plan.hosts.iter().map(|h| h.name.clone()).collect();
    let found = fleet.each(&names, &|_, c| {
        c.run("looking for running masters and workers", &running, &[])
    });
    if !fleet.failures().is_empty() || found.iter().any(|(_, out)| !out.trim().is_empty()) {
        return Ok(None);
    }
    let conn = fleet
        .ok(&latch.host)
        .ok_or_else(|| HandoverError::Unreachable {
            host: latch.host.clone(),
        })?;
    let state = format!("{dir}/master_status");
    let out = conn.run(
        "reading the masters' recovery state",
        &listing(&latch, &state),
        &[],
    )?;
    let entries = ls_names(&out);
    if entries.is_empty() {
        return Ok(None);
    }
    let out = conn.run(
        "clearing the masters' recovery state",
        &cli(&latch, "deleteall", &state),
        &[],
    )?;
    if out.contains("Exception") || out.contains("Insufficient permission") {
        return Err(HandoverError::ClearState {
            state,
            answer: out.trim().into(),
        });
    }
    let count = |prefix: &str| entries.iter().filter(|e| e.starts_with(prefix)).count();
    Ok(Some(format!(
        "no master or worker of the cluster runs: cleared the recovery state it left in ZooKeeper ({} workers, {} applications, {} drivers), so a master is ALIVE without waiting for them",
        count("worker_"),
        count("app_"),
        count("driver_")
    )))
}

/// Lists the cluster's (`$1`) running masters, then its workers, then its
/// `ferry submit` drivers: empty when none runs.
const RUNNING: &str = r#"set -eu
cluster=$1
docker ps --quiet --filter "label=ferry.cluster=$cluster" --filter label=ferry.role=master
docker ps --quiet --filter "label=ferry.cluster=$cluster" --filter label=ferry.role=worker
docker ps --quiet --filter "label=ferry.driver=$cluster""#;

fn running(cluster: &str) -> Script {
    Script::new(RUNNING).arg(cluster)
}

/// Stops a container (`$1`), giving it 30 s to exit.
pub(crate) const STOP: &str = r#"docker stop --time 30 -- "$1" >/dev/null"#;

fn stop(container: &str) -> Script {
    Script::new(STOP).arg(container)
}

/// A running container's (`$1`) start time; nothing for a stopped one.
const STARTED: &str =
    r#"docker inspect --format '{{if .State.Running}}{{.State.StartedAt}}{{end}}' -- "$1""#;

fn started(container: &str) -> Script {
    Script::new(STARTED).arg(container)
}

/// The leader's latch node, noted while it still leads.
pub struct Noted<'f> {
    conn: &'f dyn ClusterHost,
    latch: Latch,
    node: String,
}

/// Notes the leader's node (the lowest); `None` without ZooKeeper, or if
/// the latch cannot be read (a stop then waits for the session to expire).
///
/// A master stopped shortly before (a standby just replaced) left a node
/// too, and the next in line may be that dead one: a handover to it would
/// lead nowhere until its session expires. So this first waits, at most
/// `settle`, until the latch holds no more nodes than the plan has masters.
pub fn note_leader<'f>(fleet: &'f Fleet, settle: Duration) -> Option<Noted<'f>> {
    let latch = latch(fleet.plan)?;
    let conn = fleet.ok(&latch.host)?;
    let masters = fleet
        .plan
        .hosts
        .iter()
        .flat_map(|h| &h.containers)
        .filter(|c| c.role == Role::Master)
        .count();
    let t0 = Instant::now();
    let nodes = loop {
        let nodes = nodes(conn, &latch).ok()?;
        if nodes.len() <= masters || t0.elapsed() > settle {
            break nodes;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let node = nodes.into_iter().next()?;
    Some(Noted { conn, latch, node })
}

/// Stops the leading master (`container` on `host`), then hands its
/// leadership to the next standby by deleting the node noted before.
/// Returns what it did, for the progress lines.
pub fn stop_leader(
    fleet: &Fleet,
    host: &str,
    container: &str,
    noted: Option<Noted>,
) -> Result<String, HandoverError> {
    let conn = fleet
        .ok(host)
        .ok_or_else(|| HandoverError::Unreachable { host: host.into() })?;
    let t0 = std::time::Instant::now();
    conn.run("stopping the leading master", &stop(container), &[])?;
    let stopped = t0.elapsed().as_secs_f64();
    match noted {
        Some(n) => {
            delete(n.conn, &n.latch, &n.node)?;
            Ok(format!(
                "stopped in {stopped:.1}s; its leader latch node {} deleted {:.1}s later",
                n.node,
                t0.elapsed().as_secs_f64() - stopped
            ))
        }
        None => Ok(
            "stopped (no leader latch found: the standby waits for the session to expire)".into(),
        ),
    }
}

/// The leading master, as it was before something that may make it exit.
pub struct Watched<'f> {
    host: String,
    container: String,
    started: String,
    noted: Noted<'f>,
}

fn started_at(conn: &dyn ClusterHost, container: &str) -> Option<String> {
    conn.run(
        "reading the leading master's start time",
        // a stopped container (waiting for its restart) counts as changed
        &started(container),
        &[],
    )
    .ok()
    .map(|s| s.trim().to_string())
}

/// Notes the leading master (`leader`: its host and container), its start
/// time and its latch node, before a ZooKeeper server is replaced.
///
/// Curator drops leadership when the server its session is on goes away,
/// and Spark's master then exits (Docker restarts it as a standby); its
/// latch node bars the next standby until its session expires.
pub fn watch<'f>(fleet: &'f Fleet, leader: (&str, &str)) -> Option<Watched<'f>> {
    let (host, container) = leader;
    let started = started_at(fleet.ok(host)?, container)?;
    let noted = note_leader(fleet, Duration::ZERO)?;
    Some(Watched {
        host: host.to_string(),
        container: container.to_string(),
        started,
        noted,
    })
}

impl Watched<'_> {
    pub fn host(&self) -> &str {
        &self.host
    }
}

/// If the watched master has restarted since (so its old session is dead),
/// deletes the latch node it left and says so; otherwise does nothing.
pub fn release_if_restarted(
    fleet: &Fleet,
    w: Watched,
    still_leads: &dyn Fn() -> bool,
) -> Option<String> {
    // it may be exiting still: a few seconds to tell
    let t0 = Instant::now();
    loop {
        if still_leads() || t0.elapsed() > Duration::from_secs(5) {
            return None;
        }
        let now = started_at(fleet.ok(&w.host)?, &w.container)?;
        if now != w.started || now.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Some(match delete(w.noted.conn, &w.noted.latch, &w.noted.node) {
        Ok(()) => format!(
            "{}: the leading master lost its ZooKeeper server and restarted; its leader latch node {} deleted",
            w.host, w.noted.node
        ),
        Err(why) => format!("{}: {why}", w.host),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssh::script::tests::HOSTILE;

    /// Runs `script` as an SSH server would (`sh -c LINE`) in `dir`, with
    /// a stand-in `docker` (the text `docker`) first on the PATH and
    /// `DOCKER_CALLS` naming `calls`.
    fn with_docker(
        script: &Script,
        docker: &str,
        dir: &std::path::Path,
        calls: &std::path::Path,
    ) -> std::process::Output {
        let bin = tempfile::tempdir().unwrap();
        crate::ssh::script::tests::write_stand_in(&bin.path().join("docker"), docker);
        let path = format!(
            "{}:{}",
            bin.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        std::process::Command::new("sh")
            .arg("-c")
            .arg(script.command_line().unwrap())
            .current_dir(dir)
            .env("PATH", path)
            .env("DOCKER_CALLS", calls)
            .output()
            .unwrap()
    }

    /// Runs `script` as an SSH server would (`sh -c LINE`), in a scratch
    /// folder, with a stand-in `docker` first on the PATH that writes each
    /// argument it gets NUL-terminated, and each call's end as `\x01`, to
    /// a file outside that folder (the scripts send docker's stdout away).
    /// Returns every call's arguments, and whether the folder stayed empty.
    fn docker_calls(script: &Script) -> (Vec<Vec<String>>, bool) {
        let scratch = tempfile::tempdir().unwrap();
        let log = tempfile::tempdir().unwrap();
        let calls = log.path().join("calls");
        let out = with_docker(
            script,
            "#!/bin/sh\n{ printf '%s\\0' \"$@\"; printf '\\001'; } >>\"$DOCKER_CALLS\"\n",
            scratch.path(),
            &calls,
        );
        assert!(out.status.success(), "{script:?}: {out:?}");
        let text = std::fs::read_to_string(&calls).unwrap_or_default();
        let calls = text
            .split_terminator('\x01')
            .map(|call| {
                call.split_terminator('\0')
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        let untouched = std::fs::read_dir(scratch.path()).unwrap().count() == 0;
        (calls, untouched)
    }

    /// `value` reaches `docker` as the arguments `want`, and nothing else
    /// happens: the script's text does not hold it, and no file is made.
    fn carried(script: Script, value: &str, want: &[Vec<&str>]) {
        if !value.trim().is_empty() {
            assert!(
                !script.text().contains(value),
                "{value:?} is in the text: {script:?}"
            );
        }
        let (calls, untouched) = docker_calls(&script);
        assert_eq!(calls, want, "{value:?}");
        assert!(untouched, "{value:?} made a file: {script:?}");
    }

    fn latch_with(v: &str) -> Latch {
        Latch {
            host: "node1".into(),
            container: format!("ferry-{v}-zookeeper"),
            cli: format!("/opt/{v}/zkCli.sh"),
            server: format!("{v}:2181"),
            path: format!("/spark{v}/leader_election"),
            login: Some(format!("/etc/{v}/z.jaas")),
        }
    }

    #[test]
    fn every_value_reaches_docker_as_one_argument_and_runs_nothing() {
        for v in HOSTILE {
            let l = latch_with(v);
            let node = format!("{}/_c_1-latch-0000000001", l.path);
            let env = format!("--env=CLIENT_JVMFLAGS=-D{LOGIN_CONFIG}=/etc/{v}/z.jaas");
            carried(
                cli(&l, "delete", &node),
                v,
                &[vec![
                    "exec",
                    &env,
                    "--",
                    &l.container,
                    "timeout",
                    "30",
                    &l.cli,
                    "-server",
                    &l.server,
                    "delete",
                    &node,
                ]],
            );
            carried(
                listing(&l, &node),
                v,
                &[vec![
                    "exec",
                    &env,
                    "--",
                    &l.container,
                    "timeout",
                    "30",
                    &l.cli,
                    "-server",
                    &l.server,
                    "ls",
                    &node,
                ]],
            );
            let no_login = Latch {
                login: None,
                ..l.clone()
            };
            carried(
                cli(&no_login, "ls", &no_login.path),
                v,
                &[vec![
                    "exec",
                    "--",
                    &l.container,
                    "timeout",
                    "30",
                    &l.cli,
                    "-server",
                    &l.server,
                    "ls",
                    &l.path,
                ]],
            );
            let cluster = format!("label=ferry.cluster={v}");
            let driver = format!("label=ferry.driver={v}");
            carried(
                running(v),
                v,
                &[
                    vec![
                        "ps",
                        "--quiet",
                        "--filter",
                        &cluster,
                        "--filter",
                        "label=ferry.role=master",
                    ],
                    vec![
                        "ps",
                        "--quiet",
                        "--filter",
                        &cluster,
                        "--filter",
                        "label=ferry.role=worker",
                    ],
                    vec!["ps", "--quiet", "--filter", &driver],
                ],
            );
            carried(stop(v), v, &[vec!["stop", "--time", "30", "--", v]]);
            carried(
                started(v),
                v,
                &[vec![
                    "inspect",
                    "--format",
                    "{{if .State.Running}}{{.State.StartedAt}}{{end}}",
                    "--",
                    v,
                ]],
            );
        }
    }

    #[test]
    fn a_latch_node_name_that_is_not_curators_is_ignored() {
        // names come from ZooKeeper, which any client of an open ensemble writes
        let out = "[_c_d7e6-latch-0000000011, x;touch p-latch-0000000001, -rf-latch-0000000002, a b-latch-0000000003]";
        assert_eq!(parse_ls(out), vec!["_c_d7e6-latch-0000000011"]);
    }

    #[test]
    fn ls_lists_every_name_of_the_last_list() {
        let out = "WATCHER::\n[worker_worker-1-10.0.0.2-7078, app_app-2, driver_d-3]\n";
        assert_eq!(
            ls_names(out),
            ["worker_worker-1-10.0.0.2-7078", "app_app-2", "driver_d-3"]
        );
        assert!(ls_names("[]").is_empty());
        assert!(ls_names("Node does not exist: /spark/master_status").is_empty());
    }

    #[test]
    fn ls_answers_sort_by_sequence_and_ignore_noise() {
        let out = "Connecting to 10.0.0.1:2181\n\nWATCHER::\n\nWatchedEvent state:SyncConnected type:None path:null\n[_c_d7e6-latch-0000000011, _c_3432-latch-0000000002]";
        assert_eq!(
            parse_ls(out),
            vec!["_c_3432-latch-0000000002", "_c_d7e6-latch-0000000011"]
        );
        assert!(parse_ls("[]").is_empty());
        assert!(parse_ls("Node does not exist: /spark/leader_election").is_empty());
    }

    #[test]
    fn a_recovery_state_not_yet_written_lists_as_nothing() {
        // a fresh ensemble: zkCli says so on stderr and exits 1
        let l = latch_with("c");
        let dir = tempfile::tempdir().unwrap();
        let run = |docker: &str| {
            let out = with_docker(
                &listing(&l, "/sparkc/master_status"),
                docker,
                dir.path(),
                &dir.path().join("calls"),
            );
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        };
        let missing = "#!/bin/sh\necho 'Node does not exist: /sparkc/master_status' >&2\nexit 1\n";
        let (code, out) = run(missing);
        assert_eq!((code, out.as_str()), (0, ""));
        // any other failure is still one
        let refused = "#!/bin/sh\necho 'KeeperErrorCode = ConnectionLoss' >&2\nexit 1\n";
        let (code, _) = run(refused);
        assert_ne!(code, 0);
        // an answer passes through, without the client's log on stderr
        let listed = "#!/bin/sh\necho 'log line' >&2\necho '[worker_w-1, app_a-2]'\n";
        let (code, out) = run(listed);
        assert_eq!((code, out.as_str()), (0, "[worker_w-1, app_a-2]\n"));
    }
}
