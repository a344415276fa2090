//! `ferry inspect`: layers, config and labels of a layout, as a table or JSON.

use std::process::ExitCode;

use anyhow::Result;
use serde_json::{Value, json};

use super::human;
use crate::cli::InspectArgs;
use crate::oci;

pub fn run(a: InspectArgs) -> Result<ExitCode> {
    let img = oci::open_layout(&a.layout)?;
    let diff_ids = img.diff_ids();
    let layers: Vec<Value> = img
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            json!({
                "name": l.annotations.get("io.ferry.layer").and_then(Value::as_str).unwrap_or(""),
                "digest": l.digest,
                "diff_id": diff_ids.get(i),
                "media_type": l.media_type,
                "size": l.size,
                "uncompressed_size": l.annotations.get("io.ferry.uncompressed-size").and_then(Value::as_str).and_then(|s| s.parse::<u64>().ok()),
                "compressor": l.annotations.get("io.ferry.compressor"),
            })
        })
        .collect();
    let c = &img.config_json["config"];
    if a.json {
        let v = json!({
            "manifest_digest": img.manifest.digest,
            "config_digest": img.config.digest,
            "created": img.config_json["created"],
            "architecture": img.config_json["architecture"],
            "os": img.config_json["os"],
            "layers": layers,
            "env": c["Env"], "entrypoint": c["Entrypoint"], "cmd": c["Cmd"],
            "workdir": c["WorkingDir"], "user": c["User"], "labels": c["Labels"],
            "exposed_ports": c["ExposedPorts"].as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("manifest  {}", img.manifest.digest);
    println!("config    {}", img.config.digest);
    println!(
        "created   {}   {}/{}",
        img.config_json["created"].as_str().unwrap_or("?"),
        img.config_json["os"].as_str().unwrap_or("?"),
        img.config_json["architecture"].as_str().unwrap_or("?")
    );
    println!();
    // nix layers are named after their store paths: wider than most
    let w = layers
        .iter()
        .map(|l| l["name"].as_str().unwrap_or("").len())
        .max()
        .unwrap_or(0)
        .max(20);
    println!(
        "  #  {:<w$} {:>10} {:>10}  digest",
        "layer", "size", "unpacked"
    );
    let mut total = 0;
    for (i, l) in layers.iter().enumerate() {
        let size = l["size"].as_u64().unwrap_or(0);
        total += size;
        println!(
            "{:>3}  {:<w$} {:>10} {:>10}  {}",
            i + 1,
            l["name"].as_str().unwrap_or(""),
            human(size),
            l["uncompressed_size"]
                .as_u64()
                .map(human)
                .unwrap_or_else(|| "?".into()),
            &l["digest"].as_str().unwrap_or("")[..19.min(l["digest"].as_str().unwrap_or("").len())]
        );
    }
    println!("{:>3}  {:<w$} {:>10}", "", "total", human(total));
    println!();
    let show = |k: &str, v: &Value| {
        if !v.is_null() {
            println!(
                "{k:<11} {}",
                if let Some(s) = v.as_str() {
                    s.to_string()
                } else {
                    v.to_string()
                }
            );
        }
    };
    show("entrypoint", &c["Entrypoint"]);
    show("cmd", &c["Cmd"]);
    show("workdir", &c["WorkingDir"]);
    show("user", &c["User"]);
    if let Some(env) = c["Env"].as_array() {
        println!("env");
        for e in env {
            println!("  {}", e.as_str().unwrap_or(""));
        }
    }
    if let Some(p) = c["ExposedPorts"].as_object() {
        println!(
            "ports       {}",
            p.keys().cloned().collect::<Vec<_>>().join(" ")
        );
    }
    if let Some(labels) = c["Labels"].as_object() {
        println!("labels");
        for (k, v) in labels {
            println!("  {k} = {}", v.as_str().unwrap_or(""));
        }
    }
    Ok(ExitCode::SUCCESS)
}
