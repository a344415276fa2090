//! `ferry logs`: finding a role's container on a host and streaming its log.

use crate::ssh::Script;
use std::io::Write;

use super::scripts::LOGS_SH;
use super::{LaunchError, named_host, role_name};
use crate::cluster::hosts::ClusterHost;
use crate::cluster::plan::{Container, Plan};

/// The container of `role` on `host`.
pub fn container_of<'p>(
    plan: &'p Plan,
    host: &str,
    role: &str,
) -> Result<&'p Container, LaunchError> {
    let hp = named_host(plan, host)?;
    hp.containers
        .iter()
        .find(|c| role_name(c.role) == role)
        .ok_or_else(|| LaunchError::NoRole {
            cluster: plan.cluster.clone(),
            host: hp.name.clone(),
            role: role.into(),
        })
}

/// Streams a container's log to `out`.
pub fn run(
    conn: &dyn ClusterHost,
    c: &Container,
    tail: Option<u32>,
    follow: bool,
    out: &mut dyn Write,
) -> Result<i32, LaunchError> {
    let tail = tail.map(|n| n.to_string()).unwrap_or_else(|| "all".into());
    let script = Script::new(LOGS_SH)
        .arg(tail)
        .arg(&c.name)
        .arg(if follow { "1" } else { "0" });
    conn.stream("reading logs", &script, &[], out)
        .map_err(|e| LaunchError::Host(e.to_string()))
}
