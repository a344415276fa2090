//! `ferry push`: an OCI layout → the Docker of hosts over SSH, with progress
//! lines per host and a summary table (or JSON) at the end.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::{Term, human};
use crate::cli::{PushArgs, RuntimeArg, SshArgs};
use crate::objstore::Location;
use crate::oci;
use crate::push::{self, Event, HostOutcome, PushImage, Reporter};
use crate::ssh::Target;
use crate::ssh::known_hosts::KnownHosts;
use crate::ssh::{SshOptions, default_identities};

/// Per host: when sending started, bytes of finished blobs, when the last line was printed.
#[derive(Default)]
struct HostProgress {
    started: Option<Instant>,
    finished_bytes: u64,
    last_line: Option<Instant>,
}

pub(super) struct Progress {
    pub(super) term: Term,
    hosts: Mutex<HashMap<String, HostProgress>>,
}

impl Progress {
    pub(super) fn new() -> Progress {
        Progress {
            term: Term::new(false),
            hosts: Mutex::new(HashMap::new()),
        }
    }
}

fn rate(bytes: u64, since: Option<Instant>) -> String {
    let secs = since
        .map(|t| t.elapsed().as_secs_f64())
        .unwrap_or(0.0)
        .max(1e-3);
    format!("{}/s", human((bytes as f64 / secs) as u64))
}

impl Reporter for Progress {
    fn event(&self, host: &str, event: Event<'_>) {
        let mut hosts = self.hosts.lock().expect("progress lock");
        let p = hosts.entry(host.to_string()).or_default();
        let line = match event {
            Event::Connected => format!("{host}: connected"),
            Event::Corrupt { hexes } => format!(
                "{host}: {} stored blob(s) do not match their digest and will be replaced: {}",
                hexes.len(),
                hexes
                    .iter()
                    .map(|h| format!("sha256:{}", &h[..12]))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Event::Planned(plan) => {
                p.started = Some(Instant::now());
                let resumed = plan.sends.iter().filter(|s| s.offset > 0).count();
                let docker = if plan.load {
                    ""
                } else {
                    "; docker has the image"
                };
                if plan.sends.is_empty() {
                    format!("{host}: all {} blob(s) present{docker}", plan.present)
                } else {
                    format!(
                        "{host}: {} blob(s) present, sending {} ({}){}{docker}",
                        plan.present,
                        plan.sends.len(),
                        human(plan.bytes()),
                        if resumed > 0 {
                            format!(", resuming {resumed}")
                        } else {
                            String::new()
                        },
                    )
                }
            }
            Event::Sending { hex, done, total } => {
                if p.last_line
                    .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
                    || done == total
                {
                    return;
                }
                p.last_line = Some(Instant::now());
                let all = p.finished_bytes + done;
                format!(
                    "{host}: sha256:{} {} / {}, {}",
                    &hex[..12],
                    human(done),
                    human(total),
                    rate(all, p.started)
                )
            }
            Event::Sent { hex, bytes } => {
                p.finished_bytes += bytes;
                format!(
                    "{host}: sha256:{} stored ({}), {} in all at {}",
                    &hex[..12],
                    human(bytes),
                    human(p.finished_bytes),
                    rate(p.finished_bytes, p.started)
                )
            }
            Event::Loading => format!("{host}: loading into docker"),
            Event::Loaded => format!("{host}: loaded"),
            Event::UpToDate => format!("{host}: up to date"),
        };
        drop(hosts);
        self.term.line(&line);
    }
}

/// The summary table of `push` and `pull`: host, blobs and bytes moved,
/// seconds, result.
pub(super) fn print_hosts(rows: Vec<(&Target, &push::HostStats, f64, String)>) {
    let w = rows
        .iter()
        .map(|(t, ..)| t.label().len())
        .max()
        .unwrap_or(0)
        .max(4);
    println!(
        "{:<w$}  {:>5}  {:>9}  {:>7}  RESULT",
        "HOST", "BLOBS", "BYTES", "SECONDS"
    );
    for (t, stats, seconds, result) in rows {
        println!(
            "{:<w$}  {:>5}  {:>9}  {seconds:>7.1}  {result}",
            t.label(),
            stats.blobs_sent,
            human(stats.bytes_sent),
        );
    }
}

fn result_text(o: &HostOutcome) -> String {
    match &o.result {
        Ok(()) if o.stats.loaded => "ok, loaded".into(),
        Ok(()) => "ok, up to date".into(),
        Err(e) => format!("error: {e}"),
    }
}

/// known_hosts files whose skipped lines were shown: once per run, not per host.
static KNOWN_HOSTS_WARNED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Shows the lines of `path` that connections will skip (once per file).
fn warn_known_hosts(path: &Path) {
    let mut warned = KNOWN_HOSTS_WARNED.lock().unwrap_or_else(|p| p.into_inner());
    if warned.iter().any(|p| p == path) {
        return;
    }
    warned.push(path.to_path_buf());
    // a file that cannot be read fails the connection, with its own message
    if let Ok(kh) = KnownHosts::read(path) {
        for w in &kh.warnings {
            eprintln!("warning: {w}");
        }
    }
}

/// The SSH options of the command line, with the user's defaults filled in.
pub(super) fn ssh_options(a: SshArgs) -> SshOptions {
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()));
    let known_hosts = a
        .known_hosts
        .unwrap_or_else(|| home.join(".ssh/known_hosts"));
    warn_known_hosts(&known_hosts);
    SshOptions {
        identities: a
            .identity
            .map(|p| vec![p])
            .unwrap_or_else(|| default_identities(&home)),
        known_hosts,
        accept_new_host_keys: a.accept_new_host_keys,
        connect_timeout: Duration::from_secs(a.connect_timeout),
        command_timeout: Duration::from_secs(a.command_timeout),
        password: std::env::var("FERRY_SSH_PASSWORD").ok(),
        passphrase: std::env::var("FERRY_SSH_PASSPHRASE").ok(),
    }
}

