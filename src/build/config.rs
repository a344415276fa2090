//! The image config: the base image's config with the definition's
//! environment, entrypoint, labels and the layers' history and diff ids.

use serde_json::{Value, json};

use super::BuiltLayer;
use crate::clock::format_rfc3339;
use crate::image::spec::Definition;

pub(super) fn make_config(
    def: &Definition,
    base: &Value,
    layers: &[BuiltLayer],
    base_count: usize,
) -> Value {
    let c = &def.spec.config;
    let bc = &base["config"];
    let mut env: Vec<String> = bc["Env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for (k, v) in &c.env {
        let kv = format!("{k}={v}");
        match env
            .iter_mut()
            .find(|e| e.split('=').next() == Some(k.as_str()))
        {
            Some(slot) => *slot = kv,
            None => env.push(kv),
        }
    }
    let mut cfg = serde_json::Map::new();
    if !env.is_empty() {
        cfg.insert("Env".into(), json!(env));
    }
    let pick = |mine: Option<Value>, key: &str| {
        mine.or_else(|| bc.get(key).filter(|v| !v.is_null()).cloned())
    };
    let fields = [
        (
            "Entrypoint",
            pick(c.entrypoint.as_ref().map(|v| json!(v)), "Entrypoint"),
        ),
        ("Cmd", pick(c.cmd.as_ref().map(|v| json!(v)), "Cmd")),
        (
            "WorkingDir",
            pick(c.workdir.as_ref().map(|v| json!(v)), "WorkingDir"),
        ),
        ("User", pick(c.user.as_ref().map(|v| json!(v)), "User")),
    ];
    for (k, v) in fields {
        if let Some(v) = v {
            cfg.insert(k.into(), v);
        }
    }
    let mut labels = bc["Labels"].as_object().cloned().unwrap_or_default();
    for (k, v) in &c.labels {
        labels.insert(k.clone(), json!(v));
    }
    if !labels.is_empty() {
        cfg.insert("Labels".into(), Value::Object(labels));
    }
    let mut ports = bc["ExposedPorts"].as_object().cloned().unwrap_or_default();
    for p in &c.exposed_ports {
        let p = if p.contains('/') {
            p.clone()
        } else {
            format!("{p}/tcp")
        };
        ports.insert(p, json!({}));
    }
    if !ports.is_empty() {
        cfg.insert("ExposedPorts".into(), Value::Object(ports));
    }
    let created = format_rfc3339(def.created);
    let mut history: Vec<Value> = base["history"].as_array().cloned().unwrap_or_default();
    for l in &layers[base_count..] {
        history.push(json!({ "created": created, "created_by": format!("ferry layer {}", l.name), "comment": format!("ferry {}", env!("CARGO_PKG_VERSION")) }));
    }
    json!({
        "architecture": def.spec.architecture.clone().unwrap_or_else(|| "amd64".into()),
        "os": "linux",
        "created": created,
        "config": Value::Object(cfg),
        "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|l| &l.blob.diff_id).collect::<Vec<_>>() },
        "history": history,
    })
}
