//! What each planned container needs (nothing, a start, a creation, a
//! replacement), as the hosts report it, and the safe order to replace
//! serving ones in. Looks only: the starting is `up`'s.

use crate::ssh::Script;

use super::plan_host;
use super::probe::{ELECTED, master_in, srvr_mode};
use super::scripts::SURVEY_SH;
use crate::cluster::fleet::Fleet;
use crate::cluster::hosts::HostError;
use crate::cluster::plan::{Container, Role};

/// What a start step finds a planned container to need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    Nothing,
    /// It exists with the planned spec but is not running.
    Start,
    Create,
    /// Its spec changed; `running` if it serves now.
    Replace {
        running: bool,
    },
}

/// One planned container and what it needs.
#[derive(Debug, Clone)]
pub struct Survey {
    pub host: String,
    pub container: String,
    pub need: Need,
}

/// Asks each host how its containers of `role` compare with the plan.
pub fn survey(fleet: &Fleet, hosts: &[String], role: Role) -> Vec<Survey> {
    fleet
        .each(hosts, &|hp, c| {
            let mine: Vec<&Container> = hp.containers.iter().filter(|c| c.role == role).collect();
            let script = Script::new(SURVEY_SH).args(mine.iter().map(|c| &c.name));
            let out = c.run("looking at the containers", &script, &[])?;
            Ok::<_, HostError>(
                mine.iter()
                    .map(|ct| {
                        let line = out
                            .lines()
                            .find(|l| l.split(' ').next() == Some(ct.name.as_str()))
                            .unwrap_or("");
                        let f: Vec<&str> = line.split(' ').collect();
                        let want = &ct.labels["ferry.spec"];
                        let need = match (f.get(1).copied(), f.get(2).copied()) {
                            (Some("missing") | None, _) => Need::Create,
                            (Some(spec), Some(run)) if spec == want => {
                                if run == "true" {
                                    Need::Nothing
                                } else {
                                    Need::Start
                                }
                            }
                            (_, run) => Need::Replace {
                                running: run == Some("true"),
                            },
                        };
                        Survey {
                            host: hp.name.clone(),
                            container: ct.name.clone(),
                            need,
                        }
                    })
                    .collect::<Vec<_>>(),
            )
        })
        .into_iter()
        .flat_map(|(_, v)| v)
        .collect()
}

/// The running containers to replace one at a time, in a safe order:
/// ZooKeeper followers before the leader, standby masters before the
/// active one, workers in the plan's order.
pub fn rolling_order(fleet: &Fleet, role: Role, replace: Vec<Survey>) -> Vec<Survey> {
    let mut keyed: Vec<(u8, Survey)> = replace
        .into_iter()
        .map(|s| {
            let hp = plan_host(fleet.plan, &s.host);
            let port = hp
                .containers
                .iter()
                .find(|c| c.name == s.container)
                .and_then(|c| c.ports.first())
                .map(|p| p.port)
                .unwrap_or(0);
            let last = match role {
                Role::Zookeeper => srvr_mode(fleet, &hp.address, port).is_ok_and(|m| m == "leader"),
                // a leader still recovering is the leader too
                Role::Master => master_in(fleet, &s.host, ELECTED),
                Role::Worker => false,
            };
            (u8::from(last), s)
        })
        .collect();
    // stable: the plan's order within each group
    keyed.sort_by_key(|(k, _)| *k);
    keyed.into_iter().map(|(_, s)| s).collect()
}

/// The containers of a role that serve now but must be replaced, the rest,
/// and whether the replacement must roll (one at a time, gated): when
/// serving containers of a role with more than one must change.
pub(super) fn split_serving(
    fleet: &Fleet,
    hosts: &[String],
    role: Role,
) -> (Vec<Survey>, Vec<Survey>, bool) {
    let (serving, rest): (Vec<Survey>, Vec<Survey>) = survey(fleet, hosts, role)
        .into_iter()
        .partition(|s| s.need == Need::Replace { running: true });
    let rolling = !serving.is_empty() && serving.len() + rest.len() > 1;
    (serving, rest, rolling)
}
