//! The text of the files a plan writes on hosts: zoo.cfg, ZooKeeper's
//! `environment`, spark-defaults.conf, the log configuration and the JAAS
//! login files. Pure functions of their arguments; the plan decides where
//! the files go (and keeps the JAAS files, which hold a password, out of
//! itself: the launcher renders them on the way to the hosts).

use std::collections::BTreeMap;

/// Spark's log configuration: to the console, so that `docker logs` (and a
/// failed gate) shows it. The same as the default image's.
pub const LOG4J2: &str = include_str!("../../images/spark/files/opt/spark/conf/log4j2.properties");

pub struct ZooCfg<'a> {
    pub cluster: &'a str,
    /// This server's address in the cluster: the client port binds to it.
    pub address: &'a str,
    pub data_dir: &'a str,
    pub client_port: u16,
    pub admin_port: Option<u16>,
    /// Refuse every session that has not logged in with SASL.
    pub sasl: bool,
    /// (myid, address, peer port, election port); empty for one server.
    pub servers: Vec<(u32, &'a str, u16, u16)>,
}

pub fn zoo_cfg(z: &ZooCfg) -> String {
    let mut s = header(z.cluster, "#");
    s.push_str("tickTime=2000\ninitLimit=10\nsyncLimit=5\n");
    // Spark's masters ask for 60 s sessions; a crashed leader keeps its
    // leadership until its session expires, so the ensemble caps sessions
    // at 10 s (5 ticks; ZooKeeper's own default cap is 40 s). A master that
    // stalls longer than that (a GC pause) hands over leadership.
    s.push_str("maxSessionTimeout=10000\n");
    s.push_str(&format!(
        "dataDir={}\nclientPort={}\nclientPortAddress={}\n",
        z.data_dir, z.client_port, z.address
    ));
    match z.admin_port {
        // its default port, 8080, is the Spark master UI's
        None => s.push_str("admin.enableServer=false\n"),
        Some(p) => s.push_str(&format!("admin.enableServer=true\nadmin.serverPort={p}\n")),
    }
    // since 3.5.3 only whitelisted four-letter words answer; the gate uses
    // srvr (four-letter words open no session: they answer with `sasl` too)
    s.push_str("4lw.commands.whitelist=srvr,stat\n");
    if z.sasl {
        // unknown keys become `zookeeper.*` system properties; ZooKeeper
        // 3.7+ closes the session of a client that sends a request before
        // logging in (SESSIONCLOSEDREQUIRESASLAUTH). Spark's Curator
        // creates its znodes with open ACLs, so the session is the guard.
        s.push_str(
            "authProvider.sasl=org.apache.zookeeper.server.auth.SASLAuthenticationProvider\nenforce.auth.enabled=true\nenforce.auth.schemes=sasl\n",
        );
    }
    if !z.servers.is_empty() {
        // peers listen on the address of their own `server.N` line; but a
        // name (not an IP) may resolve to a loopback address on its own host
        // (Debian's 127.0.1.1), which would keep the peers out
        if z.address.parse::<std::net::IpAddr>().is_err() {
            s.push_str("quorumListenOnAllIPs=true\n");
        }
        for (id, addr, peer, election) in &z.servers {
            s.push_str(&format!("server.{id}={addr}:{peer}:{election}\n"));
        }
    }
    s
}

/// zkEnv.sh sources `environment` from the config folder instead of the
/// image's, so this one sources the image's first and adds to it.
/// `login_config`: the JAAS file (in the container) the server reads its
/// users from, with `zookeeper.auth = "sasl"`.
pub fn zookeeper_environment(
    cluster: &str,
    image_conf: &str,
    jvm_options: &[String],
    login_config: Option<&str>,
) -> String {
    let mut s = header(cluster, "#");
    s.push_str(&format!(". {image_conf}/environment\n"));
    let mut flags: Vec<String> = jvm_options.to_vec();
    if let Some(f) = login_config {
        flags.push(format!("-D{}={f}", super::file::LOGIN_CONFIG));
    }
    if !flags.is_empty() {
        s.push_str(&format!(
            "SERVER_JVMFLAGS=\"$SERVER_JVMFLAGS {}\"\n",
            flags.join(" ")
        ));
    }
    s
}

/// The one ZooKeeper user of a cluster with `zookeeper.auth = "sasl"`.
pub const ZK_LOGIN_USER: &str = "spark";

