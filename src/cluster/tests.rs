//! Golden plans (insta snapshots under `snapshots/`), one test per refusal,
//! and determinism. The examples in `examples/` are the inputs, so the
//! examples are checked too.

use std::path::Path;

use super::envcfg;
use super::file::ClusterFile;
use super::plan::{self, ImageFacts, Plan};

const LOCAL: &str = include_str!("../../examples/local.toml");
const HA: &str = include_str!("../../examples/ha.toml");
const WEFE: &str = include_str!("../../examples/wefe.cfg");

/// The built-in image's labels with fixed digests, so that a rebuilt
/// image changes no golden plan but a changed label contract does.
fn facts() -> ImageFacts {
    ImageFacts {
        digest: format!("sha256:{}", "0".repeat(64)),
        config_digest: format!("sha256:{}", "1".repeat(64)),
        ..ImageFacts::builtin()
    }
}

fn parse(text: &str) -> ClusterFile {
    ClusterFile::parse(text, Path::new("cluster.toml")).unwrap_or_else(|e| panic!("{e}"))
}

fn plan_of(text: &str) -> Plan {
    plan::plan(&parse(text), &facts()).unwrap()
}

/// The refusal for `text`, as the user reads it.
fn refusal(text: &str) -> String {
    ClusterFile::parse(text, Path::new("cluster.toml"))
        .expect_err("the cluster file should be refused")
        .to_string()
}

#[test]
fn builtin_image_has_every_label_the_plan_reads() {
    let f = ImageFacts::builtin();
    assert_eq!(f.reference, super::file::DEFAULT_IMAGE);
    plan::plan(&parse(HA), &f).unwrap();
}

#[test]
fn golden_local() {
    insta::assert_snapshot!("local", plan_of(LOCAL).to_text());
}

#[test]
fn golden_ha_text() {
    insta::assert_snapshot!("ha", plan_of(HA).to_text());
}

#[test]
fn golden_ha_json() {
    insta::assert_snapshot!("ha_json", plan_of(HA).to_json());
}

#[test]
fn golden_env_cfg_import() {
    let imported = envcfg::import(WEFE, Path::new("examples/wefe.cfg"), "wefe").unwrap();
    insta::assert_snapshot!("wefe_cluster_toml", imported.toml);
    insta::assert_snapshot!("wefe", plan_of(&imported.toml).to_text());
    assert_eq!(imported.notes.len(), 1, "{:?}", imported.notes);
    assert!(imported.notes[0].contains("SPARK_CONTAINER_SUBNET"));
}

#[test]
fn env_cfg_local_mode_is_one_host_with_master_and_worker() {
    let imported = envcfg::import("SPARK_MODE=LOCAL\n", Path::new("l.cfg"), "l").unwrap();
    let p = plan_of(&imported.toml);
    assert_eq!(p.hosts.len(), 1);
    assert_eq!(p.hosts[0].containers.len(), 2);
    assert_eq!(p.master_url, "spark://127.0.0.1:7077");
}

#[test]
fn same_input_gives_byte_identical_plans() {
    for text in [LOCAL, HA] {
        let (a, b) = (plan_of(text), plan_of(text));
        assert_eq!(a.to_text(), b.to_text());
        assert_eq!(a.to_json(), b.to_json());
        assert_eq!(a.plan_hash, b.plan_hash);
    }
    // the order of a table's keys in the file does not matter
    let reordered = HA.replace(
        "\"spark.worker.cleanup.enabled\" = true\n\"spark.worker.cleanup.appDataTtl\" = 86400\n",
        "\"spark.worker.cleanup.appDataTtl\" = 86400\n\"spark.worker.cleanup.enabled\" = true\n",
    );
    assert_ne!(reordered, HA);
    assert_eq!(plan_of(&reordered).to_json(), plan_of(HA).to_json());
}

#[test]
fn a_changed_worker_changes_only_the_workers_spec_labels() {
    let a = plan_of(HA);
    let b = plan_of(&HA.replace("memory = \"1g\"", "memory = \"2g\""));
    assert_ne!(a.plan_hash, b.plan_hash);
    for (ha, hb) in a.hosts.iter().zip(&b.hosts) {
        for (ca, cb) in ha.containers.iter().zip(&hb.containers) {
            let same = ca.labels["ferry.spec"] == cb.labels["ferry.spec"];
            assert_eq!(
                same,
                ca.role != plan::Role::Worker,
                "{} on {}",
                ca.name,
                ha.name
            );
        }
    }
}

#[test]
fn ha_plan_wires_masters_workers_and_ensemble() {
    let p = plan_of(HA);
    assert_eq!(p.master_url, "spark://10.0.0.11:7077,10.0.0.12:7077");
    for h in &p.hosts {
        for c in &h.containers {
            if c.role == plan::Role::Worker {
                assert_eq!(c.command.last().unwrap(), &p.master_url);
            }
        }
        for f in &h.files {
            if f.path.ends_with("zoo.cfg") {
                assert!(f.content.contains("admin.enableServer=false\n"));
                assert!(f.content.contains("server.3=10.0.0.13:2888:3888\n"));
            }
            if f.path.ends_with("spark-master/spark-defaults.conf") {
                assert!(f.content.contains("spark.deploy.recoveryMode ZOOKEEPER\n"));
                assert!(f.content.contains(
                    "spark.deploy.zookeeper.url 10.0.0.11:2181,10.0.0.12:2181,10.0.0.13:2181\n"
                ));
            }
        }
    }
    let myids: Vec<&str> = p
        .hosts
        .iter()
        .flat_map(|h| &h.files)
        .filter(|f| f.path.ends_with("/myid"))
        .map(|f| f.content.as_str())
        .collect();
    assert_eq!(myids, ["1\n", "2\n", "3\n"]);
}

