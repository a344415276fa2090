//! `ferry up`: the plan's steps in order (deliver the image, write the
//! files, start each role and wait on its gate), the `--dry-run` account of
//! them, and the scripts' arguments for the files and containers it puts in
//! place. The image's delivery itself is the caller's (a function it is given).

use crate::ssh::Script;
use std::time::Duration;

use super::gate::wait;
use super::handover;
use super::probe::{ELECTED, master_in, masters};
use super::scripts::{ENSURE_SH, MK_SH, READ_SH, RECORDS_SH, UP_FILES_HEAD, UP_FILES_STEPS};
use super::survey::{Need, rolling_order, split_serving};
use super::{LaunchError, STATE_ROOT, in_own_folders, plan_host, role_name, role_of};
use crate::cluster::fleet::Fleet;
use crate::cluster::hosts::{ClusterHost, HostError};
use crate::cluster::plan::{
    Action, Container, Gate, HostPlan, ImageRef, JaasSection, Plan, Role, SECRET_VAR,
};
use crate::cluster::render;

/// Runs the plan's steps. `deliver` puts the image on one host (or checks
/// it is there) and says what it did. Returns when every gate is met (hosts
/// that failed are in `fleet.failures()`), or with the gate that was not.
pub fn run(
    fleet: &Fleet,
    deliver: &(dyn Fn(&HostPlan, &dyn ClusterHost) -> Result<String, String> + Sync),
    p: &(dyn Fn(&str) + Sync),
) -> Result<(), LaunchError> {
    let plan = fleet.plan;
    for step in &plan.steps {
        match step.action {
            Action::DeliverImage => {
                for (host, what) in fleet.each(&step.hosts, &|hp, c| deliver(hp, c)) {
                    p(&format!("{host}: {what}"));
                }
            }
            Action::WriteFiles => {
                let secret = cluster_secret(fleet, p)?;
                let done = fleet.each(&step.hosts, &|hp, c| {
                    let (script, tar) = write_files_script(STATE_ROOT, plan, hp, secret.as_deref());
                    c.run("writing the cluster's files", &script, &tar)
                });
                for (host, out) in done {
                    let changed = out.lines().filter(|l| l.starts_with("wrote ")).count();
                    p(&format!(
                        "{host}: {} folders and {} files in place ({changed} written)",
                        plan_host(plan, &host).dirs.len(),
                        plan_host(plan, &host).files.len()
                    ));
                }
            }
            action => {
                let role = role_of(action).expect("a start step");
                // a gate no standing host can meet is not waited for
                if step.hosts.iter().all(|h| fleet.ok(h).is_none()) {
                    p(&format!(
                        "not starting the {}: none of its hosts is left",
                        role_name(role)
                    ));
                    continue;
                }
                if role == Role::Master {
                    match handover::clear_stale_recovery(fleet) {
                        Ok(Some(what)) => p(&what),
                        Ok(None) => {}
                        Err(why) => p(&format!(
                            "the masters' recovery state in ZooKeeper stays as it was: {why}"
                        )),
                    }
                }
                start_role(fleet, step.hosts.as_slice(), role, step.gate.as_ref(), p)?;
            }
        }
    }
    Ok(())
}

/// Starts a role: in parallel on a fresh or idle role; as a rolling
/// replacement, gated after each container, when serving containers of a
/// role with more than one must change.
fn start_role(
    fleet: &Fleet,
    hosts: &[String],
    role: Role,
    gate: Option<&Gate>,
    p: &(dyn Fn(&str) + Sync),
) -> Result<(), LaunchError> {
    let (serving, rest, rolling) = split_serving(fleet, hosts, role);
    let ensure_on = |names: &[String], only: Option<&str>| {
        fleet.each(names, &|hp, c| {
            let mine: Vec<&Container> = hp
                .containers
                .iter()
                .filter(|c| c.role == role && only.is_none_or(|o| o == c.name))
                .collect();
            let mut out = String::new();
            for ct in mine {
                out += &c.run(
                    &format!("starting the {}", role_name(role)),
                    &ensure_script(ct),
                    &[],
                )?;
            }
            Ok::<_, HostError>(out)
        })
    };
    let show = |done: Vec<(String, String)>| {
        for (host, out) in done {
            for l in out.lines() {
                p(&format!("{host}: {l}"));
            }
        }
    };
    if !rolling {
        show(ensure_on(hosts, None));
        if let Some(g) = gate {
            wait(fleet, g, role, hosts, false, &[], p)?;
        }
        return Ok(());
    }
    // the ones not serving first, all at once; then one at a time
    // (a host runs one container of a role)
    let idle: Vec<String> = rest
        .iter()
        .filter(|s| s.need != Need::Nothing)
        .map(|s| s.host.clone())
        .collect();
    if !idle.is_empty() {
        show(ensure_on(&idle, None));
        if let Some(g) = gate {
            let pending: Vec<String> = serving.iter().map(|s| s.host.clone()).collect();
            wait(fleet, g, role, hosts, true, &pending, p)?;
        }
    }
    let order = rolling_order(fleet, role, serving);
    let n = order.len();
    for (i, s) in order.iter().enumerate() {
        p(&format!(
            "rolling {}/{n}: replacing {} on {}",
            i + 1,
            s.container,
            s.host
        ));
        if role == Role::Master && master_in(fleet, &s.host, ELECTED) {
            // a planned failover: the standby takes over at once
            let noted = handover::note_leader(fleet, Duration::from_secs(30));
            match handover::stop_leader(fleet, &s.host, &s.container, noted) {
                Ok(what) => p(&format!("{}: the leading master {what}", s.host)),
                Err(why) => fleet.fail(&s.host, why.to_string()),
            }
        }
        let watched = (role == Role::Zookeeper)
            .then(|| {
                // the elected master, recovering or ALIVE
                let (h, c, _) = masters(fleet.plan)
                    .into_iter()
                    .find(|(h, _, _)| master_in(fleet, &h.name, ELECTED))?;
                handover::watch(fleet, (&h.name, &c.name))
            })
            .flatten();
        show(ensure_on(std::slice::from_ref(&s.host), Some(&s.container)));
        if let Some(g) = gate {
            // workers still to be replaced may be the broken ones this
            // upgrade fixes: the gate waits on the others
            let pending: Vec<String> = order[i + 1..].iter().map(|s| s.host.clone()).collect();
            wait(fleet, g, role, hosts, true, &pending, p)?;
        }
        // (with the ensemble whole again, the node can be deleted)
        if let Some(what) = watched.and_then(|w| {
            let host = w.host().to_string();
            handover::release_if_restarted(fleet, w, &|| master_in(fleet, &host, ELECTED))
        }) {
            p(&what);
        }
    }
    Ok(())
}

