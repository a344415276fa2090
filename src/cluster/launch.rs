//! Carries out a plan on its hosts: writes each host's folders and files,
//! starts the containers in the plan's order and waits on each step's gate;
//! and `status`, `logs`, `submit` and `down` on a running cluster. The hosts
//! are [`ClusterHost`]s: SSH sessions, or this machine for `--local`.
//!
//! No state is kept here: each container carries `ferry.cluster`,
//! `ferry.role` and `ferry.spec` (a hash of its planned spec and files)
//! labels, so any operator with the cluster file sees the same truth; the
//! folders `up` makes are listed in a record of root's on each host
//! (`/var/lib/ferry/<cluster>/made`, where no container reaches), so `down
//! --purge` removes what ferry made and keeps what was there before.
//!
//! Every script run on a host is constant text (see [`crate::ssh::script`]):
//! names, paths, image references and labels reach it as positional
//! parameters. Writes as root into folders a container can write never
//! follow a link: files are staged in a folder of root's alone and renamed
//! into place.
//! Idempotent: a running container whose spec label matches is left alone,
//! a stopped one is started, a changed one is replaced. A host that fails is
//! set aside (the rest go on) and reported; gates then wait only on the
//! hosts still standing.

use crate::ssh::Script;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use super::fleet::Fleet;
use super::handover;
use super::hosts::ClusterHost;
use super::plan::{
    Action, Container, Gate, HostPlan, ImageRef, JaasSection, Plan, Role, SECRET_VAR,
};
use super::render;

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
            let script = Script::new(SURVEY_SH).args(mine.iter().map(|c| &c.name));
            let out = c.run("looking at the containers", &script, &[])?;
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

/// `NAME...`: a line `NAME SPEC RUNNING` (or `NAME missing`) for each.
const SURVEY_SH: &str = r#"for n in "$@"; do
  printf '%s ' "$n"
  docker container inspect --format '{{index .Config.Labels "ferry.spec"}} {{.State.Running}}' -- "$n" 2>/dev/null || echo missing
done"#;

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
            let mut out = String::new();
            for ct in mine {
                out += &c.run(
                    &format!("starting the {}", role_name(role)),
                    &ensure_script(ct),
                    &[],
                )?;
            }
            Ok(out)
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

/// `NAME`: starts the container.
const START_SH: &str = r#"docker start -- "$1" >/dev/null"#;
/// `NAME`: restarts the container.
const RESTART_SH: &str = r#"docker restart --time 10 -- "$1" >/dev/null"#;
/// `NAME`: stops and removes the container, if there is one.
const REMOVE_SH: &str = r#"docker stop --time 30 -- "$1" >/dev/null 2>&1; docker rm --force -- "$1" >/dev/null 2>&1; true"#;
/// `NAME`: SIGPWR to a running container (a Spark worker decommissions);
/// prints `yes` if it was running.
const DECOMMISSION_SH: &str = r#"if [ "$(docker inspect --format '{{.State.Running}}' -- "$1" 2>/dev/null)" = true ]; then docker kill --signal PWR -- "$1" >/dev/null && echo yes; fi"#;
/// `NAME`: SIGKILLs the container's process from the host, as a crash would.
const KILL_SH: &str = r#"pid=$(docker inspect --format '{{.State.Pid}}' -- "$1") && [ "$pid" -gt 0 ] && kill -KILL "$pid""#;
/// `PATH`: the file's content, or nothing.
const READ_SH: &str = r#"cat -- "$1" 2>/dev/null || true"#;
/// `FILTER`: a line `NAME<tab>STATE<tab>SPEC` per container the filter matches.
const STATUS_SH: &str =
    "docker ps --all --filter \"$1\" --format '{{.Names}}\t{{.State}}\t{{.Label \"ferry.spec\"}}'";
/// `TAIL NAME FOLLOW`: the container's log (`FOLLOW` 1: as it grows).
const LOGS_SH: &str = r#"if [ "$3" = 1 ]; then exec docker logs --tail "$1" --follow -- "$2" 2>&1; fi
exec docker logs --tail "$1" -- "$2" 2>&1"#;

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

/// Where ferry keeps, on each host, what is its alone: `<root>/<cluster>`
/// holds the record of the folders `up` made (`made`, one path a line)
/// and the folder it stages files in (`.stage`). Root makes both, and no
/// container mounts them (a cluster's data folders lie below them, never
/// at them: `up` refuses a planned folder that would hold them).
pub const STATE_ROOT: &str = "/var/lib/ferry";