#[test]
fn one_master_without_zookeeper_is_a_plain_cluster() {
    let text =
        without_zookeeper(HA).replace("hosts = [\"node1\", \"node2\"]", "hosts = [\"node1\"]");
    let p = plan_of(&text);
    assert!(
        p.hosts
            .iter()
            .flat_map(|h| &h.files)
            .all(|f| !f.content.contains("recoveryMode"))
    );
    assert!(
        p.steps
            .iter()
            .all(|s| !matches!(s.action, plan::Action::StartZookeeper))
    );
}

fn without_zookeeper(text: &str) -> String {
    let start = text.find("[zookeeper]").unwrap();
    let end = text.find("[spark.masters]").unwrap();
    format!("{}{}", &text[..start], &text[end..])
}

#[test]
fn secrets_stay_out_of_the_plan() {
    let json = plan_of(HA).to_json();
    assert!(!json.to_lowercase().contains("password"));
    assert!(!json.contains("BEGIN OPENSSH"));
}

fn with_sasl(text: &str) -> String {
    text.replace("[zookeeper]\n", "[zookeeper]\nauth = \"sasl\"\n")
}

#[test]
fn golden_ha_sasl_text() {
    insta::assert_snapshot!("ha_sasl", plan_of(&with_sasl(HA)).to_text());
}

#[test]
fn zookeeper_sasl_logs_in_the_masters_and_no_one_else() {
    let off = plan_of(HA);
    let on = plan_of(&with_sasl(HA));
    assert_eq!(
        plan_of(&HA.replace("[zookeeper]\n", "[zookeeper]\nauth = \"none\"\n")).plan_hash,
        off.plan_hash,
        "`none` is the default"
    );
    for h in &off.hosts {
        assert!(h.jaas.is_empty(), "{}", h.name);
        for f in &h.files {
            assert!(!f.content.contains("auth.login.config"), "{}", f.path);
            assert!(!f.content.contains("enforce.auth"), "{}", f.path);
        }
    }
    assert!(
        !off.to_json().contains("\"jaas\""),
        "off, plans stay as they were"
    );
    for h in &on.hosts {
        let roles: Vec<plan::Role> = h.containers.iter().map(|c| c.role).collect();
        let sections: Vec<plan::JaasSection> = h.jaas.iter().map(|j| j.section).collect();
        let mut want = Vec::new();
        if roles.contains(&plan::Role::Zookeeper) {
            want.push(plan::JaasSection::Server);
        }
        if roles.contains(&plan::Role::Master) {
            want.push(plan::JaasSection::Client);
        }
        assert_eq!(sections, want, "{}", h.name);
        for j in &h.jaas {
            assert_eq!(j.mode, "0600");
            let owner = if j.section == plan::JaasSection::Server {
                "zookeeper"
            } else {
                "spark"
            };
            assert_eq!(j.owner, owner, "{}", j.path);
            // the daemon sees the file through a read-only mount of its folder
            let folder = j.path.rsplit_once('/').unwrap().0;
            let c = h
                .containers
                .iter()
                .find(|c| {
                    c.role != plan::Role::Worker && c.mounts.iter().any(|m| m.source == folder)
                })
                .unwrap_or_else(|| panic!("no container mounts {folder}"));
            assert!(c.mounts.iter().all(|m| m.source != folder || m.read_only));
            assert!(
                h.dirs
                    .iter()
                    .any(|d| d.path == folder && d.mode == "0700" && d.owner == owner)
            );
        }
        for c in &h.containers {
            match c.role {
                plan::Role::Master => assert_eq!(
                    c.env["SPARK_MASTER_OPTS"],
                    "-Djava.security.auth.login.config=/etc/ferry/secret/zookeeper-client.jaas"
                ),
                _ => assert!(!c.env.contains_key("SPARK_MASTER_OPTS")),
            }
        }
        for f in &h.files {
            if f.path.ends_with("/zoo.cfg") {
                assert!(
                    f.content
                        .contains("enforce.auth.enabled=true\nenforce.auth.schemes=sasl\n")
                );
            }
            if f.path.ends_with("/zookeeper/environment") {
                assert!(f.content.contains("-Djava.security.auth.login.config=/etc/ferry/zookeeper-secret/zookeeper-server.jaas\""), "{}", f.content);
            }
        }
    }
    // workers never talk to ZooKeeper
    let node4 = on.hosts.iter().find(|h| h.name == "node4").unwrap();
    assert!(node4.jaas.is_empty());
    let json = on.to_json();
    assert!(!json.to_lowercase().contains("password"));
    assert!(json.contains("\"section\": \"Server\""));
}

// --- refusals, one each ---------------------------------------------------

#[test]
fn refuses_an_unknown_zookeeper_auth() {
    let text = HA.replace("[zookeeper]\n", "[zookeeper]\nauth = \"digest\"\n");
    assert_eq!(
        refusal(&text),
        format!(
            "cluster.toml:{}: `zookeeper.auth`: `digest` is not a ZooKeeper client authentication ferry knows: use `none` (the default) or `sasl` (only the cluster's masters get a session)",
            line(&text, "auth = ")
        )
    );
    let text = HA.replace("[zookeeper]\n", "[zookeeper]\nauth = true\n");
    assert_eq!(
        refusal(&text),
        format!(
            "cluster.toml:{}: `zookeeper.auth`: invalid type: boolean `true`, expected a string",
            line(&text, "auth = ")
        )
    );
}

