//! Delivering an image into hosts' Docker, storing only what they lack.
//!
//! Each host keeps a content-addressed store (`<store>/blobs/sha256/<hex>`).
//! A delivery lists the store in one round trip, plans which blobs to store
//! (pure: [`plan`]), has each missing one stored from a blob source (an SSH
//! push streams it into `<hex>.part`, appending when an earlier transfer was
//! cut, [`ssh`]; a pull has the host fetch it from a bucket,
//! `objstore::pull`), has the host check its sha256 before renaming, and
//! finally has the host assemble a docker-archive from the stored blobs and
//! pipe it into `docker load`, so nothing is sent twice. Hosts run in
//! parallel; one failing does not stop the others.
//!
//! This module owns the store layout, the plan and the shell run on hosts
//! (the image in [`image`], the plan in [`plan`], value checks in [`check`],
//! the host scripts in [`scripts`], the one per-host flow in [`host`], the
//! SSH source in [`ssh`]); the SSH session is in [`crate::ssh`]. It reports
//! through [`Reporter`] and never prints. Each delivery records the image on
//! the host, so [`gc`] knows what to keep.
//!
//! Every script is constant text and every value (the store path, the image
//! reference, blob names) a positional parameter, checked against its
//! grammar first ([`check::check_image`]). Pushes, pulls and gc share a store
//! through `flock` ([`lock_store`]): a push holds `$STORE/lock` shared from
//! its listing to its record, through a channel of its own, so two pushes
//! run side by side while gc, which takes it exclusively, never runs during
//! one; each blob is written under its own lock (see [`upload_script`]).

mod check;
pub mod gc;
mod host;
mod image;
mod plan;
mod scripts;
mod ssh;
#[cfg(test)]
pub(crate) mod tests;

use std::path::PathBuf;

use crate::ssh::{SshError, TargetError};

pub use check::{BadValue, check_hex, check_reference, check_store};
pub use host::{BlobSource, Event, HostStats, Options, Reporter, deliver_host, each_host};
pub use image::{LocalBlob, PushImage};
pub use plan::{HostState, Plan, Runtime, Send};
pub(crate) use scripts::{BLOB_LOCK, SUM256};
pub use scripts::{EXIT_DIGEST, EXIT_NO_HASHER, LockMode, lock_store};
pub use ssh::{push_all, push_host};

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
