//! The SSH push: the blobs' files in the local layout streamed to the host
//! ([`push_host`]), a blob source of [`deliver_host`]. It owns the upload
//! runs (several in flight on one session), the host's verdicts, resuming a
//! cut transfer and telling a damaged local blob from a damaged transfer.

use super::PushError;
use super::host::{
    BlobSource, Event, HostOutcome, HostStats, Options, Reporter, deliver_host, each_host,
};
use super::image::PushImage;
use super::plan::{HostState, Plan, Send};
use super::scripts::{
    EXIT_BUSY, EXIT_DIGEST, EXIT_NO_HASHER, EXIT_PART_MOVED, EXIT_SHORT, upload_header,
    upload_script,
};
use crate::ssh::{Remote, Running, SshError, Target};
use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Instant;

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
    let (found, size) = crate::digest::hash_file(&s.path).map_err(|source| PushError::Local {
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
