//! `ferry down`: stopping the cluster's containers role by role, removing
//! them, and with `--purge` the folders its `up` made (and only those).

use crate::ssh::Script;
use std::collections::BTreeMap;

use super::scripts::{DOWN_HEAD, PURGE_SH, RECORDS_SH, STOP_ROLE_SH};
use super::{STATE_ROOT, in_own_folders, role_name};
use crate::cluster::fleet::Fleet;
use crate::cluster::plan::{HostPlan, Plan, Role};

/// What `down` did on one host.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Downed {
    /// Containers and folders removed.
    pub removed: Vec<String>,
    /// Folders `--purge` left, each with why.
    pub kept: Vec<String>,
}

/// Removes the cluster's containers on each reachable host (and with
/// `purge`, its folders); returns what went and what stayed, per host.
///
/// Containers stop gracefully in the reverse of the start order: workers
/// first (the masters then drop them from their ZooKeeper recovery state),
/// then masters (closing their ZooKeeper sessions, so a later `up` elects a
/// leader at once instead of waiting for a dead session to expire), then
/// ZooKeeper.
pub fn run(fleet: &Fleet, purge: bool) -> Vec<(String, Downed)> {
    let plan = fleet.plan;
    let names: Vec<String> = plan.hosts.iter().map(|h| h.name.clone()).collect();
    for role in [Role::Worker, Role::Master, Role::Zookeeper] {
        let stop = Script::new(STOP_ROLE_SH)
            .arg(format!("label=ferry.cluster={}", plan.cluster))
            .arg(format!("label=ferry.role={}", role_name(role)));
        fleet.each(&names, &|_, c| {
            c.run(&format!("stopping the {}", role_name(role)), &stop, &[])
        });
    }
    fleet.each(&names, &|hp, c| {
        c.run(
            "removing the cluster's containers",
            &remove_script(STATE_ROOT, plan, hp, purge),
            &[],
        )
        .map(|o| {
            let mut d = Downed::default();
            for l in o.lines() {
                match l.strip_prefix("kept ") {
                    Some(k) => d.kept.push(k.to_string()),
                    None => d.removed.push(l.to_string()),
                }
            }
            d
        })
    })
}

/// The script `down` runs on a host after the containers stopped (see
/// [`DOWN_HEAD`]): with `purge`, the cluster's folders too, each one
/// removed printed, or `kept PATH: why`. `root` is where ferry keeps its
/// own records ([`STATE_ROOT`]).
pub fn remove_script(root: &str, plan: &Plan, hp: &HostPlan, purge: bool) -> Script {
    let c = &plan.cluster;
    let mut s = Script::new(DOWN_HEAD)
        .then(RECORDS_SH)
        .then(PURGE_SH)
        .arg(root)
        .arg(c)
        .arg(format!("label=ferry.cluster={c}"))
        .arg(format!("label=ferry.driver={c}"));
    if !purge {
        return s;
    }
    // every folder of the plan, on any host: a host may keep one from a
    // role it had before (a worker since removed by `ferry scale`); the
    // record decides
    let mut folders: BTreeMap<&str, bool> = BTreeMap::new();
    for h in &plan.hosts {
        for d in &h.dirs {
            *folders.entry(d.path.as_str()).or_default() |= h.name == hp.name;
        }
    }
    let mut parents: Vec<String> = Vec::new();
    for (path, here) in folders {
        if in_own_folders(c, path) {
            s = s.args(["own", path]);
        } else {
            s = s.args(["purge", path, if here { "1" } else { "0" }]);
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            parents.push(parent.to_string());
        }
    }
    // what earlier plans put in the cluster's own folders: its config
    // folder, and its default data folders
    for d in [
        format!("/etc/ferry/{c}"),
        format!("{root}/{c}/zookeeper"),
        format!("{root}/{c}/spark-work"),
    ] {
        s = s.args(["own", &d]);
    }
    s = s.arg("tidy");
    parents.push(format!("{root}/{c}"));
    parents.sort();
    parents.dedup();
    for p in parents {
        // the cluster's own folders, when nothing else is in them
        if p.ends_with(&format!("/{c}")) {
            s = s.args(["rmdir", &p]);
        }
    }
    s
}
