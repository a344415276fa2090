//! `ferry up --local`: run a cluster's plan on this machine's Docker.

use std::process::ExitCode;

use anyhow::Result;

use super::Term;
use crate::cli::UpArgs;
use crate::cluster::launch;

pub fn run(a: UpArgs) -> Result<ExitCode> {
    let (plan, _) =
        super::plan::local_plan(a.target.cluster.as_deref(), a.target.image.as_deref())?;
    launch::check_local(&plan)?;
    let term = Term::new(false);
    term.line(&format!(
        "cluster `{}`, plan {}",
        plan.cluster,
        &plan.plan_hash[..19]
    ));
    launch::up_local(&plan, &|s| term.line(s))?;
    let ui = plan
        .steps
        .iter()
        .find_map(|s| match &s.gate {
            Some(crate::cluster::plan::Gate::OneMasterAlive { status_urls, .. }) => status_urls
                .first()
                .map(|u| u.trim_end_matches("json/").to_string()),
            _ => None,
        })
        .unwrap_or_default();
    println!(
        "cluster `{}` is up: masters {}, UI {ui}",
        plan.cluster, plan.master_url
    );
    println!("next: ferry submit --local   # runs the image's sample job");
    Ok(ExitCode::SUCCESS)
}
