//! `ferry logs`: one container's log, from its host.

use std::process::ExitCode;

use anyhow::Result;

use super::cluster_access::{connect, host, load};
use crate::cli::LogsArgs;
use crate::cluster::launch;

pub fn run(a: LogsArgs) -> Result<ExitCode> {
    let loaded = load(Some(&a.cluster), None, a.local)?;
    let c = launch::logs::container_of(&loaded.plan, &a.host, &a.role)?;
    let fleet = connect(&loaded.plan, &a.ssh, a.local);
    let (_, conn) = host(&fleet, &a.host)?;
    let code = launch::logs::run(conn, c, a.tail, a.follow, &mut std::io::stdout())?;
    Ok(if code == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
