//! `ferry drill failover`: stop the leading master and time the recovery.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;

use super::Term;
use super::cluster_access::{connect, load};
use crate::cli::FailoverArgs;
use crate::cluster::launch;

pub fn failover(a: FailoverArgs) -> Result<ExitCode> {
    let t = &a.target;
    let loaded = load(t.cluster.as_deref(), t.image.as_deref(), t.local)?;
    let fleet = connect(&loaded.plan, &t.ssh, t.local);
    let term = Term::new(false);
    for (h, why) in fleet.failures() {
        term.line(&format!("{h}: unreachable: {why}"));
    }
    let r = launch::drill::failover(&fleet, a.kill, Duration::from_secs(a.deadline), &|s| {
        term.line(s)
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "failover ({}): {} -> {}: new leader after {:.1}s, {} workers back after {:.1}s, old leader a standby after {:.1}s",
            r.how,
            r.old_leader,
            r.new_leader,
            r.seconds_to_new_leader,
            r.workers,
            r.seconds_to_workers,
            r.seconds_old_back
        );
    }
    Ok(ExitCode::SUCCESS)
}
