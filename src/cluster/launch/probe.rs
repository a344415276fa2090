//! Asking a running cluster's daemons how they are: ZooKeeper's `srvr`
//! and a master's `/json/`, over the fleet's TCP connections; and where the
//! planned masters answer. Reads only: it starts, stops and writes nothing.

use super::plan_host;
use crate::cluster::fleet::Fleet;
use crate::cluster::plan::{Container, Gate, HostPlan, Plan, Role};

/// A master's states once elected: it recovers (hears from every worker and
/// application) before it is ALIVE.
pub(super) const ELECTED: &[&str] = &["ALIVE", "RECOVERING", "COMPLETING_RECOVERY"];

/// Whether the master on `host` is in one of `states` (its `/json/`).
pub(super) fn master_in(fleet: &Fleet, host: &str, states: &[&str]) -> bool {
    let address = &plan_host(fleet.plan, host).address;
    master_url_of(fleet.plan, address)
        .and_then(|u| get_json(fleet, &u).ok())
        .is_some_and(|j| j["status"].as_str().is_some_and(|s| states.contains(&s)))
}

fn master_url_of(plan: &Plan, address: &str) -> Option<String> {
    plan.steps.iter().find_map(|s| match &s.gate {
        Some(Gate::OneMasterAlive { status_urls, .. }) => status_urls
            .iter()
            .find(|u| split_url(u).is_some_and(|(a, _, _)| a == address))
            .cloned(),
        _ => None,
    })
}

/// `host:port` (IPv6 in brackets) into its parts.
pub(super) fn split_addr(s: &str) -> Option<(String, u16)> {
    let (h, p) = s.rsplit_once(':')?;
    let h = h.trim_start_matches('[').trim_end_matches(']');
    Some((h.to_string(), p.parse().ok()?))
}

/// `http://host:port/path` into its parts.
pub(super) fn split_url(u: &str) -> Option<(String, u16, String)> {
    let rest = u.strip_prefix("http://")?;
    let (hp, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (h, p) = split_addr(hp)?;
    Some((h, p, format!("/{path}")))
}

pub(super) fn registered_workers(json: &serde_json::Value) -> Vec<String> {
    json["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|w| w["state"] == "ALIVE")
        .map(|w| format!("{}:{}", w["host"].as_str().unwrap_or(""), w["port"]))
        .collect()
}

/// Why a daemon gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub(super) enum ProbeError {
    /// No host of the fleet could reach the address (the last one's why).
    #[error("{0}")]
    Unreachable(String),
    #[error("no `Mode:` in the answer ({answer})")]
    NoMode { answer: String },
    #[error("bad URL `{url}`")]
    BadUrl { url: String },
    #[error("{url}: not an HTTP answer")]
    NotHttp { url: String },
    #[error("{url}: {status}")]
    Status { url: String, status: String },
    #[error("{url}: {source}")]
    Json {
        url: String,
        source: serde_json::Error,
    },
}

/// ZooKeeper's `Mode:` from its `srvr` answer.
pub(super) fn srvr_mode(fleet: &Fleet, addr: &str, port: u16) -> Result<String, ProbeError> {
    let out = fleet
        .exchange(addr, port, b"srvr")
        .map_err(ProbeError::Unreachable)?;
    let out = String::from_utf8_lossy(&out);
    out.lines()
        .find_map(|l| l.strip_prefix("Mode: "))
        .map(|m| m.trim().to_string())
        .ok_or_else(|| ProbeError::NoMode {
            answer: out.trim().to_string(),
        })
}

/// GETs a URL over HTTP/1.0 through the fleet and parses its JSON body.
pub(super) fn get_json(fleet: &Fleet, url: &str) -> Result<serde_json::Value, ProbeError> {
    let (addr, port, path) =
        split_url(url).ok_or_else(|| ProbeError::BadUrl { url: url.into() })?;
    let req =
        format!("GET {path} HTTP/1.0\r\nHost: {addr}:{port}\r\nAccept: application/json\r\n\r\n");
    let answer = fleet
        .exchange(&addr, port, req.as_bytes())
        .map_err(ProbeError::Unreachable)?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| ProbeError::NotHttp { url: url.into() })?;
    let status = head.lines().next().unwrap_or("");
    if !status.contains(" 200") {
        return Err(ProbeError::Status {
            url: url.into(),
            status: status.into(),
        });
    }
    serde_json::from_str(body).map_err(|source| ProbeError::Json {
        url: url.into(),
        source,
    })
}

pub(super) fn alive_masters(
    fleet: &Fleet,
    status_urls: &[String],
) -> Vec<(String, serde_json::Value)> {
    status_urls
        .iter()
        .filter_map(|u| {
            let json = get_json(fleet, u).ok()?;
            (json["status"] == "ALIVE").then(|| (u.clone(), json))
        })
        .collect()
}

/// The planned masters: (host, container, status URL).
pub(super) fn masters(plan: &Plan) -> Vec<(&HostPlan, &Container, String)> {
    plan.hosts
        .iter()
        .flat_map(|h| h.containers.iter().map(move |c| (h, c)))
        .filter(|(_, c)| c.role == Role::Master)
        .filter_map(|(h, c)| Some((h, c, master_url_of(plan, &h.address)?)))
        .collect()
}
