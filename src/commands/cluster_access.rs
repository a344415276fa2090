//! What the cluster subcommands (`up`, `status`, `logs`, `submit`, `scale`,
//! `drill`, `down`) share: the plan of the cluster named on the command
//! line, sessions to its hosts (SSH, or this machine with `--local`), and
//! the bringing up of a cluster to its plan, which `up` and `scale` both
//! end with. Not a subcommand of its own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::Term;
use super::shared::ssh_options;
use crate::cli::{SshArgs, UpArgs};
use crate::cluster::file::{ClusterFile, DEFAULT_IMAGE};
use crate::cluster::fleet::Fleet;
use crate::cluster::hosts::{ClusterHost, LocalHost, SshHost};
use crate::cluster::launch::{self, up::ImageFound};
use crate::cluster::plan::{self, Gate, HostPlan, ImageFacts, Plan};
use crate::deliver::{self as push, Event, HostStats, PushError, PushImage, Reporter};
use crate::fsutil;
use crate::objstore::{self, Location, pull};
use crate::oci;
use crate::ssh::target::{self, CLUSTER_DEFAULT_USER};
use crate::ssh::{SshOptions, Target};

pub struct Loaded {
    pub plan: Plan,
    pub facts: ImageFacts,
    /// The layout the image was read from, if any (then it can be pushed).
    pub layout: Option<PathBuf>,
    /// Where an object-storage `delivery` is served.
    pub object_store: crate::cluster::file::ObjectStore,
}

/// The plan of a cluster file, or of the built-in local cluster.
pub fn load(cluster: Option<&Path>, image: Option<&Path>, local: bool) -> Result<Loaded> {
    let (file, base) = match cluster {
        Some(p) => (ClusterFile::load(p)?, fsutil::parent_dir(p).to_path_buf()),
        None => (
            ClusterFile::parse(
                crate::cluster::file::LOCAL_CLUSTER,
                Path::new("examples/local.toml (built in)"),
            )?,
            PathBuf::from("."),
        ),
    };
    let layout = match (image, &file.image.layout) {
        (Some(p), _) => Some(p.to_path_buf()),
        (None, Some(p)) => Some(base.join(p)),
        (None, None) => None,
    };
    let facts = image_facts(&file, image, &base)?;
    let plan = plan::plan(&file, &facts)?;
    if local {
        launch::check_local(&plan)?;
    }
    Ok(Loaded {
        plan,
        facts,
        layout,
        object_store: file.object_store.clone(),
    })
}

/// `--image`, else the cluster file's layout (relative to the file), else the
/// built-in image when the file names it or no image at all.
pub fn image_facts(file: &ClusterFile, given: Option<&Path>, base: &Path) -> Result<ImageFacts> {
    let layout = match (given, &file.image.layout) {
        (Some(p), _) => Some(p.to_path_buf()),
        (None, Some(p)) => Some(base.join(p)),
        (None, None) => None,
    };
    if let Some(dir) = layout {
        let img = oci::open_layout(&dir).with_context(|| {
            format!(
                "reading the image layout `{}` (build it with `ferry build`)",
                dir.display()
            )
        })?;
        return Ok(ImageFacts::from_layout(&img));
    }
    match file.image.reference.as_deref() {
        None | Some(DEFAULT_IMAGE) => Ok(ImageFacts::builtin()),
        Some(other) => bail!(
            "image `{other}` is a reference ferry cannot read labels from; pass its layout with `--image DIR` or set `image.layout`"
        ),
    }
}

/// The SSH target of a planned host: `user@address:port` of the plan, its
/// jump host (a host of the cluster by name, or `user@host[:port]`), and
/// sudo for a login user other than root unless `--no-sudo`.
pub fn target_of(plan: &Plan, h: &HostPlan, ssh: &SshArgs) -> Result<Target, PushError> {
    let mut t = Target::parse(&format!("ssh://{}", h.ssh), CLUSTER_DEFAULT_USER)?;
    if let Some(j) = &h.jump {
        let hop = match plan.hosts.iter().find(|o| o.name == *j) {
            Some(o) => Target::parse(&format!("ssh://{}", o.ssh), CLUSTER_DEFAULT_USER)?,
            None => Target::parse_jump(j, CLUSTER_DEFAULT_USER)?,
        };
        t.jump = Some(Box::new(hop));
    } else if let Some(j) = &ssh.jump {
        t.jump = Some(Box::new(Target::parse_jump(j, CLUSTER_DEFAULT_USER)?));
    }
    t.sudo &= !ssh.no_sudo;
    Ok(t)
}

/// The SSH options for one host: its own key first, then the command line's.
pub fn host_options(h: &HostPlan, ssh: &SshArgs) -> SshOptions {
    let mut o = ssh_options(ssh.clone());
    if let Some(k) = &h.key
        && ssh.identity.is_none()
    {
        let home = crate::ssh::target::operator_home();
        o.identities
            .insert(0, target::expand_home(Path::new(k), &home));
    }
    o
}

/// Sessions to every host of the plan, opened at once; a host that cannot be
/// reached is in the fleet with the reason.
pub fn connect<'p>(plan: &'p Plan, ssh: &SshArgs, local: bool) -> Fleet<'p> {
    if local {
        let conns = plan
            .hosts
            .iter()
            .map(|_| Ok(Box::new(LocalHost) as Box<dyn ClusterHost>))
            .collect();
        return Fleet::new(plan, conns);
    }
    let conns = std::thread::scope(|s| {
        let handles: Vec<_> = plan
            .hosts
            .iter()
            .map(|h| {
                s.spawn(move || -> Result<Box<dyn ClusterHost>, String> {
                    let t = target_of(plan, h, ssh).map_err(|e| e.to_string())?;
                    SshHost::connect(&t, &host_options(h, ssh))
                        .map(|c| Box::new(c) as Box<dyn ClusterHost>)
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a connect thread does not panic"))
            .collect()
    });
    Fleet::new(plan, conns)
}

/// The planned host by name or address, and its session.
pub fn host<'f>(
    fleet: &'f Fleet,
    name: &str,
) -> Result<(&'f HostPlan, &'f dyn ClusterHost), anyhow::Error> {
    let hp = launch::named_host(fleet.plan, name)?;
    let conn = fleet.ok(&hp.name).with_context(|| {
        let why = fleet
            .failures()
            .into_iter()
            .find(|(n, _)| *n == hp.name)
            .map(|(_, w)| w)
            .unwrap_or_default();
        format!("host `{}` cannot be reached: {why}", hp.name)
    })?;
    Ok((hp, conn))
}

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

/// `ferry up`, and the end of `ferry scale`: delivers the image, writes the
/// files and starts the containers in the plan's order, then reports.
pub fn up(a: UpArgs) -> Result<ExitCode> {
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
        let settings = super::shared::cluster_settings(&loaded.object_store);
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
