//! Pushing an image into hosts' Docker over SSH, sending only what they lack.
//!
//! Each host keeps a content-addressed store (`<store>/blobs/sha256/<hex>`).
//! A push lists the store in one round trip, plans which blobs to send (pure:
//! [`plan`]), streams each missing blob into `<hex>.part` (appending when an
//! earlier transfer was cut), has the host check its sha256 before renaming,
//! and finally has the host assemble a docker-archive from the stored blobs
//! and pipe it into `docker load`, so nothing is sent twice. Hosts run in
//! parallel; one failing does not stop the others.
//!
//! This module owns the store layout, the plan and the shell run on hosts; the
//! SSH session is in [`ssh`]. It reports through [`Reporter`] and never prints.
//! Each push records the image on the host, so [`gc`] knows what to keep.
//!
//! Every script is constant text and every value (the store path, the image
//! reference, blob names) a positional parameter, checked against its
//! grammar first ([`check_image`]). Pushes, pulls and gc share a store
//! through `flock` ([`lock_store`]): a push holds `$STORE/lock` shared from
//! its listing to its record, through a channel of its own, so two pushes
//! run side by side while gc, which takes it exclusively, never runs during
//! one; each blob is written under its own lock (see [`upload_script`]).

pub mod gc;

use crate::ssh::Script;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde_json::json;

use crate::grammar::is_hex64;
use crate::oci::{self, LayoutImage};
use crate::ssh::{Remote, Running, SshError, SshOptions, Target, TargetError};

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(
        "the layout `{}` names no image (no `io.containerd.image.name` annotation in index.json); pass `--tag name:tag`",
        path.display()
    )]
    NoReference { path: PathBuf },
    #[error(
        "`{runtime}` is not installed on `{host}` (or not on the PATH of its ssh user); install it there and push again"
    )]
    NoRuntime { host: String, runtime: &'static str },
    #[error(
        "`{host}` received `sha256:{hex}` but what it stored has another digest; the transfer was damaged, push again"
    )]
    UploadCorrupt { host: String, hex: String },
    #[error(
        "`{host}` has neither `openssl` nor `sha256sum` to check blobs with; install one of them there (Debian: `openssl` or `coreutils`)"
    )]
    NoHasher { host: String },
    #[error(
        "on `{host}`, `docker load` left `{reference}` with id `{found}` (expected `{expected}`); check `docker images` there"
    )]
    LoadMismatch {
        host: String,
        reference: String,
        expected: String,
        found: String,
    },
    #[error("cannot read `{}`", path.display())]
    Local {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the local blob `{}` does not match its name (its content is sha256:{found}); run `ferry verify` on the layout and rebuild it",
        path.display()
    )]
    LocalCorrupt { path: PathBuf, found: String },
    #[error(
        "`flock` is not on `{host}`; install it there (Debian: `util-linux`; busybox has it too): ferry locks the host's store so that pushes and `ferry gc` never remove each other's files"
    )]
    NoFlock { host: String },
    #[error("the store `{store}` on `{host}` is {held}; {next}")]
    StoreBusy {
        host: String,
        store: String,
        held: &'static str,
        next: &'static str,
    },
    #[error("refusing to run a script on `{host}`: {source}")]
    BadValue {
        host: String,
        #[source]
        source: BadValue,
    },
    #[error(transparent)]
    Transport(#[from] SshError),
}

/// One blob of the image on the local disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalBlob {
    /// The sha256 in hex, without `sha256:`.
    pub hex: String,
    pub size: u64,
    pub path: PathBuf,
}

/// What a push sends: the image's blobs and the name Docker gives it.
#[derive(Debug, Clone)]
pub struct PushImage {
    pub reference: String,
    pub config: LocalBlob,
    pub layers: Vec<LocalBlob>,
    pub manifest: LocalBlob,
    /// The config's `rootfs.diff_ids`, one per layer.
    pub diff_ids: Vec<String>,
}

fn hex_of(digest: &str) -> String {
    digest.trim_start_matches("sha256:").to_string()
}

impl PushImage {
    /// The image of a layout, named by `tag` or by the layout's
    /// `io.containerd.image.name` annotation.
    pub fn from_layout(img: &LayoutImage, tag: Option<&str>) -> Result<PushImage, PushError> {
        let reference = match tag {
            Some(t) => t.to_string(),
            None => img
                .manifest
                .annotations
                .get("io.containerd.image.name")
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or_else(|| PushError::NoReference {
                    path: img.dir.join("index.json"),
                })?,
        };
        let blob = |d: &oci::Descriptor| LocalBlob {
            hex: hex_of(&d.digest),
            size: d.size,
            path: img.blob_path(&d.digest),
        };
        Ok(PushImage {
            reference,
            config: blob(&img.config),
            layers: img.layers.iter().map(blob).collect(),
            manifest: blob(&img.manifest),
            diff_ids: img.diff_ids(),
        })
    }

    /// Every blob once: config, layers in order, then the manifest.
    pub fn blobs(&self) -> Vec<&LocalBlob> {
        let mut seen = BTreeSet::new();
        std::iter::once(&self.config)
            .chain(&self.layers)
            .chain(std::iter::once(&self.manifest))
            .filter(|b| seen.insert(b.hex.clone()))
            .collect()
    }

    pub fn config_id(&self) -> String {
        format!("sha256:{}", self.config.hex)
    }
}

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

const DOCKER_MARK: &str = "--ferry-docker--";
const NO_DOCKER_MARK: &str = "--ferry-no-docker--";
const EXACT_HEAD_MARK: &str = "--ferry-exact-head--";
const NO_UNPIGZ_MARK: &str = "--ferry-no-unpigz--";
const LAYERS_MARK: &str = "--ferry-docker-layers--";

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

/// The `manifest.json` of a docker-archive whose blobs sit at `blobs/sha256/<hex>`.
pub fn docker_manifest(image: &PushImage) -> Vec<u8> {
    let path = |hex: &str| format!("blobs/sha256/{hex}");
    oci::canonical(&json!([{
        "Config": path(&image.config.hex),
        "RepoTags": [image.reference],
        "Layers": image.layers.iter().map(|l| path(&l.hex)).collect::<Vec<_>>(),
    }]))
}

/// An image id as Docker prints it (`sha256:<hex>`); Podman prints the bare hex.
fn image_id(line: &str) -> Option<String> {
    let hex = line.strip_prefix("sha256:").unwrap_or(line);
    is_hex64(hex).then(|| format!("sha256:{hex}"))
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

/// A value refused before it reaches a host script: it does not match the
/// grammar of what it is meant to be.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("the {field} `{shown}` {reason}")]
pub struct BadValue {
    pub field: &'static str,
    /// The value, escaped and cut so the message stays one line.
    pub shown: String,
    pub reason: String,
}

impl BadValue {
    pub(crate) fn new(field: &'static str, value: &str, reason: impl Into<String>) -> BadValue {
        let mut shown: String = value.escape_debug().collect();
        if shown.chars().count() > 80 {
            shown = shown.chars().take(80).collect::<String>() + "…";
        }
        BadValue {
            field,
            shown,
            reason: reason.into(),
        }
    }

    /// The refusal as a push error naming the host.
    pub fn on(self, host: &str) -> PushError {
        PushError::BadValue {
            host: host.to_string(),
            source: self,
        }
    }
}

/// The store folder on a host: absolute and normal (no `.`, `..` or empty
/// components), printable, no longer than a Linux path. Looser than
/// [`crate::grammar::path`] on purpose: the store reaches scripts only as a
/// value and is never written into a file a daemon or a shell reads.
pub fn check_store(store: &str) -> Result<(), BadValue> {
    let bad = |reason| Err(BadValue::new("store path", store, reason));
    if !store.starts_with('/') {
        return bad("is not absolute; pass --store /var/lib/ferry or another absolute path");
    }
    if store.len() > 4095 || store.chars().any(char::is_control) {
        return bad("holds a control character or is too long");
    }
    if store.len() > 1
        && store[1..]
            .trim_end_matches('/')
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return bad("is not a normal path (an empty, `.` or `..` component)");
    }
    Ok(())
}

/// A sha256 in hex as blob names are written: exactly 64 lowercase hex digits.
pub fn check_hex(field: &'static str, hex: &str) -> Result<(), BadValue> {
    if is_hex64(hex) {
        Ok(())
    } else {
        Err(BadValue::new(
            field,
            hex,
            "is not a sha256 (64 lowercase hex digits)",
        ))
    }
}

