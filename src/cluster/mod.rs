//! Clusters: the cluster file (`file`), the flat-config import (`envcfg`),
//! the pure run plan (`plan`) and the text of the files it writes (`render`),
//! and `launch/` (one file per thing done to a running cluster: up, gate,
//! status, logs, submit, scale, drill, down, handover), which alone runs a
//! plan on its `hosts` (SSH, or this machine).

pub mod envcfg;
pub mod file;
pub mod fleet;
pub mod hosts;
pub mod launch;
pub mod plan;
pub mod render;

#[cfg(test)]
mod tests;