#[test]
fn refuses_a_hand_set_login_config_with_sasl() {
    let text = with_sasl(HA).replace(
        "jvm_options = [\"-Xmx512m\"]",
        "jvm_options = [\"-Xmx512m\", \"-Djava.security.auth.login.config=/x.jaas\"]",
    );
    assert_eq!(
        refusal(&text),
        format!(
            "cluster.toml:{}: `spark.masters.jvm_options`: `java.security.auth.login.config` is set by ferry when `zookeeper.auth` is `sasl`; remove it here",
            line(&text, "-Djava.security")
        )
    );
    // without sasl it is the operator's own business
    parse(&HA.replace(
        "jvm_options = [\"-Xmx512m\"]",
        "jvm_options = [\"-Xmx512m\", \"-Djava.security.auth.login.config=/x.jaas\"]",
    ));
}

/// The 1-based line of the first `needle` in `text`.
fn line(text: &str, needle: &str) -> usize {
    text[..text.find(needle).expect("needle is in the text")]
        .matches('\n')
        .count()
        + 1
}

#[test]
fn refuses_an_even_ensemble() {
    let text = HA.replace(
        "hosts = [\"node1\", \"node2\", \"node3\"]",
        "hosts = [\"node1\", \"node2\"]",
    );
    assert_eq!(
        refusal(&text),
        format!(
            "cluster.toml:{}: `zookeeper.hosts`: the ensemble has 2 servers; ZooKeeper needs an odd number (1, 3 or 5) to keep a majority: add or remove one",
            line(&text, "[zookeeper]") + 1
        )
    );
}

#[test]
fn takes_seven_servers_and_refuses_nine() {
    let hosts = |n: usize| {
        let mut t = HA.to_string();
        for i in 6..=n {
            t += &format!(
                "\n[[host]]\nname = \"node{i}\"\naddress = \"10.0.0.{}\"\n",
                10 + i
            );
        }
        let names: Vec<String> = (1..=n).map(|i| format!("\"node{i}\"")).collect();
        t.replace(
            "hosts = [\"node1\", \"node2\", \"node3\"]",
            &format!("hosts = [{}]", names.join(", ")),
        )
    };
    let seven = plan_of(&hosts(7));
    let servers = seven
        .hosts
        .iter()
        .filter(|h| h.containers.iter().any(|c| c.role == plan::Role::Zookeeper))
        .count();
    assert_eq!(servers, 7);
    let text = hosts(9);
    assert_eq!(
        refusal(&text),
        format!(
            "cluster.toml:{}: `zookeeper.hosts`: the ensemble has 9 servers; ferry runs at most 7 (3 or 5 suit a Spark cluster; more slow every write and election): keep 3 or 5 of them",
            line(&text, "[zookeeper]") + 1
        )
    );
}

#[test]
fn refuses_duplicate_zookeeper_ids() {
    let text = HA.replace("client_port = 2181", "ids = [1, 2, 1]\nclient_port = 2181");
    let e = refusal(&text);
    assert!(e.contains("`zookeeper.ids`: id 1 is given twice"), "{e}");
    assert!(
        e.starts_with(&format!("cluster.toml:{}:", line(&text, "ids = "))),
        "{e}"
    );
}

#[test]
fn refuses_duplicate_host_names() {
    let e = refusal(&HA.replace("name = \"node2\"", "name = \"node1\""));
    assert!(
        e.contains("`host.name`: host `node1` is listed twice"),
        "{e}"
    );
}

#[test]
fn refuses_a_host_listed_twice_in_a_role() {
    let e = refusal(&HA.replace(
        "hosts = [\"node4\", \"node5\"]",
        "hosts = [\"node4\", \"node4\"]",
    ));
    assert!(
        e.contains("`spark.workers.hosts`: host `node4` is listed twice"),
        "{e}"
    );
}

#[test]
fn refuses_the_admin_server_on_the_master_ui_port() {
    let text = HA.replace(
        "client_port = 2181",
        "admin_port = 8080\nclient_port = 2181",
    );
    assert_eq!(
        refusal(&text),
        format!(
            "cluster.toml:{}: `zookeeper.admin_port`: ZooKeeper's AdminServer and the Spark master UI both want port 8080 on host `node1`; move one of them",
            line(&text, "admin_port")
        )
    );
    // moved off 8080 it is accepted, and the plan turns it on
    let p = plan_of(&HA.replace(
        "client_port = 2181",
        "admin_port = 9990\nclient_port = 2181",
    ));
    let zoo = &p.hosts[0]
        .files
        .iter()
        .find(|f| f.path.ends_with("zoo.cfg"))
        .unwrap()
        .content;
    assert!(zoo.contains("admin.serverPort=9990\n"), "{zoo}");
}

#[test]
fn refuses_two_roles_on_one_port_of_one_host() {
    let e = refusal(&LOCAL.replace("memory = \"1g\"", "memory = \"1g\"\nui_port = 8080"));
    assert!(
        e.contains(
            "the Spark worker UI and the Spark master UI both want port 8080 on host `local`"
        ),
        "{e}"
    );
}

#[test]
fn refuses_two_hosts_with_one_address_on_one_port() {
    let e = refusal(&HA.replace("10.0.0.15", "10.0.0.14"));
    assert!(
        e.contains("both want port 7078 on `10.0.0.14` (hosts `node4` and `node5`)"),
        "{e}"
    );
}

#[test]
fn refuses_two_masters_without_zookeeper() {
    let e = refusal(&without_zookeeper(HA));
    assert!(
        e.contains("`spark.masters.hosts`: 2 masters but no [zookeeper] ensemble"),
        "{e}"
    );
}

#[test]
fn refuses_workers_that_miss_a_master() {
    let e = refusal(&HA.replace("cores = 2", "cores = 2\nmasters = [\"node1\"]"));
    assert!(
        e.contains(
            "`spark.workers.masters`: master `node2` is missing: workers must list every master"
        ),
        "{e}"
    );
    // listing every master is accepted
    parse(&HA.replace("cores = 2", "cores = 2\nmasters = [\"node2\", \"node1\"]"));
}

