//! The cluster file (TOML): which hosts there are, which image runs on them,
//! and which roles (ZooKeeper, Spark masters, Spark workers) each host plays.
//!
//! This module parses and checks the file; every refusal happens here, with
//! the file, the line and the field in one line of text. It knows nothing of
//! images or of how a plan is laid out, and it never touches a host.
//!
//! Here: the schema (serde types, deny unknown fields) and its accessors;
//! `check`: the checks `parse` runs on a file that parses; `edit`: the
//! rewrite `ferry scale` makes of a file's workers.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

mod check;
pub mod edit;

/// The image `ferry build` makes with no argument; used when a cluster file
/// names no image.
pub const DEFAULT_IMAGE: &str = "ferry/spark:3.5.3";

/// The cluster `ferry up --local` runs when given no file.
pub const LOCAL_CLUSTER: &str = include_str!("../../../examples/local.toml");

/// The largest ZooKeeper ensemble a cluster file may ask for.
pub const MAX_ENSEMBLE: usize = 7;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// Names containers and config folders on the hosts, so several clusters
    /// can share hosts.
    pub name: Spanned<String>,
    #[serde(rename = "host")]
    pub hosts: Vec<Host>,
    #[serde(default)]
    pub image: ImageSource,
    #[serde(default)]
    pub runtime: Runtime,
    /// `ssh` (push the image's missing blobs over SSH) or an object-storage
    /// URL the hosts fetch the image from.
    #[serde(default = "default_delivery")]
    pub delivery: Spanned<String>,
    /// Where an object-storage `delivery` is served (`ferry pull --cluster`);
    /// the command line's --endpoint, --region and --url-style win.
    #[serde(default)]
    pub object_store: ObjectStore,
    pub zookeeper: Option<ZooKeeper>,
    pub spark: Spark,
}

/// The `[object_store]` table: no credentials, only where the service is.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectStore {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// `path` or `virtual`.
    pub url_style: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    pub name: Spanned<String>,
    /// An IP or a name every host resolves; used as is in every URL and config.
    pub address: String,
    #[serde(default)]
    pub ssh: Ssh,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// This host's worker size, when it differs from `[spark.workers]`'s
    /// (`ferry scale --add-worker HOST --cores N --memory M` writes it).
    pub worker: Option<Spanned<WorkerSize>>,
}

/// A worker's cores and memory; what is left out comes from `[spark.workers]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WorkerSize {
    pub cores: Option<u32>,
    pub memory: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ssh {
    pub user: Option<String>,
    pub port: Option<u16>,
    /// A private key file; passwords are never read from a cluster file.
    pub key: Option<PathBuf>,
    /// A host to hop through, as `user@host[:port]` or a host's name.
    pub jump: Option<String>,
}

/// A built layout (preferred: the plan then pins its digest and reads its
/// labels) or a reference already known to the hosts' runtime.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSource {
    pub layout: Option<PathBuf>,
    pub reference: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    #[default]
    Docker,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
        }
    }
}