/// An image reference as Docker reads one ([`crate::grammar::image_reference`]):
/// so it never starts with `-` (an option to the runtime) and holds no
/// space or control character.
pub fn check_reference(reference: &str) -> Result<(), BadValue> {
    crate::grammar::image_reference(reference)
        .map_err(|reason| BadValue::new("image reference", reference, reason))
}

/// Checks everything of `image` that reaches a host script, and the store:
/// a push or pull refuses before it connects.
pub fn check_image(store: &str, image: &PushImage) -> Result<(), BadValue> {
    check_store(store)?;
    check_reference(&image.reference)?;
    for b in image.blobs() {
        check_hex("blob digest", &b.hex)?;
    }
    Ok(())
}

/// Lists the store (`<size> <name>` lines), then whether the runtime has the
/// image. The marks are the `*_MARK` constants (a test checks they match).
const LIST: &str = r#"S=$1 ref=$2 rt=$3
mkdir -p -- "$S/blobs/sha256" "$S/tmp" "$S/locks" || exit 2
cd -- "$S/blobs/sha256" || exit 2
set -- *
if [ -e "$1" ]; then stat -c '%s %n' -- "$@" || exit 2; fi
[ "$(printf ab | { head -c 1 >/dev/null; cat; })" = b ] && echo --ferry-exact-head--
command -v "$rt" >/dev/null 2>&1 || echo --ferry-no-docker--
command -v unpigz >/dev/null 2>&1 || echo --ferry-no-unpigz--
echo --ferry-docker--
"$rt" image inspect --format '{{.Id}}' -- "$ref" 2>/dev/null || true
echo --ferry-docker-layers--
"$rt" image ls -aq 2>/dev/null | sort -u | xargs -r "$rt" image inspect --format '{{json .RootFS.Layers}}' 2>/dev/null || true"#;

/// Lists the store, then whether the runtime has the image.
pub fn list_script(store: &str, reference: &str, runtime: Runtime) -> Result<Script, BadValue> {
    check_store(store)?;
    check_reference(reference)?;
    Ok(Script::new(LIST)
        .arg(store)
        .arg(reference)
        .arg(runtime.command()))
}

/// Exit status of [`STORE_LOCK`] when the host has no `flock`.
const EXIT_NO_FLOCK: i32 = 10;
/// Exit status of [`STORE_LOCK`] when the lock stayed taken past the wait.
pub(crate) const EXIT_LOCKED: i32 = 11;
const LOCKED_MARK: &str = "--ferry-locked--";

/// `$1` the store, `$2` `-s` (shared) or `-x` (exclusive), `$3` the seconds
/// to wait. Holds `flock` on `$S/lock` for as long as the channel is open:
/// `cat` keeps the lock's file descriptor and ends when stdin does, which is
/// when ferry releases the lock, closes the channel, or dies (sshd then
/// closes the pipes). It prints a line each second while it waits, so the
/// wait is progress to the command timeout. `flock -n` in a loop rather than
/// `flock -w`: busybox's flock has no `-w`. The exit statuses are
/// [`EXIT_NO_FLOCK`] and [`EXIT_LOCKED`] and the mark [`LOCKED_MARK`]
/// (a test checks them).
const STORE_LOCK: &str = r#"S=$1 mode=$2 wait=$3
command -v flock >/dev/null 2>&1 || exit 10
mkdir -p -- "$S" || exit 2
exec 9>>"$S/lock" || exit 2
n=0
until flock -n "$mode" 9; do
  [ "$n" -lt "$wait" ] || exit 11
  n=$((n + 1))
  echo waiting
  sleep 1
done
echo --ferry-locked--
exec cat >/dev/null"#;

/// How a run holds a host's store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Pushes and pulls: many at once, each for its whole run, from the
    /// listing to the record. Blobs are locked one by one while written.
    Shared,
    /// `ferry gc` removing files: alone.
    Exclusive,
}

/// The script that takes the store's lock, waiting up to `wait_secs`.
pub fn store_lock_script(store: &str, mode: LockMode, wait_secs: u32) -> Result<Script, BadValue> {
    check_store(store)?;
    let flag = match mode {
        LockMode::Shared => "-s",
        LockMode::Exclusive => "-x",
    };
    Ok(Script::new(STORE_LOCK)
        .arg(store)
        .arg(flag)
        .arg(wait_secs.to_string()))
}

/// How long a push waits for a `ferry gc` of its host's store to end (gc
/// holds it for two round trips).
pub const PUSH_LOCK_WAIT_SECS: u32 = 120;

/// A host's store held through an open channel; released by
/// [`StoreLock::release`], or when the session ends (also when ferry dies).
pub struct StoreLock<'r> {
    running: Running<'r>,
}

/// Takes the store's lock on the host, as a push, a pull or gc does first;
/// `next` ends the message when the lock stays taken (what was not done,
/// what to do).
pub fn lock_store<'r>(
    remote: &'r Remote,
    store: &str,
    mode: LockMode,
    wait_secs: u32,
    next: &'static str,
) -> Result<StoreLock<'r>, PushError> {
    let label = remote.label();
    let script = store_lock_script(store, mode, wait_secs).map_err(|e| e.on(&label))?;
    let mut running = remote.start("locking the store", &script)?;
    if running.wait_for_line(LOCKED_MARK, 64 << 10)? {
        return Ok(StoreLock { running });
    }
    running.feed(&mut |_| Ok(()));
    Err(match running.finish(&[]) {
        Err(SshError::Remote {
            status: EXIT_NO_FLOCK,
            ..
        }) => PushError::NoFlock { host: label },
        Err(SshError::Remote {
            status: EXIT_LOCKED,
            ..
        }) => PushError::StoreBusy {
            host: label,
            store: store.to_string(),
            held: match mode {
                LockMode::Exclusive => "in use by a push or a pull (or another gc)",
                LockMode::Shared => "locked by `ferry gc`",
            },
            next,
        },
        Err(e) => e.into(),
        Ok(_) => remote
            .io_error(
                "locking the store",
                std::io::Error::other("the lock script ended without the lock"),
            )
            .into(),
    })
}

impl StoreLock<'_> {
    /// Ends the lock's channel: the host's `cat` sees the end of its stdin.
    pub fn release(mut self) -> Result<(), PushError> {
        self.running.feed(&mut |_| Ok(()));
        self.running.finish(&[0]).map(drop)?;
        Ok(())
    }
}

/// A shell function printing the sha256 (hex) of the file `$1`: with
/// `openssl` when the host has it, else `sha256sum`. Debian's `sha256sum`
/// does not use the CPU's SHA instructions: measured here, 1.3 s of CPU for
/// the 313 MB Spark jar layer against 0.2 s for `openssl dgst`. Each reads
/// the file itself, so a failed `openssl` leaves nothing half-read. Shared
/// by the SSH push and the hosts' pulls from a bucket.
pub(crate) const SUM256: &str = r#"sum256() {
  s=$(openssl dgst -sha256 -r < "$1" 2>/dev/null) || s=$(sha256sum < "$1") || return
  echo "${s%% *}"
}"#;

/// `$1` the store; the blob names on stdin, one a line (`sum256` reads
/// each file through its own redirection, never the list).
const VERIFY: &str = r#"cd -- "$1/blobs/sha256" || exit 2
while IFS= read -r h; do s=$(sum256 "$h") && echo "$s  $h"; done"#;

/// Prints `<sha256>  <name>` for each named stored blob: the script, and its
/// stdin (the names, one a line). The names are many with `--verify` of a
/// large image; on the command line they could pass the 128 KiB Linux
/// allows one argument (sshd passes the whole line as one).
pub fn verify_script(store: &str, hexes: &[String]) -> Result<(Script, Vec<u8>), BadValue> {
    check_store(store)?;
    let mut list = String::new();
    for h in hexes {
        check_hex("blob digest", h)?;
        list.push_str(h);
        list.push('\n');
    }
    Ok((
        Script::new(SUM256).then(VERIFY).arg(store),
        list.into_bytes(),
    ))
}

/// Hex names whose content hash (from `sha256sum` output) differs from the name,
/// or that `sha256sum` did not report at all.
pub fn bad_blobs(sha256sum_out: &str, asked: &[String]) -> BTreeSet<String> {
    let ok: BTreeSet<&str> = sha256sum_out
        .lines()
        .filter_map(|l| l.split_once("  "))
        .filter(|(sum, name)| sum == name)
        .map(|(_, name)| name)
        .collect();
    asked
        .iter()
        .filter(|h| !ok.contains(h.as_str()))
        .cloned()
        .collect()
}

