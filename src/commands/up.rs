//! `ferry up`: deliver the image, write the files and start a cluster's
//! containers in the plan's order, over SSH or (`--local`) on this machine.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::Term;
use super::launch::{connect, host_options, load, target_of};
use crate::cli::UpArgs;
use crate::cluster::hosts::ClusterHost;
use crate::cluster::launch::{self, up::ImageFound};
use crate::cluster::plan::{Gate, HostPlan};
use crate::objstore::{self, Location, pull};
use crate::oci;
use crate::push::{self, Event, HostStats, PushImage, Reporter};

/// Push progress as a few lines per host.
struct PushLines<'a> {
    term: &'a Term,
}

impl Reporter for PushLines<'_> {
    fn event(&self, host: &str, event: Event<'_>) {
        match event {
            Event::Planned(p) if !p.sends.is_empty() => self.term.line(&format!(
                "{host}: sending {} blobs, {}",
                p.sends.len(),
                super::human(p.bytes())
            )),
            Event::Loading => self
                .term
                .line(&format!("{host}: loading the image into docker")),
            _ => {}
        }
    }
}

/// What a delivery did on a host: `how`, with the blobs it sent, or that
/// the image was there already.
fn delivered(st: &HostStats, how: &str) -> String {
    if st.blobs_sent > 0 || st.loaded {
        format!(
            "{how} ({} blobs, {})",
            st.blobs_sent,
            super::human(st.bytes_sent)
        )
    } else {
        "the image is in docker".into()
    }
}

