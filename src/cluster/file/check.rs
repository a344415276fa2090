//! The cluster file's checks: every refusal of a file that parses, with
//! the line and the field it is about. Reads only the file's own values.

use std::collections::{BTreeMap, BTreeSet};

use toml::Spanned;

use super::{At, ClusterError, ClusterFile, DERIVED_PROPERTIES, Host, LOGIN_CONFIG, MAX_ENSEMBLE};
use crate::grammar;

impl ClusterFile {
    pub(super) fn check(&self, at: &At) -> Result<(), ClusterError> {
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