#[test]
fn refuses_unknown_hosts() {
    let text = HA.replace(
        "hosts = [\"node4\", \"node5\"]",
        "hosts = [\"node4\", \"node6\"]",
    );
    let e = refusal(&text);
    assert!(
        e.starts_with(&format!(
            "cluster.toml:{}: `spark.workers.hosts`: unknown host `node6`; add a [[host]] with that name (known: `node1`",
            line(&text, "\"node6\"")
        )),
        "{e}"
    );
}

#[test]
fn refuses_unknown_fields_with_their_line() {
    let text = HA.replace("peer_port = 2888", "peer_prot = 2888");
    let e = refusal(&text);
    assert!(
        e.starts_with(&format!(
            "cluster.toml:{}: unknown field `peer_prot`",
            line(&text, "peer_prot")
        )),
        "{e}"
    );
}

#[test]
fn refuses_secrets_in_properties() {
    let e = refusal(&HA.replace(
        "\"spark.worker.cleanup.enabled\" = true",
        "\"spark.worker.cleanup.enabled\" = true\n\"spark.authenticate.secret\" = \"hunter2\"",
    ));
    assert!(
        e.contains("`spark.authenticate.secret` looks like a secret"),
        "{e}"
    );
}

#[test]
fn refuses_credentials_in_the_delivery_url() {
    let e = refusal(&HA.replace(
        "delivery = \"ssh\"",
        "delivery = \"s3://AKIA:sekrit@bucket/images/\"",
    ));
    assert!(e.contains("`delivery`: the URL carries credentials"), "{e}");
    // the controller's keys sign the hosts' URLs: the hosts have none
    assert!(
        e.contains("environment or --credentials-file") && !e.contains("hosts' own credentials"),
        "{e}"
    );
    let e = refusal(&HA.replace(
        "delivery = \"ssh\"",
        "delivery = \"s3://bucket/images/\"\nobject_store = { url_style = \"vhost\" }",
    ));
    assert!(
        e.contains("`object_store.url_style`: `vhost` is not a URL style"),
        "{e}"
    );
    parse(&HA.replace("delivery = \"ssh\"", "delivery = \"s3://bucket/images/\""));
    // a scheme `up` could not pull from is refused before any host is touched
    let e = refusal(&HA.replace("delivery = \"ssh\"", "delivery = \"gs://bucket/images/\""));
    assert!(
        e.contains("`delivery`: `gs://` is not a delivery ferry can pull from"),
        "{e}"
    );
}

#[test]
fn refuses_hand_set_recovery_properties() {
    let e = refusal(&HA.replace(
        "zookeeper_dir = \"/spark\"",
        "zookeeper_dir = \"/spark\"\nproperties = { \"spark.deploy.recoveryMode\" = \"NONE\" }",
    ));
    assert!(
        e.contains("`spark.deploy.recoveryMode` is set by ferry (from the [zookeeper] section)"),
        "{e}"
    );
    let e = refusal(&HA.replace(
        "zookeeper_dir = \"/spark\"",
        "zookeeper_dir = \"/spark\"\nproperties = { \"spark.authenticate\" = false }",
    ));
    assert!(
        e.contains("authentication with the cluster's own secret is always on"),
        "{e}"
    );
}

#[test]
fn refuses_a_plan_when_the_image_lacks_a_label() {
    let mut f = facts();
    f.labels.remove("ferry.spark.home");
    let e = plan::plan(&parse(HA), &f).unwrap_err().to_string();
    assert!(
        e.starts_with("image `ferry/spark:3.5.3` has no `ferry.spark.home` label"),
        "{e}"
    );
}

#[test]
fn docker_run_args_follow_the_plan() {
    let p = plan_of(LOCAL);
    let worker = p.hosts[0]
        .containers
        .iter()
        .find(|c| c.role == plan::Role::Worker)
        .unwrap();
    let args = super::launch::up::run_args(worker).join(" ");
    assert!(
        args.starts_with(
            "run --detach --name ferry-local-worker --network host --restart unless-stopped --user spark --label ferry.cluster=local"
        ),
        "{args}"
    );
    assert!(
        args.contains("--volume /etc/ferry/local/spark-worker:/etc/ferry/spark:ro"),
        "{args}"
    );
    assert!(
        args.ends_with("--work-dir /var/lib/ferry/local/spark-work spark://127.0.0.1:7077"),
        "{args}"
    );
    super::launch::check_local(&p).unwrap();
    let e = super::launch::check_local(&plan_of(HA)).unwrap_err();
    assert!(e.to_string().contains("roles on 5 hosts"), "{e}");
}

// --- labels: a base image's labels are the image's, and are checked ------

