//! Carries out a plan on its hosts: writes each host's folders and files,
//! starts the containers in the plan's order and waits on each step's gate;
//! and `status`, `logs`, `submit` and `down` on a running cluster. The hosts
//! are [`ClusterHost`]s: SSH sessions, or this machine for `--local`.
//!
//! No state is kept here: each container carries `ferry.cluster`,
//! `ferry.role` and `ferry.spec` (a hash of its planned spec and files)
//! labels, so any operator with the cluster file sees the same truth; each
//! folder `up` makes holds a `.ferry-created` mark, so `down --purge`
//! removes what ferry made and keeps what was there before.
//! Idempotent: a running container whose spec label matches is left alone,
//! a stopped one is started, a changed one is replaced. A host that fails is
//! set aside (the rest go on) and reported; gates then wait only on the
//! hosts still standing.

use crate::script::Script;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::handover;
use super::hosts::ClusterHost;
use super::plan::{
    Action, Container, Gate, HostPlan, ImageRef, JaasSection, Plan, Role, SECRET_VAR,
};
use super::render;
use crate::push::sh_quote;

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("`--local` runs a one-host cluster on this machine; {0}")]
    NotLocal(String),
    #[error("gate `{gate}` not met within {secs}s: {last}\n{logs}")]
    Gate {
        gate: String,
        secs: u32,
        last: String,
        logs: String,
    },
    #[error("host `{host}` is not in cluster `{cluster}` (its hosts: {known})")]
    UnknownHost {
        cluster: String,
        host: String,
        known: String,
    },
    #[error("host `{host}` runs no {role} of cluster `{cluster}`")]
    NoRole {
        cluster: String,
        host: String,
        role: String,
    },
    #[error("{0}")]
    Host(String),
}

/// A plan that `--local` can run: one host, on a loopback address.
pub fn check_local(plan: &Plan) -> Result<(), LaunchError> {
    let busy: Vec<_> = plan
        .hosts
        .iter()
        .filter(|h| !h.containers.is_empty())
        .collect();
    if busy.len() != 1 {
        return Err(LaunchError::NotLocal(format!(
            "this plan has roles on {} hosts (use a file like examples/local.toml)",
            busy.len()
        )));
    }
    let a = &busy[0].address;
    if !(a.starts_with("127.") || a == "localhost" || a == "::1") {
        return Err(LaunchError::NotLocal(format!(
            "host `{}` has the address `{a}`, not a loopback one",
            busy[0].name
        )));
    }
    Ok(())
}

/// One host of the plan: its session (if it could be reached) and the first
/// failure seen on it.
pub struct Slot {
    pub conn: Option<Box<dyn ClusterHost>>,
    failure: Mutex<Option<String>>,
}

/// The plan's hosts, in the plan's order.
pub struct Fleet<'a> {
    pub plan: &'a Plan,
    slots: Vec<Slot>,
}

impl<'a> Fleet<'a> {
    /// `conns` is in the order of `plan.hosts`: a session or why there is none.
    pub fn new(plan: &'a Plan, conns: Vec<Result<Box<dyn ClusterHost>, String>>) -> Fleet<'a> {
        let slots = conns
            .into_iter()
            .map(|c| match c {
                Ok(c) => Slot {
                    conn: Some(c),
                    failure: Mutex::new(None),
                },
                Err(why) => Slot {
                    conn: None,
                    failure: Mutex::new(Some(why)),
                },
            })
            .collect();
        Fleet { plan, slots }
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.plan.hosts.iter().position(|h| h.name == name)
    }

    /// The host's session, unless it failed.
    pub fn ok(&self, name: &str) -> Option<&dyn ClusterHost> {
        let s = &self.slots[self.index(name)?];
        if s.failure.lock().expect("failure lock").is_some() {
            return None;
        }
        s.conn.as_deref()
    }

    fn fail(&self, name: &str, why: String) {
        if let Some(i) = self.index(name) {
            let mut f = self.slots[i].failure.lock().expect("failure lock");
            if f.is_none() {
                *f = Some(why);
            }
        }
    }

    /// Hosts that failed, with the first reason, in the plan's order.
    pub fn failures(&self) -> Vec<(String, String)> {
        self.plan
            .hosts
            .iter()
            .zip(&self.slots)
            .filter_map(|(h, s)| {
                s.failure
                    .lock()
                    .expect("failure lock")
                    .clone()
                    .map(|f| (h.name.clone(), f))
            })
            .collect()
    }

    /// Runs `f` on each named host still standing, all at once; a host whose
    /// `f` fails is set aside with the error.
    pub fn each<T: Send>(
        &self,
        names: &[String],
        f: &(dyn Fn(&HostPlan, &dyn ClusterHost) -> Result<T, String> + Sync),
    ) -> Vec<(String, T)> {
        let out = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for hp in self.plan.hosts.iter().filter(|h| names.contains(&h.name)) {
                let Some(conn) = self.ok(&hp.name) else {
                    continue;
                };
                let out = &out;
                s.spawn(move || match f(hp, conn) {
                    Ok(v) => out.lock().expect("results lock").push((hp.name.clone(), v)),
                    Err(why) => self.fail(&hp.name, why),
                });
            }
        });
        let mut v = out.into_inner().expect("results lock");
        v.sort_by_key(|(n, _)| self.index(n));
        v
    }

    /// Opens `addr:port` from the host with that address, else from any
    /// reachable host (a host whose SSH is down may still serve).
    pub fn exchange(&self, addr: &str, port: u16, request: &[u8]) -> Result<Vec<u8>, String> {
        let own = self.plan.hosts.iter().position(|h| h.address == addr);
        let order = own
            .into_iter()
            .chain((0..self.slots.len()).filter(|i| Some(*i) != own));
        let mut last = format!("no reachable host to check {addr}:{port} from");
        for i in order {
            if let Some(c) = &self.slots[i].conn {
                match c.exchange(addr, port, request) {
                    Ok(a) => return Ok(a),
                    Err(e) => {
                        last = e;
                        // the host itself answered for its own address
                        if Some(i) == own {
                            return Err(last);
                        }
                    }
                }
            }
        }
        Err(last)
    }
}

fn role_of(action: Action) -> Option<Role> {
    match action {
        Action::StartZookeeper => Some(Role::Zookeeper),
        Action::StartMasters => Some(Role::Master),
        Action::StartWorkers => Some(Role::Worker),
        Action::DeliverImage | Action::WriteFiles => None,
    }
}

/// Runs the plan's steps. `deliver` puts the image on one host (or checks
/// it is there) and says what it did. Returns when every gate is met (hosts
/// that failed are in `fleet.failures()`), or with the gate that was not.
pub fn up(
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
                    let (script, tar) = write_files_script(plan, hp, secret.as_deref());
                    c.run(
                        "writing the cluster's files",
                        &Script::legacy((script).to_string()),
                        &tar,
                    )
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

/// What a start step finds a planned container to need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    Nothing,
    /// It exists with the planned spec but is not running.
    Start,
    Create,
    /// Its spec changed; `running` if it serves now.
    Replace {
        running: bool,
    },
}

/// One planned container and what it needs.
#[derive(Debug, Clone)]
pub struct Survey {
    pub host: String,
    pub container: String,
    pub need: Need,
}

/// Asks each host how its containers of `role` compare with the plan.
pub fn survey(fleet: &Fleet, hosts: &[String], role: Role) -> Vec<Survey> {
    fleet
        .each(hosts, &|hp, c| {
            let mine: Vec<&Container> = hp.containers.iter().filter(|c| c.role == role).collect();
            let script: String = mine
                .iter()
                .map(|c| {
                    format!(
                        "printf '%s ' {n}; docker container inspect --format '{{{{index .Config.Labels \"ferry.spec\"}}}} {{{{.State.Running}}}}' {n} 2>/dev/null || echo missing\n",
                        n = sh_quote(&c.name)
                    )
                })
                .collect();
            let out = c.run("looking at the containers", &Script::legacy((script).to_string()), &[])?;
            Ok(mine
                .iter()
                .map(|ct| {
                    let line = out
                        .lines()
                        .find(|l| l.split(' ').next() == Some(ct.name.as_str()))
                        .unwrap_or("");
                    let f: Vec<&str> = line.split(' ').collect();
                    let want = &ct.labels["ferry.spec"];
                    let need = match (f.get(1).copied(), f.get(2).copied()) {
                        (Some("missing") | None, _) => Need::Create,
                        (Some(spec), Some(run)) if spec == want => {
                            if run == "true" {
                                Need::Nothing
                            } else {
                                Need::Start
                            }
                        }
                        (_, run) => Need::Replace {
                            running: run == Some("true"),
                        },
                    };
                    Survey {
                        host: hp.name.clone(),
                        container: ct.name.clone(),
                        need,
                    }
                })
                .collect::<Vec<_>>())
        })
        .into_iter()
        .flat_map(|(_, v)| v)
        .collect()
}

/// The running containers to replace one at a time, in a safe order:
/// ZooKeeper followers before the leader, standby masters before the
/// active one, workers in the plan's order.
pub fn rolling_order(fleet: &Fleet, role: Role, replace: Vec<Survey>) -> Vec<Survey> {
    let mut keyed: Vec<(u8, Survey)> = replace
        .into_iter()
        .map(|s| {
            let hp = plan_host(fleet.plan, &s.host);
            let port = hp
                .containers
                .iter()
                .find(|c| c.name == s.container)
                .and_then(|c| c.ports.first())
                .map(|p| p.port)
                .unwrap_or(0);
            let last = match role {
                Role::Zookeeper => srvr_mode(fleet, &hp.address, port).is_ok_and(|m| m == "leader"),
                // a leader still recovering is the leader too
                Role::Master => master_in(fleet, &s.host, ELECTED),
                Role::Worker => false,
            };
            (u8::from(last), s)
        })
        .collect();
    // stable: the plan's order within each group
    keyed.sort_by_key(|(k, _)| *k);
    keyed.into_iter().map(|(_, s)| s).collect()
}

