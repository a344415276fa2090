//! The cluster file (TOML): which hosts there are, which image runs on them,
//! and which roles (ZooKeeper, Spark masters, Spark workers) each host plays.
//!
//! This module parses and checks the file; every refusal happens here, with
//! the file, the line and the field in one line of text. It knows nothing of
//! images or of how a plan is laid out, and it never touches a host.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::grammar;

/// The image `ferry build` makes with no argument; used when a cluster file
/// names no image.
pub const DEFAULT_IMAGE: &str = "ferry/spark:3.5.3";

/// The cluster `ferry up --local` runs when given no file.
pub const LOCAL_CLUSTER: &str = include_str!("../../examples/local.toml");

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

    fn check(&self, at: &At) -> Result<(), ClusterError> {
        let name = self.name.get_ref();
        if let Err(why) = grammar::cluster_name(name) {
            return Err(at.spanned(&self.name, "name", format!("`{name}` {why}")));
        }
        let mut seen = BTreeSet::new();
        for h in &self.hosts {
            let n = h.name.get_ref();
            if let Err(why) = grammar::host_name(n) {
                return Err(at.spanned(
                    &h.name,
                    "host.name",
                    format!("`{}` {why}", n.escape_debug()),
                ));
            }
            if !seen.insert(n.as_str()) {
                return Err(at.spanned(
                    &h.name,
                    "host.name",
                    format!("host `{n}` is listed twice; give each host its own name"),
                ));
            }
            if h.address.is_empty() {
                return Err(at.spanned(
                    &h.name,
                    "host.address",
                    format!("host `{n}` has an empty address"),
                ));
            }
            self.check_host(h, at)?;
        }
        self.check_delivery(at)?;
        self.check_image(at)?;
        if let Some(img) = &self.image.reference
            && self.image.layout.is_some()
        {
            return Err(at.err(
                None,
                "image",
                format!("give `layout` or `reference`, not both (reference `{img}`)"),
            ));
        }
        self.check_roles(at)?;
        self.check_ports(at)
    }

    /// A host's address, SSH login, jump host, key path and labels: each
    /// reaches SSH, a host script, a config file or the plan's text.
    fn check_host(&self, h: &Host, at: &At) -> Result<(), ClusterError> {
        let n = h.name.get_ref();
        // no span: the error names the host, and the line of its name
        let err = |field: &str, message: String| {
            at.spanned(&h.name, field, format!("host `{n}`: {message}"))
        };
        let shown = |s: &str| s.escape_debug().to_string();
        if let Err(why) = grammar::address(&h.address) {
            return Err(err(
                "host.address",
                format!("`{}` {why}", shown(&h.address)),
            ));
        }
        if let Some(u) = &h.ssh.user
            && let Err(why) = grammar::login(u)
        {
            return Err(err("host.ssh.user", format!("`{}` {why}", shown(u))));
        }
        if h.ssh.port == Some(0) {
            return Err(err("host.ssh.port", "port 0 is no port".into()));
        }
        if let Some(k) = &h.ssh.key {
            let k = k.display().to_string();
            if grammar::has_control(&k) {
                return Err(err(
                    "host.ssh.key",
                    format!("`{}` holds a control character", shown(&k)),
                ));
            }
        }
        if let Some(j) = &h.ssh.jump
            && self.host(j).is_none()
            && let Err(why) = jump(j)
        {
            return Err(err(
                "host.ssh.jump",
                format!(
                    "`{}` is neither a host of the file nor `user@address[:port]`: {why}",
                    shown(j)
                ),
            ));
        }
        for (k, v) in &h.labels {
            if grammar::property_key(k).is_err() {
                return Err(err(
                    "host.labels",
                    format!(
                        "`{}` is not a label name (letters, digits and `._-`)",
                        shown(k)
                    ),
                ));
            }
            if grammar::has_control(v) {
                return Err(err(
                    "host.labels",
                    format!(
                        "the value of `{k}` (`{}`) holds a control character",
                        shown(v)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The image the hosts run: a reference Docker reads, or a layout path.
    fn check_image(&self, at: &At) -> Result<(), ClusterError> {
        if let Some(r) = &self.image.reference
            && let Err(why) = grammar::image_reference(r)
        {
            return Err(at.err(
                None,
                "image.reference",
                format!("`{}` {why}", r.escape_debug()),
            ));
        }
        if let Some(l) = &self.image.layout {
            let l = l.display().to_string();
            if grammar::has_control(&l) {
                return Err(at.err(
                    None,
                    "image.layout",
                    format!("`{}` holds a control character", l.escape_debug()),
                ));
            }
        }
        Ok(())
    }

    fn check_delivery(&self, at: &At) -> Result<(), ClusterError> {
        let d = self.delivery.get_ref();
        if d == "ssh" {
            return Ok(());
        }
        let Some((scheme, rest)) = d.split_once("://") else {
            return Err(at.spanned(
                &self.delivery,
                "delivery",
                format!("`{d}` is neither `ssh` nor an object-storage URL (`s3://bucket/prefix`)"),
            ));
        };
        // what `ferry up` can have the hosts pull from (src/objstore)
        if !["s3", "oss"].contains(&scheme) {
            return Err(at.spanned(
                &self.delivery,
                "delivery",
                format!(
                    "`{scheme}://` is not a delivery ferry can pull from: use `ssh`, `s3://bucket/prefix` (any S3-compatible store, with `[object_store] endpoint`) or `oss://bucket/prefix`"
                ),
            ));
        }
        if rest
            .split('/')
            .next()
            .is_some_and(|auth| auth.contains('@'))
        {
            return Err(at.spanned(
                &self.delivery,
                "delivery",
                "the URL carries credentials; keep secrets out of cluster files (ferry reads the keys from the environment or --credentials-file on the machine it runs on, and hosts get only presigned URLs)".into(),
            ));
        }
        // the bucket and prefix end up in the URLs the hosts fetch
        if let Err(e) = crate::objstore::Location::parse(d) {
            return Err(at.spanned(&self.delivery, "delivery", e.to_string()));
        }
        if let Err(why) = grammar::prefix(rest.split_once('/').map_or("", |(_, p)| p)) {
            return Err(at.spanned(
                &self.delivery,
                "delivery",
                format!("`{}` {why}", d.escape_debug()),
            ));
        }
        if let Some(e) = &self.object_store.endpoint
            && let Err(why) = grammar::endpoint(e)
        {
            return Err(at.err(
                None,
                "object_store.endpoint",
                format!("`{}` {why}", e.escape_debug()),
            ));
        }
        if let Some(r) = &self.object_store.region
            && let Err(why) = grammar::region(r)
        {
            return Err(at.err(
                None,
                "object_store.region",
                format!("`{}` {why}", r.escape_debug()),
            ));
        }
        if let Some(s) = self
            .object_store
            .url_style
            .as_deref()
            .filter(|s| !["path", "virtual"].contains(s))
        {
            return Err(at.err(
                None,
                "object_store.url_style",
                format!("`{s}` is not a URL style: write `path` or `virtual`"),
            ));
        }
        Ok(())
    }

    fn check_roles(&self, at: &At) -> Result<(), ClusterError> {
        let known = |list: &[Spanned<String>], field: &str| -> Result<(), ClusterError> {
            let mut seen = BTreeSet::new();
            for h in list {
                if self.host(h.get_ref()).is_none() {
                    return Err(at.spanned(
                        h,
                        field,
                        format!(
                            "unknown host `{}`; add a [[host]] with that name (known: {})",
                            h.get_ref(),
                            self.host_names()
                        ),
                    ));
                }
                if !seen.insert(h.get_ref()) {
                    return Err(at.spanned(
                        h,
                        field,
                        format!("host `{}` is listed twice", h.get_ref()),
                    ));
                }
            }
            Ok(())
        };
        if let Some(zk) = &self.zookeeper {
            known(&zk.hosts, "zookeeper.hosts")?;
            let n = zk.hosts.len();
            let first = zk.hosts.first();
            if n % 2 == 0 {
                let line_of = first.map(|h| h.span().start);
                return Err(at.err(
                    line_of,
                    "zookeeper.hosts",
                    format!("the ensemble has {n} servers; ZooKeeper needs an odd number (1, 3 or 5) to keep a majority: add or remove one"),
                ));
            }
            // every write waits on a majority: past 7 servers each one
            // slows writes and elections, and Spark's few znodes gain
            // nothing (5 already survives two failures)
            if n > MAX_ENSEMBLE {
                let line_of = first.map(|h| h.span().start);
                return Err(at.err(
                    line_of,
                    "zookeeper.hosts",
                    format!("the ensemble has {n} servers; ferry runs at most {MAX_ENSEMBLE} (3 or 5 suit a Spark cluster; more slow every write and election): keep 3 or 5 of them"),
                ));
            }
            if let Some(ids) = &zk.ids {
                let v = ids.get_ref();
                if v.len() != n {
                    return Err(at.spanned(
                        ids,
                        "zookeeper.ids",
                        format!(
                            "{} ids for {n} servers: give one id per host, in the order of `hosts`",
                            v.len()
                        ),
                    ));
                }
                let mut seen = BTreeSet::new();
                for id in v {
                    if *id == 0 || *id > 255 {
                        return Err(at.spanned(
                            ids,
                            "zookeeper.ids",
                            format!("id {id} is out of range: use 1 to 255"),
                        ));
                    }
                    if !seen.insert(id) {
                        return Err(at.spanned(
                            ids,
                            "zookeeper.ids",
                            format!("id {id} is given twice; every server needs its own `myid`"),
                        ));
                    }
                }
            }
            check_jvm_options(&zk.jvm_options, "zookeeper.jvm_options", at)?;
            let auth = zk.auth.get_ref();
            if !["none", "sasl"].contains(&auth.as_str()) {
                return Err(at.spanned(
                    &zk.auth,
                    "zookeeper.auth",
                    format!("`{auth}` is not a ZooKeeper client authentication ferry knows: use `none` (the default) or `sasl` (only the cluster's masters get a session)"),
                ));
            }
            if zk.sasl() {
                for (opts, field) in [
                    (&zk.jvm_options, "zookeeper.jvm_options"),
                    (&self.spark.masters.jvm_options, "spark.masters.jvm_options"),
                ] {
                    if let Some(o) = opts
                        .iter()
                        .find(|o| o.get_ref().starts_with(&format!("-D{LOGIN_CONFIG}=")))
                    {
                        return Err(at.spanned(
                            o,
                            field,
                            format!("`{LOGIN_CONFIG}` is set by ferry when `zookeeper.auth` is `sasl`; remove it here"),
                        ));
                    }
                }
            }
        }
        let m = &self.spark.masters;
        let w = &self.spark.workers;
        known(&m.hosts, "spark.masters.hosts")?;
        known(&w.hosts, "spark.workers.hosts")?;
        if m.hosts.is_empty() {
            return Err(at.err(
                None,
                "spark.masters.hosts",
                "no master: list at least one host".into(),
            ));
        }
        if w.hosts.is_empty() {
            return Err(at.err(
                None,
                "spark.workers.hosts",
                "no worker: list at least one host".into(),
            ));
        }
        if m.hosts.len() >= 2 && self.zookeeper.is_none() {
            return Err(at.spanned(
                &m.hosts[1],
                "spark.masters.hosts",
                format!(
                    "{} masters but no [zookeeper] ensemble: standby masters need ZooKeeper to elect a leader; add a [zookeeper] section or keep one master",
                    m.hosts.len()
                ),
            ));
        }
        if let Some(listed) = &w.masters {
            let want: BTreeSet<&str> = m.hosts.iter().map(|h| h.get_ref().as_str()).collect();
            let got: BTreeSet<&str> = listed.get_ref().iter().map(String::as_str).collect();
            if let Some(missing) = want.difference(&got).next() {
                return Err(at.spanned(
                    listed,
                    "spark.workers.masters",
                    format!("master `{missing}` is missing: workers must list every master or they cannot follow a failover (leave `masters` out and ferry lists them all)"),
                ));
            }
            if let Some(extra) = got.difference(&want).next() {
                return Err(at.spanned(
                    listed,
                    "spark.workers.masters",
                    format!("`{extra}` is not one of `spark.masters.hosts`"),
                ));
            }
        }
        for host in w.ui_ports.keys() {
            if !w.hosts.iter().any(|h| h.get_ref() == host) {
                return Err(at.err(
                    None,
                    "spark.workers.ui_ports",
                    format!("`{host}` is not one of `spark.workers.hosts`"),
                ));
            }
        }
        if w.cores == 0 {
            return Err(at.err(None, "spark.workers.cores", "must be at least 1".into()));
        }
        if let Some(why) = worker_memory_problem(&w.memory) {
            return Err(at.err(None, "spark.workers.memory", why));
        }
        for h in &self.hosts {
            let Some(size) = &h.worker else { continue };
            let field = format!("host `{}`.worker", h.name.get_ref());
            if size.get_ref().cores == Some(0) {
                return Err(at.spanned(
                    size,
                    &format!("{field}.cores"),
                    "must be at least 1".into(),
                ));
            }
            if let Some(why) = size
                .get_ref()
                .memory
                .as_deref()
                .and_then(worker_memory_problem)
            {
                return Err(at.spanned(size, &format!("{field}.memory"), why));
            }
        }
        for (role, props) in [
            ("spark.masters", &m.properties),
            ("spark.workers", &w.properties),
        ] {
            for (k, v) in props {
                let field = format!("{role}.properties");
                if DERIVED_PROPERTIES.contains(&k.as_str()) {
                    return Err(at.spanned(
                        v,
                        &field,
                        format!(
                            "`{k}` is set by ferry ({}); remove it here",
                            if k.starts_with("spark.authenticate") {
                                "RPC authentication with the cluster's own secret is always on"
                            } else {
                                "from the [zookeeper] section"
                            }
                        ),
                    ));
                }
                if looks_secret(k) {
                    return Err(at.spanned(
                        v,
                        &field,
                        format!("`{k}` looks like a secret; ferry keeps secrets out of cluster files and plans"),
                    ));
                }
                if let Err(why) = grammar::property_key(k) {
                    return Err(at.spanned(v, &field, format!("`{}` {why}", k.escape_debug())));
                }
                let value = v.get_ref().to_string();
                if let Err(why) = grammar::property_value(&value) {
                    return Err(at.spanned(
                        v,
                        &field,
                        format!("the value of `{k}` (`{}`) {why}", value.escape_debug()),
                    ));
                }
            }
        }
        check_jvm_options(&m.jvm_options, "spark.masters.jvm_options", at)?;
        check_jvm_options(&w.jvm_options, "spark.workers.jvm_options", at)?;
        for (field, dir) in [
            ("spark.workers.work_dir", self.work_dir()),
            ("zookeeper.data_dir", self.zookeeper_data_dir()),
        ] {
            // a host folder, a `--volume` source, `dataDir=` of zoo.cfg
            if let Err(why) = grammar::path(&dir) {
                return Err(at.err(None, field, format!("`{}` {why}", dir.escape_debug())));
            }
        }
        // a container owns and mounts these folders: one inside another (or
        // holding ferry's config folders) could be swapped for a link by
        // the outer folder's container while `up` works in it as root
        let planned = [
            ("spark.workers.work_dir", self.work_dir()),
            ("zookeeper.data_dir", self.zookeeper_data_dir()),
        ];
        let inside =
            |inner: &str, outer: &str| inner == outer || inner.starts_with(&format!("{outer}/"));
        for (i, (outer_field, outer)) in planned.iter().enumerate() {
            for (inner_field, inner) in &planned[i + 1..] {
                let (inner_field, inner, outer_field, outer) = if inside(inner, outer) {
                    (inner_field, inner, outer_field, outer)
                } else if inside(outer, inner) {
                    (outer_field, outer, inner_field, inner)
                } else {
                    continue;
                };
                return Err(at.err(
                    None,
                    inner_field,
                    format!("`{inner}` is inside `{outer_field}` (`{outer}`), a folder a container owns: give each its own folder, side by side"),
                ));
            }
            let conf = format!("/etc/ferry/{}", self.name.get_ref());
            if inside(&conf, outer) {
                return Err(at.err(
                    None,
                    outer_field,
                    format!("`{outer}` would hold ferry's config folder `{conf}`, which only root may write: name another folder"),
                ));
            }
        }
        // written into spark-defaults.conf, and a latch path on the ZooKeeper side
        let dir = self.zookeeper_dir();
        if let Err(why) = grammar::znode(&dir) {
            return Err(at.err(
                None,
                "spark.masters.zookeeper_dir",
                format!("`{}` {why}", dir.escape_debug()),
            ));
        }
        Ok(())
    }

    /// Two roles may not listen on one port of one host: every container
    /// uses the host's network.
    fn check_ports(&self, at: &At) -> Result<(), ClusterError> {
        let m = &self.spark.masters;
        let w = &self.spark.workers;
        let mut given = vec![
            ("spark.masters.port", m.port),
            ("spark.masters.ui_port", m.ui_port),
            ("spark.workers.port", w.port),
            ("spark.workers.ui_port", w.ui_port),
        ];
        given.extend(w.ui_ports.values().map(|p| ("spark.workers.ui_ports", *p)));
        if let Some(zk) = &self.zookeeper {
            given.extend([
                ("zookeeper.client_port", zk.client_port),
                ("zookeeper.peer_port", zk.peer_port),
                ("zookeeper.election_port", zk.election_port),
            ]);
            given.extend(
                zk.admin_port
                    .as_ref()
                    .map(|p| ("zookeeper.admin_port", *p.get_ref())),
            );
        }
        if let Some((field, _)) = given.iter().find(|(_, p)| *p == 0) {
            return Err(at.err(
                None,
                field,
                "port 0 is no port: give the port to listen on".into(),
            ));
        }
        let mut claims: Vec<(String, u16, String, &'static str, Option<usize>)> = Vec::new();
        let m = &self.spark.masters;
        for h in &m.hosts {
            let h = h.get_ref().clone();
            claims.push((
                h.clone(),
                m.port,
                "the Spark master".into(),
                "spark.masters.port",
                None,
            ));
            claims.push((
                h,
                m.ui_port,
                "the Spark master UI".into(),
                "spark.masters.ui_port",
                None,
            ));
        }
        let w = &self.spark.workers;
        for h in &w.hosts {
            let h = h.get_ref().clone();
            claims.push((
                h.clone(),
                w.port,
                "the Spark worker".into(),
                "spark.workers.port",
                None,
            ));
            let ui = self.worker_ui_port(&h);
            claims.push((
                h,
                ui,
                "the Spark worker UI".into(),
                "spark.workers.ui_port",
                None,
            ));
        }
        // ZooKeeper last, so that a clash names the AdminServer's line
        if let Some(zk) = &self.zookeeper {
            for h in &zk.hosts {
                let h = h.get_ref().clone();
                claims.push((
                    h.clone(),
                    zk.client_port,
                    "ZooKeeper's client port".into(),
                    "zookeeper.client_port",
                    None,
                ));
                if zk.hosts.len() > 1 {
                    claims.push((
                        h.clone(),
                        zk.peer_port,
                        "ZooKeeper's peer port".into(),
                        "zookeeper.peer_port",
                        None,
                    ));
                    claims.push((
                        h.clone(),
                        zk.election_port,
                        "ZooKeeper's election port".into(),
                        "zookeeper.election_port",
                        None,
                    ));
                }
                if let Some(a) = &zk.admin_port {
                    claims.push((
                        h,
                        *a.get_ref(),
                        "ZooKeeper's AdminServer".into(),
                        "zookeeper.admin_port",
                        Some(a.span().start),
                    ));
                }
            }
        }
        // keyed by address: two [[host]]s with one address are one machine
        let mut taken: BTreeMap<(String, u16), (String, String)> = BTreeMap::new();
        for (host, port, what, field, offset) in claims {
            let address = self
                .host(&host)
                .map(|h| h.address.clone())
                .unwrap_or_default();
            if let Some((other, other_host)) = taken.get(&(address.clone(), port)) {
                let place = if *other_host == host {
                    format!("host `{host}`")
                } else {
                    format!("`{address}` (hosts `{other_host}` and `{host}`)")
                };
                return Err(at.err(
                    offset,
                    field,
                    format!(
                        "{what} and {other} both want port {port} on {place}; move one of them"
                    ),
                ));
            }
            taken.insert((address, port), (what, host));
        }
        Ok(())
    }

    fn host_names(&self) -> String {
        self.hosts
            .iter()
            .map(|h| format!("`{}`", h.name.get_ref()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `[user@]address[:port]`, a jump host that is not a host of the file.
fn jump(j: &str) -> Result<(), String> {
    let (user, rest) = match j.split_once('@') {
        Some((u, r)) => (Some(u), r),
        None => (None, j),
    };
    if let Some(u) = user {
        grammar::login(u).map_err(|why| format!("`{u}` {why}"))?;
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    };
    grammar::address(host).map_err(|why| format!("`{host}` {why}"))?;
    match port {
        Some(p) if !p.parse::<u16>().is_ok_and(|p| p > 0) => Err(format!("`{p}` is not a port")),
        _ => Ok(()),
    }
}

fn check_jvm_options(opts: &[Spanned<String>], field: &str, at: &At) -> Result<(), ClusterError> {
    for o in opts {
        let s = o.get_ref();
        // they go into ZooKeeper's `environment`, a shell file, inside
        // double quotes, and into the environment of Spark's daemons
        if !s.starts_with('-')
            || grammar::has_control(s)
            || s.chars()
                .any(|c| matches!(c, '"' | '\'' | '$' | '`' | '\\'))
        {
            return Err(at.spanned(
                o,
                field,
                format!("`{}` is not a plain JVM option (it must start with `-` and hold no quotes, `$`, backquotes, backslashes or control characters)", s.escape_debug()),
            ));
        }
        if let Some(key) = s.strip_prefix("-D").and_then(|kv| kv.split('=').next()) {
            if derived_system_property(key) {
                return Err(at.spanned(
                    o,
                    field,
                    format!("`{key}` is set by ferry (or guards what it sets); remove it here"),
                ));
            }
            if looks_secret(key) {
                return Err(at.spanned(o, field, format!("`{key}` looks like a secret; ferry keeps secrets out of cluster files and plans")));
            }
        }
    }
    Ok(())
}

/// Whether a system property (a `-D` JVM option) would override what ferry
/// derives: system properties beat spark-defaults.conf (Spark reads every
/// `spark.*` one) and zoo.cfg (ZooKeeper reads `zookeeper.*`, its auth
/// providers and SASL switches among them), so `-Dspark.authenticate=false`
/// would switch RPC authentication off.
fn derived_system_property(key: &str) -> bool {
    DERIVED_PROPERTIES.contains(&key)
        || ["spark.authenticate", "spark.deploy.", "zookeeper."]
            .iter()
            .any(|p| key.starts_with(p))
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

fn looks_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["secret", "password", "token", "credential"]
        .iter()
        .any(|w| k.contains(w))
}

fn valid_memory(m: &str) -> bool {
    let digits = m.trim_end_matches(|c: char| "kKmMgGtT".contains(c));
    !digits.is_empty() && digits.len() + 1 == m.len() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Spark refuses an executor (and a driver) under 1.5 times its 300 MiB
/// reserve: a worker with less memory could never run one.
const MIN_WORKER_MIB: u64 = 450;

/// What is wrong with a worker's memory size, if anything.
fn worker_memory_problem(m: &str) -> Option<String> {
    if !valid_memory(m) {
        return Some(format!("`{m}` is not a memory size like `512m` or `2g`"));
    }
    let (digits, unit) = m.split_at(m.len() - 1);
    let n: u64 = digits.parse().ok()?;
    let mib = match unit.to_ascii_lowercase().as_str() {
        "k" => n / 1024,
        "m" => n,
        "g" => n.saturating_mul(1024),
        _ => n.saturating_mul(1024 * 1024),
    };
    (mib < MIN_WORKER_MIB).then(|| {
        format!("`{m}` is too small: Spark needs at least {MIN_WORKER_MIB}m to run one executor")
    })
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

/// The cluster file's text with `host` added to (or removed from)
/// `spark.workers.hosts`, everything else as it was written; a host that is
/// not a `[[host]]` yet is appended as one when `address` is given. The
/// result is checked like any cluster file.
pub fn edit_workers(
    text: &str,
    path: &Path,
    add: Option<(&str, Option<&str>)>,
    size: &WorkerSize,
    remove: Option<&str>,
) -> Result<String, ClusterError> {
    let file = ClusterFile::parse(text, path)?;
    let at = At { text, path };
    let hosts = &file.spark.workers.hosts;
    let mut out = text.to_string();
    if let Some((host, address)) = add {
        if hosts.iter().any(|h| h.get_ref() == host) {
            return Err(at.err(
                Some(hosts[0].span().start),
                "spark.workers.hosts",
                format!("`{host}` is a worker already"),
            ));
        }
        let last = hosts.last().expect("checked: at least one worker");
        let added = format!(", {}", toml_string(host));
        out.insert_str(last.span().end, &added);
        // a span of `text`, where it is in `out` now
        let (at_end, by) = (last.span().end, added.len());
        let shift = |r: std::ops::Range<usize>| {
            if r.start >= at_end {
                r.start + by..r.end + by
            } else {
                r
            }
        };
        if file.host(host).is_none() {
            let Some(address) = address else {
                return Err(at.err(
                    None,
                    "host",
                    format!(
                        "`{host}` is not a [[host]] of the cluster; give its address with --address"
                    ),
                ));
            };
            if !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&format!(
                "\n[[host]]\nname = {}\naddress = {}\n",
                toml_string(host),
                toml_string(address)
            ));
            if let Some(t) = size_table(size) {
                out.push_str(&format!("worker = {t}\n"));
            }
        } else if let Some(t) = size_table(size) {
            let h = file.host(host).expect("checked above");
            match &h.worker {
                Some(old) if text[old.span()].starts_with('{') => {
                    out.replace_range(shift(old.span()), &t);
                }
                Some(old) => {
                    return Err(at.spanned(
                        old,
                        &format!("host `{host}`.worker"),
                        "is not an inline table (`worker = { cores = 2 }`); change its size by hand".into(),
                    ));
                }
                None => {
                    let name_end = shift(h.name.span()).end;
                    let line_end = out[name_end..]
                        .find('\n')
                        .map_or(out.len(), |i| name_end + i);
                    out.insert_str(line_end, &format!("\nworker = {t}"));
                }
            }
        }
    }
    if let Some(host) = remove {
        let Some(h) = hosts.iter().find(|h| h.get_ref() == host) else {
            return Err(at.err(
                Some(hosts[0].span().start),
                "spark.workers.hosts",
                format!("`{host}` is not a worker"),
            ));
        };
        let (s, e) = (h.span().start, h.span().end);
        let after = &out[e..];
        let trimmed = after.trim_start();
        let (start, end) = if let Some(rest) = trimmed.strip_prefix(',') {
            // `"a", "b"`: take the element, its comma and the space after
            let rest_ws = rest.len() - rest.trim_start().len();
            (s, e + (after.len() - trimmed.len()) + 1 + rest_ws)
        } else {
            // the last element: take the comma before it
            let before = out[..s].trim_end();
            match before.strip_suffix(',') {
                Some(b) => (b.len(), e),
                None => (s, e),
            }
        };
        out.replace_range(start..end, "");
    }
    ClusterFile::parse(&out, path)?;
    Ok(out)
}

/// `{ cores = 4, memory = "8g" }`, with what is given; `None` if nothing is.
fn size_table(size: &WorkerSize) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(c) = size.cores {
        parts.push(format!("cores = {c}"));
    }
    if let Some(m) = &size.memory {
        parts.push(format!("memory = {}", toml_string(m)));
    }
    (!parts.is_empty()).then(|| format!("{{ {} }}", parts.join(", ")))
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod edit_tests {
    use super::*;

    const TEXT: &str = "name = \"c\" # the cluster\n\n[[host]]\nname = \"a\"\naddress = \"10.0.0.1\"\n\n[[host]]\nname = \"b\"\naddress = \"10.0.0.2\"\n\n[spark.masters]\nhosts = [\"a\"]\n\n[spark.workers]\nhosts = [\"a\", \"b\"]  # two for now\ncores = 2\n";

    fn edit(add: Option<(&str, Option<&str>)>, remove: Option<&str>) -> Result<String, String> {
        edit_workers(
            TEXT,
            Path::new("c.toml"),
            add,
            &WorkerSize::default(),
            remove,
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn adding_and_removing_workers_keeps_the_rest_of_the_file() {
        let added = edit(Some(("c", Some("10.0.0.3"))), None).unwrap();
        assert!(
            added.contains("hosts = [\"a\", \"b\", \"c\"]  # two for now\n"),
            "{added}"
        );
        assert!(
            added.ends_with("[[host]]\nname = \"c\"\naddress = \"10.0.0.3\"\n"),
            "{added}"
        );
        assert!(added.starts_with("name = \"c\" # the cluster\n"));
        let removed = edit(None, Some("b")).unwrap();
        assert!(
            removed.contains("hosts = [\"a\"]  # two for now\n"),
            "{removed}"
        );
        let removed = edit(None, Some("a")).unwrap();
        assert!(
            removed.contains("hosts = [\"b\"]  # two for now\n"),
            "{removed}"
        );
        // an existing host needs no address
        let back = edit_workers(
            &removed,
            Path::new("c.toml"),
            Some(("a", None)),
            &WorkerSize::default(),
            None,
        )
        .unwrap();
        assert!(back.contains("hosts = [\"b\", \"a\"]"), "{back}");
    }

    #[test]
    fn refuses_what_would_not_make_sense() {
        assert!(
            edit(Some(("b", None)), None)
                .unwrap_err()
                .contains("a worker already")
        );
        assert!(
            edit(Some(("z", None)), None)
                .unwrap_err()
                .contains("--address")
        );
        assert!(edit(None, Some("z")).unwrap_err().contains("not a worker"));
        // the last worker cannot go: the file would be refused
        let one = edit(None, Some("b")).unwrap();
        let e = edit_workers(
            &one,
            Path::new("c.toml"),
            None,
            &WorkerSize::default(),
            Some("a"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("no worker"), "{e}");
    }

    #[test]
    fn an_added_worker_gets_its_own_size_in_its_host_table() {
        let big = WorkerSize {
            cores: Some(8),
            memory: Some("30g".into()),
        };
        let new = edit_workers(
            TEXT,
            Path::new("c.toml"),
            Some(("c", Some("10.0.0.3"))),
            &big,
            None,
        )
        .unwrap();
        assert!(
            new.ends_with(
                "name = \"c\"\naddress = \"10.0.0.3\"\nworker = { cores = 8, memory = \"30g\" }\n"
            ),
            "{new}"
        );
        let f = ClusterFile::parse(&new, Path::new("c.toml")).unwrap();
        assert_eq!(f.worker_size("c"), (8, "30g".into()));
        assert_eq!(f.worker_size("b").0, 2);
        // a host the file has: the line goes under its name; an inline size is replaced
        let removed = edit_workers(
            TEXT,
            Path::new("c.toml"),
            None,
            &WorkerSize::default(),
            Some("a"),
        )
        .unwrap();
        let four = WorkerSize {
            cores: Some(4),
            memory: None,
        };
        let back = edit_workers(
            &removed,
            Path::new("c.toml"),
            Some(("a", None)),
            &four,
            None,
        )
        .unwrap();
        assert!(
            back.contains("name = \"a\"\nworker = { cores = 4 }\naddress"),
            "{back}"
        );
        let f = ClusterFile::parse(&back, Path::new("c.toml")).unwrap();
        assert_eq!(f.worker_size("a"), (4, "1g".into()));
        let again = edit_workers(
            &removed.replace("name = \"a\"", "name = \"a\"\nworker = { cores = 3 }"),
            Path::new("c.toml"),
            Some(("a", None)),
            &big,
            None,
        )
        .unwrap();
        assert!(
            again.contains("worker = { cores = 8, memory = \"30g\" }\naddress"),
            "{again}"
        );
        // a bad size is refused naming the host's field
        let bad = WorkerSize {
            cores: None,
            memory: Some("lots".into()),
        };
        let e = edit_workers(
            TEXT,
            Path::new("c.toml"),
            Some(("c", Some("10.0.0.3"))),
            &bad,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("host `c`.worker.memory") && e.contains("`lots`"),
            "{e}"
        );
        let small = WorkerSize {
            cores: None,
            memory: Some("384m".into()),
        };
        let e = edit_workers(
            TEXT,
            Path::new("c.toml"),
            Some(("c", Some("10.0.0.3"))),
            &small,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("`384m` is too small: Spark needs at least 450m"),
            "{e}"
        );
    }
}
