//! The run plan: a pure function of a checked cluster file and the image's
//! `ferry.*` labels. It says, per host, which folders and files are written,
//! which containers run with which command, and in which order they start,
//! with the gate each stage waits on.
//!
//! Every label it reads, and the image's reference and digests, are checked
//! here against the grammar of what they name (`crate::grammar`): labels
//! come with base images, and a plan's values reach every host.
//!
//! Nothing here reads the disk, the clock or the network: the same inputs
//! give byte-identical plan text and JSON. Secrets never enter a plan (the
//! cluster file refuses them, and SSH keys are left out).

use std::collections::BTreeMap;

use serde::Serialize;

use super::file::ClusterFile;
use crate::grammar;
use crate::ssh::target::CLUSTER_DEFAULT_USER;

mod roles;
mod text;

/// What the plan needs to know of the image.
#[derive(Debug, Clone)]
pub struct ImageFacts {
    /// `name:tag`, as the hosts' runtime names the image.
    pub reference: String,
    /// The manifest digest the launcher checks on every host.
    pub digest: String,
    /// The config digest (from the layout, or compiled in for the built-in
    /// image): the id Docker gives the image it loads from a docker-archive.
    pub config_digest: String,
    pub labels: BTreeMap<String, String>,
}

impl ImageFacts {
    /// The built-in default image (`ferry build` with no argument), from
    /// the definition and digest compiled into ferry.
    pub fn builtin() -> ImageFacts {
        let (_, text) = crate::image::default_image::FILES
            .iter()
            .find(|(n, _)| *n == "image.toml")
            .expect("image.toml is embedded");
        let text = std::str::from_utf8(text).expect("utf-8");
        let def = crate::image::spec::Definition::parse(
            std::path::Path::new("images/spark/image.toml"),
            text,
        )
        .expect("the embedded definition parses (a unit test builds it)");
        ImageFacts {
            reference: format!("{}:{}", def.spec.name, def.spec.tag),
            digest: crate::image::default_image::expected_digest().to_string(),
            config_digest: crate::image::default_image::expected_config_digest().to_string(),
            labels: def.spec.config.labels,
        }
    }