/// The plan of the HA file over an image whose `label` is `value`.
fn label_refusal(label: &str, value: &str) -> String {
    let mut f = facts();
    f.labels.insert(label.to_string(), value.to_string());
    match plan::plan(&parse(HA), &f) {
        Ok(_) => panic!("label `{label}` = {value:?} should be refused"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn refuses_a_user_label_that_is_not_a_user_name() {
    // inherited from a base image, this went into a sed program on every host
    let e = label_refusal("ferry.spark.user", "x/;e touch /tmp/pwned;/");
    assert_eq!(
        e,
        "image `ferry/spark:3.5.3`: label `ferry.spark.user` (`x/;e touch /tmp/pwned;/`) is not a user name (`[a-z_][a-z0-9_-]*`, at most 32 characters); fix the label where the image (or its base) sets it, or pass another image with `--image`"
    );
    let e = label_refusal("ferry.zookeeper.user", "-rf");
    assert!(
        e.contains("label `ferry.zookeeper.user` (`-rf`) is not a user name"),
        "{e}"
    );
    let e = label_refusal("ferry.spark.user", &"a".repeat(33));
    assert!(e.contains("is not a user name"), "{e}");
    assert!(!e.contains('\n'));
}

#[test]
fn refuses_a_path_label_that_is_relative_or_not_normal() {
    for (label, value) in [
        ("ferry.spark.home", "opt/spark"),
        ("ferry.spark.home", "/opt/../etc"),
        ("ferry.spark.home", "/opt//spark"),
        ("ferry.spark.home", "/opt/spark/"),
        (
            "ferry.zookeeper.conf",
            "/etc/zookeeper/conf\ntouch /tmp/pwned",
        ),
        ("ferry.zookeeper.conf", "/etc/$(touch pwned)"),
        ("ferry.sample-job", "../jobs/x.py"),
    ] {
        let e = label_refusal(label, value);
        let shown = value.escape_debug().to_string();
        assert!(
            e.contains(&format!(
                "label `{label}` (`{shown}`) is not an absolute, normal path"
            )),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }
}

#[test]
fn refuses_a_command_label_with_control_characters_or_a_relative_program() {
    for value in [
        "/usr/share/zookeeper/bin/zkServer.sh --config {conf}\nstart-foreground",
        "zkServer.sh --config {conf} start-foreground",
        "/usr/share/zookeeper/bin/zkServer.sh --config {conf} \u{1b}[2J",
    ] {
        let e = label_refusal("ferry.zookeeper.start", value);
        assert!(
            e.contains("label `ferry.zookeeper.start`") && e.contains("is not a command line"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }
}

// --- values written into config files cannot start or swallow a line ------

/// HA with `line` added to `[spark.masters]`.
fn with_master_line(line: &str) -> String {
    HA.replace(
        "zookeeper_dir = \"/spark\"",
        &format!("zookeeper_dir = \"/spark\"\n{line}"),
    )
}

#[test]
fn refuses_a_property_that_would_start_or_swallow_a_line_of_spark_defaults() {
    // Java's Properties ends a line at `\r` as at `\n`: this one would set
    // `spark.authenticate false` after ferry's `true`
    let text = with_master_line("properties = { \"spark.a\" = \"x\\rspark.authenticate false\" }");
    assert_eq!(
        refusal(&text),
        format!(
            "cluster.toml:{}: `spark.masters.properties`: the value of `spark.a` (`x\\rspark.authenticate false`) holds a control character: a newline or carriage return would start a new line of spark-defaults.conf",
            line(&text, "properties = ")
        )
    );
    // a trailing backslash joins the next line (`spark.authenticate true`) to it
    let text = with_master_line("properties = { \"spark.a\" = 'x\\' }");
    assert_eq!(
        refusal(&text),
        format!(
            "cluster.toml:{}: `spark.masters.properties`: the value of `spark.a` (`x\\\\`) ends with `\\`, which would join the next line of spark-defaults.conf to it",
            line(&text, "properties = ")
        )
    );
    // `=` (or `:`, or white space) in a key ends the key there
    let text = with_master_line("properties = { \"spark.x=y\" = 1 }");
    assert_eq!(
        refusal(&text),
        format!(
            "cluster.toml:{}: `spark.masters.properties`: `spark.x=y` is not a property name (letters, digits and `._-`)",
            line(&text, "properties = ")
        )
    );
    let e = refusal(&with_master_line(
        "properties = { \"spark.a\\nspark.authenticate\" = false }",
    ));
    assert!(
        e.contains("`spark.a\\nspark.authenticate` is not a property name"),
        "{e}"
    );
    // the workers' properties too
    let e = refusal(&HA.replace("86400", "\"1\\n\""));
    assert!(
        e.contains("`spark.workers.properties`: the value of `spark.worker.cleanup.appDataTtl`"),
        "{e}"
    );
}

#[test]
fn refuses_a_zookeeper_dir_that_would_swallow_the_next_line() {
    // `spark.deploy.zookeeper.dir /spark\` would swallow the `url` line after it
    let text = HA.replace("zookeeper_dir = \"/spark\"", "zookeeper_dir = '/spark\\'");
    let e = refusal(&text);
    assert!(
        e.starts_with("cluster.toml:") && e.contains("`spark.masters.zookeeper_dir`: `/spark\\\\`"),
        "{e}"
    );
}

#[test]
fn refuses_a_planned_folder_inside_another() {
    // a container owns the outer folder: it could swap the inner one for a
    // link between `up`'s check and its act
    let with = |work: &str, data: &str| {
        HA.replacen(
            "[spark.workers]\n",
            &format!("[spark.workers]\nwork_dir = \"{work}\"\n"),
            1,
        )
        .replacen(
            "[zookeeper]\n",
            &format!("[zookeeper]\ndata_dir = \"{data}\"\n"),
            1,
        )
    };
    for (work, data, inner, outer) in [
        (
            "/srv/spark",
            "/srv/spark/zk",
            "zookeeper.data_dir",
            "spark.workers.work_dir",
        ),
        (
            "/srv/zk/work",
            "/srv/zk",
            "spark.workers.work_dir",
            "zookeeper.data_dir",
        ),
        (
            "/srv/both",
            "/srv/both",
            "zookeeper.data_dir",
            "spark.workers.work_dir",
        ),
    ] {
        let e = refusal(&with(work, data));
        assert!(
            e.starts_with("cluster.toml: `")
                && e.contains(&format!("`{inner}`"))
                && e.contains(&format!("`{outer}`"))
                && e.contains("inside")
                && !e.contains('\n'),
            "{work} {data}: {e}"
        );
    }
    // ferry's config folders are root's: no container folder may hold them
    let e = refusal(&with("/etc", "/srv/zk"));
    assert!(
        e.contains("`spark.workers.work_dir`") && e.contains("/etc/ferry"),
        "{e}"
    );
    // side by side is fine
    parse(&with("/srv/spark", "/srv/spark-zk"));
}

#[test]
fn refuses_a_cluster_name_the_push_store_uses() {
    // cluster state and the push store share /var/lib/ferry
    for name in ["images", "tmp", "blobs", "locks", "lock"] {
        let text = HA.replacen("name = \"ha\"", &format!("name = \"{name}\""), 1);
        assert_eq!(
            refusal(&text),
            format!(
                "cluster.toml:4: `name`: `{name}` is a folder of the push store beside the cluster's state in /var/lib/ferry; choose another cluster name"
            )
        );
    }
    parse(&HA.replacen("name = \"ha\"", "name = \"images2\"", 1));
}

#[test]
fn refuses_jvm_options_that_set_what_ferry_derives() {
    // `-D` options are system properties, which beat spark-defaults.conf
    // and zoo.cfg: they must not switch authentication off or point the
    // masters at another ensemble
    let sections = [
        (
            "zookeeper.jvm_options",
            "jvm_options = [\"-Xmx256m\"]\n\n[spark",
        ),
        ("spark.masters.jvm_options", "jvm_options = [\"-Xmx512m\"]"),
        (
            "spark.workers.jvm_options",
            "jvm_options = [\"-Xmx256m\"]\n[spark.workers",
        ),
    ];
    for (field, old) in sections {
        assert!(HA.contains(old), "{old}");
        for (opt, key) in [
            ("-Dspark.authenticate=false", "spark.authenticate"),
            ("-Dspark.authenticate", "spark.authenticate"),
            (
                "-Dspark.authenticate.enableSaslEncryption=false",
                "spark.authenticate.enableSaslEncryption",
            ),
            (
                "-Dspark.deploy.zookeeper.url=evil:2181",
                "spark.deploy.zookeeper.url",
            ),
            (
                "-Dspark.deploy.recoveryMode=NONE",
                "spark.deploy.recoveryMode",
            ),
            ("-Dzookeeper.authProvider.1=x.Y", "zookeeper.authProvider.1"),
            ("-Dzookeeper.sasl.client=false", "zookeeper.sasl.client"),
            (
                "-Dzookeeper.enforce.auth.enabled=false",
                "zookeeper.enforce.auth.enabled",
            ),
        ] {
            let to = old.replacen("\"]", &format!("\", \"{opt}\"]"), 1);
            let text = HA.replacen(old, &to, 1);
            assert_eq!(
                refusal(&text),
                format!(
                    "cluster.toml:{}: `{field}`: `{key}` is set by ferry (or guards what it sets); remove it here",
                    line(&text, opt)
                ),
                "{field} {opt}"
            );
        }
    }
    // other system properties stay the operator's own
    parse(&HA.replace(
        "jvm_options = [\"-Xmx512m\"]",
        "jvm_options = [\"-Xmx512m\", \"-Djava.net.preferIPv4Stack=true\", \"-Dspark.ui.port=8090\"]",
    ));
}

#[test]
fn refuses_jvm_options_with_control_characters() {
    let e = refusal(&HA.replace("\"-Xmx512m\"", "\"-Xmx512m\\r\""));
    assert!(
        e.contains("`spark.masters.jvm_options`: `-Xmx512m\\r` is not a plain JVM option"),
        "{e}"
    );
}

// --- every string of the cluster file has a grammar where one exists ------

/// HA with a sixth host, `extra`, in no role: `lines` are its table's.
fn with_extra_host(lines: &str) -> String {
    format!("{HA}\n[[host]]\n{lines}\n")
}

#[test]
fn refuses_values_outside_their_grammar_naming_the_field() {
    let cases: Vec<(String, &str)> = vec![
        (
            HA.replace("\"10.0.0.11\"", "\"10.0.0.11; touch pwned\""),
            "host.address",
        ),
        (
            with_extra_host("name = \"-rf\"\naddress = \"10.0.0.99\""),
            "host.name",
        ),
        (
            with_extra_host("name = \"a$(x)\"\naddress = \"10.0.0.99\""),
            "host.name",
        ),
        (
            with_extra_host("name = \"extra\"\naddress = \"-oProxyCommand=x\""),
            "host.address",
        ),
        (
            with_extra_host(
                "name = \"extra\"\naddress = \"10.0.0.99\"\nssh = { user = \"root@evil\" }",
            ),
            "host.ssh.user",
        ),
        (
            with_extra_host(
                "name = \"extra\"\naddress = \"10.0.0.99\"\nssh = { jump = \"root@a b\" }",
            ),
            "host.ssh.jump",
        ),
        (
            with_extra_host(
                "name = \"extra\"\naddress = \"10.0.0.99\"\nssh = { key = \"/k\\nhost forged\" }",
            ),
            "host.ssh.key",
        ),
        (
            with_extra_host(
                "name = \"extra\"\naddress = \"10.0.0.99\"\nlabels = { \"a b\" = \"c\" }",
            ),
            "host.labels",
        ),
        (
            with_extra_host(
                "name = \"extra\"\naddress = \"10.0.0.99\"\nlabels = { a = \"c\\nhost forged\" }",
            ),
            "host.labels",
        ),
        (
            HA.replace("\"ferry/spark:3.5.3\"", "\"ferry/spark:3.5.3 --privileged\""),
            "image.reference",
        ),
        (
            HA.replace("reference = \"ferry/spark:3.5.3\"", "layout = \"out\\nspark\""),
            "image.layout",
        ),
        (
            HA.replace("delivery = \"ssh\"", "delivery = \"s3://bucket/$(touch pwned)/\""),
            "delivery",
        ),
        (
            HA.replace(
                "delivery = \"ssh\"",
                "delivery = \"s3://bucket/images/\"\nobject_store = { endpoint = \"http://s3 `x`\" }",
            ),
            "object_store.endpoint",
        ),
        (
            HA.replace(
                "delivery = \"ssh\"",
                "delivery = \"s3://bucket/images/\"\nobject_store = { region = \"us;x\" }",
            ),
            "object_store.region",
        ),
        (
            HA.replace("client_port = 2181", "client_port = 2181\ndata_dir = \"/data/zk:/etc\""),
            "zookeeper.data_dir",
        ),
        (
            HA.replace("memory = \"1g\"", "memory = \"1g\"\nwork_dir = \"/data/a b\""),
            "spark.workers.work_dir",
        ),
        (
            HA.replace("zookeeper_dir = \"/spark\"", "zookeeper_dir = \"spark\""),
            "spark.masters.zookeeper_dir",
        ),
        (HA.replace("port = 7077", "port = 0"), "spark.masters.port"),
    ];
    for (text, field) in cases {
        let e = refusal(&text);
        assert!(
            e.starts_with("cluster.toml:") && e.contains(&format!("`{field}`")),
            "{field}: {e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }
}

// --- property: each string field, each hostile value ----------------------

/// Every string field of the cluster file, as the field its refusal names
/// and the HA file with that field set to a value (TOML-quoted).
/// The HA file with one field set to a (TOML-quoted) value.
type WithField = Box<dyn Fn(&str) -> String>;

fn string_fields() -> Vec<(&'static str, WithField)> {
    let extra = |lines: &'static str| move |q: &str| with_extra_host(&lines.replace("@V@", q));
    let s3 = |line: &'static str| {
        move |q: &str| {
            HA.replace(
                "delivery = \"ssh\"",
                &format!(
                    "delivery = \"s3://bucket/images/\"\n{}",
                    line.replace("@V@", q)
                ),
            )
        }
    };
    let master_line = |line: &'static str| move |q: &str| with_master_line(&line.replace("@V@", q));
    let worker_line = |line: &'static str| {
        move |q: &str| {
            HA.replace(
                "cores = 2\n",
                &format!("cores = 2\n{}\n", line.replace("@V@", q)),
            )
        }
    };
    vec![
        (
            "name",
            Box::new(|q: &str| HA.replace("name = \"ha\"", &format!("name = {q}"))),
        ),
        (
            "host.name",
            Box::new(extra("name = @V@\naddress = \"10.0.0.99\"")),
        ),
        (
            "host.address",
            Box::new(|q: &str| HA.replace("address = \"10.0.0.11\"", &format!("address = {q}"))),
        ),
        (
            "host.ssh.user",
            Box::new(extra(
                "name = \"extra\"\naddress = \"10.0.0.99\"\nssh = { user = @V@ }",
            )),
        ),
        (
            "host.ssh.key",
            Box::new(extra(
                "name = \"extra\"\naddress = \"10.0.0.99\"\nssh = { key = @V@ }",
            )),
        ),
        (
            "host.ssh.jump",
            Box::new(extra(
                "name = \"extra\"\naddress = \"10.0.0.99\"\nssh = { jump = @V@ }",
            )),
        ),
        (
            "host.labels",
            Box::new(extra(
                "name = \"extra\"\naddress = \"10.0.0.99\"\nlabels = { @V@ = \"x\" }",
            )),
        ),
        (
            "host.labels",
            Box::new(extra(
                "name = \"extra\"\naddress = \"10.0.0.99\"\nlabels = { x = @V@ }",
            )),
        ),
        (
            "host `extra`.worker.memory",
            Box::new(extra(
                "name = \"extra\"\naddress = \"10.0.0.99\"\nworker = { memory = @V@ }",
            )),
        ),
        (
            "image.reference",
            Box::new(|q: &str| HA.replace("\"ferry/spark:3.5.3\"", q)),
        ),
        (
            "image.layout",
            Box::new(|q: &str| {
                HA.replace(
                    "reference = \"ferry/spark:3.5.3\"",
                    &format!("layout = {q}"),
                )
            }),
        ),
        (
            "delivery",
            Box::new(|q: &str| HA.replace("delivery = \"ssh\"", &format!("delivery = {q}"))),
        ),
        (
            "object_store.endpoint",
            Box::new(s3("object_store = { endpoint = @V@ }")),
        ),
        (
            "object_store.region",
            Box::new(s3("object_store = { region = @V@ }")),
        ),
        (
            "object_store.url_style",
            Box::new(s3("object_store = { url_style = @V@ }")),
        ),
        (
            "zookeeper.data_dir",
            Box::new(|q: &str| {
                HA.replace(
                    "client_port = 2181",
                    &format!("client_port = 2181\ndata_dir = {q}"),
                )
            }),
        ),
        (
            "zookeeper.jvm_options",
            Box::new(|q: &str| {
                HA.replacen(
                    "jvm_options = [\"-Xmx256m\"]",
                    &format!("jvm_options = [{q}]"),
                    1,
                )
            }),
        ),
        (
            "zookeeper.auth",
            Box::new(|q: &str| HA.replace("[zookeeper]\n", &format!("[zookeeper]\nauth = {q}\n"))),
        ),
        (
            "zookeeper.hosts",
            Box::new(|q: &str| {
                HA.replace(
                    "hosts = [\"node1\", \"node2\", \"node3\"]",
                    &format!("hosts = [{q}, \"node2\", \"node3\"]"),
                )
            }),
        ),
        (
            "spark.masters.zookeeper_dir",
            Box::new(|q: &str| {
                HA.replace(
                    "zookeeper_dir = \"/spark\"",
                    &format!("zookeeper_dir = {q}"),
                )
            }),
        ),
        (
            "spark.masters.properties",
            Box::new(master_line("properties = { @V@ = 1 }")),
        ),
        (
            "spark.masters.properties",
            Box::new(master_line("properties = { \"spark.a\" = @V@ }")),
        ),
        (
            "spark.masters.jvm_options",
            Box::new(|q: &str| {
                HA.replace(
                    "jvm_options = [\"-Xmx512m\"]",
                    &format!("jvm_options = [{q}]"),
                )
            }),
        ),
        (
            "spark.masters.hosts",
            Box::new(|q: &str| {
                HA.replace(
                    "hosts = [\"node1\", \"node2\"]",
                    &format!("hosts = [\"node1\", {q}]"),
                )
            }),
        ),
        (
            "spark.workers.hosts",
            Box::new(|q: &str| {
                HA.replace(
                    "hosts = [\"node4\", \"node5\"]",
                    &format!("hosts = [\"node4\", {q}]"),
                )
            }),
        ),
        (
            "spark.workers.memory",
            Box::new(|q: &str| HA.replace("memory = \"1g\"", &format!("memory = {q}"))),
        ),
        (
            "spark.workers.work_dir",
            Box::new(worker_line("work_dir = @V@")),
        ),
        (
            "spark.workers.ui_ports",
            Box::new(worker_line("ui_ports = { @V@ = 9000 }")),
        ),
        (
            "spark.workers.masters",
            Box::new(worker_line("masters = [\"node1\", \"node2\", @V@]")),
        ),
        (
            "spark.workers.properties",
            Box::new(|q: &str| HA.replace("= 86400", &format!("= {q}"))),
        ),
        (
            "spark.workers.properties",
            Box::new(|q: &str| HA.replace("\"spark.worker.cleanup.appDataTtl\"", q)),
        ),
        (
            "spark.workers.jvm_options",
            Box::new(|q: &str| {
                HA.replace(
                    "jvm_options = [\"-Xmx256m\"]\n[spark.workers.properties]",
                    &format!("jvm_options = [{q}]\n[spark.workers.properties]"),
                )
            }),
        ),
    ]
}

/// `v` as a one-line TOML basic string (good as a key too).
fn basic_string(v: &str) -> String {
    let mut q = String::from("\"");
    for c in v.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            c if c.is_control() => q.push_str(&format!("\\u{:04X}", c as u32)),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

#[test]
fn each_string_field_refuses_a_hostile_value_by_name_or_plans_it() {
    let mut accepted: Vec<String> = Vec::new();
    for (field, text_with) in string_fields() {
        // the template itself is a good cluster file
        let good = text_with("\"x\"");
        assert_ne!(good, HA, "{field}: the template does not set the field");
        for v in crate::ssh::script::tests::HOSTILE {
            let q = basic_string(v);
            let text = text_with(&q);
            match ClusterFile::parse(&text, Path::new("cluster.toml")) {
                Err(e) => {
                    let e = e.to_string();
                    assert!(
                        e.contains(&format!("`{field}`")),
                        "{field} = {v:?}: the refusal does not name the field: {e}"
                    );
                    assert!(!e.contains('\n'), "{field} = {v:?}: {e}");
                }
                Ok(file) => {
                    plan::plan(&file, &facts())
                        .unwrap_or_else(|e| panic!("{field} = {v:?}: no plan: {e}"));
                    accepted.push(format!("{field} = {v:?}"));
                }
            }
        }
    }
    // what still reaches the launcher's scripts, for its tests to carry as data
    eprintln!("accepted:\n{}", accepted.join("\n"));
}

#[test]
fn each_label_refuses_a_hostile_value_by_name_or_plans_it() {
    for label in [
        "ferry.spark.user",
        "ferry.zookeeper.user",
        "ferry.spark.home",
        "ferry.zookeeper.conf",
        "ferry.zookeeper.start",
        "ferry.sample-job",
    ] {
        for v in crate::ssh::script::tests::HOSTILE {
            let mut f = facts();
            f.labels.insert(label.to_string(), v.to_string());
            let e = plan::plan(&parse(HA), &f)
                .expect_err("no hostile value fits a label's grammar")
                .to_string();
            assert!(
                e.contains(&format!("label `{label}`")),
                "{label} = {v:?}: {e}"
            );
            assert!(!e.contains('\n'), "{label} = {v:?}: {e}");
        }
    }
}

#[test]
fn refuses_an_image_whose_reference_or_digests_are_not_well_formed() {
    // a layout's `io.containerd.image.name` annotation names the image the
    // hosts run: whoever made the layout chose it
    let mut f = facts();
    f.reference = "ferry/spark:3.5.3 --privileged".into();
    let e = plan::plan(&parse(HA), &f).unwrap_err().to_string();
    assert!(
        e.starts_with(
            "the image's reference (`ferry/spark:3.5.3 --privileged`) is not an image reference"
        ),
        "{e}"
    );
    let mut f = facts();
    f.config_digest = "sha256:../../etc/passwd".into();
    let e = plan::plan(&parse(HA), &f).unwrap_err().to_string();
    assert!(
        e.starts_with("the image's config digest (`sha256:../../etc/passwd`) is not a digest"),
        "{e}"
    );
    let mut f = facts();
    f.digest = "sha256:AB\n".into();
    let e = plan::plan(&parse(HA), &f).unwrap_err().to_string();
    assert!(
        e.starts_with("the image's manifest digest (`sha256:AB\\n`)"),
        "{e}"
    );
}
