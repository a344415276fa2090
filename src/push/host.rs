//! The push to one host, and to many in parallel: connect, lock the store,
//! list, verify, plan, send what is missing, load, check the image id and
//! record. It reports through [`Reporter`] and never prints.

use super::PushError;
use super::check::check_image;
use super::gc;
use super::image::{PushImage, docker_manifest, image_id};
use super::plan::{HostState, Plan, Runtime, Send, plan, to_verify};
use super::scripts::{
    EXIT_BUSY, EXIT_DIGEST, EXIT_NO_HASHER, EXIT_PART_MOVED, EXIT_SHORT, LockMode,
    PUSH_LOCK_WAIT_SECS, bad_blobs, list_script, load_script, lock_store, upload_header,
    upload_script, verify_script,
};
use crate::ssh::{Remote, Running, SshError, SshOptions, Target};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

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

/// Where the blobs a host lacks come from: an SSH push sends them from the
/// local layout ([`push_host`]); a pull has the host fetch them from a
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

/// The SSH push's source: the blobs' files in the local layout, streamed
/// to the host.
struct FromLayout;

impl BlobSource for FromLayout {
    type Error = PushError;

    fn when_busy(&self) -> &'static str {
        "nothing was sent; push again when gc has ended"
    }

    /// All blobs through one upload script when the host's `head -c`
    /// allows it, else one script per blob with a few running at once.
    fn store_blobs(
        &self,
        remote: &Remote,
        store: &str,
        plan: &Plan,
        state: &HostState,
        reporter: &dyn Reporter,
        stats: &mut HostStats,
    ) -> Result<(), PushError> {
        let per_run = if state.exact_head {
            plan.sends.len().max(1)
        } else {
            1
        };
        let mut in_flight = VecDeque::new();
        for run in plan.sends.chunks(per_run) {
            if in_flight.len() == UPLOADS_IN_FLIGHT {
                let oldest = in_flight.pop_front().expect("uploads in flight");
                stored(remote, store, oldest, reporter, stats)?;
            }
            let run = run.iter().map(|s| (s, s.offset)).collect();
            in_flight.push_back(send(remote, store, run, reporter, stats)?);
        }
        while let Some(upload) = in_flight.pop_front() {
            stored(remote, store, upload, reporter, stats)?;
        }
        Ok(())
    }
}

/// Pushes the image to one host and loads it into its Docker.
pub fn push_host(
    target: &Target,
    image: &PushImage,
    opts: &Options,
    reporter: &dyn Reporter,
    stats: &mut HostStats,
) -> Result<(), PushError> {
    deliver_host(&FromLayout, target, image, opts, reporter, stats)
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
pub(super) fn upload_verdicts(out: &str) -> BTreeMap<&str, i32> {
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
