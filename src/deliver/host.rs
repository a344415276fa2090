//! The one per-host delivery flow, whatever the blob source: connect, lock
//! the store, list, verify, plan, store what is missing (the source's part:
//! [`BlobSource`]), load, check the image id and record; and running it on
//! many hosts in parallel. It reports through [`Reporter`] and never prints.

use super::PushError;
use super::check::check_image;
use super::gc;
use super::image::{PushImage, docker_manifest, image_id};
use super::plan::{HostState, Plan, Runtime, plan, to_verify};
use super::scripts::{
    LockMode, PUSH_LOCK_WAIT_SECS, bad_blobs, list_script, load_script, lock_store, verify_script,
};
use crate::ssh::{Remote, SshError, SshOptions, Target};
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

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

/// Where the blobs a host lacks come from: an SSH push sends them from the
/// local layout (`deliver::ssh`); a pull has the host fetch them from a
/// bucket (`objstore::pull`). The rest of a delivery to one host is
/// [`deliver_host`], the same whatever the source.
pub trait BlobSource {
    type Error: From<PushError> + From<SshError>;
    /// Ends the message when gc holds the store: what was not done, what to do.
    fn when_busy(&self) -> &'static str;
    /// Stores in the host's `store` every blob that `plan` sends.
    fn store_blobs(
        &self,
        remote: &Remote,
        store: &str,
        plan: &Plan,
        state: &HostState,
        reporter: &dyn Reporter,
        stats: &mut HostStats,
    ) -> Result<(), Self::Error>;
}

/// Delivers the image to one host from `source`: connect, lock the store,
/// list it, hash what must be checked, plan, store the missing blobs, load
/// the image into the runtime when it lacks it, check the loaded id, record
/// the image for gc and release the lock.
pub fn deliver_host<S: BlobSource>(
    source: &S,
    target: &Target,
    image: &PushImage,
    opts: &Options,
    reporter: &dyn Reporter,
    stats: &mut HostStats,
) -> Result<(), S::Error> {
    let label = target.label();
    check_image(&opts.store, image).map_err(|e| e.on(&label))?;
    let remote = Remote::connect(target, &opts.ssh)?;
    reporter.event(&label, Event::Connected);
    // held from the listing to the record, so gc cannot remove a blob
    // this delivery found present and did not store
    let lock = lock_store(
        &remote,
        &opts.store,
        LockMode::Shared,
        PUSH_LOCK_WAIT_SECS,
        source.when_busy(),
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
        }
        .into());
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
    source.store_blobs(&remote, &opts.store, &plan, &state, reporter, stats)?;
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
        }
        .into());
    }
    stats.loaded = true;
    stats.loaded_without_unpigz = opts.runtime == Runtime::Docker && !state.has_unpigz;
    record(&remote, &opts.store, image)?;
    lock.release()?;
    reporter.event(&label, Event::Loaded);
    Ok(())
}

/// Tells the host's store that this image is the newest of its name, for `ferry gc`.
pub(super) fn record(remote: &Remote, store: &str, image: &PushImage) -> Result<(), PushError> {
    remote.run_ok(
        "recording the image",
        &gc::record_script(store, &image.reference, &image.manifest.hex)
            .map_err(|e| e.on(&remote.label()))?,
        &[],
    )?;
    Ok(())
}
