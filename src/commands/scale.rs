//! `ferry scale`: add or remove a worker. The cluster file is rewritten
//! (atomically, the rest of its text as it was), so the next `up` agrees,
//! and the hosts are brought in line with it.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};

use super::Term;
use super::cluster_access::{self, connect, load};
use crate::cli::{ClusterArgs, ScaleArgs, UpArgs};
use crate::cluster::{file, launch};
use crate::fsutil;

pub fn run(a: ScaleArgs) -> Result<ExitCode> {
    let text = std::fs::read_to_string(&a.cluster)
        .with_context(|| format!("reading `{}`", a.cluster.display()))?;
    let add = a.add_worker.as_deref().map(|h| (h, a.address.as_deref()));
    // checked before any host is touched
    let size = file::WorkerSize {
        cores: a.cores,
        memory: a.memory.clone(),
    };
    let edited =
        file::edit::edit_workers(&text, &a.cluster, add, &size, a.remove_worker.as_deref())?;
    let term = Term::new(false);
    if let Some(host) = &a.remove_worker {
        let loaded = load(Some(&a.cluster), a.image.as_deref(), false)?;
        let fleet = connect(&loaded.plan, &a.ssh, false);
        launch::scale::remove_worker(&fleet, host, Duration::from_secs(a.drain_secs), &|s| {
            term.line(s)
        })?;
    }
    fsutil::write_atomic(&a.cluster, edited.as_bytes())
        .with_context(|| format!("writing `{}`", a.cluster.display()))?;
    term.line(&format!(
        "updated `{}`: workers {}",
        a.cluster.display(),
        file::ClusterFile::parse(&edited, &a.cluster)?
            .spark
            .workers
            .hosts
            .iter()
            .map(|h| h.get_ref().as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    cluster_access::up(UpArgs {
        target: ClusterArgs {
            cluster: Some(a.cluster),
            local: false,
            image: a.image,
            ssh: a.ssh,
        },
        store: "/var/lib/ferry".into(),
        credentials_file: a.credentials_file,
        dry_run: false,
        json: false,
    })
}
