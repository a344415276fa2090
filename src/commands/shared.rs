//! What `push`, `pull` and `gc` share at the command edge: the terminal
//! progress of a delivery to hosts and its summary table, the SSH options
//! and targets of the command line and of a cluster file, and the bucket a
//! command names. Subcommands take these from here, never from each other;
//! nothing here delivers anything.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::{Term, human};
use crate::cli::{BucketArgs, SshArgs};
use crate::cluster::file::{ClusterFile, ObjectStore};
use crate::deliver::{self, Event, Reporter};
use crate::objstore::{self, Settings, Store, Style};
use crate::ssh::known_hosts::KnownHosts;
use crate::ssh::target::{ClusterHost, cluster_target, expand_home};
use crate::ssh::{SshOptions, Target, default_identities};

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
fn print_hosts<E: std::fmt::Display>(rows: &[Row<'_, E>]) {
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
    for &(t, stats, seconds, result) in rows {
        let result = result_text(result, stats.loaded);
        println!(
            "{:<w$}  {:>5}  {:>9}  {seconds:>7.1}  {result}",
            t.label(),
            stats.blobs_sent,
            human(stats.bytes_sent),
        );
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
    let home = crate::ssh::target::operator_home();
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

/// One host's outcome as the end of `push` and `pull` reports it.
pub(super) type Row<'a, E> = (
    &'a Target,
    &'a deliver::HostStats,
    f64,
    &'a std::result::Result<(), E>,
);

/// The end of `push` and `pull` over hosts: the JSON document when one was
/// asked for, else the summary table; then the unpigz hint.
pub(super) fn summary<E: std::fmt::Display>(
    json: Option<serde_json::Value>,
    rows: &[Row<'_, E>],
) -> Result<()> {
    match json {
        Some(v) => println!("{}", serde_json::to_string_pretty(&v)?),
        None => print_hosts(rows),
    }
    unpigz_hint(rows.iter().map(|&(t, stats, ..)| (t, stats)));
    Ok(())
}

/// The hosts that loaded the image without `unpigz`, named once after the table.
fn unpigz_hint<'a>(hosts: impl Iterator<Item = (&'a Target, &'a deliver::HostStats)>) {
    let slow: Vec<String> = hosts
        .filter(|(_, stats)| stats.loaded_without_unpigz)
        .map(|(t, _)| format!("`{}`", t.label()))
        .collect();
    if !slow.is_empty() {
        eprintln!(
            "hint: `unpigz` is not on the PATH of {}: Docker unpacks gzip layers with it when it is there (`docker load` took 25% less time with it in ferry's benchmark); install the `pigz` package there",
            slow.join(", ")
        );
    }
}

/// A host's result in the summary table of `push` and `pull`.
fn result_text<E: std::fmt::Display>(result: &std::result::Result<(), E>, loaded: bool) -> String {
    match result {
        Ok(()) if loaded => "ok, loaded".into(),
        Ok(()) => "ok, up to date".into(),
        Err(e) => format!("error: {e}"),
    }
}

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
pub(super) fn open_store(url: &str, a: &BucketArgs, cluster: &ObjectStore) -> Result<Store> {
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

/// What `ferry pull` takes from a cluster file.
pub(super) struct FromCluster {
    pub(super) targets: Vec<Target>,
    /// Key files the hosts name, tried before the command line's.
    pub(super) keys: Vec<PathBuf>,
    pub(super) delivery: String,
    pub(super) store: ObjectStore,
}

/// The hosts of a cluster file as SSH targets (as the plan reaches them:
/// [`cluster_target`]), the key files, the bucket and its service.
pub(super) fn cluster_hosts(path: &Path) -> Result<FromCluster> {
    let file = ClusterFile::load(path)?;
    let home = crate::ssh::target::operator_home();
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