/// Verdict of [`upload_script`] on a blob whose `.part` file is not the size the plan saw.
pub const EXIT_PART_MOVED: i32 = 3;
/// Verdict of [`upload_script`] on a blob whose bytes do not hash to its name.
pub const EXIT_DIGEST: i32 = 4;

/// Verdict of [`upload_script`] on a blob whose `.part` another push is
/// writing right now, when this one meant to resume it: send it whole.
pub const EXIT_BUSY: i32 = 12;

/// Exit status of [`upload_script`] when stdin ended early (the sender stopped):
/// the `.part` file is kept for the next run to resume.
pub const EXIT_SHORT: i32 = 5;

/// Verdict of [`upload_script`] (and exit status of a pull's fetch) on a
/// host where neither `openssl` nor `sha256sum` could hash a blob: not a
/// damaged blob, a missing tool.
pub const EXIT_NO_HASHER: i32 = 8;

/// The header that precedes a blob's bytes on [`upload_script`]'s stdin.
pub fn upload_header(hex: &str, offset: u64, size: u64) -> String {
    format!("{hex} {offset} {size}\n")
}

/// Takes blobs from stdin, each an [`upload_header`] line and then its bytes
/// from `offset` on: appends them to `<hex>.part`, checks the sha256 on the
/// host, and renames it to `<hex>` only when it matches. Prints a verdict
/// line per blob, `<code> <hex>`: 0 when stored, else [`EXIT_DIGEST`],
/// [`EXIT_PART_MOVED`] or [`EXIT_NO_HASHER`]. A transfer cut short leaves the `.part` file for the
/// next push to resume, and exits with [`EXIT_SHORT`].
///
/// One run takes many blobs where `head -c` reads exactly (see
/// [`HostState::exact_head`]): each run is a login shell on the host, and
/// starting one per blob cost more than the bytes here (a `.bashrc` that
/// starts other programs). The hash of each blob runs in the background
/// while the next one arrives. (Hashing while receiving, `tee | sha256sum`,
/// was tried: on 2 cores it was slower, 3.8-4.5 s against 3.2-3.8 s for the
/// 313 MB Spark jar layer, as it competes with sshd.)
pub fn upload_script(store: &str) -> Result<Script, BadValue> {
    check_store(store)?;
    Ok(Script::new(SUM256).then(BLOB_LOCK).then(UPLOAD).arg(store))
}

/// A shell function: `blob_lock HEX TRIES` takes an exclusive `flock` of
/// `$S/locks/HEX` on file descriptor 8, without waiting, and tries again
/// each second up to TRIES times; when another holds it, it closes 8 and
/// returns 1. The holder owns `HEX.part` and keeps 8 open until it has
/// renamed the blob into place. Shared by the SSH push's upload and the
/// hosts' pulls from a bucket, so either keeps off the other's `.part`.
pub(crate) const BLOB_LOCK: &str = r#"blob_lock() {
  exec 8>"$S/locks/$1" || exit 2
  n=0
  until flock -n -x 8; do
    [ "$n" -lt "$2" ] || { exec 8>&-; return 1; }
    n=$((n + 1))
    sleep 1
  done
}"#;

/// `$1` the store; the blobs on stdin. The verdicts are [`EXIT_NO_HASHER`]
/// (8), [`EXIT_DIGEST`] (4), [`EXIT_PART_MOVED`] (3), [`EXIT_BUSY`] (12) and
/// [`EXIT_SHORT`] (5), written as numbers (a test checks them). A header is
/// checked before it names a file: 64 hex digits, and two numbers.
///
/// Each blob is written under an exclusive `flock` of `$S/locks/<hex>`
/// ([`BLOB_LOCK`]), taken without waiting (the bytes are already coming): the holder owns
/// `<hex>.part`, truncates and appends to it, and keeps the lock until the
/// check has renamed it. A second push storing the same blob at that moment
/// writes a private file in `$S/tmp` instead and renames it the same way
/// (both are checked, so either copy is right); when it meant to resume the
/// other's `.part` it waits 3 s for the lock (the holder may be the script
/// of a cut push, about to see its end), then answers [`EXIT_BUSY`] to be
/// sent the blob whole.
const UPLOAD: &str = r#"S=$1
cd -- "$S/blobs/sha256" || exit 2
mkdir -p -- "$S/locks" "$S/tmp" || exit 2
check() {
  s=$(sum256 "$2") || { echo "8 $1"; return; }
  case $s in
    "$1") mv -f "$2" "$1" && echo "0 $1" ;;
    *) rm -f "$2"; echo "4 $1" ;;
  esac
}
bad() { echo "bad header: $hex $offset $size" >&2; exit 2; }
while read -r hex offset size; do
  case $hex in *[!0-9a-f]* | "") bad ;; esac
  case $offset in *[!0-9]* | "") bad ;; esac
  case $size in *[!0-9]* | "") bad ;; esac
  [ "${#hex}" -eq 64 ] || bad
  # one resuming waits a little: the holder may be the script of a cut
  # push that has not seen the end of its input yet
  tries=0
  [ "$offset" = 0 ] || tries=3
  own=
  if blob_lock "$hex" "$tries"; then
    own=1
    p=$hex.part
  else
    # another push is writing this blob: never touch its .part
    if [ "$offset" != 0 ]; then head -c $((size - offset)) > /dev/null; echo "12 $hex"; continue; fi
    p=$(mktemp "$S/tmp/$hex.XXXXXX") || exit 2
  fi
  [ "$offset" != 0 ] || : > "$p" || exit 2
  have=$(stat -c %s "$p" 2>/dev/null || echo 0)
  if [ "$have" != "$offset" ]; then
    echo "$p has $have bytes, expected $offset" >&2
    head -c $((size - offset)) > /dev/null
    echo "3 $hex"
    exec 8>&-
    continue
  fi
  head -c $((size - offset)) >> "$p" || exit 2
  have=$(stat -c %s "$p")
  [ "$have" -ge "$size" ] || { echo "$p has $have of $size bytes" >&2; [ -n "$own" ] || rm -f "$p"; wait; exit 5; }
  # the check keeps its copy of the blob's lock until it has renamed
  check "$hex" "$p" &
  exec 8>&-
done
wait"#;

/// `$1` the store, `$2` the runtime, `$3` the reference, then the blobs to
/// link into the archive.
const LOAD: &str = r#"set -e
S=$(cd -- "$1" && pwd)
rt=$2 ref=$3
shift 3
d=$(mktemp -d "$S/tmp/load.XXXXXX")
trap 'rm -rf "$d"' EXIT
mkdir -p "$d/blobs/sha256"
for h in "$@"; do ln -s "$S/blobs/sha256/$h" "$d/blobs/sha256/$h"; done
cat > "$d/manifest.json"
tar -C "$d" -chf - manifest.json blobs | "$rt" load >&2
"$rt" image inspect --format '{{.Id}}' -- "$ref""#;

/// Builds a docker-archive from the stored blobs (symlinks in a temp folder,
/// `manifest.json` from stdin) and pipes it into `docker load`; prints the
/// image id afterwards. The first `present` layers, which Docker already has
/// as a chain, are left out of the archive: `docker load` does not open the
/// file of a layer it has, and it would otherwise copy every byte again.
/// Podman reads every layer named in `manifest.json`, so it gets them all.
/// The blobs are arguments (stdin carries `manifest.json`): they are the
/// image's config and layers, which do not grow with the store, where gc's
/// and the hash's lists of names do (those come on stdin).
pub fn load_script(
    store: &str,
    image: &PushImage,
    present: usize,
    runtime: Runtime,
) -> Result<Script, BadValue> {
    check_image(store, image)?;
    let present = if runtime == Runtime::Docker {
        present
    } else {
        0
    };
    let mut hexes: Vec<&str> = std::iter::once(image.config.hex.as_str())
        .chain(image.layers.iter().skip(present).map(|l| l.hex.as_str()))
        .collect();
    hexes.sort_unstable();
    hexes.dedup();
    Ok(Script::new(LOAD)
        .arg(store)
        .arg(runtime.command())
        .arg(&image.reference)
        .args(hexes))
}

/// What a push reports while it runs, per host.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    Connected,
    Planned(&'a Plan),
    /// `done` counts bytes sent in this run for the blob, out of `total` to send.
    Sending {
        hex: &'a str,
        done: u64,
        total: u64,
    },
    Sent {
        hex: &'a str,
        bytes: u64,
    },
    /// The host found stored blobs whose content does not match their name.
    Corrupt {
        hexes: &'a BTreeSet<String>,
    },
    Loading,
    Loaded,
    UpToDate,
}

