//! Carries out a plan on its hosts: writes each host's folders and files,
//! starts the containers in the plan's order and waits on each step's gate;
//! and `status`, `logs`, `submit` and `down` on a running cluster. The hosts
//! are [`ClusterHost`](crate::cluster::hosts::ClusterHost)s: SSH sessions, or this machine for `--local`.
//!
//! No state is kept here: each container carries `ferry.cluster`,
//! `ferry.role` and `ferry.spec` (a hash of its planned spec and files)
//! labels, so any operator with the cluster file sees the same truth; the
//! folders `up` makes are listed in a record of root's on each host
//! (`/var/lib/ferry/<cluster>/made`, where no container reaches), so `down
//! --purge` removes what ferry made and keeps what was there before.
//!
//! Every script run on a host is constant text (see [`crate::ssh::script`]):
//! names, paths, image references and labels reach it as positional
//! parameters. Writes as root into folders a container can write never
//! follow a link: files are staged in a folder of root's alone and renamed
//! into place.
//! Idempotent: a running container whose spec label matches is left alone,
//! a stopped one is started, a changed one is replaced. A host that fails is
//! set aside (the rest go on) and reported; gates then wait only on the
//! hosts still standing.
//!
//! One file per thing done: `up` (the steps, the files and containers it
//! puts in place), `survey` (what each container needs), `gate` (waiting on
//! a step), `probe` (asking the daemons), `handover` (a planned failover),
//! `status`, `logs`, `submit`, `scale`, `drill`, `down`; `scripts` holds the
//! constant scripts they run. This file: the launcher's error and what
//! they all share.

pub mod down;
pub mod drill;
mod gate;
mod handover;
pub mod logs;
mod probe;
pub mod scale;
mod scripts;
pub mod status;
pub mod submit;
mod survey;
pub mod up;

#[cfg(test)]
mod tests;

use super::plan::{Action, HostPlan, Plan, Role};

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("`--local` runs a one-host cluster on this machine; {0}")]
    NotLocal(String),
    #[error("gate `{gate}` not met within {secs}s: {last}\n{logs}")]
    Gate {
        gate: String,
        secs: u32,
        last: String,
        logs: String,
    },
    #[error("host `{host}` is not in cluster `{cluster}` (its hosts: {known})")]
    UnknownHost {
        cluster: String,
        host: String,
        known: String,
    },
    #[error("host `{host}` runs no {role} of cluster `{cluster}`")]
    NoRole {
        cluster: String,
        host: String,
        role: String,
    },
    #[error("{0}")]
    Host(String),
}

/// A plan that `--local` can run: one host, on a loopback address.
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

fn role_of(action: Action) -> Option<Role> {
    match action {
        Action::StartZookeeper => Some(Role::Zookeeper),
        Action::StartMasters => Some(Role::Master),
        Action::StartWorkers => Some(Role::Worker),
        Action::DeliverImage | Action::WriteFiles => None,
    }
}

/// The planned host named `name` (by its name or its address).
pub fn named_host<'p>(plan: &'p Plan, name: &str) -> Result<&'p HostPlan, LaunchError> {
    plan.hosts
        .iter()
        .find(|h| h.name == name || h.address == name)
        .ok_or_else(|| LaunchError::UnknownHost {
            cluster: plan.cluster.clone(),
            host: name.into(),
            known: plan
                .hosts
                .iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

fn plan_host<'p>(plan: &'p Plan, name: &str) -> &'p HostPlan {
    plan.hosts
        .iter()
        .find(|h| h.name == name)
        .expect("a planned host")
}

pub fn role_name(r: Role) -> &'static str {
    match r {
        Role::Zookeeper => "zookeeper",
        Role::Master => "master",
        Role::Worker => "worker",
    }
}

/// Where ferry keeps, on each host, what is its alone: `<root>/<cluster>`
/// holds the record of the folders `up` made (`made`, one path a line)
/// and the folder it stages files in (`.stage`). Root makes both, and no
/// container mounts them (a cluster's data folders lie below them, never
/// at them: `up` refuses a planned folder that would hold them).
pub const STATE_ROOT: &str = "/var/lib/ferry";

/// Whether `path` lies in the folders ferry keeps for `cluster` alone:
/// ferry's whatever made them (also an older ferry, before the record).
pub fn in_own_folders(cluster: &str, path: &str) -> bool {
    [
        format!("/etc/ferry/{cluster}"),
        format!("{STATE_ROOT}/{cluster}"),
    ]
    .iter()
    .any(|root| path == root || path.starts_with(&format!("{root}/")))
}
