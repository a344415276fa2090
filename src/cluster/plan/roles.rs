//! The per-role part of the plan: for each host of a role, the folders,
//! files, secrets and container that role puts there. Pure, like the rest
//! of the plan; the order of steps and gates is `plan`'s.

use std::collections::BTreeMap;

use super::{
    Base, Container, HostPlan, JaasPlan, JaasSection, Labels, PlanError, Role, SECRET_FILE,
    SPARK_CONF_IN, SPARK_SECRET_IN, SecretPlan, ZK_CLIENT_JAAS, ZK_CONF_IN, ZK_SECRET_IN,
    ZK_SERVER_JAAS, dir, file_plan, mount, port, strings,
};
use crate::cluster::file::{LOGIN_CONFIG, PropValue};
use crate::cluster::render;

/// Plans the ZooKeeper servers (if the cluster has ZooKeeper) and returns
/// the ensemble's client URL (`host:port,...`; empty without ZooKeeper).
pub(super) fn zookeeper(
    b: &Base,
    labels: &Labels,
    hosts: &mut BTreeMap<String, HostPlan>,
) -> Result<String, PlanError> {
    let (file, cluster, conf_root) = (b.file, b.cluster, &b.conf_root);
    let servers = file.zookeeper_servers();
    let Some(zk) = &file.zookeeper else {
        return Ok(String::new());
    };
    let zk_user = labels.user("ferry.zookeeper.user")?;
    let image_conf = labels.path("ferry.zookeeper.conf")?;
    let start = labels.command("ferry.zookeeper.start")?;
    if !start.contains("{conf}") {
        return Err(PlanError::BadStart {
            reference: b.image.reference.clone(),
            value: start.to_string(),
        });
    }
    let command: Vec<String> = start
        .split_whitespace()
        .map(|a| a.replace("{conf}", ZK_CONF_IN))
        .collect();
    let addrs: Vec<(u32, String)> = servers.iter().map(|(id, h)| (*id, b.addr(h))).collect();
    let zk_url = addrs
        .iter()
        .map(|(_, a)| format!("{a}:{}", zk.client_port))
        .collect::<Vec<_>>()
        .join(",");
    let jvm: Vec<String> = zk.jvm_options.iter().map(|o| o.get_ref().clone()).collect();
    let conf_dir = format!("{conf_root}/zookeeper");
    let data_dir = file.zookeeper_data_dir();
    // its own folder: the Spark secret's belongs to the Spark user
    let zk_secret_dir = format!("{conf_root}/zookeeper-secret");
    let login = zk
        .sasl()
        .then(|| format!("{ZK_SECRET_IN}/{ZK_SERVER_JAAS}"));
    for (id, host) in &servers {
        let hp = hosts.get_mut(host).expect("checked host");
        let zoo = render::zoo_cfg(&render::ZooCfg {
            cluster,
            address: &hp.address,
            data_dir: &data_dir,
            client_port: zk.client_port,
            admin_port: zk.admin_port.as_ref().map(|p| *p.get_ref()),
            sasl: zk.sasl(),
            servers: if addrs.len() > 1 {
                addrs
                    .iter()
                    .map(|(i, a)| (*i, a.as_str(), zk.peer_port, zk.election_port))
                    .collect()
            } else {
                Vec::new()
            },
        });
        hp.dirs.push(dir(&conf_dir, "root", "0755"));
        hp.dirs.push(dir(&data_dir, zk_user, "0750"));
        hp.files
            .push(file_plan(&format!("{conf_dir}/zoo.cfg"), zoo));
        hp.files.push(file_plan(
            &format!("{conf_dir}/environment"),
            render::zookeeper_environment(cluster, image_conf, &jvm, login.as_deref()),
        ));
        hp.files
            .push(file_plan(&format!("{data_dir}/myid"), format!("{id}\n")));
        let mut c = b.container(Role::Zookeeper, zk_user, command.clone());
        c.mounts.push(mount(&conf_dir, ZK_CONF_IN, true));
        c.mounts.push(mount(&data_dir, &data_dir, false));
        if zk.sasl() {
            hp.dirs.push(dir(&zk_secret_dir, zk_user, "0700"));
            hp.jaas.push(JaasPlan {
                path: format!("{zk_secret_dir}/{ZK_SERVER_JAAS}"),
                section: JaasSection::Server,
                owner: zk_user.to_string(),
                mode: "0600".into(),
            });
            c.mounts.push(mount(&zk_secret_dir, ZK_SECRET_IN, true));
        }
        c.ports.push(port(zk.client_port, "client"));
        if addrs.len() > 1 {
            c.ports.push(port(zk.peer_port, "peer"));
            c.ports.push(port(zk.election_port, "election"));
        }
        if let Some(p) = &zk.admin_port {
            c.ports.push(port(*p.get_ref(), "admin"));
        }
        hp.containers.push(c);
    }
    Ok(zk_url)
}