pub trait Reporter: Sync {
    fn event(&self, host: &str, event: Event<'_>);
}

pub struct Options {
    pub store: String,
    pub parallel: usize,
    /// Hash every stored blob of the image on the host, even when Docker has it.
    pub verify: bool,
    pub runtime: Runtime,
    pub ssh: SshOptions,
}

/// What happened on one host (also when it failed part way).
#[derive(Debug, Clone, Default)]
pub struct HostStats {
    pub blobs_sent: usize,
    pub bytes_sent: u64,
    pub resumed: usize,
    pub replaced: usize,
    pub loaded: bool,
    /// Docker loaded the image without `unpigz` on the host's PATH.
    pub loaded_without_unpigz: bool,
}

pub struct HostOutcome {
    pub target: Target,
    pub stats: HostStats,
    pub seconds: f64,
    pub result: Result<(), PushError>,
}

/// Runs `work` on every target, `parallel` at a time (a thread each); the
/// results keep the targets' order.
pub fn each_host<R: std::marker::Send>(
    targets: &[Target],
    parallel: usize,
    work: impl Fn(&Target) -> R + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new(targets.iter().map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..parallel.clamp(1, targets.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(target) = targets.get(i) else { break };
                    let r = work(target);
                    results.lock().expect("results lock")[i] = Some(r);
                }
            });
        }
    });
    results
        .into_inner()
        .expect("results lock")
        .into_iter()
        .map(|r| r.expect("every target ran"))
        .collect()
}

/// Pushes to every target, `opts.parallel` at a time; the outcomes keep the
/// targets' order.
pub fn push_all(
    targets: &[Target],
    image: &PushImage,
    opts: &Options,
    reporter: &dyn Reporter,
) -> Vec<HostOutcome> {
    each_host(targets, opts.parallel, |target| {
        let t0 = Instant::now();
        let mut stats = HostStats::default();
        let result = push_host(target, image, opts, reporter, &mut stats);
        HostOutcome {
            target: target.clone(),
            stats,
            seconds: t0.elapsed().as_secs_f64(),
            result,
        }
    })
}

/// Pushes the image to one host and loads it into its Docker.
pub fn push_host(
    target: &Target,
    image: &PushImage,
    opts: &Options,
    reporter: &dyn Reporter,
    stats: &mut HostStats,
) -> Result<(), PushError> {
    let label = target.label();
    check_image(&opts.store, image).map_err(|e| e.on(&label))?;
    let remote = Remote::connect(target, &opts.ssh)?;
    reporter.event(&label, Event::Connected);
    // held from the listing to the record, so gc cannot remove a blob
    // this push found present and did not send
    let lock = lock_store(
        &remote,
        &opts.store,
        LockMode::Shared,
        PUSH_LOCK_WAIT_SECS,
        "nothing was sent; push again when gc has ended",
    )?;
    let out = remote.run_ok(
        "listing the store",
        &list_script(&opts.store, &image.reference, opts.runtime).map_err(|e| e.on(&label))?,
        &[],
    )?;
    let state = HostState::parse(&String::from_utf8_lossy(&out));
    if !state.has_docker {
        return Err(PushError::NoRuntime {
            host: label,
            runtime: opts.runtime.command(),
        });
    }
    let check = to_verify(image, &state, opts.verify, opts.runtime);
    let bad = if check.is_empty() {
        BTreeSet::new()
    } else {
        let (verify, names) = verify_script(&opts.store, &check).map_err(|e| e.on(&label))?;
        let what = "hashing stored blobs";
        let out = remote.run_checked(
            what,
            &verify,
            &mut |w| w.write_all(&names).map_err(|e| remote.io_error(what, e)),
            &[0, 1],
        )?;
        bad_blobs(&String::from_utf8_lossy(&out), &check)
    };
    if !bad.is_empty() {
        reporter.event(&label, Event::Corrupt { hexes: &bad });
    }
    let plan = plan(image, &state, &bad);
    reporter.event(&label, Event::Planned(&plan));
    // all blobs through one upload script when the host's `head -c` allows
    // it, else one script per blob with a few running at once
    let per_run = if state.exact_head {
        plan.sends.len().max(1)
    } else {
        1
    };
    let mut in_flight = VecDeque::new();
    for run in plan.sends.chunks(per_run) {
        if in_flight.len() == UPLOADS_IN_FLIGHT {
            let oldest = in_flight.pop_front().expect("uploads in flight");
            stored(&remote, &opts.store, oldest, reporter, stats)?;
        }
        let run = run.iter().map(|s| (s, s.offset)).collect();
        in_flight.push_back(send(&remote, &opts.store, run, reporter, stats)?);
    }
    while let Some(upload) = in_flight.pop_front() {
        stored(&remote, &opts.store, upload, reporter, stats)?;
    }
    if !plan.load {
        record(&remote, &opts.store, image)?;
        lock.release()?;
        reporter.event(&label, Event::UpToDate);
        return Ok(());
    }
    reporter.event(&label, Event::Loading);
    let manifest = docker_manifest(image);
    let out = remote.run_ok(
        "loading the image into docker",
        &load_script(
            &opts.store,
            image,
            state.present_prefix(&image.diff_ids),
            opts.runtime,
        )
        .map_err(|e| e.on(&label))?,
        &manifest,
    )?;
    let found = String::from_utf8_lossy(&out).trim().to_string();
    let found = image_id(&found).unwrap_or(found);
    if found != image.config_id() {
        return Err(PushError::LoadMismatch {
            host: label,
            reference: image.reference.clone(),
            expected: image.config_id(),
            found,
        });
    }
    stats.loaded = true;
    stats.loaded_without_unpigz = opts.runtime == Runtime::Docker && !state.has_unpigz;
    record(&remote, &opts.store, image)?;
    lock.release()?;
    reporter.event(&label, Event::Loaded);
    Ok(())
}

/// Tells the host's store that this image is the newest of its name, for `ferry gc`.
fn record(remote: &Remote, store: &str, image: &PushImage) -> Result<(), PushError> {
    remote.run_ok(
        "recording the image",
        &gc::record_script(store, &image.reference, &image.manifest.hex)
            .map_err(|e| e.on(&remote.label()))?,
        &[],
    )?;
    Ok(())
}

/// How many runs of the upload script may be under way at once on a host's
/// session, when each takes one blob. Each run is a channel: a few round
/// trips and a login shell on the host; with several in flight, that wait
/// and the host's hash of one blob overlap with the bytes of the next. sshd
/// allows 10 channels per session by default.
const UPLOADS_IN_FLIGHT: usize = 4;

