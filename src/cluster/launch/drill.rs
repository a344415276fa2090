//! `ferry drill`: a measured failover of the leading master.

use crate::ssh::Script;
use std::time::{Duration, Instant};

use super::LaunchError;
use super::handover;
use super::probe::{get_json, masters, registered_workers};
use super::scripts::{KILL_SH, START_SH};
use crate::cluster::fleet::Fleet;

/// What a failover drill measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DrillReport {
    /// `stop` (graceful) or `kill` (the master's process is SIGKILLed, as a crash would be).
    pub how: String,
    pub old_leader: String,
    pub new_leader: String,
    /// From the stop to a standby being ALIVE.
    pub seconds_to_new_leader: f64,
    /// From the stop to every worker ALIVE with the new leader.
    pub seconds_to_workers: f64,
    pub workers: usize,
    /// From the stop to the old master answering again, as a standby.
    pub seconds_old_back: f64,
}

/// Stops the leading master (`kill`: SIGKILLs its container's process from
/// the host, and Docker's restart policy brings it back, as after a crash;
/// else `docker stop`, then `docker start` once the failover is measured),
/// and measures how long until a standby leads and every worker is back.
pub fn failover(
    fleet: &Fleet,
    kill: bool,
    deadline: Duration,
    p: &(dyn Fn(&str) + Sync),
) -> Result<DrillReport, LaunchError> {
    let plan = fleet.plan;
    let ms = masters(plan);
    if ms.len() < 2 {
        return Err(LaunchError::Host(format!(
            "cluster `{}` has {} master(s): a failover needs two or more (and ZooKeeper)",
            plan.cluster,
            ms.len()
        )));
    }
    let alive = |url: &str| get_json(fleet, url).ok().filter(|j| j["status"] == "ALIVE");
    let Some((lh, lc, lurl, ljson)) = ms
        .iter()
        .find_map(|(h, c, u)| alive(u).map(|j| (*h, *c, u.clone(), j)))
    else {
        return Err(LaunchError::Host(format!(
            "cluster `{}` has no ALIVE master: run `ferry up` first",
            plan.cluster
        )));
    };
    let workers = registered_workers(&ljson);
    let conn = fleet.ok(&lh.name).ok_or_else(|| {
        LaunchError::Host(format!(
            "host `{}` (the leader's) cannot be reached",
            lh.name
        ))
    })?;
    let name = &lc.name;
    let how = if kill { "kill" } else { "stop" };
    p(&format!(
        "{}: {} the leading master {} ({} workers registered)",
        lh.name,
        if kill {
            "killing (SIGKILL)"
        } else {
            "stopping"
        },
        lc.name,
        workers.len()
    ));
    let noted = (!kill)
        .then(|| handover::note_leader(fleet, Duration::from_secs(30)))
        .flatten();
    let t0 = Instant::now();
    if kill {
        let script = Script::new(KILL_SH).arg(name);
        conn.run("killing the leading master", &script, &[])
            .map_err(|e| LaunchError::Host(e.to_string()))?;
    } else {
        let what = handover::stop_leader(fleet, &lh.name, &lc.name, noted)
            .map_err(|e| LaunchError::Host(e.to_string()))?;
        p(&format!("{}: {} {what}", lh.name, lc.name));
    }
    let too_late = |what: &str| {
        LaunchError::Host(format!(
            "failover drill: {what} not within {}s",
            deadline.as_secs()
        ))
    };
    let (new_url, t_leader) = poll(
        t0,
        deadline,
        || too_late("no standby became ALIVE"),
        || {
            ms.iter()
                .filter(|(_, _, u)| *u != lurl)
                .find_map(|(_, _, u)| alive(u).map(|_| u.clone()))
        },
    )?;
    p(&format!("{new_url} is ALIVE after {t_leader:.1}s"));
    let ((), t_workers) = poll(
        t0,
        deadline,
        || too_late("the workers did not all re-register"),
        || {
            let back = alive(&new_url)
                .map(|j| registered_workers(&j))
                .unwrap_or_default();
            workers.iter().all(|w| back.contains(w)).then_some(())
        },
    )?;
    p(&format!(
        "{} workers re-registered after {t_workers:.1}s",
        workers.len()
    ));
    if !kill {
        conn.run(
            "starting the stopped master",
            &Script::new(START_SH).arg(name),
            &[],
        )
        .map_err(|e| LaunchError::Host(e.to_string()))?;
    }
    let ((), t_back) = poll(
        t0,
        deadline * 2,
        || too_late("the old leader did not come back as a standby"),
        || {
            get_json(fleet, &lurl)
                .is_ok_and(|j| j["status"] == "STANDBY")
                .then_some(())
        },
    )?;
    p(&format!(
        "{}: {} is back as a standby after {t_back:.1}s",
        lh.name, lc.name
    ));
    let new_leader = ms
        .iter()
        .find(|(_, _, u)| *u == new_url)
        .map(|(h, _, _)| h.name.clone())
        .unwrap_or_default();
    Ok(DrillReport {
        how: how.into(),
        old_leader: lh.name.clone(),
        new_leader,
        seconds_to_new_leader: t_leader,
        seconds_to_workers: t_workers,
        workers: workers.len(),
        seconds_old_back: t_back,
    })
}

/// Looks every 250 ms until `look` finds something, and returns it with
/// the seconds since `t0`; `too_late()` once `limit` has passed.
fn poll<T>(
    t0: Instant,
    limit: Duration,
    too_late: impl FnOnce() -> LaunchError,
    mut look: impl FnMut() -> Option<T>,
) -> Result<(T, f64), LaunchError> {
    loop {
        if let Some(v) = look() {
            return Ok((v, t0.elapsed().as_secs_f64()));
        }
        if t0.elapsed() > limit {
            return Err(too_late());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
