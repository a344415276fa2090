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

use crate::script::Script;
use std::time::{Duration, Instant};

use super::file::LOGIN_CONFIG;
use super::hosts::ClusterHost;
use super::launch::Fleet;
use super::plan::{JaasSection, Plan, Role, ZK_SECRET_IN, ZK_SERVER_JAAS};
use crate::push::sh_quote;

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
pub fn nodes(conn: &dyn ClusterHost, l: &Latch) -> Result<Vec<String>, String> {
    let out = conn.run(
        "listing the masters' leader latch",
        &Script::legacy((cli_script(l, &format!("ls {}", sh_quote(&l.path)))).to_string()),
        &[],
    )?;
    Ok(parse_ls(&out))
}

/// Deletes one node; one that is gone already (its session expired) is fine.
pub fn delete(conn: &dyn ClusterHost, l: &Latch, node: &str) -> Result<(), String> {
    let out = conn.run(
        "handing the masters' leadership over",
        &Script::legacy(
            (cli_script(
                l,
                &format!("delete {}", sh_quote(&format!("{}/{node}", l.path))),
            ))
            .to_string(),
        ),
        &[],
    )?;
    // zkCli exits 0 either way and says what went wrong on stdout; a node
    // that is gone already (its session expired meanwhile) is what we wanted
    if out.contains("Node does not exist")
        || !(out.contains("Exception") || out.contains("permission"))
    {
        Ok(())
    } else {
        Err(format!(
            "deleting the leader's latch node `{node}`: {}",
            out.trim()
        ))
    }
}

fn cli_script(l: &Latch, command: &str) -> String {
    // the client logs to stderr; its answer is on stdout
    let env = l.login.as_ref().map_or(String::new(), |f| {
        sh_quote(&format!("--env=CLIENT_JVMFLAGS=-D{LOGIN_CONFIG}={f}")) + " "
    });
    format!(
        "docker exec {env}{} timeout 30 {} -server {} {} 2>/dev/null",
        sh_quote(&l.container),
        sh_quote(&l.cli),
        sh_quote(&l.server),
        command
    )
}

/// The node names of a `ls` answer (`[a, b]`, possibly amid other output),
/// lowest sequence number first.
fn parse_ls(out: &str) -> Vec<String> {
    let mut v: Vec<String> = ls_names(out)
        .into_iter()
        .filter(|s| s.contains("latch-"))
        .collect();
    let seq = |s: &String| s.rsplit('-').next().and_then(|n| n.parse::<u64>().ok());
    v.sort_by_key(|s| (seq(s), s.clone()));
    v
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
pub fn clear_stale_recovery(fleet: &Fleet) -> Result<Option<String>, String> {
    let Some(latch) = latch(fleet.plan) else {
        return Ok(None);
    };
    let Some(dir) = latch.path.strip_suffix("/leader_election") else {
        return Ok(None);
    };
    let cluster = &fleet.plan.cluster;
    let label = |l: &str| sh_quote(&format!("label={l}"));
    let running = format!(
        "docker ps --quiet --filter {c} --filter {m} && docker ps --quiet --filter {c} --filter {w} && docker ps --quiet --filter {d}",
        c = label(&format!("ferry.cluster={cluster}")),
        m = label("ferry.role=master"),
        w = label("ferry.role=worker"),
        d = label(&format!("ferry.driver={cluster}")),
    );
    let names: Vec<String> = fleet.plan.hosts.iter().map(|h| h.name.clone()).collect();
    let found = fleet.each(&names, &|_, c| {
        c.run(
            "looking for running masters and workers",
            &Script::legacy((running).to_string()),
            &[],
        )
    });
    if !fleet.failures().is_empty() || found.iter().any(|(_, out)| !out.trim().is_empty()) {
        return Ok(None);
    }
    let conn = fleet
        .ok(&latch.host)
        .ok_or_else(|| format!("host `{}` cannot be reached", latch.host))?;
    let state = format!("{dir}/master_status");
    let out = conn.run(
        "reading the masters' recovery state",
        &Script::legacy((cli_script(&latch, &format!("ls {}", sh_quote(&state)))).to_string()),
        &[],
    )?;
    let entries = ls_names(&out);
    if entries.is_empty() {
        return Ok(None);
    }
    let out = conn.run(
        "clearing the masters' recovery state",
        &Script::legacy(
            (cli_script(&latch, &format!("deleteall {}", sh_quote(&state)))).to_string(),
        ),
        &[],
    )?;
    if out.contains("Exception") || out.contains("Insufficient permission") {
        return Err(format!("deleting `{state}`: {}", out.trim()));
    }
    let count = |prefix: &str| entries.iter().filter(|e| e.starts_with(prefix)).count();
    Ok(Some(format!(
        "no master or worker of the cluster runs: cleared the recovery state it left in ZooKeeper ({} workers, {} applications, {} drivers), so a master is ALIVE without waiting for them",
        count("worker_"),
        count("app_"),
        count("driver_")
    )))
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

/// Runs `stop` (a script stopping the leading master) on `host`, then
/// hands its leadership to the next standby by deleting the node noted
/// before. Returns what it did, for the progress lines.
pub fn stop_leader(
    fleet: &Fleet,
    host: &str,
    stop: &Script,
    noted: Option<Noted>,
) -> Result<String, String> {
    let conn = fleet
        .ok(host)
        .ok_or_else(|| format!("host `{host}` cannot be reached"))?;
    let t0 = std::time::Instant::now();
    conn.run("stopping the leading master", stop, &[])?;
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
        &Script::legacy((// a stopped container (waiting for its restart) counts as changed
        &format!(
            "docker inspect --format '{{{{if .State.Running}}}}{{{{.State.StartedAt}}}}{{{{end}}}}' {}",
            sh_quote(container)
        )).to_string()),
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
}
