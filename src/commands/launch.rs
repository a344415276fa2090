//! What `up`, `status`, `logs`, `submit` and `down` share: the plan of the
//! cluster named on the command line, and sessions to its hosts (SSH, or
//! this machine with `--local`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::push::ssh_options;
use crate::cli::SshArgs;
use crate::cluster::file::ClusterFile;
use crate::cluster::fleet::Fleet;
use crate::cluster::hosts::{ClusterHost, LocalHost, SshHost};
use crate::cluster::launch;
use crate::cluster::plan::{self, HostPlan, ImageFacts, Plan};
use crate::fsutil;
use crate::push::ssh::SshOptions;
use crate::push::{PushError, Target};

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
    let facts = super::plan::image_facts(&file, image, &base)?;
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

/// A `~/` at the start of a path is the operator's home.
fn expand_home(p: &str) -> PathBuf {
    match p.strip_prefix("~/") {
        Some(rest) => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(rest)
        }
        None => PathBuf::from(p),
    }
}

/// The SSH target of a planned host: `user@address:port` of the plan, its
/// jump host (a host of the cluster by name, or `user@host[:port]`), and
/// sudo for a login user other than root unless `--no-sudo`.
pub fn target_of(plan: &Plan, h: &HostPlan, ssh: &SshArgs) -> Result<Target, PushError> {
    let mut t = Target::parse(&format!("ssh://{}", h.ssh), "root")?;
    if let Some(j) = &h.jump {
        let hop = match plan.hosts.iter().find(|o| o.name == *j) {
            Some(o) => Target::parse(&format!("ssh://{}", o.ssh), "root")?,
            None => Target::parse_jump(j, "root")?,
        };
        t.jump = Some(Box::new(hop));
    } else if let Some(j) = &ssh.jump {
        t.jump = Some(Box::new(Target::parse_jump(j, "root")?));
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
        o.identities.insert(0, expand_home(k));
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
