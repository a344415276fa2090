//! Waiting on a step's gate (a ZooKeeper leader, one ALIVE master, the
//! workers registered), with the restart of workers a recovering master
//! left out, and the logs shown when a gate is not met in time.

use crate::ssh::Script;
use std::time::{Duration, Instant};

use super::LaunchError;
use super::probe::{alive_masters, get_json, registered_workers, split_addr, split_url, srvr_mode};
use super::scripts::{LOGS_TAIL_SH, RESTART_SH};
use crate::cluster::fleet::Fleet;
use crate::cluster::plan::{Gate, Role};

pub(super) fn logs_script(names: &[&str], tail: u32) -> Script {
    Script::new(LOGS_TAIL_SH).arg(tail.to_string()).args(names)
}

/// Waits for a gate; `strict` (during a rolling replacement) also wants
/// every server and master of the hosts still standing back in service,
/// so the next replacement never takes the last spare.
pub(super) fn wait(
    fleet: &Fleet,
    g: &Gate,
    role: Role,
    hosts: &[String],
    strict: bool,
    pending: &[String],
    p: &(dyn Fn(&str) + Sync),
) -> Result<(), LaunchError> {
    let (label, deadline) = gate_name(g);
    let pending: Vec<String> = fleet
        .plan
        .hosts
        .iter()
        .filter(|h| pending.contains(&h.name))
        .map(|h| h.address.clone())
        .collect();
    let start = Instant::now();
    let mut stranded = Stranded::default();
    loop {
        let look = match g {
            // one look serves the gate and the stranded workers' restart
            Gate::WorkersRegistered {
                status_urls,
                workers,
                ..
            } => {
                let seen = unregistered(fleet, status_urls, workers, &pending);
                stranded.restart(fleet, seen.as_ref().ok(), p);
                workers_verdict(seen)
            }
            _ => check(fleet, g, strict, &pending),
        };
        let last = match look {
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
            let logs = fleet.each(hosts, &|hp, c| {
                let names: Vec<&str> = hp
                    .containers
                    .iter()
                    .filter(|c| c.role == role)
                    .map(|c| c.name.as_str())
                    .collect();
                c.run("reading logs", &logs_script(&names, 15), &[])
            });
            return Err(LaunchError::Gate {
                gate: label.into(),
                secs: deadline,
                last,
                logs: gate_logs(logs),
            });
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The most of one host's log lines a gate's failure shows: their end.
const GATE_LOG_KEEP: usize = 64 << 10;

/// The containers' last log lines of each host, for a gate's failure:
/// bounded, and shown so that they cannot drive the terminal.
pub(super) fn gate_logs(logs: Vec<(String, String)>) -> String {
    logs.into_iter()
        .map(|(h, l)| {
            let l = l.trim_end();
            let mut from = l.len().saturating_sub(GATE_LOG_KEEP);
            while !l.is_char_boundary(from) {
                from += 1;
            }
            let cut = if from > 0 { "…" } else { "" };
            format!("{h}:\n{cut}{}", crate::ssh::shown(&l[from..]))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// How long a running worker may stay unregistered with an ALIVE master
/// before it is taken for stranded.
const STRANDED_AFTER: Duration = Duration::from_secs(25);

/// Workers left out by their master. A worker that (re)started while its
/// master was recovering from ZooKeeper can get the master's "master
/// changed" message under its predecessor's id: it then takes itself for
/// registered, and the master ignores its heartbeats as those of a worker
/// it never knew (Spark 3.5's `Master.receive(Heartbeat)`). Neither side
/// ever retries, so the worker idles forever. Every container of a cluster
/// restarted at once (a rack's power, a host reboot of all daemons) leaves
/// a cluster like that; a restart of the worker is what registers it.
#[derive(Default)]
struct Stranded {
    /// Since when a master has been ALIVE, in this wait.
    alive_since: Option<Instant>,
    /// Worker addresses restarted already (once each).
    restarted: Vec<String>,
}

impl Stranded {
    /// Restarts, once each, the workers still missing from `seen` (`None`:
    /// no master is ALIVE) 25 s after a master was first seen ALIVE.
    fn restart(&mut self, fleet: &Fleet, seen: Option<&Unregistered>, p: &(dyn Fn(&str) + Sync)) {
        let Some(seen) = seen else {
            self.alive_since = None;
            return;
        };
        let since = *self.alive_since.get_or_insert_with(Instant::now);
        if since.elapsed() < STRANDED_AFTER {
            return;
        }
        let url = &seen.url;
        for w in &seen.missing {
            let Some((addr, _)) = split_addr(w) else {
                continue;
            };
            if self.restarted.contains(w) {
                continue;
            }
            self.restarted.push(w.clone());
            let Some((hp, c)) = fleet.plan.hosts.iter().find_map(|h| {
                (h.address == addr)
                    .then(|| h.containers.iter().find(|c| c.role == Role::Worker))
                    .flatten()
                    .map(|c| (h, c))
            }) else {
                continue;
            };
            let Some(conn) = fleet.ok(&hp.name) else {
                continue;
            };
            let secs = since.elapsed().as_secs();
            match conn.run(
                "restarting a stranded worker",
                &Script::new(RESTART_SH).arg(&c.name),
                &[],
            ) {
                Ok(_) => p(&format!(
                    "{}: its worker stayed unregistered with {url} for {secs}s: restarted it (a worker started while its master recovered is ignored by it)",
                    hp.name
                )),
                Err(why) => p(&format!(
                    "{}: its worker is not registered with {url}, and restarting it failed: {why}",
                    hp.name
                )),
            }
        }
    }
}

fn gate_name(g: &Gate) -> (&'static str, u32) {
    match g {
        Gate::ZookeeperLeader { deadline_secs, .. } => ("zookeeper-leader", *deadline_secs),
        Gate::OneMasterAlive { deadline_secs, .. } => ("one-master-alive", *deadline_secs),
        Gate::WorkersRegistered { deadline_secs, .. } => ("workers-registered", *deadline_secs),
    }
}

/// The hosts a gate may ignore: those that failed.
fn failed_addresses(fleet: &Fleet) -> Vec<String> {
    let failed: Vec<String> = fleet.failures().into_iter().map(|(h, _)| h).collect();
    fleet
        .plan
        .hosts
        .iter()
        .filter(|h| failed.contains(&h.name))
        .map(|h| h.address.clone())
        .collect()
}

/// One look at a gate: what is true, or why not yet.
/// `pending`: addresses of workers a rolling replacement has yet to reach.
pub(super) fn check(
    fleet: &Fleet,
    g: &Gate,
    strict: bool,
    pending: &[String],
) -> Result<String, String> {
    let failed = failed_addresses(fleet);
    match g {
        Gate::ZookeeperLeader { servers, .. } => {
            let mut modes = Vec::new();
            for s in servers {
                let (addr, port) = split_addr(s).ok_or(format!("bad server `{s}`"))?;
                match srvr_mode(fleet, &addr, port) {
                    Ok(m) => modes.push(m),
                    // a failed host's server may be down: a quorum is enough
                    Err(_) if failed.contains(&addr) => modes.push("unreachable".into()),
                    Err(e) => return Err(format!("`srvr` on {s}: {e}")),
                }
            }
            let leaders = modes.iter().filter(|m| *m == "leader").count();
            let serving = modes
                .iter()
                .filter(|m| *m == "leader" || *m == "follower")
                .count();
            let wanted = modes.iter().filter(|m| *m != "unreachable").count();
            let ok = (modes.len() == 1 && modes[0] == "standalone")
                || (leaders == 1 && serving > servers.len() / 2 && (!strict || serving == wanted));
            if ok {
                Ok(format!("modes {}", modes.join(", ")))
            } else {
                Err(format!("modes {}", modes.join(", ")))
            }
        }
        Gate::OneMasterAlive { status_urls, .. } => {
            let states: Vec<String> = status_urls
                .iter()
                .map(|u| match get_json(fleet, u) {
                    Ok(j) => j["status"].as_str().unwrap_or("?").to_string(),
                    Err(_) => "not answering".into(),
                })
                .collect();
            let alive: Vec<&String> = status_urls
                .iter()
                .zip(&states)
                .filter(|(_, s)| *s == "ALIVE")
                .map(|(u, _)| u)
                .collect();
            let spare = status_urls.iter().zip(&states).all(|(u, s)| {
                s == "ALIVE"
                    || s == "STANDBY"
                    || split_url(u).is_some_and(|(a, _, _)| failed.contains(&a))
            });
            match alive.len() {
                1 if !strict || spare => Ok(format!("{} is ALIVE", alive[0])),
                _ => Err(format!("masters {}", states.join(", "))),
            }
        }
        Gate::WorkersRegistered {
            status_urls,
            workers,
            ..
        } => workers_verdict(unregistered(fleet, status_urls, workers, pending)),
    }
}

/// What the workers' gate sees: the ALIVE master's status URL, how many
/// workers it waits for (those of failed hosts, and of `pending`
/// addresses, are not), and which of them that master does not list as
/// ALIVE; an error when no master is ALIVE.
struct Unregistered {
    url: String,
    wanted: usize,
    missing: Vec<String>,
}

fn unregistered(
    fleet: &Fleet,
    status_urls: &[String],
    workers: &[String],
    pending: &[String],
) -> Result<Unregistered, String> {
    let alive = alive_masters(fleet, status_urls);
    let Some((url, json)) = alive.first() else {
        return Err("no master is ALIVE".into());
    };
    let registered = registered_workers(json);
    let failed = failed_addresses(fleet);
    let wanted: Vec<&String> = workers
        .iter()
        .filter(|w| {
            split_addr(w).is_none_or(|(a, _)| !failed.contains(&a) && !pending.contains(&a))
        })
        .collect();
    Ok(Unregistered {
        url: url.clone(),
        wanted: wanted.len(),
        missing: wanted
            .into_iter()
            .filter(|w| !registered.contains(w))
            .cloned()
            .collect(),
    })
}

fn workers_verdict(seen: Result<Unregistered, String>) -> Result<String, String> {
    let u = seen?;
    if u.missing.is_empty() {
        Ok(format!("{} workers registered with {}", u.wanted, u.url))
    } else {
        Err(format!(
            "not yet registered with {}: {:?}",
            u.url, u.missing
        ))
    }
}
