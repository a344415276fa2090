//! What a host holds (its listing, parsed) and the pure plan of what to send
//! and whether to load. It runs nothing.

use crate::grammar::is_hex64;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::image::{PushImage, image_id};

/// What a host's store and Docker hold, as listed in one round trip.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostState {
    /// Complete blobs: hex → size.
    pub blobs: BTreeMap<String, u64>,
    /// Interrupted transfers (`<hex>.part`): hex → bytes already there.
    pub parts: BTreeMap<String, u64>,
    /// `docker image inspect` of the reference: the image id, if present.
    pub docker_id: Option<String>,
    pub has_docker: bool,
    /// `head -c N` on the host reads no more than N bytes from a pipe (GNU
    /// coreutils' does; busybox's reads ahead), so one upload script can
    /// take many blobs from one stream.
    pub exact_head: bool,
    /// `unpigz` is on the PATH: dockerd (20.10 on) unpacks gzip layers with
    /// it when its own PATH has it, which a load here measured 25% faster.
    pub has_unpigz: bool,
    /// `RootFS.Layers` (diff_ids) of every image Docker has.
    pub docker_layers: Vec<Vec<String>>,
}

pub(super) const DOCKER_MARK: &str = "--ferry-docker--";
pub(super) const NO_DOCKER_MARK: &str = "--ferry-no-docker--";
pub(super) const EXACT_HEAD_MARK: &str = "--ferry-exact-head--";
pub(super) const NO_UNPIGZ_MARK: &str = "--ferry-no-unpigz--";
pub(super) const LAYERS_MARK: &str = "--ferry-docker-layers--";

impl HostState {
    /// Parses the output of [`list_script`]; unknown names are ignored.
    pub fn parse(out: &str) -> HostState {
        let mut st = HostState {
            has_docker: true,
            has_unpigz: true,
            ..HostState::default()
        };
        let mut in_docker = false;
        let mut in_layers = false;
        for line in out.lines() {
            let line = line.trim_end();
            if line == DOCKER_MARK {
                in_docker = true;
            } else if line == LAYERS_MARK {
                in_docker = false;
                in_layers = true;
            } else if in_layers {
                if let Ok(layers) = serde_json::from_str::<Vec<String>>(line) {
                    st.docker_layers.push(layers);
                }
            } else if line == EXACT_HEAD_MARK {
                st.exact_head = true;
            } else if line == NO_UNPIGZ_MARK {
                st.has_unpigz = false;
            } else if line == NO_DOCKER_MARK {
                st.has_docker = false;
            } else if in_docker {
                if let Some(id) = image_id(line) {
                    st.docker_id = Some(id);
                }
            } else if let Some((size, name)) = line.split_once(' ') {
                let Ok(size) = size.parse::<u64>() else {
                    continue;
                };
                if let Some(hex) = name.strip_suffix(".part") {
                    if is_hex64(hex) {
                        st.parts.insert(hex.to_string(), size);
                    }
                } else if is_hex64(name) {
                    st.blobs.insert(name.to_string(), size);
                }
            }
        }
        st
    }

    /// How many leading layers of `diff_ids` Docker already has as a chain
    /// (the prefix some image of the host shares): `docker load` skips
    /// those without reading their files.
    pub fn present_prefix(&self, diff_ids: &[String]) -> usize {
        self.docker_layers
            .iter()
            .map(|l| l.iter().zip(diff_ids).take_while(|(a, b)| a == b).count())
            .max()
            .unwrap_or(0)
    }
}

/// One blob to send, and from which byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    pub hex: String,
    pub size: u64,
    pub path: PathBuf,
    /// Bytes already in `<hex>.part` on the host: sending starts here.
    pub offset: u64,
    /// A blob of that name is on the host but its size or content is wrong.
    pub replace: bool,
}

/// The plan for one host: what to send, and whether Docker needs a load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub sends: Vec<Send>,
    pub present: usize,
    pub load: bool,
}

impl Plan {
    pub fn bytes(&self) -> u64 {
        self.sends.iter().map(|s| s.size - s.offset).sum()
    }
}

/// Decides what to send to a host. `bad` names stored blobs whose content the
/// host found not to match their name.
pub fn plan(image: &PushImage, host: &HostState, bad: &BTreeSet<String>) -> Plan {
    let mut sends = Vec::new();
    let mut present = 0;
    for b in image.blobs() {
        let stored = host.blobs.get(&b.hex).copied();
        if stored == Some(b.size) && !bad.contains(&b.hex) {
            present += 1;
            continue;
        }
        let offset = match host.parts.get(&b.hex) {
            Some(&n) if n < b.size => n,
            _ => 0,
        };
        sends.push(Send {
            hex: b.hex.clone(),
            size: b.size,
            path: b.path.clone(),
            offset,
            replace: stored.is_some(),
        });
    }
    Plan {
        sends,
        present,
        load: host.docker_id.as_deref() != Some(image.config_id().as_str()),
    }
}

/// The stored blobs of the image that must be hashed on the host: all of them
/// with `verify`, else only those the load is going to read (none when the
/// runtime has the image; not the layers Docker already has as a chain,
/// which [`load_script`] leaves out of the archive).
pub fn to_verify(
    image: &PushImage,
    host: &HostState,
    verify: bool,
    runtime: Runtime,
) -> Vec<String> {
    let load = host.docker_id.as_deref() != Some(image.config_id().as_str());
    if !verify && !load {
        return Vec::new();
    }
    let present = match runtime {
        Runtime::Docker if !verify => host.present_prefix(&image.diff_ids),
        _ => 0,
    };
    let read: BTreeSet<&str> = std::iter::once(image.config.hex.as_str())
        .chain(image.layers.iter().skip(present).map(|l| l.hex.as_str()))
        .collect();
    image
        .blobs()
        .into_iter()
        .filter(|b| verify || read.contains(b.hex.as_str()))
        .filter(|b| host.blobs.get(&b.hex) == Some(&b.size))
        .map(|b| b.hex.clone())
        .collect()
}

/// The container runtime on the hosts, whose command line the scripts call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Runtime {
    #[default]
    Docker,
    /// Untested end to end here (Podman 4.3 cannot run containers on this
    /// kind of machine); its scripts are unit-tested.
    Podman,
}

impl Runtime {
    pub fn command(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Podman => "podman",
        }
    }
}
