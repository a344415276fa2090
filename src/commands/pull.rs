//! `ferry push LAYOUT s3://…` (the image into a bucket, with a line per
//! object and a summary) and `ferry pull s3://… HOSTS` (hosts fetch it from
//! the bucket in parallel, with the push's progress lines per host and a
//! summary table or JSON). Credentials are read here and handed on; nothing
//! printed carries them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::push::{Progress, ssh_options, targets};
use super::{Term, human};
use crate::cli::{BucketArgs, PullArgs, PushArgs};
use crate::cluster::file::{ClusterFile, ObjectStore};
use crate::objstore::pull::{self, HostOutcome, PullError};
use crate::objstore::upload::{self, Event};
use crate::objstore::{self, Location, Settings, Store, Style};
use crate::oci;
use crate::push::{self, PushImage};
use crate::ssh::Target;
use crate::ssh::target::{ClusterHost, cluster_target, expand_home};

/// Where a cluster file's `[object_store]` says the bucket is served (its
/// `url_style` was checked when the file was read).
pub(super) fn cluster_settings(o: &ObjectStore) -> Settings {
    Settings {
        endpoint: o.endpoint.clone(),
        region: o.region.clone(),
        style: o.url_style.as_deref().map(style),
    }
}

fn style(s: &str) -> Style {
    if s == "path" {
        Style::Path
    } else {
        Style::Virtual
    }
}

/// A client of the bucket `url`, with keys from the environment or the
/// file; the command line's endpoint, region and URL style win over the
/// cluster file's.
fn open_store(url: &str, a: &BucketArgs, cluster: &ObjectStore) -> Result<Store> {
    let from_file = cluster_settings(cluster);
    let settings = Settings {
        endpoint: a.endpoint.clone().or(from_file.endpoint),
        region: a.region.clone().or(from_file.region),
        style: a.url_style.as_deref().map(style).or(from_file.style),
    };
    Ok(objstore::open(
        url,
        settings,
        a.credentials_file.as_deref(),
    )?)
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
pub(super) fn push_to_bucket(a: PushArgs) -> Result<ExitCode> {
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
    let layout = oci::open_layout(&a.layout).with_context(|| {
        format!(
            "opening the layout `{}`; build it with `ferry build`",
            a.layout.display()
        )
    })?;
    let image = PushImage::from_layout(&layout, a.tag.as_deref())?;
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

/// What `ferry pull` takes from a cluster file.
struct FromCluster {
    targets: Vec<Target>,
    /// Key files the hosts name, tried before the command line's.
    keys: Vec<PathBuf>,
    delivery: String,
    store: crate::cluster::file::ObjectStore,
}

/// The hosts of a cluster file as SSH targets (as the plan reaches them:
/// [`cluster_target`]), the key files, the bucket and its service.
fn cluster_hosts(path: &Path) -> Result<FromCluster> {
    let file = ClusterFile::load(path)?;
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()));
    let mut keys = Vec::new();
    for h in &file.hosts {
        if let Some(k) = &h.ssh.key {
            let k = expand_home(k, &home);
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    let hosts: Vec<ClusterHost> = file
        .hosts
        .iter()
        .map(|h| ClusterHost {
            name: h.name.get_ref(),
            address: &h.address,
            user: h.ssh.user.as_deref(),
            port: h.ssh.port,
            jump: h.ssh.jump.as_deref(),
        })
        .collect();
    let targets = hosts
        .iter()
        .map(|h| cluster_target(h, &hosts))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(FromCluster {
        targets,
        keys,
        delivery: file.delivery.get_ref().clone(),
        store: file.object_store,
    })
}

fn pull_result_text(o: &HostOutcome) -> String {
    match &o.result {
        Ok(()) if o.stats.loaded => "ok, loaded".into(),
        Ok(()) => "ok, up to date".into(),
        Err(e) => format!("error: {e}"),
    }
}

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
        push: push::Options {
            runtime: push::Runtime::Docker,
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

    if a.json {
        let v = json!({
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
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        super::push::print_hosts(
            outcomes
                .iter()
                .map(|o| (&o.target, &o.stats, o.seconds, pull_result_text(o)))
                .collect(),
        );
    }
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