fn default_delivery() -> Spanned<String> {
    Spanned::new(0..0, "ssh".to_string())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZooKeeper {
    /// 1, 3, 5 or 7 servers.
    pub hosts: Vec<Spanned<String>>,
    /// The servers' `myid`s, in the order of `hosts` [default: 1, 2, 3...].
    pub ids: Option<Spanned<Vec<u32>>>,
    #[serde(default = "port::<2181>")]
    pub client_port: u16,
    #[serde(default = "port::<2888>")]
    pub peer_port: u16,
    #[serde(default = "port::<3888>")]
    pub election_port: u16,
    /// The AdminServer's port; without it the AdminServer is off (its default,
    /// 8080, is the Spark master UI's).
    pub admin_port: Option<Spanned<u16>>,
    /// [default: /var/lib/ferry/<cluster name>/zookeeper]
    pub data_dir: Option<String>,
    #[serde(default)]
    pub jvm_options: Vec<Spanned<String>>,
    /// Who may open a session: `none` (anyone who reaches the client port,
    /// ZooKeeper's default) or `sasl` (only the cluster's masters, which log
    /// in with a per-cluster password; every other session is closed).
    #[serde(default = "default_zookeeper_auth")]
    pub auth: Spanned<String>,
}

impl ZooKeeper {
    /// `auth = "sasl"`: the ensemble refuses sessions that did not log in.
    pub fn sasl(&self) -> bool {
        self.auth.get_ref() == "sasl"
    }
}

fn default_zookeeper_auth() -> Spanned<String> {
    Spanned::new(0..0, "none".to_string())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spark {
    pub masters: Masters,
    pub workers: Workers,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Masters {
    pub hosts: Vec<Spanned<String>>,
    #[serde(default = "port::<7077>")]
    pub port: u16,
    #[serde(default = "port::<8080>")]
    pub ui_port: u16,
    /// `spark.deploy.zookeeper.dir` [default: /ferry/<cluster name>]
    pub zookeeper_dir: Option<String>,
    #[serde(default)]
    pub properties: BTreeMap<String, Spanned<PropValue>>,
    #[serde(default)]
    pub jvm_options: Vec<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workers {
    pub hosts: Vec<Spanned<String>>,
    #[serde(default = "default_cores")]
    pub cores: u32,
    #[serde(default = "default_memory")]
    pub memory: String,
    /// [default: /var/lib/ferry/<cluster name>/spark-work]
    pub work_dir: Option<String>,
    #[serde(default = "port::<7078>")]
    pub port: u16,
    #[serde(default = "port::<8081>")]
    pub ui_port: u16,
    /// A UI port for some workers, by host name, instead of `ui_port`.
    #[serde(default)]
    pub ui_ports: BTreeMap<String, u16>,
    /// The masters the workers register with [default: all of them]; when
    /// given it must name every master.
    pub masters: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub properties: BTreeMap<String, Spanned<PropValue>>,
    #[serde(default)]
    pub jvm_options: Vec<Spanned<String>>,
}

/// A Spark property's value, as written into spark-defaults.conf.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PropValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl fmt::Display for PropValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PropValue::Bool(b) => write!(f, "{b}"),
            PropValue::Int(i) => write!(f, "{i}"),
            PropValue::Float(x) => write!(f, "{x}"),
            PropValue::Str(s) => f.write_str(s),
        }
    }
}

const fn port<const P: u16>() -> u16 {
    P
}
fn default_cores() -> u32 {
    2
}
fn default_memory() -> String {
    "1g".into()
}

/// A cluster file that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot read `{}`", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", invalid_line(file, line, field, message))]
    Invalid {
        file: PathBuf,
        line: Option<usize>,
        /// The field, as a dotted path (`zookeeper.hosts`); empty when the
        /// TOML itself is broken.
        field: String,
        message: String,
    },
}

/// `path:line: \`field\`: message`, like the image definition's errors, so
/// an editor can jump to the line.
fn invalid_line(file: &Path, line: &Option<usize>, field: &str, message: &str) -> String {
    let mut s = file.display().to_string();
    if let Some(l) = line {
        s.push_str(&format!(":{l}"));
    }
    s.push_str(": ");
    if !field.is_empty() {
        s.push_str(&format!("`{field}`: "));
    }
    s.push_str(message);
    s
}

/// Spark properties ferry derives from the roles; setting them by hand would
/// let the masters and the ensemble disagree.
pub const DERIVED_PROPERTIES: &[&str] = &[
    "spark.deploy.recoveryMode",
    "spark.deploy.zookeeper.url",
    "spark.deploy.zookeeper.dir",
    "spark.authenticate",
    "spark.authenticate.secret.file",
];

/// The JVM property naming the JAAS file the ZooKeeper server and its
/// clients log in with.
pub const LOGIN_CONFIG: &str = "java.security.auth.login.config";