/// What `up` would do to each role's containers, in order (`--dry-run`).
pub fn dry_run(fleet: &Fleet) -> Vec<String> {
    let mut lines = Vec::new();
    for step in &fleet.plan.steps {
        let Some(role) = role_of(step.action) else {
            continue;
        };
        let (serving, rest, rolling) = split_serving(fleet, &step.hosts, role);
        for s in &rest {
            let what = match s.need {
                Need::Nothing => "keep",
                Need::Start => "start (stopped)",
                Need::Create => "create",
                Need::Replace { .. } => "replace (not running)",
            };
            lines.push(format!("{}: {what} {}", s.host, s.container));
        }
        let order = if rolling {
            rolling_order(fleet, role, serving)
        } else {
            serving
        };
        let n = order.len();
        for (i, s) in order.iter().enumerate() {
            if rolling {
                lines.push(format!(
                    "{}: replace {} (rolling {}/{n}, then gate)",
                    s.host,
                    s.container,
                    i + 1
                ));
            } else {
                lines.push(format!("{}: replace {}", s.host, s.container));
            }
        }
    }
    lines
}

/// The cluster's Spark RPC secret: the one a host already has (the first
/// found, in the plan's order), else a new one from this machine's
/// /dev/urandom. `None` when no host runs Spark. Never printed.
fn cluster_secret(fleet: &Fleet, p: &(dyn Fn(&str) + Sync)) -> Result<Option<String>, LaunchError> {
    let holders: Vec<String> = fleet
        .plan
        .hosts
        .iter()
        .filter(|h| h.secret.is_some())
        .map(|h| h.name.clone())
        .collect();
    if holders.is_empty() {
        return Ok(None);
    }
    let found = fleet.each(&holders, &|hp, c| {
        let path = &hp.secret.as_ref().expect("a holder").path;
        c.run(
            "reading the cluster's secret",
            &Script::new(READ_SH).arg(path),
            &[],
        )
    });
    let value = |s: &str| {
        s.trim()
            .strip_prefix(&format!("{SECRET_VAR}="))
            .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(|v| format!("{SECRET_VAR}={v}\n"))
    };
    if let Some((host, s)) = found.iter().find_map(|(h, s)| value(s).map(|v| (h, v))) {
        if found.iter().any(|(_, o)| value(o).as_ref() != Some(&s)) {
            p(&format!(
                "the cluster's secret comes from {host}; hosts without it get it"
            ));
        }
        return Ok(Some(s));
    }
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .map_err(|e| {
            LaunchError::Host(format!(
                "cannot read /dev/urandom for the cluster's secret: {e}"
            ))
        })?;
    p("made a new Spark RPC secret for the cluster (kept on its hosts only)");
    Ok(Some(format!("{SECRET_VAR}={}\n", hex::encode(bytes))))
}

