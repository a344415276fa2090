//! `ferry down`: remove a cluster's containers from its hosts (and with
//! `--purge` the folders ferry made for it, saying which it kept). Without
//! --purge, files and data stay, so a later `up` finds them.

use std::process::ExitCode;

use anyhow::Result;

use super::cluster_access::{connect, load};
use crate::cli::DownArgs;
use crate::cluster::launch;

pub fn run(a: DownArgs) -> Result<ExitCode> {
    let t = &a.target;
    let loaded = load(t.cluster.as_deref(), t.image.as_deref(), t.local)?;
    let fleet = connect(&loaded.plan, &t.ssh, t.local);
    let done = launch::down::run(&fleet, a.purge);
    let mut any = false;
    for (host, d) in &done {
        if !d.removed.is_empty() {
            any = true;
            println!("{host}: removed {}", d.removed.join(", "));
        }
        for k in &d.kept {
            any = true;
            println!("{host}: kept {k}");
        }
    }
    if !any {
        println!(
            "cluster `{}` has no containers on its hosts",
            loaded.plan.cluster
        );
    }
    let failures = fleet.failures();
    for (h, why) in &failures {
        eprintln!("error: host `{h}`: {why}");
    }
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