/// A master's states once elected: it recovers (hears from every worker and
/// application) before it is ALIVE.
const ELECTED: &[&str] = &["ALIVE", "RECOVERING", "COMPLETING_RECOVERY"];

/// Whether the master on `host` is in one of `states` (its `/json/`).
fn master_in(fleet: &Fleet, host: &str, states: &[&str]) -> bool {
    let address = &plan_host(fleet.plan, host).address;
    master_url_of(fleet.plan, address)
        .and_then(|u| get_json(fleet, &u).ok())
        .is_some_and(|j| j["status"].as_str().is_some_and(|s| states.contains(&s)))
}

fn master_url_of(plan: &Plan, address: &str) -> Option<String> {
    plan.steps.iter().find_map(|s| match &s.gate {
        Some(Gate::OneMasterAlive { status_urls, .. }) => status_urls
            .iter()
            .find(|u| split_url(u).is_some_and(|(a, _, _)| a == address))
            .cloned(),
        _ => None,
    })
}

/// The containers of a role that serve now but must be replaced, the rest,
/// and whether the replacement must roll (one at a time, gated): when
/// serving containers of a role with more than one must change.
fn split_serving(fleet: &Fleet, hosts: &[String], role: Role) -> (Vec<Survey>, Vec<Survey>, bool) {
    let (serving, rest): (Vec<Survey>, Vec<Survey>) = survey(fleet, hosts, role)
        .into_iter()
        .partition(|s| s.need == Need::Replace { running: true });
    let rolling = !serving.is_empty() && serving.len() + rest.len() > 1;
    (serving, rest, rolling)
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
            c.run(
                &format!("starting the {}", role_name(role)),
                &Script::legacy((ensure_script(&mine)).to_string()),
                &[],
            )
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
            let stop = format!(
                "docker stop --time 30 {} >/dev/null",
                sh_quote(&s.container)
            );
            let noted = handover::note_leader(fleet, Duration::from_secs(30));
            match handover::stop_leader(fleet, &s.host, &stop, noted) {
                Ok(what) => p(&format!("{}: the leading master {what}", s.host)),
                Err(why) => fleet.fail(&s.host, why),
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
            &Script::legacy((format!("cat {} 2>/dev/null || true", sh_quote(path))).to_string()),
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

fn plan_host<'p>(plan: &'p Plan, name: &str) -> &'p HostPlan {
    plan.hosts
        .iter()
        .find(|h| h.name == name)
        .expect("a planned host")
}

pub fn role_name(r: Role) -> &'static str {
    match r {
        Role::Zookeeper => "zookeeper",
        Role::Master => "master",
        Role::Worker => "worker",
    }
}

/// `ours PATH`: whether this cluster's `up` made the folder (`$c` is the
/// cluster's name). `up` leaves a `.ferry-created` file holding the
/// cluster's name in each folder it makes, and `down --purge` removes only
/// folders that bear it, or that lie in the cluster's own folders
/// ([`in_own_folders`]).
const OURS_SH: &str = r#"ours() { [ "$(head -n 1 "$1/.ferry-created" 2>/dev/null)" = "$c" ]; }
"#;

/// `mk PATH MODE OWNER OWN`: makes a missing folder, marks it as the
/// cluster's and notes it for its owner's uid; a folder that was there and
/// is not the cluster's (`OWN` is 1 in the cluster's own folders) keeps its
/// mode and owner and is noted for a check that its owner can write it.
/// `writable PATH UID GID`: whether that user may make files in it, by
/// owner, group and mode (ACLs and other groups are not read).
const MK_SH: &str = r#"new=
theirs=
mk() {
  if [ ! -d "$1" ]; then
    mkdir -p "$1" && printf '%s\n' "$c" > "$1/.ferry-created" || exit 1
    new="$new $1:$3"
  elif [ "$4" != 1 ] && ! ours "$1"; then
    theirs="$theirs $1:$3"
    return 0
  fi
  chmod "$2" "$1" || exit 1
}
writable() {
  st=$(stat -c '%u %g %a' "$1") || return 1
  set -- "$2" "$3" $st
  m=$((0$5))
  if [ "$1" = "$3" ]; then b=$((m >> 6)); elif [ "$2" = "$4" ]; then b=$((m >> 3)); else b=$m; fi
  [ $((b & 3)) = 3 ]
}
"#;

/// Whether `path` lies in the folders ferry keeps for `cluster` alone:
/// ferry's whatever made them (also an older ferry, before the mark).
pub fn in_own_folders(cluster: &str, path: &str) -> bool {
    [
        format!("/etc/ferry/{cluster}"),
        format!("/var/lib/ferry/{cluster}"),
    ]
    .iter()
    .any(|root| path == root || path.starts_with(&format!("{root}/")))
}

