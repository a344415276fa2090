//! `ferry push`: an OCI layout → the Docker of hosts over SSH, with progress
//! lines per host and a summary table (or JSON) at the end; or, given a
//! bucket (`s3://…`, or a cluster file's), the image into the bucket, with a
//! line per object and a summary. Credentials are read here and handed on;
//! nothing printed carries them.

use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::shared::{Progress, jump_label, open_store, ssh_options, summary, targets};
use super::{Term, human};
use crate::cli::{PushArgs, RuntimeArg};
use crate::cluster::file::{ClusterFile, ObjectStore};
use crate::deliver::{self, PushImage};
use crate::objstore::Location;
use crate::objstore::upload::{self, Event};
use crate::oci;

/// The image of the layout the command names.
fn layout_image(a: &PushArgs) -> Result<PushImage> {
    let layout = oci::open_layout(&a.layout).with_context(|| {
        format!(
            "opening the layout `{}`; build it with `ferry build`",
            a.layout.display()
        )
    })?;
    Ok(PushImage::from_layout(&layout, a.tag.as_deref())?)
}

pub fn run(a: PushArgs) -> Result<ExitCode> {
    if a.cluster.is_some() || a.hosts.iter().any(|h| Location::is_bucket_url(h)) {
        return push_to_bucket(a);
    }
    let image = layout_image(&a)?;
    let targets = targets(&a.hosts, &a.ssh)?;
    let opts = deliver::Options {
        store: a.store,
        parallel: usize::from(a.parallel),
        verify: a.verify,
        runtime: match a.runtime {
            RuntimeArg::Docker => deliver::Runtime::Docker,
            RuntimeArg::Podman => deliver::Runtime::Podman,
        },
        ssh: ssh_options(a.ssh),
    };
    let progress = Progress::new();
    progress.term.line(&format!(
        "pushing {} ({}) to {} host(s)",
        image.reference,
        image.config_id(),
        targets.len()
    ));
    let outcomes = deliver::push_all(&targets, &image, &opts, &progress);
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();

    let json = a.json.then(|| {
        json!({
            "reference": image.reference,
            "config_digest": image.config_id(),
            "ok": failed == 0,
            "hosts": outcomes.iter().map(|o| json!({
                "host": o.target.label(),
                "jump": jump_label(&o.target),
                "ok": o.result.is_ok(),
                "error": o.result.as_ref().err().map(|e| e.to_string()),
                "blobs_sent": o.stats.blobs_sent,
                "bytes_sent": o.stats.bytes_sent,
                "resumed": o.stats.resumed,
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
            "error: {failed} of {} host(s) failed (see above); fix them and run the same `ferry push` again: it sends only what is missing",
            outcomes.len()
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

struct UploadProgress {
    term: Term,
    /// When the current object started, and when its last line was printed.
    times: Mutex<(Instant, Instant)>,
}

fn short(name: &str) -> String {
    match name.strip_prefix("blobs/sha256/") {
        Some(hex) => format!("sha256:{}", &hex[..12.min(hex.len())]),
        None => name.to_string(),
    }
}

impl upload::Reporter for UploadProgress {
    fn event(&self, e: Event<'_>) {
        let mut t = self.times.lock().expect("progress lock");
        let line = match e {
            Event::Present { name, size } => {
                format!("{}: in the bucket already ({})", short(name), human(size))
            }
            Event::Start {
                name,
                size,
                parts,
                reused,
            } => {
                *t = (Instant::now(), Instant::now());
                if parts > 1 {
                    format!(
                        "{}: sending {} in {parts} parts{}",
                        short(name),
                        human(size),
                        if reused > 0 {
                            format!(", resuming: {reused} part(s) in the bucket already")
                        } else {
                            String::new()
                        }
                    )
                } else {
                    format!("{}: sending {}", short(name), human(size))
                }
            }
            Event::Differs { name, part } => format!(
                "{}: part {part} in the bucket holds other bytes (its ETag is not their MD5); sending it again",
                short(name)
            ),
            Event::Progress { name, sent, total } => {
                if t.1.elapsed() < Duration::from_secs(1) || sent == total {
                    return;
                }
                t.1 = Instant::now();
                format!(
                    "{}: {} / {}, {}/s",
                    short(name),
                    human(sent),
                    human(total),
                    human((sent as f64 / t.0.elapsed().as_secs_f64().max(1e-3)) as u64)
                )
            }
            Event::Done { name, sent } => format!(
                "{}: stored ({} sent, {}/s)",
                short(name),
                human(sent),
                human((sent as f64 / t.0.elapsed().as_secs_f64().max(1e-3)) as u64)
            ),
        };
        drop(t);
        self.term.line(&line);
    }
}

/// `ferry push LAYOUT s3://bucket/prefix`, or `ferry push LAYOUT --cluster
/// FILE` (the bucket of its `delivery`, the service of its `[object_store]`).
fn push_to_bucket(a: PushArgs) -> Result<ExitCode> {
    let (delivery, cluster_store) = match &a.cluster {
        Some(path) => {
            let file = ClusterFile::load(path)?;
            (file.delivery.get_ref().clone(), file.object_store)
        }
        None => (String::new(), ObjectStore::default()),
    };
    let destination = match (a.hosts.as_slice(), &a.cluster) {
        ([], Some(_)) if Location::is_bucket_url(&delivery) => delivery,
        ([], Some(path)) => bail!(
            "the cluster file `{}` delivers over `{delivery}`, not from a bucket: name the bucket (`ferry push LAYOUT s3://bucket/prefix --cluster FILE`), or let `ferry up` push the image to the hosts",
            path.display()
        ),
        ([one], _) if Location::is_bucket_url(one) => one.clone(),
        (_, Some(_)) if !a.hosts.iter().any(|h| Location::is_bucket_url(h)) => bail!(
            "`ferry push --cluster` sends to the cluster's bucket; drop the hosts, or drop --cluster to push to hosts over SSH"
        ),
        _ => bail!(
            "`ferry push` takes either hosts or one bucket; push to the bucket, then run `ferry pull {} HOST...`",
            a.hosts
                .iter()
                .find(|h| Location::is_bucket_url(h))
                .map(String::as_str)
                .unwrap_or("s3://bucket/prefix")
        ),
    };
    let image = layout_image(&a)?;
    let store = open_store(&destination, &a.bucket, &cluster_store)?;
    let progress = UploadProgress {
        term: Term::new(false),
        times: Mutex::new((Instant::now(), Instant::now())),
    };
    let target = store.loc.object_url("");
    progress.term.line(&format!(
        "pushing {} ({}) to {target} at {}",
        image.reference,
        image.config_id(),
        store.endpoint()
    ));
    let t0 = Instant::now();
    let opts = upload::Options {
        part_size: a.part_size << 20,
        parallel: usize::from(a.parts_parallel),
    };
    let result = upload::push_image(&store, &a.layout, &image, &opts, &progress);
    let seconds = t0.elapsed().as_secs_f64();
    let stats = match result {
        Ok(s) => s,
        Err(e) => {
            if a.json {
                let v = json!({"reference": image.reference, "bucket": target, "ok": false, "error": e.to_string()});
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            return Err(e.into());
        }
    };
    if a.json {
        let v = json!({
            "reference": image.reference,
            "config_digest": image.config_id(),
            "bucket": target,
            "endpoint": store.endpoint(),
            "ok": true,
            "objects_sent": stats.objects_sent,
            "objects_present": stats.objects_present,
            "bytes_sent": stats.bytes_sent,
            "parts_sent": stats.parts_sent,
            "parts_reused": stats.parts_reused,
            "resumed": stats.resumed,
            "seconds": (seconds * 1000.0).round() / 1000.0,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let w = target.len().max(6);
        println!(
            "{:<w$}  {:>4}  {:>7}  {:>9}  {:>5}  {:>6}  {:>7}",
            "BUCKET", "SENT", "PRESENT", "BYTES", "PARTS", "REUSED", "SECONDS"
        );
        println!(
            "{target:<w$}  {:>4}  {:>7}  {:>9}  {:>5}  {:>6}  {seconds:>7.1}",
            stats.objects_sent,
            stats.objects_present,
            human(stats.bytes_sent),
            stats.parts_sent,
            stats.parts_reused
        );
    }
    Ok(ExitCode::SUCCESS)
}