/// What every Spark daemon of the cluster shares.
struct Spark<'a> {
    user: &'a str,
    /// `<spark home>/bin/spark-class`.
    class: String,
    work_dir: String,
    master_url: &'a str,
}

/// Plans the Spark masters and workers.
pub(super) fn spark(
    b: &Base,
    labels: &Labels,
    zk_url: &str,
    master_url: &str,
    hosts: &mut BTreeMap<String, HostPlan>,
) -> Result<(), PlanError> {
    let (file, cluster, conf_root) = (b.file, b.cluster, &b.conf_root);
    let spark_home = labels.path("ferry.spark.home")?;
    let s = Spark {
        user: labels.user("ferry.spark.user")?,
        class: format!("{spark_home}/bin/spark-class"),
        work_dir: file.work_dir(),
        master_url,
    };
    let m = &file.spark.masters;
    let w = &file.spark.workers;
    let roles = [
        (
            Role::Master,
            "master",
            properties(b, &m.properties, file.zookeeper.is_some(), zk_url),
        ),
        (Role::Worker, "worker", {
            // `ferry scale --remove-worker` drains a worker with SIGPWR
            let mut p = properties(b, &w.properties, false, zk_url);
            p.entry("spark.decommission.enabled".into())
                .or_insert_with(|| "true".into());
            p
        }),
    ];
    for (role, dir_name, properties) in roles {
        let conf_dir = format!("{conf_root}/spark-{dir_name}");
        let defaults = render::spark_defaults(cluster, &properties);
        let list = if role == Role::Master {
            &m.hosts
        } else {
            &w.hosts
        };
        for h in list {
            let h = h.get_ref();
            let a = b.addr(h);
            let hp = hosts.get_mut(h).expect("checked host");
            hp.dirs.push(dir(&conf_dir, "root", "0755"));
            let secret_dir = format!("{conf_root}/secret");
            hp.dirs.push(dir(&secret_dir, s.user, "0700"));
            hp.secret = Some(SecretPlan {
                path: format!("{secret_dir}/{SECRET_FILE}"),
                owner: s.user.to_string(),
                mode: "0600".into(),
            });
            hp.files.push(file_plan(
                &format!("{conf_dir}/spark-defaults.conf"),
                defaults.clone(),
            ));
            hp.files.push(file_plan(
                &format!("{conf_dir}/log4j2.properties"),
                render::LOG4J2.to_string(),
            ));
            let c = if role == Role::Master {
                master(b, &s, hp, &a, &conf_dir, &secret_dir)
            } else {
                worker(b, &s, hp, h, &a, &conf_dir, &secret_dir)
            };
            hp.containers.push(c);
        }
    }
    Ok(())
}

/// A master's container; with `zookeeper.auth = "sasl"`, its ZooKeeper login.
fn master(
    b: &Base,
    s: &Spark,
    hp: &mut HostPlan,
    a: &str,
    conf_dir: &str,
    secret_dir: &str,
) -> Container {
    let m = &b.file.spark.masters;
    let mut c = b.container(
        Role::Master,
        s.user,
        strings(&[
            &s.class,
            "org.apache.spark.deploy.master.Master",
            "--host",
            a,
            "--port",
            &m.port.to_string(),
            "--webui-port",
            &m.ui_port.to_string(),
        ]),
    );
    c.env = spark_env(&m.jvm_options, a);
    c.ports.push(port(m.port, "master"));
    c.ports.push(port(m.ui_port, "master UI"));
    c.mounts.push(mount(conf_dir, SPARK_CONF_IN, true));
    c.env_file = Some(format!("{secret_dir}/{SECRET_FILE}"));
    if b.file.zookeeper.as_ref().is_some_and(|z| z.sasl()) {
        // Curator's ZooKeeper client logs in (SASL DIGEST-MD5)
        // with the JAAS file's `Client` section
        hp.jaas.push(JaasPlan {
            path: format!("{secret_dir}/{ZK_CLIENT_JAAS}"),
            section: JaasSection::Client,
            owner: s.user.to_string(),
            mode: "0600".into(),
        });
        c.mounts.push(mount(secret_dir, SPARK_SECRET_IN, true));
        c.env.insert(
            "SPARK_MASTER_OPTS".into(),
            format!("-D{LOGIN_CONFIG}={SPARK_SECRET_IN}/{ZK_CLIENT_JAAS}"),
        );
    }
    c
}