/// The script that makes the host's folders (owned by the image's users,
/// resolved to their uids in the image once, when a folder is new) and puts
/// each file in place atomically, only when its content differs; and the tar
/// of the files' contents it reads on stdin. A folder that was there before
/// (`/data/spark` from a flat config, say) is used as it is, but only if the
/// daemon's user can write it: the host fails otherwise, naming the folder.
pub fn write_files_script(plan: &Plan, host: &HostPlan, secret: Option<&str>) -> (String, Vec<u8>) {
    let mut s = format!(
        "set -u\numask 022\nc={}\n{OURS_SH}{MK_SH}",
        sh_quote(&plan.cluster)
    );
    for d in &host.dirs {
        s += &format!(
            "mk {} {} {} {}\n",
            sh_quote(&d.path),
            sh_quote(&d.mode),
            sh_quote(&d.owner),
            u8::from(in_own_folders(&plan.cluster, &d.path))
        );
    }
    // a folder made now gets its owner's uid, read from the image itself;
    // one that was there must be writable by it
    let owners: Vec<&str> = {
        let mut o: Vec<&str> = host
            .dirs
            .iter()
            .map(|d| d.owner.as_str())
            .filter(|o| *o != "root")
            .collect();
        o.sort();
        o.dedup();
        o
    };
    let ids = if owners.is_empty() {
        "true".to_string()
    } else {
        format!(
            "for u in {}; do echo \"$u $(id -u \"$u\") $(id -g \"$u\")\"; done",
            owners
                .iter()
                .map(|o| sh_quote(o))
                .collect::<Vec<_>>()
                .join(" ")
        )
    };
    s += &format!(
        r#"if [ -n "$new$theirs" ]; then
  ids=$(docker run --rm --entrypoint sh {image} -c {ids}) || {{ echo "cannot read the users of {image_plain}" >&2; exit 1; }}
  user() {{ printf '%s\n' "$ids" | sed -n "s/^$1 \([0-9][0-9]*\) \([0-9][0-9]*\)$/\1 \2/p"; }}
  for d in $new; do
    owner=${{d##*:}}; path=${{d%:*}}
    [ "$owner" = root ] && continue
    set -- $(user "$owner")
    [ $# = 2 ] || {{ echo "user $owner is not in the image" >&2; exit 1; }}
    chown "$1:$2" "$path" || exit 1
  done
  for d in $theirs; do
    owner=${{d##*:}}; path=${{d%:*}}
    [ "$owner" = root ] && continue
    set -- $(user "$owner")
    [ $# = 2 ] || {{ echo "user $owner is not in the image" >&2; exit 1; }}
    writable "$path" "$1" "$2" || {{ echo "\`$path\` was not made by ferry and the image's user \`$owner\` (uid $1) cannot write it: give it to that user (\`chown $1:$2 $path\` there) or name a folder that does not exist yet (ferry makes it)" >&2; exit 1; }}
  done
fi
"#,
        image = sh_quote(&plan.image.reference),
        ids = sh_quote(&ids),
        image_plain = plan.image.reference,
    );
    s += "s=$(mktemp -d) || exit 1\ntrap 'rm -rf \"$s\"' EXIT\ntar -xf - -C \"$s\" || exit 1\nput() { # staged path mode\n  if [ -f \"$2\" ] && cmp -s \"$s/$1\" \"$2\"; then return 0; fi\n  cp \"$s/$1\" \"$2.ferry-new\" && chmod \"$3\" \"$2.ferry-new\" && mv -f \"$2.ferry-new\" \"$2\" || exit 1\n  echo \"wrote $2\"\n}\n";
    let mut tar = tar::Builder::new(Vec::new());
    for (i, f) in host.files.iter().enumerate() {
        let mut h = tar::Header::new_ustar();
        h.set_size(f.content.len() as u64);
        h.set_mode(0o600);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        tar.append_data(&mut h, i.to_string(), f.content.as_bytes())
            .expect("a tar in memory");
        s += &format!("put {i} {} {}\n", sh_quote(&f.path), sh_quote(&f.mode));
    }
    // a secret file is owned like its folder (the image's user), never
    // readable by others, and only ever in the tar on stdin
    let mut put_secret = |name: &str, path: &str, mode: &str, value: &str| {
        let mut h = tar::Header::new_ustar();
        h.set_size(value.len() as u64);
        h.set_mode(0o600);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        tar.append_data(&mut h, name, value.as_bytes())
            .expect("a tar in memory");
        s += &format!(
            "p={path}\nif ! {{ [ -f \"$p\" ] && cmp -s \"$s/{name}\" \"$p\"; }}; then\n  own=$(stat -c %u:%g \"${{p%/*}}\") || exit 1\n  (umask 077; cp \"$s/{name}\" \"$p.ferry-new\") && chmod {mode} \"$p.ferry-new\" && chown \"$own\" \"$p.ferry-new\" && mv -f \"$p.ferry-new\" \"$p\" || exit 1\n  echo \"wrote $p\"\nfi\n",
            path = sh_quote(path),
            mode = sh_quote(mode),
        );
    };
    if let Some(value) = secret {
        if let Some(sec) = &host.secret {
            put_secret("secret", &sec.path, &sec.mode, value);
        }
        let password = zookeeper_password(value);
        for (i, j) in host.jaas.iter().enumerate() {
            let text = match j.section {
                JaasSection::Server => render::jaas_server(&password),
                JaasSection::Client => render::jaas_client(&password),
            };
            put_secret(&format!("jaas{i}"), &j.path, &j.mode, &text);
        }
    }
    (s, tar.into_inner().expect("a tar in memory"))
}

/// The cluster's ZooKeeper password (`zookeeper.auth = "sasl"`), derived
/// from its Spark RPC secret (the `--env-file` line): one secret to make,
/// find and copy, and a JAAS file that leaks gives away neither the secret
/// nor more than the ensemble.
fn zookeeper_password(secret_line: &str) -> String {
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
pub fn image_id_script(reference: &str) -> String {
    format!(
        "docker image inspect --format '{{{{.Id}}}}' {} 2>/dev/null || true\n",
        sh_quote(reference)
    )
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
    a.push(c.image.clone());
    a.extend(c.command.iter().cloned());
    a
}

/// The script that brings the containers to their planned spec, printing
/// one line per container: unchanged, started, restarted or replaced.
pub fn ensure_script(containers: &[&Container]) -> String {
    let mut s = String::from(
        "set -u\nensure() { # name spec docker-run-args...\n  name=$1; want=$2; shift 2\n  found=$(docker container inspect --format '{{index .Config.Labels \"ferry.spec\"}} {{.State.Running}}' \"$name\" 2>/dev/null) || found=\n  case \"$found\" in\n    \"$want true\") echo \"$name is up to date\" ;;\n    \"$want false\") docker start \"$name\" >/dev/null || exit 1; echo \"$name was stopped: started it\" ;;\n    \"\") docker \"$@\" >/dev/null || exit 1; echo \"started $name\" ;;\n    *) docker stop --time 30 \"$name\" >/dev/null 2>&1; docker rm --force \"$name\" >/dev/null && docker \"$@\" >/dev/null || exit 1; echo \"$name: spec changed, replaced it\" ;;\n  esac\n}\n",
    );
    for c in containers {
        let args: Vec<String> = run_args(c).iter().map(|a| sh_quote(a)).collect();
        s += &format!(
            "ensure {} {} {}\n",
            sh_quote(&c.name),
            sh_quote(&c.labels["ferry.spec"]),
            args.join(" ")
        );
    }
    s
}

fn logs_script(names: &[&str], tail: u32) -> String {
    names
        .iter()
        .map(|n| {
            format!(
                "echo '--- last lines of {n}:'; docker logs --tail {tail} {} 2>&1\n",
                sh_quote(n)
            )
        })
        .collect()
}

/// Waits for a gate; `strict` (during a rolling replacement) also wants
/// every server and master of the hosts still standing back in service,
/// so the next replacement never takes the last spare.
fn wait(
    fleet: &Fleet,
    g: &Gate,
    role: Role,
    hosts: &[String],
    strict: bool,
    pending: &[String],
    p: &(dyn Fn(&str) + Sync),
) -> Result<(), LaunchError> {
    let (label, deadline) = gate_name(g);
    let pending: Vec<String> = fleet
        .plan
        .hosts
        .iter()
        .filter(|h| pending.contains(&h.name))
        .map(|h| h.address.clone())
        .collect();
    let start = Instant::now();
    let mut stranded = Stranded::default();
    loop {
        let look = match g {
            // one look serves the gate and the stranded workers' restart
            Gate::WorkersRegistered {
                status_urls,
                workers,
                ..
            } => {
                let seen = unregistered(fleet, status_urls, workers, &pending);
                stranded.restart(fleet, seen.as_ref().ok(), p);
                workers_verdict(seen)
            }
            _ => check(fleet, g, strict, &pending),
        };
        let last = match look {
            Ok(what) => {
                p(&format!(
                    "gate {label}: {what} ({:.1}s)",
                    start.elapsed().as_secs_f64()
                ));
                return Ok(());
            }
            Err(why) => why,
        };
        if start.elapsed() > Duration::from_secs(deadline.into()) {
            let logs = fleet.each(hosts, &|hp, c| {
                let names: Vec<&str> = hp
                    .containers
                    .iter()
                    .filter(|c| c.role == role)
                    .map(|c| c.name.as_str())
                    .collect();
                c.run(
                    "reading logs",
                    &Script::legacy((logs_script(&names, 15)).to_string()),
                    &[],
                )
            });
            return Err(LaunchError::Gate {
                gate: label.into(),
                secs: deadline,
                last,
                logs: logs
                    .into_iter()
                    .map(|(h, l)| format!("{h}:\n{}", l.trim_end()))
                    .collect::<Vec<_>>()
                    .join("\n"),
            });
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// How long a running worker may stay unregistered with an ALIVE master
/// before it is taken for stranded.
const STRANDED_AFTER: Duration = Duration::from_secs(25);

/// Workers left out by their master. A worker that (re)started while its
/// master was recovering from ZooKeeper can get the master's "master
/// changed" message under its predecessor's id: it then takes itself for
/// registered, and the master ignores its heartbeats as those of a worker
/// it never knew (Spark 3.5's `Master.receive(Heartbeat)`). Neither side
/// ever retries, so the worker idles forever. Every container of a cluster
/// restarted at once (a rack's power, a host reboot of all daemons) leaves
/// a cluster like that; a restart of the worker is what registers it.
#[derive(Default)]
struct Stranded {
    /// Since when a master has been ALIVE, in this wait.
    alive_since: Option<Instant>,
    /// Worker addresses restarted already (once each).
    restarted: Vec<String>,
}

impl Stranded {
    /// Restarts, once each, the workers still missing from `seen` (`None`:
    /// no master is ALIVE) 25 s after a master was first seen ALIVE.
    fn restart(&mut self, fleet: &Fleet, seen: Option<&Unregistered>, p: &(dyn Fn(&str) + Sync)) {
        let Some(seen) = seen else {
            self.alive_since = None;
            return;
        };
        let since = *self.alive_since.get_or_insert_with(Instant::now);
        if since.elapsed() < STRANDED_AFTER {
            return;
        }
        let url = &seen.url;
        for w in &seen.missing {
            let Some((addr, _)) = split_addr(w) else {
                continue;
            };
            if self.restarted.contains(w) {
                continue;
            }
            self.restarted.push(w.clone());
            let Some((hp, c)) = fleet.plan.hosts.iter().find_map(|h| {
                (h.address == addr)
                    .then(|| h.containers.iter().find(|c| c.role == Role::Worker))
                    .flatten()
                    .map(|c| (h, c))
            }) else {
                continue;
            };
            let Some(conn) = fleet.ok(&hp.name) else {
                continue;
            };
            let secs = since.elapsed().as_secs();
            match conn.run(
                "restarting a stranded worker",
                &Script::legacy(
                    (format!("docker restart --time 10 {} >/dev/null", sh_quote(&c.name)))
                        .to_string(),
                ),
                &[],
            ) {
                Ok(_) => p(&format!(
                    "{}: its worker stayed unregistered with {url} for {secs}s: restarted it (a worker started while its master recovered is ignored by it)",
                    hp.name
                )),
                Err(why) => p(&format!(
                    "{}: its worker is not registered with {url}, and restarting it failed: {why}",
                    hp.name
                )),
            }
        }
    }
}

fn gate_name(g: &Gate) -> (&'static str, u32) {
    match g {
        Gate::ZookeeperLeader { deadline_secs, .. } => ("zookeeper-leader", *deadline_secs),
        Gate::OneMasterAlive { deadline_secs, .. } => ("one-master-alive", *deadline_secs),
        Gate::WorkersRegistered { deadline_secs, .. } => ("workers-registered", *deadline_secs),
    }
}

/// `host:port` (IPv6 in brackets) into its parts.
fn split_addr(s: &str) -> Option<(String, u16)> {
    let (h, p) = s.rsplit_once(':')?;
    let h = h.trim_start_matches('[').trim_end_matches(']');
    Some((h.to_string(), p.parse().ok()?))
}

/// `http://host:port/path` into its parts.
fn split_url(u: &str) -> Option<(String, u16, String)> {
    let rest = u.strip_prefix("http://")?;
    let (hp, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (h, p) = split_addr(hp)?;
    Some((h, p, format!("/{path}")))
}

/// The hosts a gate may ignore: those that failed.
fn failed_addresses(fleet: &Fleet) -> Vec<String> {
    let failed: Vec<String> = fleet.failures().into_iter().map(|(h, _)| h).collect();
    fleet
        .plan
        .hosts
        .iter()
        .filter(|h| failed.contains(&h.name))
        .map(|h| h.address.clone())
        .collect()
}

/// One look at a gate: what is true, or why not yet.
/// `pending`: addresses of workers a rolling replacement has yet to reach.
fn check(fleet: &Fleet, g: &Gate, strict: bool, pending: &[String]) -> Result<String, String> {
    let failed = failed_addresses(fleet);
    match g {
        Gate::ZookeeperLeader { servers, .. } => {
            let mut modes = Vec::new();
            for s in servers {
                let (addr, port) = split_addr(s).ok_or(format!("bad server `{s}`"))?;
                match srvr_mode(fleet, &addr, port) {
                    Ok(m) => modes.push(m),
                    // a failed host's server may be down: a quorum is enough
                    Err(_) if failed.contains(&addr) => modes.push("unreachable".into()),
                    Err(e) => return Err(format!("`srvr` on {s}: {e}")),
                }
            }
            let leaders = modes.iter().filter(|m| *m == "leader").count();
            let serving = modes
                .iter()
                .filter(|m| *m == "leader" || *m == "follower")
                .count();
            let wanted = modes.iter().filter(|m| *m != "unreachable").count();
            let ok = (modes.len() == 1 && modes[0] == "standalone")
                || (leaders == 1 && serving > servers.len() / 2 && (!strict || serving == wanted));
            if ok {
                Ok(format!("modes {}", modes.join(", ")))
            } else {
                Err(format!("modes {}", modes.join(", ")))
            }
        }
        Gate::OneMasterAlive { status_urls, .. } => {
            let states: Vec<String> = status_urls
                .iter()
                .map(|u| match get_json(fleet, u) {
                    Ok(j) => j["status"].as_str().unwrap_or("?").to_string(),
                    Err(_) => "not answering".into(),
                })
                .collect();
            let alive: Vec<&String> = status_urls
                .iter()
                .zip(&states)
                .filter(|(_, s)| *s == "ALIVE")
                .map(|(u, _)| u)
                .collect();
            let spare = status_urls.iter().zip(&states).all(|(u, s)| {
                s == "ALIVE"
                    || s == "STANDBY"
                    || split_url(u).is_some_and(|(a, _, _)| failed.contains(&a))
            });
            match alive.len() {
                1 if !strict || spare => Ok(format!("{} is ALIVE", alive[0])),
                _ => Err(format!("masters {}", states.join(", "))),
            }
        }
        Gate::WorkersRegistered {
            status_urls,
            workers,
            ..
        } => workers_verdict(unregistered(fleet, status_urls, workers, pending)),
    }
}

/// What the workers' gate sees: the ALIVE master's status URL, how many
/// workers it waits for (those of failed hosts, and of `pending`
/// addresses, are not), and which of them that master does not list as
/// ALIVE; an error when no master is ALIVE.
struct Unregistered {
    url: String,
    wanted: usize,
    missing: Vec<String>,
}

fn unregistered(
    fleet: &Fleet,
    status_urls: &[String],
    workers: &[String],
    pending: &[String],
) -> Result<Unregistered, String> {
    let alive = alive_masters(fleet, status_urls);
    let Some((url, json)) = alive.first() else {
        return Err("no master is ALIVE".into());
    };
    let registered = registered_workers(json);
    let failed = failed_addresses(fleet);
    let wanted: Vec<&String> = workers
        .iter()
        .filter(|w| {
            split_addr(w).is_none_or(|(a, _)| !failed.contains(&a) && !pending.contains(&a))
        })
        .collect();
    Ok(Unregistered {
        url: url.clone(),
        wanted: wanted.len(),
        missing: wanted
            .into_iter()
            .filter(|w| !registered.contains(w))
            .cloned()
            .collect(),
    })
}

fn workers_verdict(seen: Result<Unregistered, String>) -> Result<String, String> {
    let u = seen?;
    if u.missing.is_empty() {
        Ok(format!("{} workers registered with {}", u.wanted, u.url))
    } else {
        Err(format!(
            "not yet registered with {}: {:?}",
            u.url, u.missing
        ))
    }
}

fn registered_workers(json: &serde_json::Value) -> Vec<String> {
    json["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|w| w["state"] == "ALIVE")
        .map(|w| format!("{}:{}", w["host"].as_str().unwrap_or(""), w["port"]))
        .collect()
}

/// ZooKeeper's `Mode:` from its `srvr` answer.
fn srvr_mode(fleet: &Fleet, addr: &str, port: u16) -> Result<String, String> {
    let out = fleet.exchange(addr, port, b"srvr")?;
    let out = String::from_utf8_lossy(&out);
    out.lines()
        .find_map(|l| l.strip_prefix("Mode: "))
        .map(|m| m.trim().to_string())
        .ok_or_else(|| format!("no `Mode:` in the answer ({})", out.trim()))
}

/// GETs a URL over HTTP/1.0 through the fleet and parses its JSON body.
fn get_json(fleet: &Fleet, url: &str) -> Result<serde_json::Value, String> {
    let (addr, port, path) = split_url(url).ok_or(format!("bad URL `{url}`"))?;
    let req =
        format!("GET {path} HTTP/1.0\r\nHost: {addr}:{port}\r\nAccept: application/json\r\n\r\n");
    let answer = fleet.exchange(&addr, port, req.as_bytes())?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{url}: not an HTTP answer"))?;
    let status = head.lines().next().unwrap_or("");
    if !status.contains(" 200") {
        return Err(format!("{url}: {status}"));
    }
    serde_json::from_str(body).map_err(|e| format!("{url}: {e}"))
}

fn alive_masters(fleet: &Fleet, status_urls: &[String]) -> Vec<(String, serde_json::Value)> {
    status_urls
        .iter()
        .filter_map(|u| {
            let json = get_json(fleet, u).ok()?;
            (json["status"] == "ALIVE").then(|| (u.clone(), json))
        })
        .collect()
}

/// One container as a host reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ContainerStatus {
    pub host: String,
    pub role: String,
    pub container: String,
    /// `running`, `exited`, `restarting`..., or `missing`.
    pub state: String,
    /// Whether its spec label is the plan's.
    pub current: bool,
    /// ZooKeeper's mode, a master's status, or whether a worker is registered.
    pub health: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub cluster: String,
    pub leader: Option<String>,
    pub workers_registered: usize,
    pub workers_planned: usize,
    pub containers: Vec<ContainerStatus>,
    /// Hosts that could not be asked, with why.
    pub unreachable: Vec<(String, String)>,
}

/// What runs where, and how healthy it is.
pub fn status(fleet: &Fleet) -> Status {
    let plan = fleet.plan;
    let names: Vec<String> = plan.hosts.iter().map(|h| h.name.clone()).collect();
    let script = format!(
        "docker ps --all --filter {} --format '{{{{.Names}}}}\t{{{{.State}}}}\t{{{{.Label \"ferry.spec\"}}}}'",
        sh_quote(&format!("label=ferry.cluster={}", plan.cluster))
    );
    let found: BTreeMap<String, String> = fleet
        .each(&names, &|_, c| {
            c.run(
                "listing containers",
                &Script::legacy((script).to_string()),
                &[],
            )
        })
        .into_iter()
        .collect();
    let status_urls = plan.steps.iter().find_map(|s| match &s.gate {
        Some(Gate::OneMasterAlive { status_urls, .. }) => Some(status_urls.clone()),
        _ => None,
    });
    let masters: Vec<(String, Option<serde_json::Value>)> = status_urls
        .unwrap_or_default()
        .iter()
        .map(|u| (u.clone(), get_json(fleet, u).ok()))
        .collect();
    let leader = masters
        .iter()
        .find(|(_, j)| j.as_ref().is_some_and(|j| j["status"] == "ALIVE"));
    let registered = leader
        .and_then(|(_, j)| j.as_ref())
        .map(registered_workers)
        .unwrap_or_default();
    let mut rows = Vec::new();
    for hp in &plan.hosts {
        let listed = found.get(&hp.name);
        for c in &hp.containers {
            let line = listed.and_then(|l| {
                l.lines()
                    .find(|line| line.split('\t').next() == Some(c.name.as_str()))
            });
            let (state, current) = match (listed, line) {
                (None, _) => ("unknown".to_string(), false),
                (Some(_), None) => ("missing".to_string(), false),
                (Some(_), Some(line)) => {
                    let f: Vec<&str> = line.split('\t').collect();
                    (
                        f.get(1).copied().unwrap_or("").to_string(),
                        f.get(2).copied() == Some(c.labels["ferry.spec"].as_str()),
                    )
                }
            };
            let port = c.ports.first().map(|p| p.port).unwrap_or(0);
            let health = match c.role {
                Role::Zookeeper => {
                    srvr_mode(fleet, &hp.address, port).unwrap_or_else(|_| "not answering".into())
                }
                Role::Master => masters
                    .iter()
                    .find(|(u, _)| split_url(u).is_some_and(|(a, _, _)| a == hp.address))
                    .and_then(|(_, j)| j.as_ref())
                    .and_then(|j| j["status"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "not answering".into()),
                Role::Worker => {
                    if registered.contains(&format!("{}:{port}", hp.address)) {
                        "registered".into()
                    } else {
                        "not registered".into()
                    }
                }
            };
            rows.push(ContainerStatus {
                host: hp.name.clone(),
                role: role_name(c.role).into(),
                container: c.name.clone(),
                state,
                current,
                health,
            });
        }
    }
    Status {
        cluster: plan.cluster.clone(),
        leader: leader.map(|(u, _)| u.trim_end_matches("json/").to_string()),
        workers_registered: registered.len(),
        workers_planned: rows.iter().filter(|r| r.role == "worker").count(),
        containers: rows,
        unreachable: fleet.failures(),
    }
}

/// The container of `role` on `host`.
pub fn container_of<'p>(
    plan: &'p Plan,
    host: &str,
    role: &str,
) -> Result<&'p Container, LaunchError> {
    let hp = plan
        .hosts
        .iter()
        .find(|h| h.name == host || h.address == host)
        .ok_or_else(|| LaunchError::UnknownHost {
            cluster: plan.cluster.clone(),
            host: host.into(),
            known: plan
                .hosts
                .iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    hp.containers
        .iter()
        .find(|c| role_name(c.role) == role)
        .ok_or_else(|| LaunchError::NoRole {
            cluster: plan.cluster.clone(),
            host: hp.name.clone(),
            role: role.into(),
        })
}

/// Streams a container's log to `out`.
pub fn logs(
    conn: &dyn ClusterHost,
    c: &Container,
    tail: Option<u32>,
    follow: bool,
    out: &mut dyn Write,
) -> Result<i32, LaunchError> {
    let tail = tail.map(|n| n.to_string()).unwrap_or_else(|| "all".into());
    let follow = if follow { " --follow" } else { "" };
    conn.stream(
        "reading logs",
        &Script::legacy(
            (format!(
                "exec docker logs --tail {tail}{follow} {} 2>&1",
                sh_quote(&c.name)
            ))
            .to_string(),
        ),
        &[],
        out,
    )
    .map_err(LaunchError::Host)
}

/// Runs `spark-submit` in a throwaway container of the cluster's image on
/// the host `on` (host networking), against every master; the driver's
/// output streams to `out`. A `job` given as `local` content is sent to the
/// host and mounted; otherwise `job` is a path inside the image.
#[allow(clippy::too_many_arguments)]
pub fn submit(
    plan: &Plan,
    on: &HostPlan,
    conn: &dyn ClusterHost,
    driver: &str,
    spark_home: &str,
    spark_user: &str,
    job: &str,
    local: Option<&[u8]>,
    args: &[String],
    out: &mut dyn Write,
) -> Result<i32, LaunchError> {
    let mut s = String::from(
        "set -u\nexec 2>&1\nd=$(mktemp -d /tmp/ferry-submit.XXXXXX) || exit 1\ntrap 'rm -rf \"$d\"' EXIT\nchmod 0711 \"$d\"\n",
    );
    let mut mount = String::new();
    let mut auth = Vec::new();
    if let Some(sec) = &on.secret {
        // the driver needs the secret as a property (Spark requires
        // `spark.authenticate.secret` for a standalone driver): a 0600 file
        // of the image's user, written with the shell's builtin printf so it
        // is in no process's arguments
        s += &format!(
            "(umask 077; printf 'spark.authenticate true\\nspark.authenticate.secret %s\\n' \"$(sed -n 's/^{var}=//p' {path})\" > \"$d/auth.conf\") || exit 1\nchown \"$(stat -c %u:%g {path})\" \"$d/auth.conf\" || exit 1\n",
            path = sh_quote(&sec.path),
            var = SECRET_VAR
        );
        mount += " --volume \"$d/auth.conf\":/etc/ferry/submit/auth.conf:ro";
        auth = vec![
            "--properties-file".to_string(),
            "/etc/ferry/submit/auth.conf".into(),
        ];
    }
    let job_in = match local {
        Some(_) => {
            let name = std::path::Path::new(job)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "job.py".into());
            s += "cat > \"$d/job\" || exit 1\nchmod 0644 \"$d/job\"\n";
            let inside = format!("/opt/ferry/submit/{name}");
            mount += &format!(" --volume \"$d/job\":{}", sh_quote(&format!("{inside}:ro")));
            inside
        }
        None => job.to_string(),
    };
    let mut cmd = vec![format!("{spark_home}/bin/spark-submit")];
    cmd.extend(auth);
    cmd.extend([
        "--master".to_string(),
        plan.master_url.clone(),
        "--conf".into(),
        format!("spark.driver.host={}", on.address),
        // a worker being drained (`ferry scale --remove-worker`) gets no
        // new tasks, and its executors leave once idle
        "--conf".into(),
        "spark.decommission.enabled=true".into(),
    ]);
    // Spark asks for 1 GiB executors by default: on smaller workers a job
    // would wait for resources forever
    if let Some(mib) = smallest_worker_mib(plan).filter(|m| *m < 1024) {
        cmd.extend(["--conf".into(), format!("spark.executor.memory={mib}m")]);
    }
    cmd.push(job_in);
    cmd.extend(args.iter().cloned());
    s += &format!(
        "docker run --rm --name {} --label ferry.driver={} --network host --user {}{mount} {} {}\n",
        sh_quote(driver),
        sh_quote(&plan.cluster),
        sh_quote(spark_user),
        sh_quote(&plan.image.reference),
        cmd.iter()
            .map(|a| sh_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    );
    conn.stream(
        "running spark-submit",
        &Script::legacy((s).to_string()),
        local.unwrap_or(&[]),
        out,
    )
    .map_err(LaunchError::Host)
}

/// Drains the worker on `host`: SIGPWR makes it decommission (no new
/// executors; Spark moves work off it), then waits until the leading master
/// shows it running no cores, at most `deadline`; then stops and removes
/// its container. Returns the cores still in use when it stopped.
pub fn remove_worker(
    fleet: &Fleet,
    host: &str,
    deadline: Duration,
    p: &(dyn Fn(&str) + Sync),
) -> Result<u64, LaunchError> {
    let plan = fleet.plan;
    let hp = plan_host(plan, host);
    let c = hp
        .containers
        .iter()
        .find(|c| c.role == Role::Worker)
        .ok_or_else(|| LaunchError::NoRole {
            cluster: plan.cluster.clone(),
            host: host.into(),
            role: "worker".into(),
        })?;
    let conn = fleet
        .ok(host)
        .ok_or_else(|| LaunchError::Host(format!("host `{host}` cannot be reached")))?;
    let name = sh_quote(&c.name);
    let port = c.ports.first().map(|p| p.port).unwrap_or(0);
    let me = format!("{}:{port}", hp.address);
    let cores_used = || -> Option<u64> {
        let urls: Vec<String> = masters(plan).into_iter().map(|(_, _, u)| u).collect();
        let (_, json) = alive_masters(fleet, &urls).into_iter().next()?;
        json["workers"]
            .as_array()?
            .iter()
            .filter(|w| format!("{}:{}", w["host"].as_str().unwrap_or(""), w["port"]) == me)
            .filter(|w| w["state"] != "DEAD")
            .map(|w| w["coresused"].as_u64().unwrap_or(0))
            .max()
    };
    let running = conn
        .run(
            "signalling the worker",
            &Script::legacy((format!("if [ \"$(docker inspect --format '{{{{.State.Running}}}}' {name} 2>/dev/null)\" = true ]; then docker kill --signal PWR {name} >/dev/null && echo yes; fi")).to_string()),
            &[],
        )
        .map_err(LaunchError::Host)?;
    let mut left = 0;
    if running.trim() == "yes" {
        p(&format!("{host}: decommissioning {}", c.name));
        let t0 = Instant::now();
        loop {
            left = cores_used().unwrap_or(0);
            if left == 0 {
                p(&format!(
                    "{host}: drained after {:.1}s",
                    t0.elapsed().as_secs_f64()
                ));
                break;
            }
            if t0.elapsed() > deadline {
                p(&format!(
                    "{host}: {left} cores still busy after {}s; Spark re-runs their tasks elsewhere",
                    deadline.as_secs()
                ));
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    conn.run(
        "removing the worker",
        &Script::legacy((format!("docker stop --time 30 {name} >/dev/null 2>&1; docker rm --force {name} >/dev/null 2>&1; true")).to_string()),
        &[],
    )
    .map_err(LaunchError::Host)?;
    p(&format!("{host}: removed {}", c.name));
    Ok(left)
}

/// What a failover drill measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DrillReport {
    /// `stop` (graceful) or `kill` (the master's process is SIGKILLed, as a crash would be).
    pub how: String,
    pub old_leader: String,
    pub new_leader: String,
    /// From the stop to a standby being ALIVE.
    pub seconds_to_new_leader: f64,
    /// From the stop to every worker ALIVE with the new leader.
    pub seconds_to_workers: f64,
    pub workers: usize,
    /// From the stop to the old master answering again, as a standby.
    pub seconds_old_back: f64,
}

/// The planned masters: (host, container, status URL).
fn masters(plan: &Plan) -> Vec<(&HostPlan, &Container, String)> {
    plan.hosts
        .iter()
        .flat_map(|h| h.containers.iter().map(move |c| (h, c)))
        .filter(|(_, c)| c.role == Role::Master)
        .filter_map(|(h, c)| Some((h, c, master_url_of(plan, &h.address)?)))
        .collect()
}

/// Stops the leading master (`kill`: SIGKILLs its container's process from
/// the host, and Docker's restart policy brings it back, as after a crash;
/// else `docker stop`, then `docker start` once the failover is measured),
/// and measures how long until a standby leads and every worker is back.
pub fn drill_failover(
    fleet: &Fleet,
    kill: bool,
    deadline: Duration,
    p: &(dyn Fn(&str) + Sync),
) -> Result<DrillReport, LaunchError> {
    let plan = fleet.plan;
    let ms = masters(plan);
    if ms.len() < 2 {
        return Err(LaunchError::Host(format!(
            "cluster `{}` has {} master(s): a failover needs two or more (and ZooKeeper)",
            plan.cluster,
            ms.len()
        )));
    }
    let alive = |url: &str| get_json(fleet, url).ok().filter(|j| j["status"] == "ALIVE");
    let Some((lh, lc, lurl, ljson)) = ms
        .iter()
        .find_map(|(h, c, u)| alive(u).map(|j| (*h, *c, u.clone(), j)))
    else {
        return Err(LaunchError::Host(format!(
            "cluster `{}` has no ALIVE master: run `ferry up` first",
            plan.cluster
        )));
    };
    let workers = registered_workers(&ljson);
    let conn = fleet.ok(&lh.name).ok_or_else(|| {
        LaunchError::Host(format!(
            "host `{}` (the leader's) cannot be reached",
            lh.name
        ))
    })?;
    let name = sh_quote(&lc.name);
    let how = if kill { "kill" } else { "stop" };
    p(&format!(
        "{}: {} the leading master {} ({} workers registered)",
        lh.name,
        if kill {
            "killing (SIGKILL)"
        } else {
            "stopping"
        },
        lc.name,
        workers.len()
    ));
    let noted = (!kill)
        .then(|| handover::note_leader(fleet, Duration::from_secs(30)))
        .flatten();
    let t0 = Instant::now();
    if kill {
        let script = format!(
            "pid=$(docker inspect --format '{{{{.State.Pid}}}}' {name}) && [ \"$pid\" -gt 0 ] && kill -KILL \"$pid\""
        );
        conn.run(
            "killing the leading master",
            &Script::legacy((script).to_string()),
            &[],
        )
        .map_err(LaunchError::Host)?;
    } else {
        let stop = format!("docker stop --time 30 {name} >/dev/null");
        let what =
            handover::stop_leader(fleet, &lh.name, &stop, noted).map_err(LaunchError::Host)?;
        p(&format!("{}: {} {what}", lh.name, lc.name));
    }
    let too_late = |what: &str| {
        LaunchError::Host(format!(
            "failover drill: {what} not within {}s",
            deadline.as_secs()
        ))
    };
    let (new_url, t_leader) = loop {
        if let Some(u) = ms
            .iter()
            .filter(|(_, _, u)| *u != lurl)
            .find_map(|(_, _, u)| alive(u).map(|_| u.clone()))
        {
            break (u, t0.elapsed().as_secs_f64());
        }
        if t0.elapsed() > deadline {
            return Err(too_late("no standby became ALIVE"));
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    p(&format!("{new_url} is ALIVE after {t_leader:.1}s"));
    let t_workers = loop {
        let back = alive(&new_url)
            .map(|j| registered_workers(&j))
            .unwrap_or_default();
        if workers.iter().all(|w| back.contains(w)) {
            break t0.elapsed().as_secs_f64();
        }
        if t0.elapsed() > deadline {
            return Err(too_late("the workers did not all re-register"));
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    p(&format!(
        "{} workers re-registered after {t_workers:.1}s",
        workers.len()
    ));
    if !kill {
        conn.run(
            "starting the stopped master",
            &Script::legacy((format!("docker start {name} >/dev/null")).to_string()),
            &[],
        )
        .map_err(LaunchError::Host)?;
    }
    let t_back = loop {
        if get_json(fleet, &lurl).is_ok_and(|j| j["status"] == "STANDBY") {
            break t0.elapsed().as_secs_f64();
        }
        if t0.elapsed() > deadline * 2 {
            return Err(too_late("the old leader did not come back as a standby"));
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    p(&format!(
        "{}: {} is back as a standby after {t_back:.1}s",
        lh.name, lc.name
    ));
    let new_leader = ms
        .iter()
        .find(|(_, _, u)| *u == new_url)
        .map(|(h, _, _)| h.name.clone())
        .unwrap_or_default();
    Ok(DrillReport {
        how: how.into(),
        old_leader: lh.name.clone(),
        new_leader,
        seconds_to_new_leader: t_leader,
        seconds_to_workers: t_workers,
        workers: workers.len(),
        seconds_old_back: t_back,
    })
}

/// The memory of the smallest worker (its `--memory`), in MiB.
fn smallest_worker_mib(plan: &Plan) -> Option<u64> {
    plan.hosts
        .iter()
        .flat_map(|h| &h.containers)
        .filter(|c| c.role == Role::Worker)
        .filter_map(|c| {
            let i = c.command.iter().position(|a| a == "--memory")?;
            mib(c.command.get(i + 1)?)
        })
        .min()
}

/// `512m`, `2g`... in MiB.
fn mib(m: &str) -> Option<u64> {
    let (n, unit) = m.split_at(m.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    match unit.to_ascii_lowercase().as_str() {
        "k" => Some(n / 1024),
        "m" => Some(n),
        "g" => Some(n * 1024),
        "t" => Some(n * 1024 * 1024),
        _ => None,
    }
}

/// What `down` did on one host.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Downed {
    /// Containers and folders removed.
    pub removed: Vec<String>,
    /// Folders `--purge` left, each with why.
    pub kept: Vec<String>,
}

/// Removes the cluster's containers on each reachable host (and with
/// `purge`, its folders); returns what went and what stayed, per host.
///
/// Containers stop gracefully in the reverse of the start order: workers
/// first (the masters then drop them from their ZooKeeper recovery state),
/// then masters (closing their ZooKeeper sessions, so a later `up` elects a
/// leader at once instead of waiting for a dead session to expire), then
/// ZooKeeper.
pub fn down(fleet: &Fleet, purge: bool) -> Vec<(String, Downed)> {
    let plan = fleet.plan;
    let names: Vec<String> = plan.hosts.iter().map(|h| h.name.clone()).collect();
    let filter = |extra: &str| sh_quote(&format!("label=ferry.cluster={}{extra}", plan.cluster));
    for role in [Role::Worker, Role::Master, Role::Zookeeper] {
        fleet.each(&names, &|_, c| {
            c.run(
                &format!("stopping the {}", role_name(role)),
                &Script::legacy((format!(
                    "ids=$(docker ps --quiet --filter {} --filter {}) || exit 1\nif [ -n \"$ids\" ]; then docker stop --time 30 $ids >/dev/null || exit 1; fi\n",
                    filter(""),
                    sh_quote(&format!("label=ferry.role={}", role_name(role)))
                )).to_string()),
                &[],
            )
        });
    }
    fleet.each(&names, &|hp, c| {
        c.run(
            "removing the cluster's containers",
            &Script::legacy((remove_script(plan, hp, purge)).to_string()),
            &[],
        )
        .map(|o| {
            let mut d = Downed::default();
            for l in o.lines() {
                match l.strip_prefix("kept ") {
                    Some(k) => d.kept.push(k.to_string()),
                    None => d.removed.push(l.to_string()),
                }
            }
            d
        })
    })
}

/// `purge PATH HERE`: removes a folder this cluster's `up` made; says why
/// it keeps one the plan has on this host (`HERE` is 1) that it did not.
const PURGE_SH: &str = r#"purge() {
  [ -e "$1" ] || return 0
  if ours "$1"; then
    rm -rf "$1" && echo "$1"
  elif [ "$2" = 1 ]; then
    by=$(head -n 1 "$1/.ferry-created" 2>/dev/null)
    if [ -n "$by" ]; then
      echo "kept $1: cluster \`$by\` made it, not \`$c\`"
    else
      echo "kept $1: it was there before ferry (it has no .ferry-created), so what the cluster wrote in it stays too"
    fi
  fi
}
"#;

/// The script `down` runs on a host after the containers stopped: removes
/// them (and drivers `ferry submit` left behind), printing their names;
/// with `purge`, the cluster's folders too (see [`PURGE_SH`]), printing
/// each one removed, or `kept PATH: why`.
pub fn remove_script(plan: &Plan, hp: &HostPlan, purge: bool) -> String {
    let filter = |label: &str| sh_quote(&format!("label={label}={}", plan.cluster));
    let mut s = format!(
        "set -u\nnames=$(docker ps --all --filter {} --format '{{{{.Names}}}}'; docker ps --all --filter {} --format '{{{{.Names}}}}') || exit 1\nif [ -n \"$names\" ]; then docker rm --force $names >/dev/null || exit 1; fi\nfor n in $names; do echo \"$n\"; done\n",
        filter("ferry.cluster"),
        filter("ferry.driver"),
    );
    if !purge {
        return s;
    }
    let c = &plan.cluster;
    s += &format!("c={}\n{OURS_SH}{PURGE_SH}", sh_quote(c));
    // every folder of the plan, on any host: a host may keep one from a
    // role it had before (a worker since removed by `ferry scale`); the
    // mark decides
    let mut folders: BTreeMap<&str, bool> = BTreeMap::new();
    for h in &plan.hosts {
        for d in &h.dirs {
            *folders.entry(d.path.as_str()).or_default() |= h.name == hp.name;
        }
    }
    let mut parents: Vec<String> = Vec::new();
    for (path, here) in folders {
        let p = sh_quote(path);
        if in_own_folders(c, path) {
            s += &format!("if [ -e {p} ]; then rm -rf {p} && echo {p}; fi\n");
        } else {
            s += &format!("purge {p} {}\n", u8::from(here));
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            parents.push(parent.to_string());
        }
    }
    // what earlier plans put in the cluster's own folders: its config
    // folder, and its default data folders
    for d in [
        format!("/etc/ferry/{c}"),
        format!("/var/lib/ferry/{c}/zookeeper"),
        format!("/var/lib/ferry/{c}/spark-work"),
    ] {
        s += &format!(
            "if [ -e {p} ]; then rm -rf {p} && echo {p}; fi\n",
            p = sh_quote(&d)
        );
    }
    parents.push(format!("/var/lib/ferry/{c}"));
    parents.sort();
    parents.dedup();
    for p in parents {
        // the cluster's own folders, when nothing else is in them
        if p.ends_with(&format!("/{c}")) {
            s += &format!("rmdir {} 2>/dev/null || true\n", sh_quote(&p));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_urls_split() {
        assert_eq!(split_addr("10.0.0.1:2181"), Some(("10.0.0.1".into(), 2181)));
        assert_eq!(split_addr("[::1]:2181"), Some(("::1".into(), 2181)));
        assert_eq!(split_addr("nohost"), None);
        assert_eq!(
            split_url("http://10.0.0.1:8080/json/"),
            Some(("10.0.0.1".into(), 8080, "/json/".into()))
        );
        assert_eq!(split_url("https://x:1/"), None);
    }

    #[test]
    fn jaas_files_travel_in_the_tar_never_in_the_script() {
        let text = include_str!("../../examples/ha.toml")
            .replace("[zookeeper]\n", "[zookeeper]\nauth = \"sasl\"\n");
        let file =
            super::super::file::ClusterFile::parse(&text, std::path::Path::new("c.toml")).unwrap();
        let plan =
            super::super::plan::plan(&file, &super::super::plan::ImageFacts::builtin()).unwrap();
        let secret = format!("{SECRET_VAR}={}\n", "ab".repeat(32));
        let password = zookeeper_password(&secret);
        assert_eq!(password.len(), 64);
        assert_ne!(password, "ab".repeat(32));
        assert_eq!(password, zookeeper_password(&secret), "derived, so stable");
        // node1: a ZooKeeper server and a master
        let (script, tar) = write_files_script(&plan, &plan.hosts[0], Some(&secret));
        assert!(!script.contains(&password) && !script.contains(&"ab".repeat(32)));
        let mut entries = BTreeMap::new();
        for e in tar::Archive::new(tar.as_slice()).entries().unwrap() {
            let mut e = e.unwrap();
            let mut body = String::new();
            std::io::Read::read_to_string(&mut e, &mut body).unwrap();
            entries.insert(e.path().unwrap().display().to_string(), body);
        }
        assert!(entries["jaas0"].contains(&format!("user_spark=\"{password}\"")));
        assert!(entries["jaas1"].contains(&format!("password=\"{password}\"")));
        for path in [
            "/etc/ferry/ha/zookeeper-secret/zookeeper-server.jaas",
            "/etc/ferry/ha/secret/zookeeper-client.jaas",
        ] {
            assert!(script.contains(path), "{script}");
        }
        // a worker's host gets no login
        let (_, tar) = write_files_script(&plan, &plan.hosts[3], Some(&secret));
        let names: Vec<String> = tar::Archive::new(tar.as_slice())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert!(!names.iter().any(|n| n.starts_with("jaas")), "{names:?}");
    }

    #[test]
    fn an_image_under_the_planned_tag_must_be_the_planned_one() {
        let config = format!("sha256:{}", "c".repeat(64));
        let manifest = format!("sha256:{}", "m".repeat(64));
        let image = ImageRef {
            reference: "ferry/spark:3.5.3".into(),
            digest: manifest.clone(),
            config_digest: config.clone(),
        };
        assert_eq!(
            image_id_script(&image.reference),
            "docker image inspect --format '{{.Id}}' 'ferry/spark:3.5.3' 2>/dev/null || true\n"
        );
        assert_eq!(image_found(&image, ""), ImageFound::Missing);
        assert_eq!(image_found(&image, "\n"), ImageFound::Missing);
        assert_eq!(
            image_found(&image, &format!("{config}\n")),
            ImageFound::Planned
        );
        // Podman prints the bare hex; a containerd store, the manifest digest
        assert_eq!(image_found(&image, &"c".repeat(64)), ImageFound::Planned);
        assert_eq!(image_found(&image, &manifest), ImageFound::Planned);
        let stale = format!("sha256:{}", "5".repeat(64));
        assert_eq!(
            image_found(&image, &format!("{stale}\n")),
            ImageFound::Other(stale.clone())
        );
    }

    /// The HA example with its workers' `work_dir` in `/data/spark`.
    fn ha_with_work_dir() -> Plan {
        let text = include_str!("../../examples/ha.toml").replace(
            "[spark.workers]\n",
            "[spark.workers]\nwork_dir = \"/data/spark\"\n",
        );
        let file =
            super::super::file::ClusterFile::parse(&text, std::path::Path::new("c.toml")).unwrap();
        super::super::plan::plan(&file, &super::super::plan::ImageFacts::builtin()).unwrap()
    }

    #[test]
    fn folders_outside_the_clusters_own_are_marked_and_purged_by_mark() {
        let plan = ha_with_work_dir();
        // node1: ZooKeeper and a master; node4: a worker
        let (node1, node4) = (&plan.hosts[0], &plan.hosts[3]);
        let (up, _) = write_files_script(&plan, node4, None);
        assert!(up.contains("c='ha'\n"), "{up}");
        assert!(up.contains("\nmk '/data/spark' '0750' 'spark' 0\n"), "{up}");
        assert!(
            up.contains("\nmk '/etc/ferry/ha/secret' '0700' 'spark' 1\n"),
            "{up}"
        );
        let (up1, _) = write_files_script(&plan, node1, None);
        assert!(
            up1.contains("\nmk '/var/lib/ferry/ha/zookeeper' '0750' 'zookeeper' 1\n"),
            "{up1}"
        );
        let down = remove_script(&plan, node4, true);
        assert!(down.contains("\npurge '/data/spark' 1\n"), "{down}");
        assert!(!down.contains("rm -rf '/data/spark'"), "{down}");
        // a host without a worker now may have had one: checked, by mark
        let down1 = remove_script(&plan, node1, true);
        assert!(down1.contains("\npurge '/data/spark' 0\n"), "{down1}");
        assert!(
            down1.contains("rm -rf '/var/lib/ferry/ha/zookeeper'"),
            "{down1}"
        );
        assert!(!remove_script(&plan, node4, false).contains("purge"));
        assert!(in_own_folders("ha", "/etc/ferry/ha"));
        assert!(in_own_folders("ha", "/var/lib/ferry/ha/x"));
        assert!(!in_own_folders("ha", "/var/lib/ferry/hadoop"));
        assert!(!in_own_folders("ha", "/var/lib/ferry"));
    }

    /// Runs `script` under `sh`, in `bin`'s parent folder, with stand-ins
    /// first on the PATH: a `docker` whose `run` runs the command it is
    /// given here, without the image, and an `id` that says the image's
    /// users (`spark`, `zookeeper`) are this test's own user (so folders can
    /// be given to them without root); `docker` lists no container.
    fn run_sh(script: &str, stdin: &[u8], bin: &std::path::Path) -> (i32, String, String) {
        run_sh_with(script, stdin, bin, STAND_IN_DOCKER)
    }

    const STAND_IN_DOCKER: &str = "#!/bin/sh\ncase \"$1\" in\n  run) shift; ep=; while [ $# -gt 0 ]; do case $1 in --entrypoint) ep=$2; shift 2 ;; --) shift; break ;; -*) shift ;; *) break ;; esac; done; shift; exec \"$ep\" \"$@\" ;;\n  ps) ;;\n  *) exit 1 ;;\nesac\n";

    const STAND_IN_ID: &str = "#!/bin/sh\nflag=$1; shift\n[ \"${1-}\" = -- ] && shift\n[ $# = 0 ] && exec /usr/bin/id \"$flag\"\ncase $1 in spark|zookeeper) exec /usr/bin/id \"$flag\" ;; *) echo \"id: $1: no such user\" >&2; exit 1 ;; esac\n";

    fn stand_in(bin: &std::path::Path, name: &str, body: &str) {
        let f = bin.join(name);
        std::fs::write(&f, body).unwrap();
        set_mode(&f, 0o755);
    }

    fn run_sh_with(
        script: &str,
        stdin: &[u8],
        bin: &std::path::Path,
        docker: &str,
    ) -> (i32, String, String) {
        std::fs::create_dir_all(bin).unwrap();
        stand_in(bin, "docker", docker);
        stand_in(bin, "id", STAND_IN_ID);
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("PATH", path)
            .current_dir(bin.parent().unwrap())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The `up` files script for `host` as the line a host runs, with
    /// ferry's own records under `state`, and the tar it reads.
    fn up_line(plan: &Plan, host: &HostPlan, _state: &std::path::Path) -> (String, Vec<u8>) {
        write_files_script(plan, host, None)
    }

    /// The `down --purge` script for `host`, as the line a host runs.
    fn purge_line(plan: &Plan, host: &HostPlan, _state: &std::path::Path) -> String {
        remove_script(plan, host, true)
    }

    /// Every path under `root`, links not followed, sorted.
    fn tree(root: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut todo = vec![root.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                out.push(p.strip_prefix(root).unwrap().display().to_string());
                if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                    todo.push(p);
                }
            }
        }
        out.sort();
        out
    }

    /// A one-host plan of its own name whose host has `dirs` and `files`
    /// (and no secret), folders of the HA example's ZooKeeper host.
    fn scratch_plan(dirs: Vec<super::super::plan::Dir>, files: Vec<(String, &str)>) -> Plan {
        let mut plan = ha_with_work_dir();
        plan.cluster = format!("ferry-unit-{}", std::process::id());
        let mut host = plan.hosts[0].clone();
        host.dirs = dirs;
        host.files = files
            .into_iter()
            .map(|(path, content)| super::super::plan::FilePlan {
                path,
                mode: "0644".into(),
                sha256: String::new(),
                content: content.into(),
            })
            .collect();
        host.secret = None;
        host.jaas.clear();
        plan.hosts = vec![host];
        plan
    }

    fn zk_dir(path: &std::path::Path) -> super::super::plan::Dir {
        super::super::plan::Dir {
            path: path.display().to_string(),
            owner: "zookeeper".into(),
            mode: "0750".into(),
        }
    }

    /// A ZooKeeper container owns its data folder, and `up` writes `myid`
    /// there as root: a link it plants where `up` stages the file, or as
    /// the file itself, is replaced, never written through or chmodded.
    #[test]
    fn a_link_planted_in_a_containers_folder_is_replaced_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let (bin, state) = (t.join("bin"), t.join("state"));
        let zk = t.join("zk");
        let myid = zk.join("myid");
        let victim = t.join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        set_mode(&victim, 0o640);
        let up = |content: &str| {
            let plan = scratch_plan(
                vec![zk_dir(&zk)],
                vec![(myid.display().to_string(), content)],
            );
            let (line, tar) = up_line(&plan, &plan.hosts[0], &state);
            run_sh(&line, &tar, &bin)
        };
        let (code, _, err) = up("1\n");
        assert_eq!(code, 0, "{err}");
        assert_eq!(std::fs::read_to_string(&myid).unwrap(), "1\n");

        // the container plants `myid.ferry-new -> victim`
        std::os::unix::fs::symlink(&victim, zk.join("myid.ferry-new")).unwrap();
        let (code, _, err) = up("2\n");
        assert_eq!(code, 0, "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        assert_eq!(mode(&victim), 0o640);
        assert_eq!(std::fs::read_to_string(&myid).unwrap(), "2\n");

        // ... or makes `myid` itself the link
        std::fs::remove_file(&myid).unwrap();
        std::os::unix::fs::symlink(&victim, &myid).unwrap();
        let (code, _, err) = up("3\n");
        assert_eq!(code, 0, "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        assert_eq!(mode(&victim), 0o640);
        assert!(!std::fs::symlink_metadata(&myid).unwrap().is_symlink());
        assert_eq!(std::fs::read_to_string(&myid).unwrap(), "3\n");
    }

    /// A planned folder that is a link (to a folder elsewhere) is refused:
    /// nothing is written or chmodded through it.
    #[test]
    fn a_planned_folder_that_is_a_link_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let (bin, state) = (t.join("bin"), t.join("state"));
        let elsewhere = t.join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        set_mode(&elsewhere, 0o755);
        let zk = t.join("zk");
        std::os::unix::fs::symlink(&elsewhere, &zk).unwrap();
        let plan = scratch_plan(
            vec![zk_dir(&zk)],
            vec![(zk.join("myid").display().to_string(), "1\n")],
        );
        let (line, tar) = up_line(&plan, &plan.hosts[0], &state);
        let (code, out, err) = run_sh(&line, &tar, &bin);
        assert_ne!(code, 0, "{out}");
        assert!(err.contains(&format!("`{}`", zk.display())), "{err}");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
        assert_eq!(mode(&elsewhere), 0o755);
    }

    /// A container can write a `.ferry-created` mark into a folder of the
    /// user's that it mounts: `down --purge` must not take it for ferry's.
    #[test]
    fn a_forged_mark_does_not_make_purge_remove_a_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let (bin, state) = (t.join("bin"), t.join("state"));
        let theirs = t.join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::write(theirs.join("data.csv"), "user data\n").unwrap();
        set_mode(&theirs, 0o755);
        let made = t.join("made");
        let plan = scratch_plan(vec![zk_dir(&theirs), zk_dir(&made)], vec![]);
        let (line, tar) = up_line(&plan, &plan.hosts[0], &state);
        let (code, _, err) = run_sh(&line, &tar, &bin);
        assert_eq!(code, 0, "{err}");
        assert!(made.is_dir());
        // the container forges ferry's mark in the user's folder
        std::fs::write(theirs.join(".ferry-created"), format!("{}\n", plan.cluster)).unwrap();
        let (code, out, err) = run_sh(&purge_line(&plan, &plan.hosts[0], &state), &[], &bin);
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            std::fs::read_to_string(theirs.join("data.csv")).unwrap(),
            "user data\n",
            "{out}"
        );
        assert!(!made.exists(), "{out}");
    }

    /// A value that makes sed run a command, if it is ever part of a sed
    /// program.
    const SED_E: &str = ".*/touch pwned-sed-e/e;#";

    /// Hostile owners (from the image's `ferry.*.user` labels) and image
    /// references reach the `up` script as data: whether docker answers or
    /// not, the script runs none of them and makes no file but the plan's.
    #[test]
    fn hostile_labels_and_image_references_run_nothing_in_the_up_script() {
        let docker_fails = "#!/bin/sh\nexit 1\n";
        let values: Vec<&str> = crate::script::tests::HOSTILE
            .iter()
            .copied()
            .chain([SED_E])
            .filter(|v| !v.contains('\0'))
            .collect();
        for v in values {
            for (field, docker) in [
                ("owner", STAND_IN_DOCKER),
                ("image", docker_fails),
                ("image", STAND_IN_DOCKER),
            ] {
                let tmp = tempfile::tempdir().unwrap();
                let t = tmp.path();
                let (bin, state) = (t.join("bin"), t.join("state"));
                let zk = t.join("zk");
                let mut d = zk_dir(&zk);
                let mut plan;
                if field == "owner" {
                    d.owner = v.to_string();
                    plan = scratch_plan(vec![d], vec![]);
                } else {
                    plan = scratch_plan(vec![d], vec![]);
                    plan.image.reference = v.to_string();
                }
                let (line, tar) = up_line(&plan, &plan.hosts[0], &state);
                let _ = run_sh_with(&line, &tar, &bin, docker);
                let found: Vec<String> = tree(t)
                    .into_iter()
                    .filter(|p| {
                        !(p.starts_with("bin") || p.starts_with("state") || p.starts_with("zk"))
                    })
                    .collect();
                assert!(found.is_empty(), "{field} {v:?}: {found:?}");
                let pwned: Vec<String> = tree(t)
                    .into_iter()
                    .filter(|p| p.contains("pwned"))
                    .collect();
                assert!(pwned.is_empty(), "{field} {v:?}: {pwned:?}");
            }
        }
    }

    fn mode(p: &std::path::Path) -> u32 {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
            & 0o7777
    }

    fn set_mode(p: &std::path::Path, m: u32) {
        let mut perms = std::fs::metadata(p).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, m);
        std::fs::set_permissions(p, perms).unwrap();
    }

    /// The generated scripts themselves, on folders in a temporary tree: a
    /// worker's host whose work folder `up` makes, and one whose work
    /// folder the user had made (with a file of theirs in it).
    #[test]
    fn up_marks_what_it_makes_and_purge_keeps_what_it_did_not() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let bin = t.join("bin");
        let mut plan = ha_with_work_dir();
        // a name of its own: the purge script also clears the cluster's
        // folders under /etc/ferry and /var/lib/ferry, of which it has none
        plan.cluster = format!("ferry-unit-{}", std::process::id());
        let mut host = plan.hosts[3].clone();
        let dir = |name: &str, owner: &str| super::super::plan::Dir {
            path: t.join(name).display().to_string(),
            owner: owner.into(),
            mode: "0750".into(),
        };
        host.dirs = vec![dir("made/work", "spark"), dir("theirs", "spark")];
        host.files.clear();
        host.secret = None;
        host.jaas.clear();
        plan.hosts = vec![host.clone()];
        let theirs = t.join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::write(theirs.join("data.csv"), "user data\n").unwrap();
        set_mode(&theirs, 0o755);

        let (script, tar) = write_files_script(&plan, &host, None);
        let (code, _, err) = run_sh(&script, &tar, &bin);
        assert_eq!(code, 0, "{err}");
        let made = t.join("made/work");
        assert_eq!(
            std::fs::read_to_string(made.join(".ferry-created")).unwrap(),
            format!("{}\n", plan.cluster)
        );
        assert_eq!(mode(&made), 0o750);
        // the user's folder: used as it is, not marked, its mode kept
        assert!(!theirs.join(".ferry-created").exists());
        assert_eq!(mode(&theirs), 0o755);

        // a folder its daemon's user cannot write fails the host
        set_mode(&theirs, 0o555);
        let (code, _, err) = run_sh(&script, &tar, &bin);
        set_mode(&theirs, 0o755);
        assert_eq!(code, 1, "{err}");
        let uid = String::from_utf8(
            std::process::Command::new("id")
                .arg("-u")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let gid = String::from_utf8(
            std::process::Command::new("id")
                .arg("-g")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        assert_eq!(
            err.trim(),
            format!(
                "`{p}` was not made by ferry and the image's user `spark` (uid {u}) cannot write it: give it to that user (`chown {u}:{g} {p}` there) or name a folder that does not exist yet (ferry makes it)",
                p = theirs.display(),
                u = uid.trim(),
                g = gid.trim()
            )
        );

        // another cluster's folder, and one the plan has on other hosts only
        let other = t.join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join(".ferry-created"), "another\n").unwrap();
        let elsewhere = t.join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let mut purged = plan.clone();
        let mut h = host.clone();
        h.dirs.push(dir("other", "spark"));
        let mut away = host.clone();
        away.name = "away".into();
        away.dirs = vec![dir("elsewhere", "spark"), dir("made/work", "spark")];
        purged.hosts = vec![h.clone(), away];
        let (code, out, err) = run_sh(&remove_script(&purged, &h, true), &[], &bin);
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            out,
            format!(
                "{made}\nkept {other}: cluster `another` made it, not `{c}`\nkept {theirs}: it was there before ferry (it has no .ferry-created), so what the cluster wrote in it stays too\n",
                made = made.display(),
                other = other.display(),
                theirs = theirs.display(),
                c = plan.cluster
            )
        );
        assert!(!made.exists() && t.join("made").exists());
        assert_eq!(
            std::fs::read_to_string(theirs.join("data.csv")).unwrap(),
            "user data\n"
        );
        assert!(other.exists() && elsewhere.exists());
    }

    #[test]
    fn memory_sizes_in_mib() {
        assert_eq!(mib("512m"), Some(512));
        assert_eq!(mib("2g"), Some(2048));
        assert_eq!(mib("2G"), Some(2048));
        assert_eq!(mib("1t"), Some(1024 * 1024));
        assert_eq!(mib("100"), None);
        assert_eq!(mib(""), None);
    }
}