impl ClusterFile {
    /// Reads, parses and checks a cluster file.
    pub fn load(path: &Path) -> Result<ClusterFile, ClusterError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClusterError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        ClusterFile::parse(&text, path)
    }

    /// Parses and checks cluster file text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<ClusterFile, ClusterError> {
        let at = At { text, path };
        let file: ClusterFile = toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|s| s.start);
            let message = e.message().trim().replace('\n', " ");
            // a value of the wrong type: the message names no key
            let field = match offset {
                Some(o) if message.starts_with("invalid ") => field_at(text, o),
                _ => String::new(),
            };
            at.err(offset, &field, message)
        })?;
        file.check(&at)?;
        Ok(file)
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name.get_ref() == name)
    }

    /// The ZooKeeper servers as (myid, host name), in the order given.
    pub fn zookeeper_servers(&self) -> Vec<(u32, String)> {
        let Some(zk) = &self.zookeeper else {
            return Vec::new();
        };
        zk.hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let id = match &zk.ids {
                    Some(ids) => ids.get_ref()[i],
                    None => i as u32 + 1,
                };
                (id, h.get_ref().clone())
            })
            .collect()
    }

    /// The cores and memory of the worker on `host`.
    pub fn worker_size(&self, host: &str) -> (u32, String) {
        let w = &self.spark.workers;
        let own = self
            .host(host)
            .and_then(|h| h.worker.as_ref())
            .map(|s| s.get_ref().clone())
            .unwrap_or_default();
        (
            own.cores.unwrap_or(w.cores),
            own.memory.unwrap_or_else(|| w.memory.clone()),
        )
    }

    pub fn worker_ui_port(&self, host: &str) -> u16 {
        let w = &self.spark.workers;
        w.ui_ports.get(host).copied().unwrap_or(w.ui_port)
    }

    // data folders are per cluster by default: two ensembles sharing one
    // ZooKeeper data folder would corrupt each other silently
    pub fn zookeeper_data_dir(&self) -> String {
        self.zookeeper
            .as_ref()
            .and_then(|z| z.data_dir.clone())
            .unwrap_or_else(|| format!("/var/lib/ferry/{}/zookeeper", self.name.get_ref()))
    }

    pub fn work_dir(&self) -> String {
        self.spark
            .workers
            .work_dir
            .clone()
            .unwrap_or_else(|| format!("/var/lib/ferry/{}/spark-work", self.name.get_ref()))
    }

    pub fn zookeeper_dir(&self) -> String {
        self.spark
            .masters
            .zookeeper_dir
            .clone()
            .unwrap_or_else(|| format!("/ferry/{}", self.name.get_ref()))
    }
}

/// The dotted field of the `key = value` line at `offset`, under the last
/// `[table]` header above it; empty when the line is no such line.
fn field_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("");
    let Some((key, _)) = line.split_once('=') else {
        return String::new();
    };
    let table = text[..start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim());
    match table {
        Some(t) => format!("{t}.{}", key.trim()),
        None => key.trim().to_string(),
    }
}

/// `message` with its control characters escaped (`\n`, `\u{1b}`): a
/// refusal is one line, whatever the value it quotes holds.
fn one_line(message: &str) -> String {
    message
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The file being checked, to turn byte offsets into line numbers.
struct At<'a> {
    text: &'a str,
    path: &'a Path,
}

impl At<'_> {
    fn err(&self, offset: Option<usize>, field: &str, message: String) -> ClusterError {
        ClusterError::Invalid {
            file: self.path.to_path_buf(),
            line: offset.map(|o| self.text[..o.min(self.text.len())].matches('\n').count() + 1),
            field: field.to_string(),
            message: one_line(&message),
        }
    }
    fn spanned<T>(&self, s: &Spanned<T>, field: &str, message: String) -> ClusterError {
        let span = s.span();
        // a default value has an empty span at 0: it has no line
        let offset = (span.end > 0).then_some(span.start);
        self.err(offset, field, message)
    }
}
