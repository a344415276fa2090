//! Clusters: the cluster file (`file`), the flat-config import (`envcfg`),
//! the pure run plan (`plan`) and the text of the files it writes (`render`).
//! Nothing in here talks to a host.

pub mod envcfg;
pub mod file;
pub mod plan;
pub mod render;

#[cfg(test)]
mod tests;