pub fn run(a: UpArgs) -> Result<ExitCode> {
    let t = &a.target;
    let loaded = load(t.cluster.as_deref(), t.image.as_deref(), t.local)?;
    let plan = &loaded.plan;
    let term = Term::new(false);
    term.line(&format!(
        "cluster `{}`, plan {}, image {}",
        plan.cluster,
        &plan.plan_hash[..19],
        plan.image.reference
    ));
    let start = std::time::Instant::now();
    let fleet = connect(plan, &t.ssh, t.local);
    for (h, why) in fleet.failures() {
        term.line(&format!("{h}: FAILED: {why}"));
    }
    if a.dry_run {
        for l in launch::up::dry_run(&fleet) {
            println!("{l}");
        }
        println!(
            "(dry run: nothing changed; the image is delivered and files written first where they differ)"
        );
        return Ok(if fleet.failures().is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }

    // how the image gets to the hosts: pushed from the layout over SSH,
    // pulled by each host from the bucket, or only checked for
    let bucket = if !t.local && Location::is_bucket_url(&plan.delivery) {
        let settings = super::pull::cluster_settings(&loaded.object_store);
        let store = objstore::open(&plan.delivery, settings, a.credentials_file.as_deref())?;
        let image = pull::read_image(&store, None)?;
        if format!("sha256:{}", image.manifest.hex) != plan.image.digest {
            bail!(
                "the bucket `{}` holds image sha256:{}, but the plan runs {}: push the layout to the bucket first (`ferry push LAYOUT {}`)",
                plan.delivery,
                image.manifest.hex,
                plan.image.digest,
                plan.delivery
            );
        }
        term.line(&format!("hosts pull the image from {}", plan.delivery));
        Some((store, image))
    } else {
        None
    };
    let image = match (&loaded.layout, t.local) {
        (Some(dir), false) if plan.delivery == "ssh" => {
            let img = oci::open_layout(dir)
                .with_context(|| format!("opening the image layout `{}`", dir.display()))?;
            Some(PushImage::from_layout(&img, None)?)
        }
        _ => None,
    };
    let reporter = PushLines { term: &term };
    let stats: Mutex<HashMap<String, HostStats>> = Mutex::new(HashMap::new());
    // the image must already be in the host's Docker, and be the planned
    // one (its id is the config digest)
    let check_only = |c: &dyn ClusterHost| -> Result<String, String> {
        let reference = &plan.image.reference;
        let out = c.run(
            "looking for the image",
            &launch::up::image_id_script(reference),
            &[],
        )?;
        match launch::up::image_found(&plan.image, &out) {
            ImageFound::Planned => Ok("the image is in docker".to_string()),
            ImageFound::Missing if t.local => Err(format!(
                "image {reference} is not in docker here; build and load it: ferry build --docker-archive out/spark.tar && docker load -i out/spark.tar"
            )),
            ImageFound::Missing => Err(format!(
                "image {reference} is not in docker here; give its layout (--image DIR or image.layout in the cluster file) so ferry can push it"
            )),
            ImageFound::Other(id) => Err(format!(
                "docker there has another image under `{reference}` (id {id}; the plan's image is {}{}): load the plan's image there ({}) and run `ferry up` again",
                plan.image.config_digest,
                loaded
                    .layout
                    .as_ref()
                    .map(|l| format!(", from `{}`", l.display()))
                    .unwrap_or_default(),
                if t.local {
                    "`docker load -i` the archive `ferry build --docker-archive` wrote with the layout"
                } else {
                    "`ferry push LAYOUT ssh://HOST`"
                }
            )),
        }
    };
    let deliver = |hp: &HostPlan, c: &dyn ClusterHost| -> Result<String, String> {
        if let Some((store, image)) = &bucket {
            let target = target_of(plan, hp, &t.ssh).map_err(|e| e.to_string())?;
            let opts = pull::Options {
                push: push::Options {
                    runtime: push::Runtime::Docker,
                    store: a.store.clone(),
                    parallel: 1,
                    verify: false,
                    ssh: host_options(hp, &t.ssh),
                },
                url_expiry: 900,
            };
            let mut st = HostStats::default();
            pull::pull_host(&target, image, store, &opts, &reporter, &mut st)
                .map_err(|e| e.to_string())?;
            return Ok(delivered(&st, "image pulled from the bucket"));
        }
        let Some(image) = &image else {
            if !t.local && plan.delivery != "ssh" {
                // object storage: the hosts must already have it (`ferry pull`)
                return check_only(c).map_err(|e| {
                    format!("{e} (delivery `{}`: run `ferry pull` first)", plan.delivery)
                });
            }
            return check_only(c);
        };
        let target = target_of(plan, hp, &t.ssh).map_err(|e| e.to_string())?;
        let opts = push::Options {
            runtime: push::Runtime::Docker,
            store: a.store.clone(),
            parallel: 1,
            verify: false,
            ssh: host_options(hp, &t.ssh),
        };
        let mut st = HostStats::default();
        let r = push::push_host(&target, image, &opts, &reporter, &mut st);
        let what = delivered(&st, "image delivered");
        stats
            .lock()
            .expect("stats lock")
            .insert(hp.name.clone(), st);
        r.map(|()| what).map_err(|e| e.to_string())
    };
    let result = launch::up::run(&fleet, &deliver, &|s| term.line(s));
    let seconds = start.elapsed().as_secs_f64();
    let failures = fleet.failures();
    let ui = plan
        .steps
        .iter()
        .find_map(|s| match &s.gate {
            Some(Gate::OneMasterAlive { status_urls, .. }) => status_urls
                .first()
                .map(|u| u.trim_end_matches("json/").to_string()),
            _ => None,
        })
        .unwrap_or_default();
    if a.json {
        let v = json!({
            "cluster": plan.cluster,
            "plan_hash": plan.plan_hash,
            "ok": result.is_ok() && failures.is_empty(),
            "error": result.as_ref().err().map(|e| e.to_string()),
            "seconds": (seconds * 1000.0).round() / 1000.0,
            "masters": plan.master_url,
            "failed_hosts": failures.iter().map(|(h, w)| json!({"host": h, "error": w})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    result?;
    if !failures.is_empty() {
        for (h, why) in &failures {
            eprintln!("error: host `{h}`: {why}");
        }
        eprintln!(
            "error: {} of {} host(s) failed (above); the rest are up. Fix them and run the same `ferry up` again: it changes only what is missing",
            failures.len(),
            plan.hosts.len()
        );
        return Ok(ExitCode::from(1));
    }
    if !a.json {
        println!(
            "cluster `{}` is up in {seconds:.1}s: masters {}, UI {ui}",
            plan.cluster, plan.master_url
        );
        if t.local {
            println!("next: ferry submit --local   # runs the image's sample job");
        } else {
            println!(
                "next: ferry submit {}   # runs the image's sample job",
                t.cluster
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