/// Parses the hosts, each named once, with the jump host and sudo choice
/// of the command line.
pub(super) fn targets(hosts: &[String], ssh: &SshArgs) -> Result<Vec<Target>> {
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "root".into());
    let jump = ssh
        .jump
        .as_deref()
        .map(|j| Target::parse_jump(j, &user))
        .transpose()?;
    let mut targets = hosts
        .iter()
        .map(|h| Target::parse(h, &user))
        .collect::<Result<Vec<_>, _>>()?;
    for t in &mut targets {
        t.jump = jump.clone().map(Box::new);
        t.sudo &= !ssh.no_sudo;
    }
    for (i, t) in targets.iter().enumerate() {
        if targets[..i].contains(t) {
            bail!(
                "the host `{}` is given twice; name each host once",
                t.label()
            );
        }
    }
    Ok(targets)
}

/// How JSON names the jump host a target is reached through.
pub(super) fn jump_label(t: &Target) -> Option<String> {
    t.jump.as_ref().map(|j| j.label())
}

pub fn run(a: PushArgs) -> Result<ExitCode> {
    if a.cluster.is_some() || a.hosts.iter().any(|h| Location::is_bucket_url(h)) {
        return super::pull::push_to_bucket(a);
    }
    let layout = oci::open_layout(&a.layout).with_context(|| {
        format!(
            "opening the layout `{}`; build it with `ferry build`",
            a.layout.display()
        )
    })?;
    let image = PushImage::from_layout(&layout, a.tag.as_deref())?;
    let targets = targets(&a.hosts, &a.ssh)?;
    let opts = push::Options {
        store: a.store,
        parallel: usize::from(a.parallel),
        verify: a.verify,
        runtime: match a.runtime {
            RuntimeArg::Docker => push::Runtime::Docker,
            RuntimeArg::Podman => push::Runtime::Podman,
        },
        ssh: ssh_options(a.ssh),
    };
    let progress = Progress {
        term: Term::new(false),
        hosts: Mutex::new(HashMap::new()),
    };
    progress.term.line(&format!(
        "pushing {} ({}) to {} host(s)",
        image.reference,
        image.config_id(),
        targets.len()
    ));
    let outcomes = push::push_all(&targets, &image, &opts, &progress);
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();

    if a.json {
        let v = json!({
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
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_hosts(
            outcomes
                .iter()
                .map(|o| (&o.target, &o.stats, o.seconds, result_text(o)))
                .collect(),
        );
    }
    let slow: Vec<String> = outcomes
        .iter()
        .filter(|o| o.stats.loaded_without_unpigz)
        .map(|o| format!("`{}`", o.target.label()))
        .collect();
    if !slow.is_empty() {
        eprintln!(
            "hint: `unpigz` is not on the PATH of {}: Docker unpacks gzip layers with it when it is there (`docker load` took 25% less time with it in ferry's benchmark); install the `pigz` package there",
            slow.join(", ")
        );
    }
    if failed > 0 {
        eprintln!(
            "error: {failed} of {} host(s) failed (see above); fix them and run the same `ferry push` again: it sends only what is missing",
            outcomes.len()
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
