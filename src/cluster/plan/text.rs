//! The plan as people read it (`ferry plan`), and as JSON.

use std::fmt::Write as _;

use super::{Action, Gate, JaasSection, Plan};
use crate::cluster::render;

impl Plan {
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a plan serialises");
        s.push('\n');
        s
    }

    /// The plan for people: per host, then the steps. File contents are
    /// shown in full, so two plans diff line by line.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "cluster   {}", self.cluster);
        let _ = writeln!(s, "plan      {}", self.plan_hash);
        let _ = writeln!(
            s,
            "image     {} ({}, config {})",
            self.image.reference, self.image.digest, self.image.config_digest
        );
        let _ = writeln!(s, "runtime   {}, delivery {}", self.runtime, self.delivery);
        let _ = writeln!(s, "masters   {}", self.master_url);
        for h in &self.hosts {
            let _ = writeln!(s);
            let jump = h
                .jump
                .as_deref()
                .map(|j| format!(" via {j}"))
                .unwrap_or_default();
            let key = h
                .key
                .as_deref()
                .map(|k| format!(", key {k}"))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "host {} ({}, ssh {}{jump}{key})",
                h.name, h.address, h.ssh
            );
            if !h.labels.is_empty() {
                let l: Vec<String> = h.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let _ = writeln!(s, "  labels {}", l.join(", "));
            }
            if h.containers.is_empty() {
                let _ = writeln!(s, "  nothing runs here");
                continue;
            }
            for d in &h.dirs {
                let _ = writeln!(s, "  dir   {} {} owner {}", d.path, d.mode, d.owner);
            }
            if let Some(sec) = &h.secret {
                let _ = writeln!(
                    s,
                    "  secret {} {} owner {} (the cluster's Spark RPC secret: made on the hosts by the first `up`, never shown)",
                    sec.path, sec.mode, sec.owner
                );
            }
            for j in &h.jaas {
                let what = match j.section {
                    JaasSection::Server => "ZooKeeper's login: its one user",
                    JaasSection::Client => "the master's ZooKeeper login as",
                };
                let _ = writeln!(
                    s,
                    "  jaas  {} {} owner {} ({what} `{}`, with the cluster's ZooKeeper password: made from its secret by `up`, never shown)",
                    j.path,
                    j.mode,
                    j.owner,
                    render::ZK_LOGIN_USER
                );
            }
            for f in &h.files {
                let _ = writeln!(
                    s,
                    "  file  {} {} sha256:{}",
                    f.path,
                    f.mode,
                    &f.sha256[..16]
                );
                if f.path.ends_with("log4j2.properties") {
                    let _ = writeln!(
                        s,
                        "        | (Spark's console log configuration, {} lines)",
                        f.content.lines().count()
                    );
                    continue;
                }
                for line in f.content.lines() {
                    let _ = writeln!(s, "        | {line}");
                }
            }
            for c in &h.containers {
                let _ = writeln!(s, "  container {} ({})", c.name, c.role.as_str());
                let _ = writeln!(s, "        image   {}@{}", c.image, c.image_digest);
                let _ = writeln!(s, "        user    {}", c.user);
                let _ = writeln!(s, "        command {}", c.command.join(" "));
                for (k, v) in &c.env {
                    let _ = writeln!(s, "        env     {k}={v}");
                }
                if let Some(f) = &c.env_file {
                    let _ = writeln!(s, "        env     (from {f}: the cluster's secret)");
                }
                for m in &c.mounts {
                    let ro = if m.read_only { "ro" } else { "rw" };
                    let _ = writeln!(s, "        mount   {} -> {} ({ro})", m.source, m.target);
                }
                let ports: Vec<String> = c
                    .ports
                    .iter()
                    .map(|p| format!("{} {}", p.port, p.purpose))
                    .collect();
                let _ = writeln!(
                    s,
                    "        ports   {} (network {})",
                    ports.join(", "),
                    c.network
                );
                let _ = writeln!(s, "        restart {}", c.restart);
                for (k, v) in &c.labels {
                    let _ = writeln!(s, "        label   {k}={v}");
                }
            }
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "steps");
        for (i, st) in self.steps.iter().enumerate() {
            let what = match st.action {
                Action::DeliverImage => format!("deliver the image ({})", self.delivery),
                Action::WriteFiles => "write folders and files".to_string(),
                Action::StartZookeeper => "start ZooKeeper".to_string(),
                Action::StartMasters => "start the Spark masters".to_string(),
                Action::StartWorkers => "start the Spark workers".to_string(),
            };
            let _ = writeln!(s, "  {}. {what} on {}", i + 1, st.hosts.join(", "));
            match &st.gate {
                None => {}
                Some(Gate::ZookeeperLeader {
                    servers,
                    deadline_secs,
                }) => {
                    let _ = writeln!(
                        s,
                        "     gate: `srvr` on {} shows one leader and the rest followers (or standalone), within {deadline_secs}s",
                        servers.join(", ")
                    );
                }
                Some(Gate::OneMasterAlive {
                    status_urls,
                    deadline_secs,
                }) => {
                    let _ = writeln!(
                        s,
                        "     gate: exactly one of {} says \"status\":\"ALIVE\", within {deadline_secs}s",
                        status_urls.join(", ")
                    );
                }
                Some(Gate::WorkersRegistered {
                    workers,
                    deadline_secs,
                    ..
                }) => {
                    let _ = writeln!(
                        s,
                        "     gate: the alive master lists {} as ALIVE workers, within {deadline_secs}s",
                        workers.join(", ")
                    );
                }
            }
        }
        s
    }
}
