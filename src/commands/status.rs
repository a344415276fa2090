//! `ferry status`: each container of a cluster, as its hosts report it.

use std::process::ExitCode;

use anyhow::Result;

use super::cluster_access::{connect, load};
use crate::cli::StatusArgs;
use crate::cluster::launch;

pub fn run(a: StatusArgs) -> Result<ExitCode> {
    let t = &a.target;
    let loaded = load(t.cluster.as_deref(), t.image.as_deref(), t.local)?;
    let fleet = connect(&loaded.plan, &t.ssh, t.local);
    let st = launch::status::run(&fleet);
    let healthy = st.unreachable.is_empty()
        && st.leader.is_some()
        && st.workers_registered == st.workers_planned
        && st
            .containers
            .iter()
            .all(|c| c.state == "running" && c.current);
    if a.json {
        let mut v = serde_json::to_value(&st)?;
        v["healthy"] = healthy.into();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let w = |f: &dyn Fn(&launch::status::ContainerStatus) -> usize, min: usize| {
            st.containers.iter().map(f).max().unwrap_or(0).max(min)
        };
        let (wh, wr, wc) = (
            w(&|c| c.host.len(), 4),
            w(&|c| c.role.len(), 4),
            w(&|c| c.container.len(), 9),
        );
        println!(
            "{:<wh$}  {:<wr$}  {:<wc$}  {:<10}  {:<8}  HEALTH",
            "HOST", "ROLE", "CONTAINER", "STATE", "SPEC"
        );
        for c in &st.containers {
            println!(
                "{:<wh$}  {:<wr$}  {:<wc$}  {:<10}  {:<8}  {}",
                c.host,
                c.role,
                c.container,
                c.state,
                if c.current { "current" } else { "outdated" },
                c.health
            );
        }
        println!(
            "leader {}, workers registered {}/{}",
            st.leader.as_deref().unwrap_or("none"),
            st.workers_registered,
            st.workers_planned
        );
        for (h, why) in &st.unreachable {
            println!("{h}: unreachable: {why}");
        }
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
