//! `ferry status`: what runs where, and how healthy it is. Reads only.

use crate::ssh::Script;
use std::collections::BTreeMap;

use super::probe::{get_json, registered_workers, split_url, srvr_mode};
use super::role_name;
use super::scripts::STATUS_SH;
use crate::cluster::fleet::Fleet;
use crate::cluster::plan::{Gate, Role};

/// One container as a host reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ContainerStatus {
    pub host: String,
    pub role: String,
    pub container: String,
    /// `running`, `exited`, `restarting`..., or `missing`.
    pub state: String,
    /// Whether its spec label is the plan's.
    pub current: bool,
    /// ZooKeeper's mode, a master's status, or whether a worker is registered.
    pub health: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub cluster: String,
    pub leader: Option<String>,
    pub workers_registered: usize,
    pub workers_planned: usize,
    pub containers: Vec<ContainerStatus>,
    /// Hosts that could not be asked, with why.
    pub unreachable: Vec<(String, String)>,
}

/// What runs where, and how healthy it is.
pub fn run(fleet: &Fleet) -> Status {
    let plan = fleet.plan;
    let names: Vec<String> = plan.hosts.iter().map(|h| h.name.clone()).collect();
    let script = Script::new(STATUS_SH).arg(format!("label=ferry.cluster={}", plan.cluster));
    let found: BTreeMap<String, String> = fleet
        .each(&names, &|_, c| c.run("listing containers", &script, &[]))
        .into_iter()
        .collect();
    let status_urls = plan.steps.iter().find_map(|s| match &s.gate {
        Some(Gate::OneMasterAlive { status_urls, .. }) => Some(status_urls.clone()),
        _ => None,
    });
    let masters: Vec<(String, Option<serde_json::Value>)> = status_urls
        .unwrap_or_default()
        .iter()
        .map(|u| (u.clone(), get_json(fleet, u).ok()))
        .collect();
    let leader = masters
        .iter()
        .find(|(_, j)| j.as_ref().is_some_and(|j| j["status"] == "ALIVE"));
    let registered = leader
        .and_then(|(_, j)| j.as_ref())
        .map(registered_workers)
        .unwrap_or_default();
    let mut rows = Vec::new();
    for hp in &plan.hosts {
        let listed = found.get(&hp.name);
        for c in &hp.containers {
            let line = listed.and_then(|l| {
                l.lines()
                    .find(|line| line.split('\t').next() == Some(c.name.as_str()))
            });
            let (state, current) = match (listed, line) {
                (None, _) => ("unknown".to_string(), false),
                (Some(_), None) => ("missing".to_string(), false),
                (Some(_), Some(line)) => {
                    let f: Vec<&str> = line.split('\t').collect();
                    (
                        f.get(1).copied().unwrap_or("").to_string(),
                        f.get(2).copied() == Some(c.labels["ferry.spec"].as_str()),
                    )
                }
            };
            let port = c.ports.first().map(|p| p.port).unwrap_or(0);
            let health = match c.role {
                Role::Zookeeper => {
                    srvr_mode(fleet, &hp.address, port).unwrap_or_else(|_| "not answering".into())
                }
                Role::Master => masters
                    .iter()
                    .find(|(u, _)| split_url(u).is_some_and(|(a, _, _)| a == hp.address))
                    .and_then(|(_, j)| j.as_ref())
                    .and_then(|j| j["status"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "not answering".into()),
                Role::Worker => {
                    if registered.contains(&format!("{}:{port}", hp.address)) {
                        "registered".into()
                    } else {
                        "not registered".into()
                    }
                }
            };
            rows.push(ContainerStatus {
                host: hp.name.clone(),
                role: role_name(c.role).into(),
                container: c.name.clone(),
                state,
                current,
                health,
            });
        }
    }
    Status {
        cluster: plan.cluster.clone(),
        leader: leader.map(|(u, _)| u.trim_end_matches("json/").to_string()),
        workers_registered: registered.len(),
        workers_planned: rows.iter().filter(|r| r.role == "worker").count(),
        containers: rows,
        unreachable: fleet.failures(),
    }
}