/// The script that makes the host's folders (owned by the image's users,
/// resolved to their uids in the image, when a folder is new) and puts
/// each file in place atomically, only when its content differs; and the tar
/// of the files' contents it reads on stdin. A folder that was there before
/// (`/data/spark` from a flat config, say) is used as it is, but only if the
/// daemon's user can write it: the host fails otherwise, naming the folder.
/// `root` is where ferry keeps its own records ([`STATE_ROOT`]).
pub fn write_files_script(
    root: &str,
    plan: &Plan,
    host: &HostPlan,
    secret: Option<&str>,
) -> (Script, Vec<u8>) {
    let mut s = Script::new(UP_FILES_HEAD)
        .then(RECORDS_SH)
        .then(MK_SH)
        .then(UP_FILES_STEPS)
        .arg(format!("{root}/{}", plan.cluster))
        .arg(&plan.image.reference);
    for d in &host.dirs {
        let own = if in_own_folders(&plan.cluster, &d.path) {
            "1"
        } else {
            "0"
        };
        s = s.args(["dir", &d.path, &d.mode, &d.owner, own]);
    }
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |name: &str, content: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(content.len() as u64);
        h.set_mode(0o600);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        tar.append_data(&mut h, name, content)
            .expect("a tar in memory");
    };
    for (i, f) in host.files.iter().enumerate() {
        add(&i.to_string(), f.content.as_bytes());
        s = s.args(["file", &i.to_string(), &f.path, &f.mode]);
    }
    // a secret file is owned like its folder (the image's user), never
    // readable by others, and only ever in the tar on stdin
    if let Some(value) = secret {
        if let Some(sec) = &host.secret {
            add("secret", value.as_bytes());
            s = s.args(["secret", "secret", &sec.path, &sec.mode]);
        }
        let password = zookeeper_password(value);
        for (i, j) in host.jaas.iter().enumerate() {
            let text = match j.section {
                JaasSection::Server => render::jaas_server(&password),
                JaasSection::Client => render::jaas_client(&password),
            };
            let name = format!("jaas{i}");
            add(&name, text.as_bytes());
            s = s.args(["secret", &name, &j.path, &j.mode]);
        }
    }
    (s, tar.into_inner().expect("a tar in memory"))
}

/// The cluster's ZooKeeper password (`zookeeper.auth = "sasl"`), derived
/// from its Spark RPC secret (the `--env-file` line): one secret to make,
/// find and copy, and a JAAS file that leaks gives away neither the secret
/// nor more than the ensemble.
pub(super) fn zookeeper_password(secret_line: &str) -> String {
    use sha2::Digest;
    let secret = secret_line
        .trim()
        .strip_prefix(&format!("{SECRET_VAR}="))
        .unwrap_or(secret_line.trim());
    let mut h = sha2::Sha256::new();
    h.update(b"ferry zookeeper sasl password\0");
    h.update(secret.as_bytes());
    hex::encode(h.finalize())
}

/// The script that prints the id of the host's image under `reference`, or
/// nothing when its Docker has none.
pub fn image_id_script(reference: &str) -> Script {
    Script::new(r#"docker image inspect --format '{{.Id}}' -- "$1" 2>/dev/null || true"#)
        .arg(reference)
}

/// What a host's Docker holds under the plan's image reference.
#[derive(Debug, PartialEq, Eq)]
pub enum ImageFound {
    Missing,
    /// The planned image.
    Planned,
    /// Another image under the same tag (a stale build, say): its id.
    Other(String),
}

/// Reads [`image_id_script`]'s output. Docker names an image it loaded
/// from a docker-archive by its config digest (its containerd store, by
/// the manifest digest): either one is the planned image.
pub fn image_found(image: &ImageRef, out: &str) -> ImageFound {
    let id = out.trim();
    if id.is_empty() {
        return ImageFound::Missing;
    }
    let hex = |d: &str| d.strip_prefix("sha256:").unwrap_or(d).to_string();
    if [&image.config_digest, &image.digest]
        .iter()
        .any(|d| hex(d) == hex(id))
    {
        ImageFound::Planned
    } else {
        ImageFound::Other(id.to_string())
    }
}

/// `docker run` arguments for a planned container.
pub fn run_args(c: &Container) -> Vec<String> {
    let mut a: Vec<String> = [
        "run",
        "--detach",
        "--name",
        &c.name,
        "--network",
        &c.network,
        "--restart",
        &c.restart,
        "--user",
        &c.user,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (k, v) in &c.labels {
        a.push("--label".into());
        a.push(format!("{k}={v}"));
    }
    for (k, v) in &c.env {
        a.push("--env".into());
        a.push(format!("{k}={v}"));
    }
    if let Some(f) = &c.env_file {
        a.push("--env-file".into());
        a.push(f.clone());
    }
    for m in &c.mounts {
        a.push("--volume".into());
        let ro = if m.read_only { ":ro" } else { "" };
        a.push(format!("{}:{}{ro}", m.source, m.target));
    }
    // an image reference is never taken for an option
    a.push("--".into());
    a.push(c.image.clone());
    a.extend(c.command.iter().cloned());
    a
}

/// The script that brings a container to its planned spec (see [`ENSURE_SH`]).
pub fn ensure_script(c: &Container) -> Script {
    Script::new(ENSURE_SH)
        .arg(&c.name)
        .arg(&c.labels["ferry.spec"])
        .arg(c.ports.len().to_string())
        .args(c.ports.iter().map(|p| p.port.to_string()))
        .args(run_args(c))
}