/// A worker's container, sized by the cluster file, and its work folder.
fn worker(
    b: &Base,
    s: &Spark,
    hp: &mut HostPlan,
    h: &str,
    a: &str,
    conf_dir: &str,
    secret_dir: &str,
) -> Container {
    let w = &b.file.spark.workers;
    let ui = b.file.worker_ui_port(h);
    let (cores, memory) = b.file.worker_size(h);
    hp.dirs.push(dir(&s.work_dir, s.user, "0750"));
    let mut c = b.container(
        Role::Worker,
        s.user,
        strings(&[
            &s.class,
            "org.apache.spark.deploy.worker.Worker",
            "--host",
            a,
            "--port",
            &w.port.to_string(),
            "--webui-port",
            &ui.to_string(),
            "--cores",
            &cores.to_string(),
            "--memory",
            &memory,
            "--work-dir",
            &s.work_dir,
            s.master_url,
        ]),
    );
    c.env = spark_env(&w.jvm_options, a);
    c.ports.push(port(w.port, "worker"));
    c.ports.push(port(ui, "worker UI"));
    c.mounts.push(mount(conf_dir, SPARK_CONF_IN, true));
    c.env_file = Some(format!("{secret_dir}/{SECRET_FILE}"));
    c.mounts.push(mount(&s.work_dir, &s.work_dir, false));
    c
}

/// A role's `spark-defaults.conf` properties: the cluster file's, RPC
/// authentication, and with `ha` the masters' recovery through ZooKeeper.
fn properties(
    b: &Base,
    user: &BTreeMap<String, toml::Spanned<PropValue>>,
    ha: bool,
    zk_url: &str,
) -> BTreeMap<String, String> {
    let mut p: BTreeMap<String, String> = user
        .iter()
        .map(|(k, v)| (k.clone(), v.get_ref().to_string()))
        .collect();
    // RPC authentication with the cluster's secret: a client without
    // it cannot register a worker or an application
    p.insert("spark.authenticate".into(), "true".into());
    if ha {
        p.insert("spark.deploy.recoveryMode".into(), "ZOOKEEPER".into());
        p.insert("spark.deploy.zookeeper.url".into(), zk_url.to_string());
        p.insert("spark.deploy.zookeeper.dir".into(), b.file.zookeeper_dir());
    }
    p
}

/// A Spark daemon's environment: its config folder, its address, and its
/// JVM options (a `-Xmx` becomes its heap).
fn spark_env(jvm: &[toml::Spanned<String>], address: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::from([
        ("SPARK_CONF_DIR".to_string(), SPARK_CONF_IN.to_string()),
        // the UI's links name the host as the cluster file does
        ("SPARK_PUBLIC_DNS".to_string(), address.to_string()),
        // the web UIs (and executors) bind to the cluster address, not
        // to every interface
        ("SPARK_LOCAL_IP".to_string(), address.to_string()),
    ]);
    // Spark refuses `-Xmx` in SPARK_DAEMON_JAVA_OPTS: the daemon's heap
    // is SPARK_DAEMON_MEMORY
    let mut opts: Vec<&str> = Vec::new();
    for o in jvm.iter().map(|o| o.get_ref().as_str()) {
        match o.strip_prefix("-Xmx") {
            Some(heap) => {
                env.insert("SPARK_DAEMON_MEMORY".into(), heap.to_string());
            }
            None => opts.push(o),
        }
    }
    if !opts.is_empty() {
        env.insert("SPARK_DAEMON_JAVA_OPTS".into(), opts.join(" "));
    }
    env
}