/// One run of the upload script whose bytes are sent, waiting for the
/// host's verdicts.
struct Upload<'r, 's> {
    /// The blobs, each with the offset its bytes were sent from.
    sends: Vec<(&'s Send, u64)>,
    running: Running<'r>,
    /// Bytes sent, per blob.
    bytes: Vec<u64>,
}

/// Starts the upload script and streams the blobs' local files into it,
/// each from its offset; [`stored`] collects the host's verdicts. The local
/// files are not hashed on the way: the host checks every blob, and only
/// when it finds a mismatch is the local file hashed, to tell a damaged
/// local blob from a damaged transfer (that pass cost the controller a
/// core's worth of time on every push).
fn send<'r, 's>(
    remote: &'r Remote,
    store: &str,
    sends: Vec<(&'s Send, u64)>,
    reporter: &dyn Reporter,
    stats: &mut HostStats,
) -> Result<Upload<'r, 's>, PushError> {
    let label = remote.label();
    let mut bytes = vec![0u64; sends.len()];
    let mut feed = |w: &mut dyn Write| -> Result<(), SshError> {
        let mut buf = vec![0u8; 1 << 20];
        for (&(s, offset), done) in sends.iter().zip(bytes.iter_mut()) {
            let local = |source| {
                SshError::Feed(Box::new(PushError::Local {
                    path: s.path.clone(),
                    source,
                }))
            };
            let total = s.size - offset;
            let mut f = File::open(&s.path).map_err(local)?;
            f.seek(SeekFrom::Start(offset)).map_err(local)?;
            let mut f = f.take(total);
            w.write_all(upload_header(&s.hex, offset, s.size).as_bytes())
                .map_err(|e| remote.io_error("sending a blob", e))?;
            loop {
                let n = f.read(&mut buf).map_err(local)?;
                if n == 0 {
                    break;
                }
                w.write_all(&buf[..n])
                    .map_err(|e| remote.io_error("sending a blob", e))?;
                *done += n as u64;
                stats.bytes_sent += n as u64;
                reporter.event(
                    &label,
                    Event::Sending {
                        hex: &s.hex,
                        done: *done,
                        total,
                    },
                );
            }
            if *done < total {
                check_local(s).map_err(|e| SshError::Feed(Box::new(e)))?;
                // it matched when read again: it changed while being sent
                return Err(local(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file changed while it was sent",
                )));
            }
        }
        Ok(())
    };
    let what = match sends.as_slice() {
        [(s, _)] => format!("storing blob sha256:{}", &s.hex[..12]),
        _ => format!("storing {} blobs", sends.len()),
    };
    let script = upload_script(store).map_err(|e| e.on(&label))?;
    let mut running = remote.start(&what, &script)?;
    running.feed(&mut feed);
    Ok(Upload {
        sends,
        running,
        bytes,
    })
}

/// Waits for the host's verdicts on an upload. When a blob's stored bytes
/// do not hash to its name, the local file is hashed: a damaged local blob
/// is named as such; a damaged prefix left by an earlier run is sent again
/// whole, once; else the transfer itself was damaged.
fn stored(
    remote: &Remote,
    store: &str,
    upload: Upload<'_, '_>,
    reporter: &dyn Reporter,
    stats: &mut HostStats,
) -> Result<(), PushError> {
    let Upload {
        sends,
        running,
        bytes,
    } = upload;
    let what = running.what().to_string();
    let out = match running.finish(&[0]) {
        Ok(out) => String::from_utf8_lossy(&out).into_owned(),
        Err(SshError::Remote {
            host,
            what,
            status: EXIT_SHORT,
            stderr,
        }) => {
            return Err(SshError::Remote {
                host,
                what,
                status: EXIT_SHORT,
                stderr: format!("{stderr}; the transfer was cut: push again to resume it"),
            }
            .into());
        }
        Err(e) => return Err(fed(e)),
    };
    let verdicts = upload_verdicts(&out);
    for (&(s, offset), mut sent) in sends.iter().zip(bytes) {
        match verdicts.get(s.hex.as_str()) {
            Some(0) => {}
            Some(&EXIT_NO_HASHER) => {
                return Err(PushError::NoHasher {
                    host: remote.label(),
                });
            }
            Some(&code @ (EXIT_DIGEST | EXIT_BUSY)) => {
                if code == EXIT_DIGEST {
                    check_local(s)?;
                }
                if offset == 0 {
                    return Err(PushError::UploadCorrupt {
                        host: remote.label(),
                        hex: s.hex.clone(),
                    });
                }
                let again = send(remote, store, vec![(s, 0)], reporter, stats)?;
                sent += again.bytes[0];
                let out = again.running.finish(&[0]).map_err(fed)?;
                if upload_verdicts(&String::from_utf8_lossy(&out)).get(s.hex.as_str()) != Some(&0) {
                    return Err(PushError::UploadCorrupt {
                        host: remote.label(),
                        hex: s.hex.clone(),
                    });
                }
            }
            other => {
                return Err(SshError::Remote {
                    host: remote.label(),
                    what,
                    status: other.copied().unwrap_or(-1),
                    stderr: match other {
                        Some(&EXIT_PART_MOVED) => format!(
                            "`sha256:{}.part` changed size since the store was listed (another push?); push again",
                            &s.hex[..12]
                        ),
                        _ => format!("no verdict on sha256:{}", &s.hex[..12]),
                    },
                }
                .into());
            }
        }
        stats.blobs_sent += 1;
        stats.resumed += usize::from(s.offset > 0);
        stats.replaced += usize::from(s.replace);
        reporter.event(
            &remote.label(),
            Event::Sent {
                hex: &s.hex,
                bytes: sent,
            },
        );
    }
    Ok(())
}

/// An upload's transport error as the push reports it: a local blob that
/// failed while it was fed to the host is the push's own error again.
fn fed(e: SshError) -> PushError {
    match e {
        SshError::Feed(cause) => match cause.downcast::<PushError>() {
            Ok(e) => *e,
            Err(cause) => SshError::Feed(cause).into(),
        },
        e => e.into(),
    }
}

/// The `<code> <hex>` lines of [`upload_script`]: hex → code.
fn upload_verdicts(out: &str) -> BTreeMap<&str, i32> {
    out.lines()
        .filter_map(|l| l.trim().split_once(' '))
        .filter_map(|(code, hex)| Some((hex, code.parse().ok()?)))
        .collect()
}

/// Hashes the local file of `s`: an error when it does not match its name
/// and size (or cannot be read), `Ok` when it does.
fn check_local(s: &Send) -> Result<(), PushError> {
    let (found, size) = crate::fetch::hash_file(&s.path).map_err(|source| PushError::Local {
        path: s.path.clone(),
        source,
    })?;
    if found != s.hex || size != s.size {
        return Err(PushError::LocalCorrupt {
            path: s.path.clone(),
            found,
        });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn blob(c: char, size: u64) -> LocalBlob {
        LocalBlob {
            hex: c.to_string().repeat(64),
            size,
            path: PathBuf::from(format!("/layout/blobs/sha256/{}", c.to_string().repeat(64))),
        }
    }

    fn image() -> PushImage {
        PushImage {
            reference: "ferry/busybox:1.35".into(),
            config: blob('c', 100),
            layers: vec![blob('a', 1000), blob('b', 2000), blob('a', 1000)],
            manifest: blob('d', 50),
            diff_ids: vec!["sha256:1".into(), "sha256:2".into(), "sha256:3".into()],
        }
    }

    #[test]
    fn blobs_are_listed_once() {
        let hexes: Vec<char> = image()
            .blobs()
            .iter()
            .map(|b| b.hex.chars().next().unwrap())
            .collect();
        assert_eq!(hexes, vec!['c', 'a', 'b', 'd']);
    }

    #[test]
    fn host_state_parses_blobs_parts_and_docker() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let out = format!(
            "1000 {a}\n700 {b}.part\n5 junk\nx {a}\n{DOCKER_MARK}\nsha256:{}\n",
            "c".repeat(64)
        );
        let st = HostState::parse(&out);
        assert_eq!(st.blobs, BTreeMap::from([(a.clone(), 1000)]));
        assert_eq!(st.parts, BTreeMap::from([(b, 700)]));
        assert_eq!(st.docker_id, Some(format!("sha256:{}", "c".repeat(64))));
        assert!(st.has_docker);
        let st = HostState::parse(&format!("{NO_DOCKER_MARK}\n{DOCKER_MARK}\n"));
        assert!(!st.has_docker && st.docker_id.is_none());
        assert!(st.has_unpigz && !st.exact_head);
        let st = HostState::parse(&format!(
            "{EXACT_HEAD_MARK}\n{NO_UNPIGZ_MARK}\n{DOCKER_MARK}\n"
        ));
        assert!(!st.has_unpigz && st.exact_head);
    }

    #[test]
    fn an_empty_host_gets_everything_and_a_load() {
        let p = plan(&image(), &HostState::default(), &BTreeSet::new());
        assert_eq!(
            p.sends.iter().map(|s| s.size).collect::<Vec<_>>(),
            vec![100, 1000, 2000, 50]
        );
        assert!(p.sends.iter().all(|s| s.offset == 0 && !s.replace));
        assert_eq!((p.present, p.load, p.bytes()), (0, true, 3150));
    }

    #[test]
    fn a_complete_host_gets_nothing() {
        let img = image();
        let host = HostState {
            blobs: img
                .blobs()
                .iter()
                .map(|b| (b.hex.clone(), b.size))
                .collect(),
            docker_id: Some(img.config_id()),
            has_docker: true,
            ..HostState::default()
        };
        let p = plan(&img, &host, &BTreeSet::new());
        assert_eq!((p.sends.len(), p.present, p.load), (0, 4, false));
        assert!(to_verify(&img, &host, false, Runtime::Docker).is_empty());
        assert_eq!(to_verify(&img, &host, true, Runtime::Docker).len(), 4);
    }

    #[test]
    fn parts_resume_and_bad_or_wrong_sized_blobs_are_replaced() {
        let img = image();
        let (a, b, c, d) = (
            "a".repeat(64),
            "b".repeat(64),
            "c".repeat(64),
            "d".repeat(64),
        );
        let host = HostState {
            blobs: BTreeMap::from([(a.clone(), 1000), (c.clone(), 99), (d.clone(), 50)]),
            parts: BTreeMap::from([(b.clone(), 1500), (d.clone(), 10)]),
            docker_id: Some("sha256:other".into()),
            has_docker: true,
            docker_layers: vec![],
            exact_head: true,
            has_unpigz: true,
        };
        let p = plan(&img, &host, &BTreeSet::from([a.clone()]));
        let got: Vec<(String, u64, bool)> = p
            .sends
            .iter()
            .map(|s| (s.hex.clone(), s.offset, s.replace))
            .collect();
        assert_eq!(
            got,
            vec![(c, 0, true), (a, 0, true), (b.clone(), 1500, false)]
        );
        assert_eq!((p.present, p.load, p.bytes()), (1, true, 100 + 1000 + 500));
        // a .part as long as the blob (or longer) cannot be trusted: start over
        let host = HostState {
            parts: BTreeMap::from([(b.clone(), 2000)]),
            ..HostState::default()
        };
        let p = plan(&img, &host, &BTreeSet::new());
        assert_eq!(p.sends.iter().find(|s| s.hex == b).unwrap().offset, 0);
        // the blobs Docker will read are verified before a load
        let host = HostState {
            blobs: BTreeMap::from([("a".repeat(64), 1000), ("b".repeat(64), 1)]),
            ..HostState::default()
        };
        assert_eq!(
            to_verify(&img, &host, false, Runtime::Docker),
            vec!["a".repeat(64)]
        );
        // a load reads neither the manifest nor the layers Docker has as a
        // chain (unless one comes again above it); --verify and podman read all
        let mut host = HostState {
            blobs: img
                .blobs()
                .iter()
                .map(|b| (b.hex.clone(), b.size))
                .collect(),
            docker_layers: vec![vec!["sha256:1".into(), "sha256:2".into()]],
            ..HostState::default()
        };
        let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        assert_eq!(
            to_verify(&img, &host, false, Runtime::Docker),
            vec![c.clone(), a.clone()]
        );
        assert_eq!(to_verify(&img, &host, true, Runtime::Docker).len(), 4);
        assert_eq!(
            to_verify(&img, &host, false, Runtime::Podman),
            vec![c.clone(), a.clone(), b.clone()]
        );
        host.docker_layers = vec![vec![
            "sha256:1".into(),
            "sha256:2".into(),
            "sha256:3".into(),
        ]];
        assert_eq!(to_verify(&img, &host, false, Runtime::Docker), vec![c]);
    }

    #[test]
    fn sha256sum_output_names_the_bad_blobs() {
        let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        let out = format!("{a}  {a}\n{}  {b}\n", "f".repeat(64));
        let asked = vec![a, b.clone(), c.clone()];
        assert_eq!(bad_blobs(&out, &asked), BTreeSet::from([b, c]));
    }

    #[test]
    fn docker_manifest_names_config_tags_and_layers_in_order() {
        let m: serde_json::Value = serde_json::from_slice(&docker_manifest(&image())).unwrap();
        let p = |c: char| format!("blobs/sha256/{}", c.to_string().repeat(64));
        assert_eq!(
            m,
            json!([{"Config": p('c'), "RepoTags": ["ferry/busybox:1.35"], "Layers": [p('a'), p('b'), p('a')]}])
        );
        // canonical: the same bytes every time, keys sorted
        let s = String::from_utf8(docker_manifest(&image())).unwrap();
        assert!(
            s.starts_with(r#"[{"Config":"#) && s.find("\"Layers\"") < s.find("\"RepoTags\""),
            "{s}"
        );
    }

    /// The blobs to hash can be many (every blob of a large image with
    /// `--verify`): they go on stdin, not in the one command-line argument
    /// sshd hands the login shell (Linux refuses one over 128 KiB).
    #[test]
    fn hashing_5000_blobs_fits_a_command_line() {
        let hexes: Vec<String> = (0..5000u64).map(|i| format!("{i:064x}")).collect();
        let (s, _) = verify_script("/var/lib/ferry", &hexes).unwrap();
        let line = s.command_line().unwrap();
        assert!(line.len() < 100 << 10, "{} bytes", line.len());
    }

    #[test]
    fn scripts_are_constant_text_and_values_are_arguments() {
        let s = list_script("/srv/my store", "a:b", Runtime::Docker).unwrap();
        assert_eq!(s.text(), LIST);
        assert_eq!(s.values(), ["/srv/my store", "a:b", "docker"]);
        // the marks the parser looks for are the ones the scripts print
        for mark in [
            DOCKER_MARK,
            NO_DOCKER_MARK,
            EXACT_HEAD_MARK,
            NO_UNPIGZ_MARK,
            LAYERS_MARK,
        ] {
            assert!(LIST.contains(&format!("echo {mark}\n")), "{mark}");
        }
        // and so are the verdicts
        for code in [EXIT_NO_HASHER, EXIT_DIGEST, EXIT_PART_MOVED, EXIT_BUSY] {
            assert!(UPLOAD.contains(&format!("echo \"{code} $")), "{code}");
        }
        assert!(UPLOAD.contains(&format!("exit {EXIT_SHORT}; }}")));
        // layers Docker already has as a chain stay out of the archive,
        // unless the same blob is needed again further up
        let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        let s = load_script("/var/lib/ferry", &image(), 2, Runtime::Docker).unwrap();
        assert_eq!(s.text(), LOAD);
        assert_eq!(
            s.values(),
            ["/var/lib/ferry", "docker", "ferry/busybox:1.35", &a, &c]
        );
        let s = load_script("/var/lib/ferry", &image(), 0, Runtime::Docker).unwrap();
        assert_eq!(&s.values()[3..], [a.clone(), b.clone(), c.clone()]);
        let (s, names) = verify_script("/var/lib/ferry", std::slice::from_ref(&a)).unwrap();
        assert_eq!(s.values(), ["/var/lib/ferry"]);
        assert_eq!(names, format!("{a}\n").into_bytes());
    }

    #[test]
    fn values_with_a_grammar_are_checked() {
        for ok in [
            "/var/lib/ferry",
            "/srv/my store",
            "/",
            "/srv/ferry/",
            "/srv/$(x)",
        ] {
            assert_eq!(check_store(ok), Ok(()), "{ok}");
        }
        for bad in ["", "var/lib", "-rf", "/a/../b", "/a/./b", "/a//b", "/a\nb"] {
            let e = check_store(bad).unwrap_err().to_string();
            assert!(e.starts_with("the store path `"), "{e}");
        }
        for ok in [
            "busybox",
            "ferry/busybox:1.35",
            "reg.example:5000/ferry/spark:3.5.2-r1",
            "localhost/a__b/c-d.e:T_1",
            &format!("a/b@sha256:{}", "f".repeat(64)),
            &format!("a/b:t@sha256:{}", "f".repeat(64)),
        ] {
            assert_eq!(check_reference(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "-x",
            "--help",
            "a b",
            "a\nb",
            "A/b",
            "a/b:",
            "a/b:-t",
            "a//b",
            "a/../b",
            "a/b@sha256:xyz",
            "reg:x/a",
            "$(touch x)",
        ] {
            let e = check_reference(bad).unwrap_err().to_string();
            assert!(e.starts_with("the image reference `"), "{e}");
        }
        let e = BadValue::new("image reference", "a\nb", "is bad").on("root@node1");
        assert_eq!(
            e.to_string(),
            "refusing to run a script on `root@node1`: the image reference `a\\nb` is bad"
        );
        assert!(check_hex("blob digest", &"A".repeat(64)).is_err());
    }

    #[test]
    fn podman_gets_its_own_commands_every_layer_and_bare_hex_ids() {
        let s = list_script("/var/lib/ferry", "a:b", Runtime::Podman).unwrap();
        assert_eq!(s.values()[2], "podman");
        // podman opens every layer of the archive, even one it has
        let s = load_script("/var/lib/ferry", &image(), 2, Runtime::Podman).unwrap();
        assert_eq!(s.values()[1], "podman");
        assert_eq!(s.values().len(), 3 + 3);
        let id = "c".repeat(64);
        let st = HostState::parse(&format!("{DOCKER_MARK}\n{id}\n"));
        assert_eq!(st.docker_id, Some(format!("sha256:{id}")));
        assert_eq!(image_id("sha256:nothex"), None);
        let st = HostState::parse(&format!("{NO_DOCKER_MARK}\n{DOCKER_MARK}\n"));
        assert!(!st.has_docker);
    }

    #[test]
    fn the_upload_script_resumes_and_keeps_only_what_matches() {
        // with the host's `openssl`, and with `sha256sum` when `openssl`
        // fails (a stand-in first on the PATH)
        let stub = tempfile::tempdir().unwrap();
        let broken = stub.path().join("openssl");
        std::fs::write(&broken, "#!/bin/sh\nexit 1\n").unwrap();
        std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let system_path = std::env::var("PATH").unwrap_or_default();
        let no_openssl = format!("{}:{system_path}", stub.path().display());
        for path in [system_path.as_str(), no_openssl.as_str()] {
            upload_script_case(path);
        }
        // a host where neither tool hashes says so, rather than calling the blob damaged
        std::fs::copy(&broken, stub.path().join("sha256sum")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
        let blob = b"a small blob";
        let hex = hex::encode(Sha256::digest(blob));
        let mut input = upload_header(&hex, 0, blob.len() as u64).into_bytes();
        input.extend_from_slice(blob);
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(
                upload_script(dir.path().to_str().unwrap())
                    .unwrap()
                    .command_line()
                    .unwrap(),
            )
            .env("PATH", &no_openssl)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            upload_verdicts(&String::from_utf8_lossy(&out.stdout)).get(hex.as_str()),
            Some(&EXIT_NO_HASHER)
        );
        assert!(!dir.path().join("blobs/sha256").join(&hex).exists());
    }

    fn upload_script_case(path: &str) {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().to_str().unwrap();
        std::fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let hex = hex::encode(Sha256::digest(&data));
        let small = b"a small blob".to_vec();
        let small_hex = hex::encode(Sha256::digest(&small));
        // blobs as (hex, offset, size, the bytes sent): one stream
        let run = |blobs: &[(&str, u64, u64, &[u8])]| {
            let mut input = Vec::new();
            for (hex, offset, size, bytes) in blobs {
                input.extend_from_slice(upload_header(hex, *offset, *size).as_bytes());
                input.extend_from_slice(bytes);
            }
            let mut child = std::process::Command::new("sh")
                .arg("-c")
                .arg(upload_script(store).unwrap().command_line().unwrap())
                .env("PATH", path)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            // the script may stop before it reads all: a broken pipe is its answer
            let _ = child.stdin.take().unwrap().write_all(&input);
            let out = child.wait_with_output().unwrap();
            let verdicts: BTreeMap<String, i32> =
                upload_verdicts(&String::from_utf8_lossy(&out.stdout))
                    .into_iter()
                    .map(|(h, c)| (h.to_string(), c))
                    .collect();
            (out.status.code(), verdicts)
        };
        let size = data.len() as u64;
        let blob = dir.path().join("blobs/sha256").join(&hex);
        let part = dir.path().join(format!("blobs/sha256/{hex}.part"));
        // cut short: the .part stays, and the next run resumes from it
        assert_eq!(
            run(&[(&hex, 0, size, &data[..1_000_000])]),
            (Some(EXIT_SHORT), BTreeMap::new())
        );
        assert_eq!(std::fs::metadata(&part).unwrap().len(), 1_000_000);
        // a .part of another size than the plan saw is left alone, and the
        // blobs after it in the stream still arrive
        assert_eq!(
            run(&[
                (&hex, 999, size, &data[999..]),
                (&small_hex, 0, small.len() as u64, &small)
            ]),
            (
                Some(0),
                BTreeMap::from([(hex.clone(), EXIT_PART_MOVED), (small_hex.clone(), 0)])
            ),
            "PATH={path}"
        );
        assert_eq!(std::fs::metadata(&part).unwrap().len(), 1_000_000);
        assert_eq!(
            run(&[(&hex, 1_000_000, size, &data[1_000_000..])]),
            (Some(0), BTreeMap::from([(hex.clone(), 0)])),
            "PATH={path}"
        );
        assert_eq!(std::fs::read(&blob).unwrap(), data);
        assert!(!part.exists());
        // the stored blob checks out; a damaged one and a missing one do not
        let other = "e".repeat(64);
        std::fs::write(dir.path().join("blobs/sha256").join(&other), b"x").unwrap();
        let asked = vec![hex.clone(), other.clone(), "f".repeat(64)];
        let (verify, names) = verify_script(store, &asked).unwrap();
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(verify.command_line().unwrap())
            .env("PATH", path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&names).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            bad_blobs(&String::from_utf8_lossy(&out.stdout), &asked),
            BTreeSet::from([other, "f".repeat(64)]),
            "PATH={path}"
        );
        // the right length with other bytes: removed, never renamed
        std::fs::remove_file(&blob).unwrap();
        let mut bad = data.clone();
        bad[5] ^= 1;
        assert_eq!(
            run(&[(&hex, 0, size, &bad)]),
            (Some(0), BTreeMap::from([(hex.clone(), EXIT_DIGEST)]))
        );
        assert!(!part.exists() && !blob.exists());
        // a damaged prefix from an earlier run is caught too
        std::fs::write(&part, &bad[..1_000_000]).unwrap();
        assert_eq!(
            run(&[(&hex, 1_000_000, size, &data[1_000_000..])]),
            (Some(0), BTreeMap::from([(hex.clone(), EXIT_DIGEST)]))
        );
        assert!(!part.exists() && !blob.exists());
        // a header that is not one stops the script before it writes anything
        assert_eq!(run(&[("../x", 0, 1, b"x")]).0, Some(2));
    }

    #[test]
    fn the_list_script_tells_whether_head_reads_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let list = |path: &str| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(
                    list_script(store.to_str().unwrap(), "a:b", Runtime::Docker)
                        .unwrap()
                        .command_line()
                        .unwrap(),
                )
                .env("PATH", path)
                .output()
                .unwrap();
            HostState::parse(&String::from_utf8_lossy(&out.stdout)).exact_head
        };
        let system_path = std::env::var("PATH").unwrap_or_default();
        assert!(
            list(&system_path),
            "GNU head reads no more than it is asked"
        );
        // a `head` that reads ahead, as busybox's does
        let stub = dir.path().join("bin");
        std::fs::create_dir_all(&stub).unwrap();
        std::fs::write(stub.join("head"), "#!/bin/sh\ncat >/dev/null\n").unwrap();
        std::fs::set_permissions(
            stub.join("head"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        assert!(!list(&format!("{}:{system_path}", stub.display())));
    }

    /// Runs a host script as an SSH server would (`sh -c LINE`) in `dir`,
    /// with `bin` (stand-ins) first on the PATH: its exit status and stdout.
    pub(crate) fn sh_run(
        script: &Script,
        dir: &std::path::Path,
        bin: &std::path::Path,
        stdin: &[u8],
    ) -> (Option<i32>, String) {
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(script.command_line().unwrap())
            .current_dir(dir)
            .env("PATH", path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(stdin);
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// Starts a lock script with a local `sh` (as an SSH server would run
    /// it) and waits until it holds the lock: the running script, whose
    /// stdin's end releases it; or its exit status when it got no lock.
    #[allow(clippy::zombie_processes)] // the caller waits, in `release`
    pub(crate) fn hold(script: &Script) -> Result<std::process::Child, Option<i32>> {
        use std::io::BufRead;
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(script.command_line().unwrap())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            if out.read_line(&mut line).unwrap() == 0 {
                drop(child.stdin.take());
                return Err(child.wait().unwrap().code());
            }
            if line.trim_end() == LOCKED_MARK {
                return Ok(child);
            }
        }
    }

    /// Ends a held lock, as closing its channel does.
    pub(crate) fn release(mut child: std::process::Child) {
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success());
    }

    #[test]
    fn the_store_lock_is_shared_by_pushes_and_exclusive_for_gc() {
        let dir = tempfile::tempdir().unwrap();
        let st = dir.path().join("store");
        let st = st.to_str().unwrap();
        let shared = || store_lock_script(st, LockMode::Shared, 0).unwrap();
        let exclusive = store_lock_script(st, LockMode::Exclusive, 0).unwrap();
        let a = hold(&shared()).unwrap();
        let b = hold(&shared()).unwrap();
        assert_eq!(hold(&exclusive).unwrap_err(), Some(EXIT_LOCKED));
        release(a);
        release(b);
        let gc = hold(&exclusive).unwrap();
        assert_eq!(hold(&shared()).unwrap_err(), Some(EXIT_LOCKED));
        // a push waits for gc, up to its deadline
        let st_owned = st.to_string();
        let waiting = std::thread::spawn(move || {
            let s = store_lock_script(&st_owned, LockMode::Shared, 30).unwrap();
            hold(&s).map(release)
        });
        release(gc);
        assert_eq!(waiting.join().unwrap(), Ok(()));
        // a host without `flock`: a stand-in PATH with `sh` and `mkdir` only
        let bin = tempfile::tempdir().unwrap();
        for t in ["sh", "mkdir", "cat", "sleep"] {
            let from = ["/usr/bin", "/bin"]
                .iter()
                .map(|d| std::path::Path::new(d).join(t))
                .find(|p| p.exists())
                .unwrap();
            std::os::unix::fs::symlink(from, bin.path().join(t)).unwrap();
        }
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(STORE_LOCK)
            .arg("sh")
            .args(shared().values())
            .env("PATH", bin.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(EXIT_NO_FLOCK));
        assert!(STORE_LOCK.contains(&format!("exit {EXIT_NO_FLOCK}\n")));
        assert!(STORE_LOCK.contains(&format!("exit {EXIT_LOCKED}\n")));
        assert!(STORE_LOCK.contains(&format!("echo {LOCKED_MARK}\n")));
    }

    /// A folder of stand-ins for the runtime: `docker`/`podman` read their
    /// stdin and print nothing.
    pub(crate) fn stand_ins() -> tempfile::TempDir {
        let bin = tempfile::tempdir().unwrap();
        for rt in ["docker", "podman"] {
            let p = bin.path().join(rt);
            std::fs::write(
                &p,
                "#!/bin/sh\n[ \"$2\" != load ] || cat >/dev/null\nexit 0\n",
            )
            .unwrap();
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
        bin
    }

    /// Every path under `dir`, relative to it.
    pub(crate) fn tree(dir: &std::path::Path) -> BTreeSet<PathBuf> {
        let mut out = BTreeSet::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                out.insert(p.strip_prefix(dir).unwrap().to_path_buf());
                if p.is_dir() && !p.is_symlink() {
                    todo.push(p);
                }
            }
        }
        out
    }

    /// What a run may leave in the scratch folder: the store and the
    /// folders above it, nothing else.
    pub(crate) fn only_the_store(dir: &std::path::Path, store: &std::path::Path, case: &str) {
        let store = store.strip_prefix(dir).unwrap_or(store);
        for p in tree(dir) {
            assert!(
                p.starts_with(store) || store.starts_with(&p),
                "{case}: the script made `{}`",
                p.display()
            );
        }
    }

    /// Every value that reaches the push's scripts, drawn from shell
    /// metacharacters: refused, or run by a real `sh` without making
    /// anything but the store.
    #[test]
    fn hostile_values_in_push_scripts_run_nothing() {
        let bin = stand_ins();
        let d = "d".repeat(64);
        for v in crate::ssh::script::tests::HOSTILE {
            let case = format!("value {v:?}");
            let dir = tempfile::tempdir().unwrap();
            let store = dir.path().join("store");
            std::fs::create_dir_all(store.join("blobs/sha256")).unwrap();
            std::fs::create_dir_all(store.join("tmp")).unwrap();
            let st = store.to_str().unwrap();
            let run = |r: Result<Script, BadValue>, stdin: &[u8]| {
                if let Ok(s) = r {
                    sh_run(&s, dir.path(), bin.path(), stdin);
                }
            };
            // scripts whose list of names comes on stdin
            let with_stdin = |r: Result<(Script, Vec<u8>), BadValue>| {
                if let Ok((s, stdin)) = r {
                    sh_run(&s, dir.path(), bin.path(), &stdin);
                }
            };
            // as the image reference: the grammar refuses every one
            assert!(check_reference(v).is_err(), "{case}");
            let mut img = image();
            img.reference = v.to_string();
            for rt in [Runtime::Docker, Runtime::Podman] {
                run(list_script(st, v, rt), b"");
                run(load_script(st, &img, 0, rt), b"[]");
            }
            run(gc::record_script(st, v, &d), b"");
            // as a blob name, from the image or from the host's listing
            let mut img = image();
            img.config.hex = v.to_string();
            with_stdin(verify_script(st, &[v.to_string()]));
            run(load_script(st, &img, 0, Runtime::Docker), b"[]");
            run(gc::record_script(st, "a:b", v), b"");
            let mut header = upload_header(v, 0, 1).into_bytes();
            header.push(b'x');
            run(upload_script(st), &header);
            run(
                crate::objstore::pull::fetch_script(st, v, 1),
                b"http://h/x\n",
            );
            let mut p = gc::Plan::default();
            p.remove.insert(v.to_string(), 1);
            with_stdin(gc::remove_script(st, &p));
            p.remove.clear();
            p.remove_parts.insert(v.to_string(), 1);
            with_stdin(gc::remove_script(st, &p));
            for path in [
                v.to_string(),
                format!("images/{v}/1-{d}"),
                format!("images/x/{v}"),
            ] {
                let mut p = gc::Plan::default();
                p.dropped.push(gc::Record {
                    path,
                    name: "x".into(),
                    seq: 1,
                    manifest: d.clone(),
                    blobs: None,
                });
                with_stdin(gc::remove_script(st, &p));
            }
            only_the_store(dir.path(), &store, &case);
            // as the store, relative to the scratch folder and below it: a
            // relative one is refused, one below may be made
            for st in [v.to_string(), format!("{}/{v}", dir.path().display())] {
                run(list_script(&st, "a:b", Runtime::Docker), b"");
                run(upload_script(&st), b"");
                with_stdin(verify_script(&st, &["a".repeat(64)]));
                run(gc::record_script(&st, "a:b", &d), b"");
                run(gc::list_script(&st), b"");
                with_stdin(gc::remove_script(&st, &gc::Plan::default()));
                run(store_lock_script(&st, LockMode::Shared, 0), b"");
                run(crate::objstore::pull::fetch_script(&st, &d, 1), b"");
            }
            let allowed = dir.path().join(v);
            for p in tree(dir.path()) {
                let p = dir.path().join(p);
                assert!(
                    p.starts_with(&store)
                        || store.starts_with(&p)
                        || p.starts_with(&allowed)
                        || allowed.starts_with(&p),
                    "{case}: a script made `{}`",
                    p.display()
                );
            }
        }
    }

    /// Two pushes sending one blob at once (both found it missing): the
    /// store ends with one blob, and it is the right one.
    #[test]
    fn two_uploads_of_one_blob_at_once_end_with_one_correct_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().to_str().unwrap();
        std::fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let hex = hex::encode(Sha256::digest(&data));
        let size = data.len() as u64;
        let blob = dir.path().join("blobs/sha256").join(&hex);
        let part = dir.path().join(format!("blobs/sha256/{hex}.part"));
        let start = || {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(upload_script(store).unwrap().command_line().unwrap())
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        };
        // the first is half way through when the second starts
        let mut first = start();
        let mut first_in = first.stdin.take().unwrap();
        first_in
            .write_all(upload_header(&hex, 0, size).as_bytes())
            .unwrap();
        first_in.write_all(&data[..1_500_000]).unwrap();
        first_in.flush().unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(20);
        while std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0) < 1_000_000 {
            assert!(
                Instant::now() < deadline,
                "the first upload never wrote its half"
            );
            std::thread::yield_now();
        }
        let mut second = start();
        let mut input = upload_header(&hex, 0, size).into_bytes();
        input.extend_from_slice(&data);
        second.stdin.take().unwrap().write_all(&input).unwrap();
        let second = second.wait_with_output().unwrap();
        // one that meant to resume the first's `.part` leaves it alone and
        // asks for the whole blob
        let part_len = std::fs::metadata(&part).unwrap().len();
        let mut third = start();
        let mut input = upload_header(&hex, 1_000_000, size).into_bytes();
        input.extend_from_slice(&data[1_000_000..]);
        third.stdin.take().unwrap().write_all(&input).unwrap();
        let third = third.wait_with_output().unwrap();
        assert_eq!(
            upload_verdicts(&String::from_utf8_lossy(&third.stdout)).get(hex.as_str()),
            Some(&EXIT_BUSY)
        );
        assert!(std::fs::metadata(&part).unwrap().len() >= part_len);
        first_in.write_all(&data[1_500_000..]).unwrap();
        drop(first_in);
        let first = first.wait_with_output().unwrap();
        for out in [&first, &second] {
            assert_eq!(
                upload_verdicts(&String::from_utf8_lossy(&out.stdout)).get(hex.as_str()),
                Some(&0),
                "{out:?}"
            );
        }
        assert!(
            std::fs::read(&blob).unwrap() == data,
            "the stored blob is damaged"
        );
        assert!(!part.exists());
    }

    #[test]
    fn the_chain_docker_has_is_the_longest_shared_prefix() {
        let out = format!(
            "{DOCKER_MARK}\n{LAYERS_MARK}\n[\"sha256:1\",\"sha256:9\"]\n[\"sha256:1\",\"sha256:2\",\"sha256:7\"]\nnot json\n"
        );
        let st = HostState::parse(&out);
        assert_eq!(st.docker_layers.len(), 2);
        assert_eq!(st.present_prefix(&image().diff_ids), 2);
        assert_eq!(HostState::default().present_prefix(&image().diff_ids), 0);
    }
}
