//! The plan's hosts as one fleet: each host's session (if it could be
//! reached) and the first failure seen on it, so a host that fails is set
//! aside and the rest go on. Shared by `launch` and its `handover`; it runs no
//! step of its own and must not reach into either.

use std::sync::Mutex;

use super::hosts::ClusterHost;
use super::plan::{HostPlan, Plan};

/// One host of the plan: its session (if it could be reached) and the first
/// failure seen on it.
pub struct Slot {
    pub conn: Option<Box<dyn ClusterHost>>,
    failure: Mutex<Option<String>>,
}

/// The plan's hosts, in the plan's order.
pub struct Fleet<'a> {
    pub plan: &'a Plan,
    slots: Vec<Slot>,
}

impl<'a> Fleet<'a> {
    /// `conns` is in the order of `plan.hosts`: a session or why there is none.
    pub fn new(plan: &'a Plan, conns: Vec<Result<Box<dyn ClusterHost>, String>>) -> Fleet<'a> {
        let slots = conns
            .into_iter()
            .map(|c| match c {
                Ok(c) => Slot {
                    conn: Some(c),
                    failure: Mutex::new(None),
                },
                Err(why) => Slot {
                    conn: None,
                    failure: Mutex::new(Some(why)),
                },
            })
            .collect();
        Fleet { plan, slots }
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.plan.hosts.iter().position(|h| h.name == name)
    }

    /// The host's session, unless it failed.
    pub fn ok(&self, name: &str) -> Option<&dyn ClusterHost> {
        let s = &self.slots[self.index(name)?];
        if s.failure.lock().expect("failure lock").is_some() {
            return None;
        }
        s.conn.as_deref()
    }

    pub(super) fn fail(&self, name: &str, why: String) {
        if let Some(i) = self.index(name) {
            let mut f = self.slots[i].failure.lock().expect("failure lock");
            if f.is_none() {
                *f = Some(why);
            }
        }
    }

    /// Hosts that failed, with the first reason, in the plan's order.
    pub fn failures(&self) -> Vec<(String, String)> {
        self.plan
            .hosts
            .iter()
            .zip(&self.slots)
            .filter_map(|(h, s)| {
                s.failure
                    .lock()
                    .expect("failure lock")
                    .clone()
                    .map(|f| (h.name.clone(), f))
            })
            .collect()
    }

    /// Runs `f` on each named host still standing, all at once; a host whose
    /// `f` fails is set aside with the error.
    pub fn each<T: Send, E: Into<String>>(
        &self,
        names: &[String],
        f: &(dyn Fn(&HostPlan, &dyn ClusterHost) -> Result<T, E> + Sync),
    ) -> Vec<(String, T)> {
        let out = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for hp in self.plan.hosts.iter().filter(|h| names.contains(&h.name)) {
                let Some(conn) = self.ok(&hp.name) else {
                    continue;
                };
                let out = &out;
                s.spawn(move || match f(hp, conn) {
                    Ok(v) => out.lock().expect("results lock").push((hp.name.clone(), v)),
                    Err(why) => self.fail(&hp.name, why.into()),
                });
            }
        });
        let mut v = out.into_inner().expect("results lock");
        v.sort_by_key(|(n, _)| self.index(n));
        v
    }

    /// Opens `addr:port` from the host with that address, else from any
    /// reachable host (a host whose SSH is down may still serve).
    pub fn exchange(&self, addr: &str, port: u16, request: &[u8]) -> Result<Vec<u8>, String> {
        let own = self.plan.hosts.iter().position(|h| h.address == addr);
        let order = own
            .into_iter()
            .chain((0..self.slots.len()).filter(|i| Some(*i) != own));
        let mut last = format!("no reachable host to check {addr}:{port} from");
        for i in order {
            if let Some(c) = &self.slots[i].conn {
                match c.exchange(addr, port, request) {
                    Ok(a) => return Ok(a),
                    Err(e) => {
                        last = e.to_string();
                        // the host itself answered for its own address
                        if Some(i) == own {
                            return Err(last);
                        }
                    }
                }
            }
        }
        Err(last)
    }
}
