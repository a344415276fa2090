//! `ferry scale --remove-worker`: draining a worker (Spark decommissions it),
//! then removing its container.

use crate::ssh::Script;
use std::time::{Duration, Instant};

use super::probe::{alive_masters, masters};
use super::scripts::{DECOMMISSION_SH, REMOVE_SH};
use super::{LaunchError, plan_host};
use crate::cluster::fleet::Fleet;
use crate::cluster::plan::Role;

/// Drains the worker on `host`: SIGPWR makes it decommission (no new
/// executors; Spark moves work off it), then waits until the leading master
/// shows it running no cores, at most `deadline`; then stops and removes
/// its container. Returns the cores still in use when it stopped.
pub fn remove_worker(
    fleet: &Fleet,
    host: &str,
    deadline: Duration,
    p: &(dyn Fn(&str) + Sync),
) -> Result<u64, LaunchError> {
    let plan = fleet.plan;
    let hp = plan_host(plan, host);
    let c = hp
        .containers
        .iter()
        .find(|c| c.role == Role::Worker)
        .ok_or_else(|| LaunchError::NoRole {
            cluster: plan.cluster.clone(),
            host: host.into(),
            role: "worker".into(),
        })?;
    let conn = fleet
        .ok(host)
        .ok_or_else(|| LaunchError::Host(format!("host `{host}` cannot be reached")))?;
    let name = &c.name;
    let port = c.ports.first().map(|p| p.port).unwrap_or(0);
    let me = format!("{}:{port}", hp.address);
    let cores_used = || -> Option<u64> {
        let urls: Vec<String> = masters(plan).into_iter().map(|(_, _, u)| u).collect();
        let (_, json) = alive_masters(fleet, &urls).into_iter().next()?;
        json["workers"]
            .as_array()?
            .iter()
            .filter(|w| format!("{}:{}", w["host"].as_str().unwrap_or(""), w["port"]) == me)
            .filter(|w| w["state"] != "DEAD")
            .map(|w| w["coresused"].as_u64().unwrap_or(0))
            .max()
    };
    let running = conn
        .run(
            "signalling the worker",
            &Script::new(DECOMMISSION_SH).arg(name),
            &[],
        )
        .map_err(|e| LaunchError::Host(e.to_string()))?;
    let mut left = 0;
    if running.trim() == "yes" {
        p(&format!("{host}: decommissioning {}", c.name));
        let t0 = Instant::now();
        loop {
            left = cores_used().unwrap_or(0);
            if left == 0 {
                p(&format!(
                    "{host}: drained after {:.1}s",
                    t0.elapsed().as_secs_f64()
                ));
                break;
            }
            if t0.elapsed() > deadline {
                p(&format!(
                    "{host}: {left} cores still busy after {}s; Spark re-runs their tasks elsewhere",
                    deadline.as_secs()
                ));
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    conn.run(
        "removing the worker",
        &Script::new(REMOVE_SH).arg(name),
        &[],
    )
    .map_err(|e| LaunchError::Host(e.to_string()))?;
    p(&format!("{host}: removed {}", c.name));
    Ok(left)
}
