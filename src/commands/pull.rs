//! `ferry pull s3://… HOSTS` (hosts fetch the image from the bucket in
//! parallel, with the push's progress lines per host and a summary table or
//! JSON). Credentials are read here and handed on; nothing printed carries
//! them.

use std::process::ExitCode;

use anyhow::{Result, bail};
use serde_json::json;

use super::shared::{
    FromCluster, Progress, cluster_hosts, open_store, ssh_options, summary, targets,
};
use crate::cli::PullArgs;
use crate::deliver;
use crate::objstore::Location;
use crate::objstore::pull::{self, PullError};

/// `ferry pull s3://bucket/prefix HOST...`.
pub fn run(a: PullArgs) -> Result<ExitCode> {
    let from = match &a.cluster {
        Some(c) => cluster_hosts(c)?,
        None => FromCluster {
            targets: targets(&a.hosts, &a.ssh)?,
            keys: Vec::new(),
            delivery: String::new(),
            store: Default::default(),
        },
    };
    let (targets, cluster_keys, delivery) = (from.targets, from.keys, from.delivery);
    if targets.is_empty() {
        bail!("no hosts to pull onto: name them as `ssh://user@host`, or pass --cluster FILE");
    }
    let source = match (&a.source, Location::is_bucket_url(&delivery)) {
        (Some(s), _) => s.clone(),
        (None, true) => delivery,
        (None, false) => bail!(
            "no bucket to pull from: name it as `s3://bucket/prefix`, or set `delivery` in the cluster file"
        ),
    };
    let store = open_store(&source, &a.bucket, &from.store)?;
    let image = pull::read_image(&store, a.tag.as_deref())?;
    let mut ssh = ssh_options(a.ssh);
    if !cluster_keys.is_empty() {
        ssh.identities.splice(0..0, cluster_keys);
    }
    let opts = pull::Options {
        push: deliver::Options {
            runtime: deliver::Runtime::Docker,
            store: a.store,
            parallel: usize::from(a.parallel),
            verify: a.verify,
            ssh,
        },
        url_expiry: a.url_expiry,
    };
    let progress = Progress::new();
    progress.term.line(&format!(
        "pulling {} ({}) from {} onto {} host(s)",
        image.reference,
        image.config_id(),
        store.loc.object_url(""),
        targets.len()
    ));
    let outcomes = pull::pull_all(&targets, &image, &store, &opts, &progress);
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    let tampered = outcomes
        .iter()
        .any(|o| matches!(o.result, Err(PullError::Tampered { .. })));

    let json = a.json.then(|| {
        json!({
            "reference": image.reference,
            "config_digest": image.config_id(),
            "bucket": store.loc.object_url(""),
            "ok": failed == 0,
            "hosts": outcomes.iter().map(|o| json!({
                "host": o.target.label(),
                "ok": o.result.is_ok(),
                "error": o.result.as_ref().err().map(|e| e.to_string()),
                "tampered": matches!(o.result, Err(PullError::Tampered { .. })),
                "blobs_fetched": o.stats.blobs_sent,
                "bytes_fetched": o.stats.bytes_sent,
                "replaced": o.stats.replaced,
                "loaded": o.stats.loaded,
                "seconds": (o.seconds * 1000.0).round() / 1000.0,
            })).collect::<Vec<_>>(),
        })
    });
    let rows: Vec<_> = outcomes
        .iter()
        .map(|o| (&o.target, &o.stats, o.seconds, &o.result))
        .collect();
    summary(json, &rows)?;
    if failed > 0 {
        eprintln!(
            "error: {failed} of {} host(s) failed (see above); {}",
            outcomes.len(),
            if tampered {
                "an object in the bucket does not match its digest: push the image to the bucket again, then pull"
            } else {
                "fix them and run the same `ferry pull` again: each host fetches only what it lacks"
            }
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