/// The ZooKeeper server's JAAS file: its only user and that user's
/// password; and the same login for a client in the server's container
/// (`zkCli.sh`, which ferry runs there to hand the masters' leadership over).
pub fn jaas_server(password: &str) -> String {
    format!(
        "Server {{\n  org.apache.zookeeper.server.auth.DigestLoginModule required\n  user_{ZK_LOGIN_USER}=\"{password}\";\n}};\n{}",
        jaas_client(password)
    )
}

/// A ZooKeeper client's JAAS file (a master's Curator): who it logs in as.
pub fn jaas_client(password: &str) -> String {
    format!(
        "Client {{\n  org.apache.zookeeper.server.auth.DigestLoginModule required\n  username=\"{ZK_LOGIN_USER}\"\n  password=\"{password}\";\n}};\n"
    )
}

pub fn spark_defaults(cluster: &str, properties: &BTreeMap<String, String>) -> String {
    let mut s = header(cluster, "#");
    for (k, v) in properties {
        s.push_str(&format!("{k} {v}\n"));
    }
    s
}

fn header(cluster: &str, comment: &str) -> String {
    format!("{comment} generated by ferry for cluster `{cluster}`; `ferry up` rewrites it\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_server_has_no_server_lines_and_no_admin_server() {
        let s = zoo_cfg(&ZooCfg {
            cluster: "c",
            address: "127.0.0.1",
            data_dir: "/d",
            client_port: 2181,
            admin_port: None,
            sasl: false,
            servers: vec![],
        });
        assert!(s.contains("admin.enableServer=false\n"));
        assert!(!s.contains("server.1"));
    }

    #[test]
    fn ensemble_lists_every_server() {
        let s = zoo_cfg(&ZooCfg {
            cluster: "c",
            address: "b",
            data_dir: "/d",
            client_port: 2181,
            admin_port: Some(9990),
            sasl: false,
            servers: vec![
                (1, "a", 2888, 3888),
                (2, "b", 2888, 3888),
                (3, "c", 2888, 3888),
            ],
        });
        assert!(s.contains("server.2=b:2888:3888\n"));
        assert!(s.contains("admin.serverPort=9990\n"));
        assert!(s.contains("clientPortAddress=b\n"));
        // a name may resolve to loopback on its own host
        assert!(s.contains("quorumListenOnAllIPs=true\n"));
        let ip = zoo_cfg(&ZooCfg {
            cluster: "c",
            address: "10.0.0.2",
            data_dir: "/d",
            client_port: 2181,
            admin_port: None,
            sasl: false,
            servers: vec![(1, "10.0.0.1", 2888, 3888), (2, "10.0.0.2", 2888, 3888)],
        });
        assert!(!ip.contains("quorumListenOnAllIPs"), "{ip}");
        assert!(ip.contains("clientPortAddress=10.0.0.2\n"));
        assert!(ip.contains("maxSessionTimeout=10000\n"));
    }

    #[test]
    fn sasl_closes_sessions_that_did_not_log_in() {
        let cfg = |sasl| {
            zoo_cfg(&ZooCfg {
                cluster: "c",
                address: "10.0.0.1",
                data_dir: "/d",
                client_port: 2181,
                admin_port: None,
                sasl,
                servers: vec![],
            })
        };
        let on = cfg(true);
        assert!(on.contains(
            "authProvider.sasl=org.apache.zookeeper.server.auth.SASLAuthenticationProvider\n"
        ));
        assert!(on.contains("enforce.auth.enabled=true\nenforce.auth.schemes=sasl\n"));
        // the gates' four-letter word still answers
        assert!(on.contains("4lw.commands.whitelist=srvr"));
        let off = cfg(false);
        assert!(!off.contains("auth"), "{off}");
        let env = zookeeper_environment(
            "c",
            "/etc/zookeeper/conf",
            &["-Xmx1g".into()],
            Some("/s/z.jaas"),
        );
        assert!(env.ends_with("SERVER_JVMFLAGS=\"$SERVER_JVMFLAGS -Xmx1g -Djava.security.auth.login.config=/s/z.jaas\"\n"), "{env}");
        assert!(!zookeeper_environment("c", "/e", &[], None).contains("SERVER_JVMFLAGS"));
    }

    #[test]
    fn jaas_files_pair_the_server_user_with_the_client_login() {
        let server = jaas_server("pw");
        let client = jaas_client("pw");
        assert!(server.starts_with("Server {\n"));
        assert!(server.contains("user_spark=\"pw\";"), "{server}");
        assert!(server.ends_with(&client), "{server}");
        assert!(client.starts_with("Client {\n"));
        assert!(
            client.contains("username=\"spark\"\n  password=\"pw\";"),
            "{client}"
        );
    }
}