    /// A built image: its name, manifest digest and config labels.
    pub fn from_layout(img: &crate::oci::LayoutImage) -> ImageFacts {
        let labels = img.config_json["config"]["Labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let reference = img
            .manifest
            .annotations
            .get("io.containerd.image.name")
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| img.manifest.digest.clone());
        ImageFacts {
            reference,
            digest: img.manifest.digest.clone(),
            config_digest: img.config.digest.clone(),
            labels,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(
        "image `{reference}` has no `{label}` label; build it with `ferry build` (the default image has every `ferry.*` label) or pass another one with `--image`"
    )]
    MissingLabel { reference: String, label: String },
    #[error("image `{reference}`: label `ferry.zookeeper.start` (`{value}`) has no `{{conf}}`")]
    BadStart { reference: String, value: String },
    /// A label that names a user, a path or a command and does not fit its
    /// grammar: labels are inherited from base images, so whoever made the
    /// base chose it. `shown` is the value with control characters escaped.
    #[error(
        "image `{reference}`: label `{label}` (`{shown}`) {why}; fix the label where the image (or its base) sets it, or pass another image with `--image`"
    )]
    BadLabel {
        reference: String,
        label: String,
        shown: String,
        why: String,
    },
    /// The image's reference (from a layout's annotation) or a digest that
    /// is not well formed; `what` says which.
    #[error(
        "the image's {what} (`{shown}`) {why}; rebuild it with `ferry build`, or pass another image with `--image`"
    )]
    BadImage {
        what: &'static str,
        shown: String,
        why: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub cluster: String,
    /// sha256 of the plan's canonical JSON with this field empty; the
    /// launcher labels containers with it.
    pub plan_hash: String,
    pub image: ImageRef,
    pub runtime: String,
    pub delivery: String,
    /// What `spark-submit --master` takes: every master.
    pub master_url: String,
    pub hosts: Vec<HostPlan>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageRef {
    pub reference: String,
    pub digest: String,
    /// `up` checks an image it finds on a host (and does not push there)
    /// against it.
    pub config_digest: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostPlan {
    pub name: String,
    pub address: String,
    /// `user@address:port`, or `ssh://...` through `jump`; never a key.
    pub ssh: String,
    pub jump: Option<String>,
    /// The key file to log in with, on the operator's machine (a path, never
    /// the key).
    pub key: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub dirs: Vec<Dir>,
    pub files: Vec<FilePlan>,
    /// The cluster's Spark RPC secret on this host: made by the first `up`
    /// (or copied from a host that has it), never part of a plan.
    pub secret: Option<SecretPlan>,
    /// With `zookeeper.auth = "sasl"`: the JAAS files holding the cluster's
    /// ZooKeeper password, written by `up` next to the secret (the password
    /// is derived from it there), never part of a plan.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub jaas: Vec<JaasPlan>,
    pub containers: Vec<Container>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SecretPlan {
    pub path: String,
    /// A user of the image; the file is 0600 and owned by it.
    pub owner: String,
    pub mode: String,
}

/// A JAAS login file: `Server` lists the one ZooKeeper user and its
/// password, `Client` logs a master in as that user.
#[derive(Debug, Clone, Serialize)]
pub struct JaasPlan {
    pub path: String,
    pub section: JaasSection,
    /// A user of the image; the file is 0600 and owned by it.
    pub owner: String,
    pub mode: String,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub enum JaasSection {
    Server,
    Client,
}

#[derive(Debug, Clone, Serialize)]
pub struct Dir {
    pub path: String,
    /// A user of the image (resolved to its uid there), or `root`.
    pub owner: String,
    pub mode: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FilePlan {
    pub path: String,
    pub mode: String,
    pub sha256: String,
    pub content: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Container {
    pub name: String,
    pub role: Role,
    pub image: String,
    pub image_digest: String,
    pub user: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub mounts: Vec<Mount>,
    /// Ports it listens on; the network is the host's, so these are the
    /// host's ports.
    pub ports: Vec<Port>,
    pub network: String,
    pub restart: String,
    /// A host file of `KEY=value` lines the runtime reads into the
    /// environment (the secret's way in: never in a plan or an argv).
    pub env_file: Option<String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Zookeeper,
    Master,
    Worker,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Zookeeper => "zookeeper",
            Role::Master => "master",
            Role::Worker => "worker",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Mount {
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Port {
    pub port: u16,
    pub purpose: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub action: Action,
    pub hosts: Vec<String>,
    pub gate: Option<Gate>,
}

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    DeliverImage,
    WriteFiles,
    StartZookeeper,
    StartMasters,
    StartWorkers,
}

/// What must be true before the next step starts, and how long to wait.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "check", rename_all = "kebab-case")]
pub enum Gate {
    /// `srvr` on each server: one `Mode: leader` and the rest `follower`, or
    /// `Mode: standalone` for a single server.
    ZookeeperLeader {
        servers: Vec<String>,
        deadline_secs: u32,
    },
    /// Each master's `/json/`: exactly one `"status":"ALIVE"`.
    OneMasterAlive {
        status_urls: Vec<String>,
        deadline_secs: u32,
    },
    /// The alive master's `/json/` lists every worker (`host:port`) ALIVE.
    WorkersRegistered {
        status_urls: Vec<String>,
        workers: Vec<String>,
        deadline_secs: u32,
    },
}

// Deadlines: a ZooKeeper election and a master's recovery from ZooKeeper take
// seconds; a worker retries registration for about 16 attempts, so waiting
// longer than that would only watch it give up.
const ZK_DEADLINE: u32 = 60;
/// Covers a leader's recovery, which waits `spark.worker.timeout` (60 s)
/// for workers that do not answer, after the JVM's start.
const MASTER_DEADLINE: u32 = 120;
const WORKER_DEADLINE: u32 = 90;

/// Where config folders go in containers.
const ZK_CONF_IN: &str = "/etc/ferry/zookeeper";
const SPARK_CONF_IN: &str = "/etc/ferry/spark";
/// Where the Spark RPC secret's folder goes in containers, and its file.
/// The Spark RPC secret's file on a host, in `--env-file` form: Spark
/// daemons read `_SPARK_AUTH_SECRET` from their environment.
pub const SECRET_FILE: &str = "spark.env";
pub const SECRET_VAR: &str = "_SPARK_AUTH_SECRET";
/// With `zookeeper.auth = "sasl"`: where the JAAS files' folders go in
/// containers (the ZooKeeper server's own folder; the masters get the
/// secret's folder), and the files' names.
pub const ZK_SECRET_IN: &str = "/etc/ferry/zookeeper-secret";
const SPARK_SECRET_IN: &str = "/etc/ferry/secret";
pub const ZK_SERVER_JAAS: &str = "zookeeper-server.jaas";
const ZK_CLIENT_JAAS: &str = "zookeeper-client.jaas";

/// The image's labels, each read through the grammar of what it names:
/// a value that does not fit is refused here, before any plan holds it.
struct Labels<'a> {
    facts: &'a ImageFacts,
}

impl Labels<'_> {
    fn get(&self, label: &str, grammar: fn(&str) -> Result<(), String>) -> Result<&str, PlanError> {
        let value = self
            .facts
            .labels
            .get(label)
            .map(String::as_str)
            .ok_or_else(|| PlanError::MissingLabel {
                reference: self.facts.reference.clone(),
                label: label.to_string(),
            })?;
        grammar(value).map_err(|why| PlanError::BadLabel {
            reference: self.facts.reference.clone(),
            label: label.to_string(),
            shown: value.escape_debug().to_string(),
            why,
        })?;
        Ok(value)
    }

    fn user(&self, label: &str) -> Result<&str, PlanError> {
        self.get(label, grammar::user)
    }

    fn path(&self, label: &str) -> Result<&str, PlanError> {
        self.get(label, grammar::path)
    }

    fn command(&self, label: &str) -> Result<&str, PlanError> {
        self.get(label, grammar::command)
    }
}

/// Labels other commands read from the image (`ferry submit` runs
/// `ferry.sample-job`), checked with the plan's so that no command takes
/// an image the plan would refuse.
const OPTIONAL_PATH_LABELS: &[&str] = &["ferry.sample-job"];

/// What every part of the plan reads: the file, the image, the cluster's
/// name and its config root on the hosts.
struct Base<'a> {
    file: &'a ClusterFile,
    image: &'a ImageFacts,
    cluster: &'a str,
    /// `/etc/ferry/<cluster>`.
    conf_root: String,
}

impl Base<'_> {
    /// A host's address (every role's host is a `[[host]]`, checked).
    fn addr(&self, h: &str) -> String {
        self.file
            .host(h)
            .map(|h| h.address.clone())
            .expect("checked: every role's host is a [[host]]")
    }

    /// A container of `role` with what every container of the cluster has.
    fn container(&self, role: Role, user: &str, command: Vec<String>) -> Container {
        let cluster = self.cluster;
        Container {
            name: format!("ferry-{cluster}-{}", role.as_str()),
            role,
            image: self.image.reference.clone(),
            image_digest: self.image.digest.clone(),
            user: user.to_string(),
            command,
            env: BTreeMap::new(),
            mounts: Vec::new(),
            ports: Vec::new(),
            network: "host".into(),
            // a worker that finds no master exits after its registration
            // attempts; the runtime brings it back
            restart: "unless-stopped".into(),
            env_file: None,
            labels: BTreeMap::from([
                ("ferry.cluster".to_string(), cluster.to_string()),
                ("ferry.role".to_string(), role.as_str().to_string()),
            ]),
        }
    }
}

/// Computes the plan. `file` has been checked by [`ClusterFile::parse`].
pub fn plan(file: &ClusterFile, image: &ImageFacts) -> Result<Plan, PlanError> {
    let labels = Labels { facts: image };
    check_image(image, &labels)?;
    let cluster = file.name.get_ref().as_str();
    let b = Base {
        file,
        image,
        cluster,
        conf_root: format!("/etc/ferry/{cluster}"),
    };
    let m = &file.spark.masters;
    let master_url = format!(
        "spark://{}",
        m.hosts
            .iter()
            .map(|h| format!("{}:{}", b.addr(h.get_ref()), m.port))
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut hosts = host_plans(file);
    let zk_url = roles::zookeeper(&b, &labels, &mut hosts)?;
    roles::spark(&b, &labels, &zk_url, &master_url, &mut hosts)?;
    label_specs(&mut hosts);
    let steps = steps(&b, &hosts, &zk_url);
    let mut plan = Plan {
        cluster: cluster.to_string(),
        plan_hash: String::new(),
        image: ImageRef {
            reference: image.reference.clone(),
            digest: image.digest.clone(),
            config_digest: image.config_digest.clone(),
        },
        runtime: file.runtime.as_str().into(),
        delivery: file.delivery.get_ref().clone(),
        master_url,
        // in the order of the cluster file, which is the operator's order
        hosts: file
            .hosts
            .iter()
            .map(|h| {
                hosts
                    .remove(h.name.get_ref())
                    .expect("every host is planned")
            })
            .collect(),
        steps,
    };
    let v = serde_json::to_value(&plan).expect("a plan serialises");
    plan.plan_hash = format!(
        "sha256:{}",
        crate::oci::sha256_hex(&crate::oci::canonical(&v))
    );
    Ok(plan)
}

/// Checks the image's reference and digests, and the optional labels, by
/// their grammars.
fn check_image(image: &ImageFacts, labels: &Labels) -> Result<(), PlanError> {
    for (what, value, grammar) in [
        (
            "reference",
            &image.reference,
            grammar::image_reference as fn(&str) -> _,
        ),
        ("manifest digest", &image.digest, grammar::digest),
        ("config digest", &image.config_digest, grammar::digest),
    ] {
        grammar(value).map_err(|why| PlanError::BadImage {
            what,
            shown: value.escape_debug().to_string(),
            why,
        })?;
    }
    for l in OPTIONAL_PATH_LABELS {
        if image.labels.contains_key(*l) {
            labels.path(l)?;
        }
    }
    Ok(())
}

/// Every `[[host]]` of the file, with nothing on it yet.
fn host_plans(file: &ClusterFile) -> BTreeMap<String, HostPlan> {
    let mut hosts: BTreeMap<String, HostPlan> = BTreeMap::new();
    for h in &file.hosts {
        let user = h.ssh.user.as_deref().unwrap_or(CLUSTER_DEFAULT_USER);
        let port = h.ssh.port.unwrap_or(22);
        hosts.insert(
            h.name.get_ref().clone(),
            HostPlan {
                name: h.name.get_ref().clone(),
                address: h.address.clone(),
                ssh: format!("{user}@{}:{port}", h.address),
                jump: h.ssh.jump.clone(),
                key: h.ssh.key.as_ref().map(|k| k.display().to_string()),
                labels: h.labels.clone(),
                dirs: Vec::new(),
                files: Vec::new(),
                secret: None,
                jaas: Vec::new(),
                containers: Vec::new(),
            },
        );
    }
    hosts
}

/// Sorts each host's folders and files, and labels each container with a
/// hash of its own spec, so the launcher recreates only those whose spec
/// (or files) changed.
fn label_specs(hosts: &mut BTreeMap<String, HostPlan>) {
    for hp in hosts.values_mut() {
        hp.dirs.sort_by(|a, b| a.path.cmp(&b.path));
        hp.dirs.dedup_by(|a, b| a.path == b.path);
        hp.files.sort_by(|a, b| a.path.cmp(&b.path));
        hp.files.dedup_by(|a, b| a.path == b.path);
        let files = hp.files.clone();
        for c in &mut hp.containers {
            let mine: Vec<&FilePlan> = files
                .iter()
                .filter(|f| {
                    c.mounts
                        .iter()
                        .any(|m| f.path.starts_with(&format!("{}/", m.source)))
                })
                .collect();
            let spec = serde_json::json!({ "container": &*c, "files": mine });
            let hash = crate::oci::sha256_hex(&crate::oci::canonical(&spec));
            c.labels
                .insert("ferry.spec".into(), format!("sha256:{hash}"));
        }
    }
}

/// The steps in order, each with the hosts it runs on and its gate.
fn steps(b: &Base, hosts: &BTreeMap<String, HostPlan>, zk_url: &str) -> Vec<Step> {
    let (file, m, w) = (b.file, &b.file.spark.masters, &b.file.spark.workers);
    let busy: Vec<String> = hosts
        .values()
        .filter(|h| !h.containers.is_empty())
        .map(|h| h.name.clone())
        .collect();
    let names = |list: &[toml::Spanned<String>]| {
        list.iter().map(|h| h.get_ref().clone()).collect::<Vec<_>>()
    };
    let status_urls: Vec<String> = m
        .hosts
        .iter()
        .map(|h| format!("http://{}:{}/json/", b.addr(h.get_ref()), m.ui_port))
        .collect();
    let mut steps = vec![
        Step {
            action: Action::DeliverImage,
            hosts: busy.clone(),
            gate: None,
        },
        Step {
            action: Action::WriteFiles,
            hosts: busy,
            gate: None,
        },
    ];
    if let Some(zk) = &file.zookeeper {
        steps.push(Step {
            action: Action::StartZookeeper,
            hosts: names(&zk.hosts),
            gate: Some(Gate::ZookeeperLeader {
                servers: zk_url.split(',').map(str::to_string).collect(),
                deadline_secs: ZK_DEADLINE,
            }),
        });
    }
    steps.push(Step {
        action: Action::StartMasters,
        hosts: names(&m.hosts),
        gate: Some(Gate::OneMasterAlive {
            status_urls: status_urls.clone(),
            deadline_secs: MASTER_DEADLINE,
        }),
    });
    steps.push(Step {
        action: Action::StartWorkers,
        hosts: names(&w.hosts),
        gate: Some(Gate::WorkersRegistered {
            status_urls,
            workers: w
                .hosts
                .iter()
                .map(|h| format!("{}:{}", b.addr(h.get_ref()), w.port))
                .collect(),
            deadline_secs: WORKER_DEADLINE,
        }),
    });
    steps
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

fn dir(path: &str, owner: &str, mode: &str) -> Dir {
    Dir {
        path: path.to_string(),
        owner: owner.to_string(),
        mode: mode.to_string(),
    }
}

fn file_plan(path: &str, content: String) -> FilePlan {
    FilePlan {
        path: path.to_string(),
        mode: "0644".into(),
        sha256: crate::oci::sha256_hex(content.as_bytes()),
        content,
    }
}

fn mount(source: &str, target: &str, read_only: bool) -> Mount {
    Mount {
        source: source.to_string(),
        target: target.to_string(),
        read_only,
    }
}

fn port(port: u16, purpose: &str) -> Port {
    Port {
        port,
        purpose: purpose.to_string(),
    }
}