/// Functions both `up` and `down --purge` use. `$state` is the cluster's
/// folder of ferry's own (under [`STATE_ROOT`]), `$trusted_record` is set
/// when that folder is root's alone (a record anyone else could write is
/// not believed).
///
/// `root_only DIR`: a real folder (no link) of ours that no one else may
/// write in. `in_record FILE PATH`: whether FILE lists PATH on a line.
/// `made PATH`: whether the cluster's record says its `up` made PATH.
/// `steady PATH`: every folder holding a name on the way to PATH (PATH
/// itself not: it may be a container's) is root's and only root may
/// change its entries, or is sticky (`/tmp`) with the name below it root's;
/// else `bad` is the first that is not. So no one else can swap a name on
/// the way for a link between `up`'s checks and its writes.
const RECORDS_SH: &str = r#"nl='
'
me=$(id -u)
fail() { printf '%s\n' "$1" >&2; exit 1; }
root_only() {
  [ -d "$1" ] && [ ! -L "$1" ] || return 1
  _st=$(stat -c '%u %a' -- "$1") || return 1
  [ "${_st% *}" = "$me" ] && [ $((0${_st#* } & 022)) = 0 ]
}
in_record() {
  [ -f "$1" ] && [ ! -L "$1" ] || return 1
  while IFS= read -r _l; do [ "$_l" = "$2" ] && return 0; done < "$1"
  return 1
}
made() { [ -n "$trusted_record" ] && in_record "$state/made" "$1"; }
steady() {
  _h=/ _r=${1#/}
  while [ -n "$_r" ]; do
    _p=${_h%/}/${_r%%/*}
    case $_r in */*) _r=${_r#*/} ;; *) _r= ;; esac
    bad=$_h
    _st=$(stat -c '%u %a' -- "$_h") || return 1
    case ${_st% *} in 0|"$me") ;; *) return 1 ;; esac
    if [ $((0${_st#* } & 022)) != 0 ]; then
      [ $((0${_st#* } & 01000)) != 0 ] && [ -d "$_p" ] && [ ! -L "$_p" ] || return 1
      case $(stat -c %u -- "$_p") in 0|"$me") ;; *) return 1 ;; esac
    fi
    [ -e "$_p" ] || return 0
    _h=$_p
  done
}
"#;

/// `up`'s folder and file steps.
///
/// `no_foreign_link PATH`: no link on the way to PATH (PATH included) that
/// someone else than root could have made (a link of root's in a folder of
/// root's alone, `/data -> /mnt/disk1`, is the admin's and is followed).
/// `owner_ids USER`: sets `uid` and `gid` to those of the image's USER,
/// asked of the image itself (the user is a value for its `id`, never
/// part of a program), never pulled, its answer read to 64 bytes at most;
/// uid 0 is refused (a container of root's would own its folders as root,
/// and the links it plants there would pass for the admin's).
/// `mk PATH MODE OWNER OWN`: makes a missing folder, records it as the
/// cluster's and gives it to its owner; a folder that was there and is not
/// the cluster's (`OWN` is 1 in the cluster's own folders) keeps its mode
/// and owner, and its owner must be able to write it.
/// `writable PATH UID GID`: whether that user may make files in it, by
/// owner, group and mode (ACLs and other groups are not read).
/// `stage_for DIR`: sets `at` to a folder of root's alone on DIR's file
/// system, so that a rename from it into DIR is atomic.
/// `put NAME PATH MODE OWNED`: puts the tar's file NAME at PATH when its
/// content differs: copied into the stage, given its mode (and with
/// `OWNED` 1 its folder's owner) there, then renamed into place. A rename
/// replaces a link a container planted at PATH; nothing is ever written,
/// chmodded or chowned through one.
/// `mv_t`: whether this host's `mv` has `-T` (busybox's may not), asked
/// once, of a file in the stage. Without it, a link to a folder planted
/// between `put`'s check and its `mv` would take the staged file into that
/// folder (a new file of root's, never an overwrite): `-T` closes that.
const MK_SH: &str = r#"no_foreign_link() {
  _p= _r=${1#/}
  while [ -n "$_r" ]; do
    _p=$_p/${_r%%/*}
    case $_r in */*) _r=${_r#*/} ;; *) _r= ;; esac
    if [ -L "$_p" ]; then
      [ "$(stat -c %u -- "$_p")" = "$me" ] && root_only "${_p%/*}/" || return 1
    fi
  done
}
owner_ids() {
  case $1 in
    ""|[!abcdefghijklmnopqrstuvwxyz_]*|*[!abcdefghijklmnopqrstuvwxyz0123456789_-]*)
      fail "the image's user \`$1\` is not a user name ([a-z_][a-z0-9_-]*): check the image's \`ferry.*.user\` labels" ;;
  esac
  [ "$1" = "${ids_of-}" ] && return 0
  _ids=$(docker run --rm --pull=never --network none --entrypoint sh -- "$image" -c 'id -u -- "$1" && id -g -- "$1"' sh "$1" | head -c 64)
  case $_ids in *"$nl"*) ;; *) fail "cannot read the user \`$1\` of the image \`$image\`" ;; esac
  uid=${_ids%%"$nl"*} gid=${_ids#*"$nl"}
  case $uid in ""|*[!0123456789]*) fail "user \`$1\` is not in the image \`$image\`" ;; esac
  case $gid in ""|*[!0123456789]*) fail "user \`$1\` is not in the image \`$image\`" ;; esac
  [ "$uid" != 0 ] || fail "the image's user \`$1\` is uid 0 (root) in the image \`$image\`: ferry gives no folder to root; name a user of its own in the image's \`ferry.spark.user\` or \`ferry.zookeeper.user\` label"
  ids_of=$1
}
writable() {
  _st=$(stat -c '%u %g %a' -- "$1") || return 1
  set -- "$2" "$3" $_st
  _m=$((0$5))
  if [ "$1" = "$3" ]; then _b=$((_m >> 6)); elif [ "$2" = "$4" ]; then _b=$((_m >> 3)); else _b=$_m; fi
  [ $((_b & 3)) = 3 ]
}
mk() {
  case $1 in /*) ;; *) fail "\`$1\` is not an absolute path" ;; esac
  case $1 in *"$nl"*) fail "a planned folder's path holds a newline" ;; esac
  case "$state/" in "${1%/}/"*) fail "\`$1\` would hold ferry's own records of the cluster (\`$state\`), which no container may write: name another folder" ;; esac
  no_foreign_link "$1" || fail "\`$1\`: a link on its way was made by another user than root (a container may have planted it): ferry follows no such link"
  steady "$1" || fail "\`$1\`: \`$bad\` on its way is not root's alone (others may change its entries, and swap one for a link): make it root's with mode 0755, or name a folder elsewhere"
  if [ -L "$1" ] || { [ -e "$1" ] && [ ! -d "$1" ]; }; then
    fail "\`$1\` is a link or not a folder: ferry makes and writes only real folders"
  fi
  if [ ! -e "$1" ]; then
    [ "$3" = root ] || owner_ids "$3"
    mkdir -p -- "$1" || exit 1
    in_record "$state/made" "$1" || printf '%s\n' "$1" >> "$state/made" || exit 1
    if [ "$3" != root ]; then
      chown -h -- "$uid:$gid" "$1" || exit 1
    fi
  elif [ "$4" != 1 ] && ! made "$1"; then
    [ "$3" = root ] && return 0
    owner_ids "$3"
    writable "$1" "$uid" "$gid" || fail "\`$1\` was not made by ferry and the image's user \`$3\` (uid $uid) cannot write it: give it to that user (\`chown $uid:$gid $1\` there) or name a folder that does not exist yet (ferry makes it)"
    return 0
  fi
  chmod -- "$2" "$1" || exit 1
}
stage_for() {
  _dev=$(stat -c %d -- "$1") || exit 1
  at=$stage
  [ "$(stat -c %d -- "$at")" = "$_dev" ] && return 0
  # its file system's top: the highest folder above it on the same device
  _top=$1
  while [ "$_top" != / ]; do
    _up=${_top%/*}
    [ -n "$_up" ] || _up=/
    [ "$(stat -c %d -- "$_up")" = "$_dev" ] || break
    _top=$_up
  done
  at=${_top%/}/.ferry-stage
  root_only "$_top" && { [ -d "$at" ] || mkdir -m 0700 -- "$at"; } && root_only "$at" && [ "$(stat -c %d -- "$at")" = "$_dev" ] ||
    fail "\`$1\` is on another file system than \`$stage\`, and that file system's top folder \`$_top\` is not root's alone, so ferry has nowhere safe to stage its files there: put the folder on the same file system as \`$stage\`, or below a mount point only root writes"
}
mv_t() {
  if [ -z "${_mv_t-}" ]; then
    _a=$(mktemp -- "$at/probe.XXXXXX") || exit 1
    if mv -fT -- "$_a" "$_a.T" 2>/dev/null; then _mv_t=1; rm -f -- "$_a.T"; else _mv_t=0; rm -f -- "$_a"; fi
  fi
  [ "$_mv_t" = 1 ]
}
put() {
  case $2 in /*) ;; *) fail "\`$2\` is not an absolute path" ;; esac
  _d=${2%/*}
  [ -n "$_d" ] || _d=/
  no_foreign_link "$_d" && [ -d "$_d" ] && [ ! -L "$_d" ] || fail "\`$2\`: its folder is missing or a link: ferry writes through no link a container could have planted"
  steady "$_d" || fail "\`$2\`: \`$bad\` on its way is not root's alone (others may change its entries, and swap one for a link): make it root's with mode 0755, or name a folder elsewhere"
  if [ -f "$2" ] && [ ! -L "$2" ] && cmp -s -- "$x/$1" "$2"; then return 0; fi
  stage_for "$_d"
  tmp=$(mktemp -- "$at/put.XXXXXX") || exit 1
  cat -- "$x/$1" > "$tmp" && chmod -- "$3" "$tmp" || exit 1
  if [ "$4" = 1 ]; then
    _own=$(stat -c %u:%g -- "$_d") && chown -- "$_own" "$tmp" || exit 1
  fi
  # a plain `mv` moves into a folder (or a link to one) at the target
  [ ! -d "$2" ] || fail "\`$2\` is a folder or a link to one: ferry puts a file there only in place of a file or a link"
  if mv_t; then mv -fT -- "$tmp" "$2" || exit 1; else mv -f -- "$tmp" "$2" || exit 1; fi
  tmp=
  printf 'wrote %s\n' "$2"
}
"#;

/// `up`'s files step: `STATE IMAGE` then records `dir PATH MODE OWNER OWN`,
/// `file NAME PATH MODE`, `secret NAME PATH MODE` (owned like its folder),
/// with the tar of the files' contents on stdin.
const UP_FILES_HEAD: &str = r#"set -u
umask 022
state=$1 image=$2
shift 2
stage=$state/.stage"#;

const UP_FILES_STEPS: &str = r#"mkdir -p -- "$state" && root_only "$state" ||
  fail "\`$state\` (ferry's own records of the cluster) is a link, or others than root may write it: make it a folder of root's, mode 0755"
trusted_record=1
{ [ -d "$stage" ] || mkdir -m 0700 -- "$stage"; } && root_only "$stage" && chmod 0700 -- "$stage" ||
  fail "\`$stage\` (where ferry stages files) is a link, or others than root may write it"
tmp=
x=$(mktemp -d -- "$stage/in.XXXXXX") || exit 1
trap 'rm -rf -- "$x"; [ -z "$tmp" ] || rm -f -- "$tmp"' EXIT
tar -xf - -C "$x" || exit 1
while [ $# -gt 0 ]; do
  case $1 in
    dir) mk "$2" "$3" "$4" "$5"; shift 5 ;;
    file) put "$2" "$3" "$4" 0; shift 4 ;;
    secret) put "$2" "$3" "$4" 1; shift 4 ;;
    *) fail "unknown step \`$1\`" ;;
  esac
done
"#;

/// Whether `path` lies in the folders ferry keeps for `cluster` alone:
/// ferry's whatever made them (also an older ferry, before the record).
pub fn in_own_folders(cluster: &str, path: &str) -> bool {
    [
        format!("/etc/ferry/{cluster}"),
        format!("{STATE_ROOT}/{cluster}"),
    ]
    .iter()
    .any(|root| path == root || path.starts_with(&format!("{root}/")))
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

/// `NAME SPEC RUN-ARG...`: brings the container to its planned spec (its
/// `ferry.spec` label), printing one line: unchanged, started, or replaced;
/// `docker` gets the run arguments as they are.
const ENSURE_SH: &str = r#"set -u
name=$1 want=$2
shift 2
found=$(docker container inspect --format '{{index .Config.Labels "ferry.spec"}} {{.State.Running}}' -- "$name" 2>/dev/null) || found=
case $found in
  "$want true") printf '%s is up to date\n' "$name" ;;
  "$want false") docker start -- "$name" >/dev/null || exit 1; printf '%s was stopped: started it\n' "$name" ;;
  "") docker "$@" >/dev/null || exit 1; printf 'started %s\n' "$name" ;;
  *) docker stop --time 30 -- "$name" >/dev/null 2>&1; docker rm --force -- "$name" >/dev/null && docker "$@" >/dev/null || exit 1; printf '%s: spec changed, replaced it\n' "$name" ;;
esac"#;

/// The script that brings a container to its planned spec (see [`ENSURE_SH`]).
pub fn ensure_script(c: &Container) -> Script {
    Script::new(ENSURE_SH)
        .arg(&c.name)
        .arg(&c.labels["ferry.spec"])
        .args(run_args(c))
}

/// `TAIL NAME...`: the last lines of each container's log.
const LOGS_TAIL_SH: &str = r#"tail=$1
shift
for n in "$@"; do
  printf '%s\n' "--- last lines of $n:"
  docker logs --tail "$tail" -- "$n" 2>&1
done"#;

fn logs_script(names: &[&str], tail: u32) -> Script {
    Script::new(LOGS_TAIL_SH).arg(tail.to_string()).args(names)
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
                c.run("reading logs", &logs_script(&names, 15), &[])
            });
            return Err(LaunchError::Gate {
                gate: label.into(),
                secs: deadline,
                last,
                logs: gate_logs(logs),
            });
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The most of one host's log lines a gate's failure shows: their end.
const GATE_LOG_KEEP: usize = 64 << 10;

/// The containers' last log lines of each host, for a gate's failure:
/// bounded, and shown so that they cannot drive the terminal.
fn gate_logs(logs: Vec<(String, String)>) -> String {
    logs.into_iter()
        .map(|(h, l)| {
            let l = l.trim_end();
            let mut from = l.len().saturating_sub(GATE_LOG_KEEP);
            while !l.is_char_boundary(from) {
                from += 1;
            }
            let cut = if from > 0 { "…" } else { "" };
            format!("{h}:\n{cut}{}", crate::ssh::shown(&l[from..]))
        })
        .collect::<Vec<_>>()
        .join("\n")
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
                &Script::new(RESTART_SH).arg(&c.name),
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
    let script = Script::new(STATUS_SH).arg(format!("label=ferry.cluster={}", plan.cluster));
    let found: BTreeMap<String, String> = fleet
        .each(&names, &|_, c| c.run("listing containers", &script, &[]))
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
    let script = Script::new(LOGS_SH)
        .arg(tail)
        .arg(&c.name)
        .arg(if follow { "1" } else { "0" });
    conn.stream("reading logs", &script, &[], out)
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
    let script = submit_script(
        plan,
        on,
        driver,
        spark_home,
        spark_user,
        job,
        local.is_some(),
        args,
    );
    conn.stream("running spark-submit", &script, local.unwrap_or(&[]), out)
        .map_err(LaunchError::Host)
}

/// The script [`submit`] runs (see [`SUBMIT_SH`]); with `local`, the job
/// comes on its stdin.
#[allow(clippy::too_many_arguments)]
fn submit_script(
    plan: &Plan,
    on: &HostPlan,
    driver: &str,
    spark_home: &str,
    spark_user: &str,
    job: &str,
    local: bool,
    args: &[String],
) -> Script {
    let mut auth = Vec::new();
    if on.secret.is_some() {
        auth = vec![
            "--properties-file".to_string(),
            "/etc/ferry/submit/auth.conf".into(),
        ];
    }
    let job_in = match local {
        true => {
            // its name is seen inside the container only; no `:` or `,`
            // may reach the volume's spec
            let name: String = std::path::Path::new(job)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "job.py".into())
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "._-".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            format!("/opt/ferry/submit/{name}")
        }
        false => job.to_string(),
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
    let inside = if local { job_in.clone() } else { String::new() };
    cmd.push(job_in);
    cmd.extend(args.iter().cloned());
    Script::new(SUBMIT_SH)
        .arg(driver)
        .arg(format!("ferry.driver={}", plan.cluster))
        .arg(spark_user)
        .arg(&plan.image.reference)
        .arg(on.secret.as_ref().map(|s| s.path.as_str()).unwrap_or(""))
        .arg(SECRET_VAR)
        .arg(inside)
        .args(cmd)
}

/// `DRIVER LABEL USER IMAGE SECRET VAR INSIDE CMD...`: runs the driver's
/// container. With a `SECRET` file (its `VAR=` line is the secret), the
/// driver gets the secret as a property (Spark requires
/// `spark.authenticate.secret` for a standalone driver): a 0600 file of the
/// image's user, written with the shell's builtin printf so it is in no
/// process's arguments. With `INSIDE`, the job comes on stdin and is
/// mounted there.
const SUBMIT_SH: &str = r#"set -u
exec 2>&1
driver=$1 label=$2 user=$3 image=$4 secret=$5 var=$6 inside=$7
shift 7
d=$(mktemp -d /tmp/ferry-submit.XXXXXX) || exit 1
trap 'rm -rf -- "$d"' EXIT
chmod 0711 "$d"
set -- -- "$image" "$@"
if [ -n "$inside" ]; then
  cat > "$d/job" || exit 1
  chmod 0644 "$d/job"
  set -- --volume "$d/job:$inside:ro" "$@"
fi
if [ -n "$secret" ]; then
  v=
  while IFS= read -r l; do
    case $l in "$var="*) v=${l#*=} ;; esac
  done < "$secret"
  (umask 077; printf 'spark.authenticate true\nspark.authenticate.secret %s\n' "$v" > "$d/auth.conf") || exit 1
  chown -- "$(stat -c %u:%g -- "$secret")" "$d/auth.conf" || exit 1
  set -- --volume "$d/auth.conf:/etc/ferry/submit/auth.conf:ro" "$@"
fi
docker run --rm --name "$driver" --label "$label" --network host --user "$user" "$@"
"#;

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
    let name = &c.name;
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
            &Script::new(DECOMMISSION_SH).arg(name),
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
        &Script::new(REMOVE_SH).arg(name),
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
    let name = &lc.name;
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
        let script = Script::new(KILL_SH).arg(name);
        conn.run("killing the leading master", &script, &[])
            .map_err(LaunchError::Host)?;
    } else {
        let what =
            handover::stop_leader(fleet, &lh.name, &lc.name, noted).map_err(LaunchError::Host)?;
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
            &Script::new(START_SH).arg(name),
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
    for role in [Role::Worker, Role::Master, Role::Zookeeper] {
        let stop = Script::new(STOP_ROLE_SH)
            .arg(format!("label=ferry.cluster={}", plan.cluster))
            .arg(format!("label=ferry.role={}", role_name(role)));
        fleet.each(&names, &|_, c| {
            c.run(&format!("stopping the {}", role_name(role)), &stop, &[])
        });
    }
    fleet.each(&names, &|hp, c| {
        c.run(
            "removing the cluster's containers",
            &remove_script(STATE_ROOT, plan, hp, purge),
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

/// `FILTER FILTER`: stops the containers both label filters match, all at
/// once (Docker prints hexadecimal ids: split, never globbed).
const STOP_ROLE_SH: &str = r#"ids=$(docker ps --quiet --filter "$1" --filter "$2") || exit 1
set -f
if [ -n "$ids" ]; then docker stop --time 30 -- $ids >/dev/null || exit 1; fi"#;

/// `down`'s script after the containers stopped: `ROOT CLUSTER FILTER
/// FILTER` (the clusters' and the drivers' label filters) remove the
/// cluster's containers (and drivers `ferry submit` left behind), printing
/// their names; then records, with `--purge`: `purge PATH HERE` removes a
/// folder the cluster's record says its `up` made, and says why it keeps one
/// the plan has on this host (`HERE` is 1) that it did not; `own PATH`
/// removes a folder of the cluster's own; `tidy` drops from the record what
/// is gone, and the stage; `rmdir PATH` removes an empty folder.
const DOWN_HEAD: &str = r#"set -u
root=$1 c=$2
names=$(docker ps --all --filter "$3" --format '{{.Names}}'; docker ps --all --filter "$4" --format '{{.Names}}') || exit 1
shift 4
# container names are Docker's ([a-zA-Z0-9][a-zA-Z0-9_.-]*): split, never globbed
set -f
if [ -n "$names" ]; then docker rm --force -- $names >/dev/null || exit 1; fi
for n in $names; do printf '%s\n' "$n"; done
set +f
[ $# -gt 0 ] || exit 0
state=$root/$c"#;

const PURGE_SH: &str = r#"trusted_record=
root_only "$state" && trusted_record=1
purge() {
  [ -e "$1" ] || [ -L "$1" ] || return 0
  if made "$1" && ! steady "$1"; then
    printf 'kept %s: `%s` on its way is not root'"'"'s alone (others may change its entries, and swap one for a link)\n' "$1" "$bad"
  elif made "$1"; then
    rm -rf -- "$1" && printf '%s\n' "$1"
  elif [ "$2" = 1 ]; then
    by=
    for r in "$root"/*/made; do
      [ "$r" = "$state/made" ] && continue
      root_only "${r%/made}" && in_record "$r" "$1" && { by=${r%/made}; by=${by##*/}; break; }
    done
    if [ -n "$by" ]; then
      printf 'kept %s: cluster `%s` made it, not `%s`\n' "$1" "$by" "$c"
    else
      printf 'kept %s: it was there before ferry (ferry has no record of making it), so what the cluster wrote in it stays too\n' "$1"
    fi
  fi
}
tidy() {
  [ -n "$trusted_record" ] || return 0
  rm -rf -- "$state/.stage"
  [ -f "$state/made" ] || return 0
  while IFS= read -r _l; do
    if [ -e "$_l" ] || [ -L "$_l" ]; then printf '%s\n' "$_l"; fi
  done < "$state/made" > "$state/made.new" || exit 1
  if [ -s "$state/made.new" ]; then mv -f -- "$state/made.new" "$state/made"; else rm -f -- "$state/made.new" "$state/made"; fi
}
while [ $# -gt 0 ]; do
  case $1 in
    purge) purge "$2" "$3"; shift 3 ;;
    own) if [ -e "$2" ] || [ -L "$2" ]; then rm -rf -- "$2" && printf '%s\n' "$2"; fi; shift 2 ;;
    tidy) tidy; shift ;;
    rmdir) rmdir -- "$2" 2>/dev/null || true; shift 2 ;;
    *) fail "unknown step \`$1\`" ;;
  esac
done
"#;

/// The script `down` runs on a host after the containers stopped (see
/// [`DOWN_HEAD`]): with `purge`, the cluster's folders too, each one
/// removed printed, or `kept PATH: why`. `root` is where ferry keeps its
/// own records ([`STATE_ROOT`]).
pub fn remove_script(root: &str, plan: &Plan, hp: &HostPlan, purge: bool) -> Script {
    let c = &plan.cluster;
    let mut s = Script::new(DOWN_HEAD)
        .then(RECORDS_SH)
        .then(PURGE_SH)
        .arg(root)
        .arg(c)
        .arg(format!("label=ferry.cluster={c}"))
        .arg(format!("label=ferry.driver={c}"));
    if !purge {
        return s;
    }
    // every folder of the plan, on any host: a host may keep one from a
    // role it had before (a worker since removed by `ferry scale`); the
    // record decides
    let mut folders: BTreeMap<&str, bool> = BTreeMap::new();
    for h in &plan.hosts {
        for d in &h.dirs {
            *folders.entry(d.path.as_str()).or_default() |= h.name == hp.name;
        }
    }
    let mut parents: Vec<String> = Vec::new();
    for (path, here) in folders {
        if in_own_folders(c, path) {
            s = s.args(["own", path]);
        } else {
            s = s.args(["purge", path, if here { "1" } else { "0" }]);
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            parents.push(parent.to_string());
        }
    }
    // what earlier plans put in the cluster's own folders: its config
    // folder, and its default data folders
    for d in [
        format!("/etc/ferry/{c}"),
        format!("{root}/{c}/zookeeper"),
        format!("{root}/{c}/spark-work"),
    ] {
        s = s.args(["own", &d]);
    }
    s = s.arg("tidy");
    parents.push(format!("{root}/{c}"));
    parents.sort();
    parents.dedup();
    for p in parents {
        // the cluster's own folders, when nothing else is in them
        if p.ends_with(&format!("/{c}")) {
            s = s.args(["rmdir", &p]);
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
        let (script, tar) = write_files_script(STATE_ROOT, &plan, &plan.hosts[0], Some(&secret));
        let line = script.command_line().unwrap();
        assert!(!line.contains(&password) && !line.contains(&"ab".repeat(32)));
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
            assert!(script.values().iter().any(|v| v == path), "{script:?}");
        }
        // a worker's host gets no login
        let (_, tar) = write_files_script(STATE_ROOT, &plan, &plan.hosts[3], Some(&secret));
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
        let s = image_id_script(&image.reference);
        assert_eq!(
            s.text(),
            r#"docker image inspect --format '{{.Id}}' -- "$1" 2>/dev/null || true"#
        );
        assert_eq!(s.values(), ["ferry/spark:3.5.3"]);
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
        let (up, _) = write_files_script(STATE_ROOT, &plan, node4, None);
        assert_eq!(up.values()[..2], ["/var/lib/ferry/ha", "ferry/spark:3.5.3"]);
        assert!(
            has_run(&up, &["dir", "/data/spark", "0750", "spark", "0"]),
            "{up:?}"
        );
        assert!(
            has_run(&up, &["dir", "/etc/ferry/ha/secret", "0700", "spark", "1"]),
            "{up:?}"
        );
        let (up1, _) = write_files_script(STATE_ROOT, &plan, node1, None);
        assert!(
            has_run(
                &up1,
                &[
                    "dir",
                    "/var/lib/ferry/ha/zookeeper",
                    "0750",
                    "zookeeper",
                    "1"
                ]
            ),
            "{up1:?}"
        );
        let down = remove_script(STATE_ROOT, &plan, node4, true);
        assert!(has_run(&down, &["purge", "/data/spark", "1"]), "{down:?}");
        assert!(!has_run(&down, &["own", "/data/spark"]), "{down:?}");
        // a host without a worker now may have had one: checked, by record
        let down1 = remove_script(STATE_ROOT, &plan, node1, true);
        assert!(has_run(&down1, &["purge", "/data/spark", "0"]), "{down1:?}");
        assert!(
            has_run(&down1, &["own", "/var/lib/ferry/ha/zookeeper"]),
            "{down1:?}"
        );
        assert!(
            has_run(&down1, &["tidy", "rmdir", "/etc/ferry/ha"]),
            "{down1:?}"
        );
        assert!(
            has_run(&down1, &["rmdir", "/var/lib/ferry/ha"]),
            "{down1:?}"
        );
        assert_eq!(
            remove_script(STATE_ROOT, &plan, node4, false)
                .values()
                .len(),
            4
        );
        assert!(in_own_folders("ha", "/etc/ferry/ha"));
        assert!(in_own_folders("ha", "/var/lib/ferry/ha/x"));
        assert!(!in_own_folders("ha", "/var/lib/ferry/hadoop"));
        assert!(!in_own_folders("ha", "/var/lib/ferry"));
    }

    /// Whether the script's values hold `run`, in a row.
    fn has_run(s: &Script, run: &[&str]) -> bool {
        s.values().windows(run.len()).any(|w| w == run)
    }

    /// Runs `script` under `sh`, in `bin`'s parent folder, with stand-ins
    /// first on the PATH: a `docker` whose `run` runs the command it is
    /// given here, without the image, and an `id` that says the image's
    /// users (`spark`, `zookeeper`) are this test's own user (so folders can
    /// be given to them without root); `docker` lists no container.
    fn run_sh(script: &str, stdin: &[u8], bin: &std::path::Path) -> (i32, String, String) {
        run_sh_with(script, stdin, bin, STAND_IN_DOCKER)
    }

    const STAND_IN_DOCKER: &str = "#!/bin/sh\ncase \"$1\" in\n  run) shift; ep=; while [ $# -gt 0 ]; do case $1 in --entrypoint) ep=$2; shift 2 ;; --network) shift 2 ;; --) shift; break ;; -*) shift ;; *) break ;; esac; done; shift; exec \"$ep\" \"$@\" ;;\n  ps) ;;\n  *) exit 1 ;;\nesac\n";

    /// The image's users are this test's own user, or uid and gid 4242
    /// when it runs as root (`up` gives no folder to uid 0).
    const STAND_IN_ID: &str = "#!/bin/sh\nflag=$1; shift\n[ \"${1-}\" = -- ] && shift\n[ $# = 0 ] && exec /usr/bin/id \"$flag\"\ncase $1 in spark|zookeeper) [ \"$(/usr/bin/id -u)\" = 0 ] && echo 4242 && exit 0; exec /usr/bin/id \"$flag\" ;; *) echo \"id: $1: no such user\" >&2; exit 1 ;; esac\n";

    /// Gives `p` to the image's users as the stand-in `id` says them (a
    /// folder the user made for them).
    fn give_to_image_user(p: &std::path::Path) {
        let (u, g) = image_ids();
        std::os::unix::fs::chown(p, u.parse().ok(), g.parse().ok()).unwrap();
    }

    /// The uid and gid the stand-in `id` gives the image's users.
    fn image_ids() -> (String, String) {
        let id = |flag: &str| {
            let out = std::process::Command::new("id").arg(flag).output().unwrap();
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        match id("-u").as_str() {
            "0" => ("4242".into(), "4242".into()),
            _ => (id("-u"), id("-g")),
        }
    }

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
    fn up_line(plan: &Plan, host: &HostPlan, state: &std::path::Path) -> (String, Vec<u8>) {
        let (s, tar) = write_files_script(&state.display().to_string(), plan, host, None);
        (s.command_line().unwrap(), tar)
    }

    /// The `down --purge` script for `host`, as the line a host runs.
    fn purge_line(plan: &Plan, host: &HostPlan, state: &std::path::Path) -> String {
        remove_script(&state.display().to_string(), plan, host, true)
            .command_line()
            .unwrap()
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
        give_to_image_user(&theirs);
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

    /// `up` asks the image for its user's ids with a `docker run` that
    /// never pulls (a tag gone from the host is not fetched from a
    /// registry) and reads at most 64 bytes of its answer.
    #[test]
    fn the_owner_is_asked_of_the_local_image_with_a_bounded_answer() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let (bin, state) = (t.join("bin"), t.join("state"));
        let plan = scratch_plan(vec![zk_dir(&t.join("zk"))], vec![]);
        let (line, tar) = up_line(&plan, &plan.hosts[0], &state);
        let (code, _, err) = run_sh_with(&line, &tar, &bin, LOGGING_DOCKER);
        assert_eq!(code, 0, "{err}");
        let runs: Vec<Vec<String>> = docker_calls(&bin)
            .into_iter()
            .filter(|c| c.first().is_some_and(|a| a == "run"))
            .collect();
        assert!(!runs.is_empty());
        for r in &runs {
            assert!(r.iter().any(|a| a == "--pull=never"), "{r:?}");
        }
        // an image that answers without end
        let t = tmp.path().join("endless");
        let (bin, state) = (t.join("bin"), t.join("state"));
        let plan = scratch_plan(vec![zk_dir(&t.join("zk"))], vec![]);
        let (line, tar) = up_line(&plan, &plan.hosts[0], &state);
        let endless = "#!/bin/sh\n[ \"$1\" = run ] && exec yes 1\nexit 1\n";
        let (code, _, err) = run_sh_with(&line, &tar, &bin, endless);
        assert_ne!(code, 0);
        assert!(err.contains("user `zookeeper`"), "{err}");
        assert!(err.len() < 1024, "{err}");
    }

    /// An image whose user is uid 0 would own its folders as root: links it
    /// plants there would pass for root's. `up` gives no folder to it.
    #[test]
    fn an_image_user_of_uid_0_gets_no_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let (bin, state) = (t.join("bin"), t.join("state"));
        let zk = t.join("zk");
        let plan = scratch_plan(vec![zk_dir(&zk)], vec![]);
        let (line, tar) = up_line(&plan, &plan.hosts[0], &state);
        let as_root = "#!/bin/sh\n[ \"$1\" = run ] && printf '0\\n0\\n'\n";
        let (code, _, err) = run_sh_with(&line, &tar, &bin, as_root);
        assert_ne!(code, 0);
        assert!(
            err.contains("`zookeeper` is uid 0") && err.contains("`ferry.zookeeper.user`"),
            "{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!zk.exists());
    }

    /// A folder on the way to a planned folder, or to a file's folder, that
    /// others than root may change (a container's, or one open to all) is
    /// refused: its entries could be swapped for links between check and
    /// act. A sticky folder open to all (`/tmp`) is passed when the next
    /// name on the way is root's.
    #[test]
    fn a_folder_others_may_write_on_the_way_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let (bin, state) = (t.join("bin"), t.join("state"));
        let open = t.join("open");
        std::fs::create_dir(&open).unwrap();
        set_mode(&open, 0o777);
        let zk = open.join("zk");
        let plan = scratch_plan(vec![zk_dir(&zk)], vec![]);
        let (line, tar) = up_line(&plan, &plan.hosts[0], &state);
        let (code, _, err) = run_sh(&line, &tar, &bin);
        assert_ne!(code, 0);
        assert!(err.contains(&format!("`{}`", open.display())), "{err}");
        assert!(!zk.exists());
        // a file whose folder lies in such a folder
        let conf = open.join("conf");
        std::fs::create_dir(&conf).unwrap();
        set_mode(&conf, 0o755);
        let cfg = conf.join("zoo.cfg");
        let plan = scratch_plan(vec![], vec![(cfg.display().to_string(), "x\n")]);
        let (line, tar) = up_line(&plan, &plan.hosts[0], &state);
        let (code, _, err) = run_sh(&line, &tar, &bin);
        assert_ne!(code, 0);
        assert!(err.contains(&format!("`{}`", open.display())), "{err}");
        assert!(!cfg.exists());
        // closed again, both go through
        set_mode(&open, 0o755);
        let plan = scratch_plan(vec![zk_dir(&zk)], vec![(cfg.display().to_string(), "x\n")]);
        let (line, tar) = up_line(&plan, &plan.hosts[0], &state);
        let (code, _, err) = run_sh(&line, &tar, &bin);
        assert_eq!(code, 0, "{err}");
        assert!(zk.is_dir() && cfg.is_file());
    }

    /// `down --purge` removes what `up` made only through folders root
    /// alone may change: a name on the way could else be a link planted
    /// since, and `rm -rf` would follow it.
    #[test]
    fn purge_keeps_a_folder_on_a_way_others_may_change() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let (bin, state) = (t.join("bin"), t.join("state"));
        let open = t.join("open");
        std::fs::create_dir(&open).unwrap();
        set_mode(&open, 0o755);
        let zk = open.join("zk");
        let plan = scratch_plan(vec![zk_dir(&zk)], vec![]);
        let (line, tar) = up_line(&plan, &plan.hosts[0], &state);
        let (code, _, err) = run_sh(&line, &tar, &bin);
        assert_eq!(code, 0, "{err}");
        assert!(zk.is_dir());
        set_mode(&open, 0o777);
        let (code, out, err) = run_sh(&purge_line(&plan, &plan.hosts[0], &state), &[], &bin);
        assert_eq!(code, 0, "{err}");
        assert!(zk.is_dir(), "{out}");
        assert!(out.contains(&format!("`{}`", open.display())), "{out}");
    }

    /// The path of the host's own `tool`.
    fn real(tool: &str) -> String {
        let out = std::process::Command::new("sh")
            .args(["-c", "command -v \"$1\"", "sh", tool])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// On a host whose `mv` has no `-T` and whose `stat` has no `%m`
    /// (busybox), `up` still puts files in place, also on a file system of
    /// their own (here a stand-in `stat` says `other` is one), staging them
    /// at that file system's top; a folder (or a link to one) where a file
    /// goes is refused, never moved into.
    #[test]
    fn up_puts_files_with_a_busybox_mv_and_stat() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let (bin, state) = (t.join("bin"), t.join("state"));
        let other = t.join("other");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir(&other).unwrap();
        set_mode(&other, 0o755);
        stand_in(
            &bin,
            "mv",
            &format!(
                "#!/bin/sh\nfor a in \"$@\"; do case $a in --) break ;; -*T*) echo \"mv: invalid option -- 'T'\" >&2; exit 1 ;; esac; done\nexec {} \"$@\"\n",
                real("mv")
            ),
        );
        stand_in(
            &bin,
            "stat",
            &format!(
                "#!/bin/sh\nfor a in \"$@\"; do case $a in *%m*) echo \"stat: unknown format\" >&2; exit 1 ;; esac; done\nif [ \"$1 $2 $3\" = \"-c %d --\" ]; then case $4 in {o}|{o}/*) echo 999; exit 0 ;; esac; fi\nexec {} \"$@\"\n",
                real("stat"),
                o = other.display()
            ),
        );
        let zk = other.join("zk");
        let myid = zk.join("myid");
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
        assert!(other.join(".ferry-stage").is_dir());
        // a link the container planted as the file is replaced
        let victim = t.join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        std::fs::remove_file(&myid).unwrap();
        std::os::unix::fs::symlink(&victim, &myid).unwrap();
        let (code, _, err) = up("2\n");
        assert_eq!(code, 0, "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        assert_eq!(std::fs::read_to_string(&myid).unwrap(), "2\n");
        // a link to a folder, or a folder, is refused: nothing goes into it
        let elsewhere = t.join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::remove_file(&myid).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &myid).unwrap();
        let (code, _, err) = up("3\n");
        assert_ne!(code, 0);
        assert!(err.contains(&format!("`{}`", myid.display())), "{err}");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
        std::fs::remove_file(&myid).unwrap();
        std::fs::create_dir(&myid).unwrap();
        let (code, _, err) = up("4\n");
        assert_ne!(code, 0);
        assert!(err.contains(&format!("`{}`", myid.display())), "{err}");
        assert_eq!(std::fs::read_dir(&myid).unwrap().count(), 0);
    }

    /// A container's log reaches the operator's terminal in a gate's
    /// failure: its control characters are shown escaped (lines stay
    /// lines), and a host's part is bounded.
    #[test]
    fn gate_logs_cannot_drive_the_terminal() {
        let shown = gate_logs(vec![(
            "node1".into(),
            "--- last lines of c:\n\u{1b}]0;owned\u{7}\u{1b}[2Jline\r\n".into(),
        )]);
        assert!(
            !shown.chars().any(|c| c.is_control() && c != '\n'),
            "{shown:?}"
        );
        assert!(
            shown.starts_with("node1:\n--- last lines of c:\n"),
            "{shown:?}"
        );
        assert!(shown.contains("\\u{1b}[2Jline"), "{shown:?}");
        let long = gate_logs(vec![("node1".into(), "x".repeat(1 << 20))]);
        assert!(long.len() <= (64 << 10) + 64, "{}", long.len());
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
        let values: Vec<&str> = crate::ssh::script::tests::HOSTILE
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
    fn up_records_what_it_makes_and_purge_keeps_what_it_did_not() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let (bin, root) = (t.join("bin"), t.join("state"));
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
        give_to_image_user(&theirs);

        let (script, tar) = up_line(&plan, &host, &root);
        let (code, _, err) = run_sh(&script, &tar, &bin);
        assert_eq!(code, 0, "{err}");
        let made = t.join("made/work");
        let record = root.join(&plan.cluster).join("made");
        // the record is root's, outside every folder a container mounts
        assert_eq!(
            std::fs::read_to_string(&record).unwrap(),
            format!("{}\n", made.display())
        );
        assert_eq!(mode(&root.join(&plan.cluster)), 0o755);
        assert_eq!(mode(&root.join(&plan.cluster).join(".stage")), 0o700);
        assert_eq!(std::fs::read_dir(&made).unwrap().count(), 0);
        assert_eq!(mode(&made), 0o750);
        // the user's folder: used as it is, not recorded, its mode kept
        assert_eq!(mode(&theirs), 0o755);

        // a folder its daemon's user cannot write fails the host
        set_mode(&theirs, 0o555);
        let (code, _, err) = run_sh(&script, &tar, &bin);
        set_mode(&theirs, 0o755);
        assert_eq!(code, 1, "{err}");
        let (uid, gid) = image_ids();
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
        std::fs::create_dir(root.join("another")).unwrap();
        std::fs::write(root.join("another/made"), format!("{}\n", other.display())).unwrap();
        let elsewhere = t.join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let mut purged = plan.clone();
        let mut h = host.clone();
        h.dirs.push(dir("other", "spark"));
        let mut away = host.clone();
        away.name = "away".into();
        away.dirs = vec![dir("elsewhere", "spark"), dir("made/work", "spark")];
        purged.hosts = vec![h.clone(), away];
        let (code, out, err) = run_sh(&purge_line(&purged, &h, &root), &[], &bin);
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            out,
            format!(
                "{made}\nkept {other}: cluster `another` made it, not `{c}`\nkept {theirs}: it was there before ferry (ferry has no record of making it), so what the cluster wrote in it stays too\n",
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
        // the record and the stage go with what they were for
        assert!(!root.join(&plan.cluster).exists());
    }

    /// A `docker` stand-in that keeps each call's arguments (NUL-ended) in
    /// a file of its own next to it, answers `run --entrypoint` by running
    /// the entry point here, finds nothing that is asked about, and does
    /// everything else.
    const LOGGING_DOCKER: &str = "#!/bin/sh\nlog=$(mktemp \"${0%/*}/call.XXXXXX\")\nfor a in \"$@\"; do printf '%s\\0' \"$a\"; done > \"$log\"\ncase $1 in\n  run) shift; ep=; while [ $# -gt 0 ]; do case $1 in --entrypoint) ep=$2; shift 2 ;; --network) shift 2 ;; --) shift; break ;; -*) shift ;; *) break ;; esac; done; [ -n \"$ep\" ] || exit 0; shift; exec \"$ep\" \"$@\" ;;\n  inspect|container|image|logs) exit 1 ;;\n  *) exit 0 ;;\nesac\n";

    /// The arguments of each call the logging `docker` got.
    fn docker_calls(bin: &std::path::Path) -> Vec<Vec<String>> {
        std::fs::read_dir(bin)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("call.")
            })
            .map(|p| {
                let text = std::fs::read_to_string(p).unwrap();
                let mut args: Vec<String> = text.split('\0').map(str::to_string).collect();
                args.pop();
                args
            })
            .collect()
    }

    /// What one case of the property test builds from a hostile value and
    /// the scratch folder: the script, its stdin, the paths (relative to
    /// the scratch folder) the plan says it may make, and whether the
    /// value must reach `docker` (as, or inside, one argument).
    type Case = (
        &'static str,
        Box<dyn Fn(&str, &std::path::Path) -> (Script, Vec<u8>, Vec<String>, bool)>,
    );

    fn state_of(t: &std::path::Path) -> String {
        t.join("state").display().to_string()
    }

    /// The up script of a one-host plan changed by `change`, with the
    /// planned paths it may make.
    fn up_case(
        t: &std::path::Path,
        secret: bool,
        change: &dyn Fn(&mut Plan),
    ) -> (Script, Vec<u8>, Vec<String>) {
        let zk = t.join("zk");
        let mut plan = scratch_plan(
            vec![zk_dir(&zk)],
            vec![(zk.join("myid").display().to_string(), "1\n")],
        );
        if secret {
            plan.hosts[0].secret = Some(super::super::plan::SecretPlan {
                path: zk.join("secret").display().to_string(),
                owner: "zookeeper".into(),
                mode: "0600".into(),
            });
        }
        change(&mut plan);
        let host = &plan.hosts[0];
        let secret_line = format!("{SECRET_VAR}={}\n", "ab".repeat(32));
        let (s, tar) = write_files_script(
            &state_of(t),
            &plan,
            host,
            secret.then_some(secret_line.as_str()),
        );
        let planned = host
            .dirs
            .iter()
            .map(|d| d.path.clone())
            .chain(host.files.iter().map(|f| f.path.clone()))
            .chain(host.secret.iter().map(|s| s.path.clone()))
            .collect();
        (s, tar, planned)
    }

    fn cases() -> Vec<Case> {
        fn one(name: &'static str, text: &'static str) -> Case {
            (
                name,
                Box::new(move |v, _| (Script::new(text).arg(v), Vec::new(), Vec::new(), true)),
            )
        }
        let container = |v: &str| {
            let plan = ha_with_work_dir();
            let mut c = plan.hosts[3].containers[0].clone();
            c.name = v.into();
            c.image = v.into();
            c.user = v.into();
            c.labels.insert("ferry.spec".into(), v.into());
            c.labels.insert(v.into(), v.into());
            c.env.insert("X".into(), v.into());
            c.env_file = Some(v.into());
            c.command.push(v.into());
            c.mounts.push(super::super::plan::Mount {
                source: v.into(),
                target: v.into(),
                read_only: true,
            });
            c
        };
        let mut cases: Vec<Case> = vec![
            (
                "up: image reference",
                Box::new(|v, t| {
                    let (s, tar, p) = up_case(t, false, &|p| p.image.reference = v.into());
                    (s, tar, p, true)
                }),
            ),
            (
                "up: a folder's owner (an image's user label)",
                Box::new(|v, t| {
                    let (s, tar, p) = up_case(t, false, &|p| p.hosts[0].dirs[0].owner = v.into());
                    (s, tar, p, false)
                }),
            ),
            (
                "up: a folder's mode",
                Box::new(|v, t| {
                    let (s, tar, p) = up_case(t, false, &|p| p.hosts[0].dirs[0].mode = v.into());
                    (s, tar, p, false)
                }),
            ),
            (
                "up: a file's mode",
                Box::new(|v, t| {
                    let (s, tar, p) = up_case(t, false, &|p| p.hosts[0].files[0].mode = v.into());
                    (s, tar, p, false)
                }),
            ),
            (
                "up: a folder's and its file's path",
                Box::new(|v, t| {
                    let dir = t.join("zk").join(v).display().to_string();
                    let (s, tar, p) = up_case(t, false, &|p| {
                        p.hosts[0].dirs[0].path = dir.clone();
                        p.hosts[0].files[0].path = format!("{dir}/myid");
                    });
                    (s, tar, p, false)
                }),
            ),
            (
                "up: the cluster's name",
                Box::new(|v, t| {
                    let (s, tar, p) = up_case(t, false, &|p| p.cluster = v.into());
                    (s, tar, p, false)
                }),
            ),
            (
                "up: the secret's path and mode",
                Box::new(|v, t| {
                    let path = t.join("zk").join(format!("s{v}")).display().to_string();
                    let (s, tar, p) = up_case(t, true, &|p| {
                        let sec = p.hosts[0].secret.as_mut().unwrap();
                        sec.path = path.clone();
                        sec.mode = v.into();
                    });
                    (s, tar, p, false)
                }),
            ),
            (
                "down: the cluster's name",
                Box::new(|v, t| {
                    let mut plan = scratch_plan(vec![], vec![]);
                    plan.cluster = v.into();
                    let s = remove_script(&state_of(t), &plan, &plan.hosts[0], false);
                    (s, Vec::new(), Vec::new(), true)
                }),
            ),
            (
                "down --purge: a folder's path",
                Box::new(|v, t| {
                    let plan = scratch_plan(vec![zk_dir(&t.join("keep").join(v))], vec![]);
                    let s = remove_script(&state_of(t), &plan, &plan.hosts[0], true);
                    (s, Vec::new(), Vec::new(), false)
                }),
            ),
            (
                "survey: a container's name",
                Box::new(|v, _| (Script::new(SURVEY_SH).arg(v), Vec::new(), Vec::new(), true)),
            ),
            (
                "ensure: every docker run argument",
                Box::new(move |v, _| (ensure_script(&container(v)), Vec::new(), Vec::new(), true)),
            ),
            (
                "image id: the reference",
                Box::new(|v, _| (image_id_script(v), Vec::new(), Vec::new(), true)),
            ),
            (
                "gate logs: a container's name",
                Box::new(|v, _| (logs_script(&[v], 15), Vec::new(), Vec::new(), true)),
            ),
            (
                "logs: the tail and the name",
                Box::new(|v, _| {
                    let s = Script::new(LOGS_SH).arg(v).arg(v).arg(v);
                    (s, Vec::new(), Vec::new(), true)
                }),
            ),
            (
                "down: the role filters",
                Box::new(|v, _| {
                    let s = Script::new(STOP_ROLE_SH).arg(v).arg(v);
                    (s, Vec::new(), Vec::new(), true)
                }),
            ),
            (
                "submit: every value",
                Box::new(|v, t| {
                    let mut plan = ha_with_work_dir();
                    plan.image.reference = v.into();
                    plan.master_url = v.into();
                    let mut on = plan.hosts[3].clone();
                    let secret = t.join("keep").join("secret");
                    std::fs::write(&secret, format!("{SECRET_VAR}={v}\n")).unwrap();
                    on.secret.as_mut().unwrap().path = secret.display().to_string();
                    on.address = v.into();
                    let s = submit_script(&plan, &on, v, v, v, v, true, &[v.into()]);
                    (s, b"job".to_vec(), Vec::new(), true)
                }),
            ),
        ];
        for (name, text) in [
            ("stop", handover::STOP),
            ("start", START_SH),
            ("restart", RESTART_SH),
            ("remove", REMOVE_SH),
            ("decommission", DECOMMISSION_SH),
            ("kill", KILL_SH),
            ("status", STATUS_SH),
        ] {
            cases.push(one(name, text));
        }
        cases.push((
            "read the secret: its path",
            Box::new(|v, _| (Script::new(READ_SH).arg(v), Vec::new(), Vec::new(), false)),
        ));
        cases
    }

    /// Every value that reaches a script of the launcher (each cluster-file
    /// string, label, image reference and path), drawn from hostile
    /// values, run through the real script by `sh` in a scratch folder:
    /// nothing runs, and no file is made or removed but the plan's.
    #[test]
    fn hostile_values_reach_every_launch_script_as_data() {
        let values: Vec<&str> = crate::ssh::script::tests::HOSTILE
            .iter()
            .copied()
            .chain([SED_E])
            .filter(|v| !v.contains('\0'))
            .collect();
        for (name, build) in cases() {
            for v in &values {
                let tmp = tempfile::tempdir().unwrap();
                let t = tmp.path();
                let bin = t.join("bin");
                std::fs::create_dir_all(t.join("keep/a")).unwrap();
                std::fs::write(t.join("keep/a/user-file"), "mine\n").unwrap();
                let (script, stdin, planned, reaches_docker) = build(v, t);
                let before = tree(t);
                let (_, out, err) = run_sh_with(
                    &script.command_line().unwrap(),
                    &stdin,
                    &bin,
                    LOGGING_DOCKER,
                );
                // a planned path, or a folder on the way to one
                let may = |p: &str| {
                    p.starts_with("bin")
                        || p.starts_with("state")
                        || before.iter().any(|b| b == p)
                        || planned
                            .iter()
                            .any(|q| std::path::Path::new(q).starts_with(t.join(p)))
                };
                let made: Vec<String> = tree(t).into_iter().filter(|p| !may(p)).collect();
                assert!(
                    made.is_empty(),
                    "{name}, {v:?}: made {made:?}\n{out}\n{err}"
                );
                let gone: Vec<&String> = before
                    .iter()
                    .filter(|p| std::fs::symlink_metadata(t.join(p)).is_err())
                    .collect();
                assert!(
                    gone.is_empty(),
                    "{name}, {v:?}: removed {gone:?}\n{out}\n{err}"
                );
                if reaches_docker {
                    let calls = docker_calls(&bin);
                    assert!(
                        calls.iter().flatten().any(|a| a.contains(v)),
                        "{name}, {v:?}: no docker argument holds it: {calls:?}\n{err}"
                    );
                }
            }
        }
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
