//! Pushing an image's OCI layout into a bucket: `oci-layout`, then each blob
//! under `blobs/sha256/`, and `index.json` last, so a reader never sees an
//! image whose blobs are not all there.
//!
//! A blob already in the bucket with the same size and the same `sha256`
//! metadata is skipped. Blobs larger than a part go up as multipart uploads:
//! one thread reads the file part by part (hashing it on the way, so a damaged
//! local blob is never completed), a few others send the parts. An upload cut
//! short is resumed: a part already in the bucket (listed with ListParts) is
//! not sent again when its size and ETag (the hex MD5 of its bytes) match
//! the local part's. At most `parallel + 1` parts are in memory at once.
//! Reports through [`Reporter`]; never prints.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};

use md5::Md5;
use sha2::{Digest, Sha256};

use super::{Body, ObjError, Part, Store};
use crate::deliver::{LocalBlob, PushImage};

/// What an upload reports while it runs.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    /// The object is in the bucket already.
    Present {
        name: &'a str,
        size: u64,
    },
    /// Sending starts: `parts` parts of which `reused` are in the bucket.
    Start {
        name: &'a str,
        size: u64,
        parts: u32,
        reused: u32,
    },
    /// A part in the bucket is not the local part (its ETag is not the
    /// MD5 of the local bytes): it is sent again.
    Differs {
        name: &'a str,
        part: u32,
    },
    /// Bytes of this object sent so far in this run.
    Progress {
        name: &'a str,
        sent: u64,
        total: u64,
    },
    Done {
        name: &'a str,
        sent: u64,
    },
}

pub trait Reporter: Sync {
    fn event(&self, event: Event<'_>);
}

pub struct Options {
    /// Bytes per part; blobs no larger go up in one PUT.
    pub part_size: u64,
    /// Parts sent at once.
    pub parallel: usize,
}

/// What one push did.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub objects_sent: usize,
    pub objects_present: usize,
    pub bytes_sent: u64,
    pub parts_sent: usize,
    pub parts_reused: usize,
    pub resumed: usize,
}

/// Pushes `image` (whose layout is `layout`) into the store's prefix.
pub fn push_image(
    store: &Store,
    layout: &Path,
    image: &PushImage,
    opts: &Options,
    reporter: &dyn Reporter,
) -> Result<Stats, ObjError> {
    store.check_bucket()?;
    let mut stats = Stats::default();
    small(
        store,
        &layout.join("oci-layout"),
        "oci-layout",
        reporter,
        &mut stats,
    )?;
    for b in image.blobs() {
        blob(store, b, opts, reporter, &mut stats)?;
    }
    small(
        store,
        &layout.join("index.json"),
        "index.json",
        reporter,
        &mut stats,
    )?;
    Ok(stats)
}

/// A small file of the layout, skipped when the bucket has the same bytes.
fn small(
    store: &Store,
    path: &Path,
    name: &str,
    reporter: &dyn Reporter,
    stats: &mut Stats,
) -> Result<(), ObjError> {
    let body = std::fs::read(path).map_err(|source| ObjError::Local {
        path: path.to_path_buf(),
        source,
    })?;
    let hex = hex::encode(Sha256::digest(&body));
    let key = store.loc.key(name);
    let size = body.len() as u64;
    if is_present(store, &key, &hex, size)? {
        stats.objects_present += 1;
        reporter.event(Event::Present { name, size });
        return Ok(());
    }
    reporter.event(Event::Start {
        name,
        size,
        parts: 1,
        reused: 0,
    });
    store.put(&key, body.into(), &hex)?;
    stats.objects_sent += 1;
    stats.bytes_sent += size;
    reporter.event(Event::Done { name, sent: size });
    Ok(())
}

fn is_present(store: &Store, key: &str, hex: &str, size: u64) -> Result<bool, ObjError> {
    Ok(store
        .head(key)?
        .is_some_and(|o| o.size == size && o.sha256.as_deref() == Some(hex)))
}

/// The size of part `n` (from 1) of a blob of `size` bytes.
pub fn part_len(size: u64, part_size: u64, n: u32) -> u64 {
    let start = u64::from(n - 1) * part_size;
    size.saturating_sub(start).min(part_size)
}

/// How many parts a blob of `size` bytes has (at least one).
pub fn part_count(size: u64, part_size: u64) -> u32 {
    size.div_ceil(part_size).max(1) as u32
}

/// Which of the parts already uploaded may stay: those of the size this run
/// would send under the same number. Each is kept only if [`same_part`]
/// agrees once the local bytes are read.
pub fn reusable(existing: &[Part], size: u64, part_size: u64) -> BTreeMap<u32, Part> {
    let n = part_count(size, part_size);
    existing
        .iter()
        .filter(|p| p.number >= 1 && p.number <= n && p.size == part_len(size, part_size, p.number))
        .map(|p| (p.number, p.clone()))
        .collect()
}

/// Whether a listed part holds `local`: the same size, and an ETag that is
/// the hex MD5 of the bytes (S3 and OSS give a part's ETag so, quoted; OSS
/// in upper case). An ETag of another form (AWS's SSE-KMS parts, say)
/// proves nothing, and the part is sent again.
pub fn same_part(listed: &Part, local: &[u8]) -> bool {
    let etag = listed.etag.trim().trim_matches('"');
    listed.size == local.len() as u64
        && etag.len() == 32
        && etag.eq_ignore_ascii_case(&hex::encode(Md5::digest(local)))
}

fn blob(
    store: &Store,
    b: &LocalBlob,
    opts: &Options,
    reporter: &dyn Reporter,
    stats: &mut Stats,
) -> Result<(), ObjError> {
    let name = format!("blobs/sha256/{}", b.hex);
    let key = store.loc.key(&name);
    if is_present(store, &key, &b.hex, b.size)? {
        stats.objects_present += 1;
        reporter.event(Event::Present {
            name: &name,
            size: b.size,
        });
        return Ok(());
    }
    let local = |source| ObjError::Local {
        path: b.path.clone(),
        source,
    };
    if b.size <= opts.part_size {
        let body = std::fs::read(&b.path).map_err(local)?;
        let found = hex::encode(Sha256::digest(&body));
        if found != b.hex {
            return Err(ObjError::LocalCorrupt {
                path: b.path.clone(),
                found,
            });
        }
        reporter.event(Event::Start {
            name: &name,
            size: b.size,
            parts: 1,
            reused: 0,
        });
        store.put(&key, body.into(), &b.hex)?;
        stats.objects_sent += 1;
        stats.bytes_sent += b.size;
        reporter.event(Event::Done {
            name: &name,
            sent: b.size,
        });
        return Ok(());
    }

    // resume the newest unfinished upload of this key, if any
    let (upload, have) = match store.list_uploads(&key)?.pop() {
        Some(id) => {
            let parts = store.list_parts(&key, &id)?;
            (id, reusable(&parts, b.size, opts.part_size))
        }
        None => (store.create_upload(&key, &b.hex)?, BTreeMap::new()),
    };
    let n = part_count(b.size, opts.part_size);
    reporter.event(Event::Start {
        name: &name,
        size: b.size,
        parts: n,
        reused: have.len() as u32,
    });
    let to_send = AtomicU64::new(
        (1..=n)
            .filter(|i| !have.contains_key(i))
            .map(|i| part_len(b.size, opts.part_size, i))
            .sum(),
    );

    let done = Mutex::new(have.clone());
    let sent = Mutex::new(0u64);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<ObjError>> = Mutex::new(None);
    // a rendezvous: a part is read only when a sender is free to take the
    // one before, so the senders' parts and the one being read are all
    // that is held
    let (tx, rx) = mpsc::sync_channel::<(u32, Body)>(0);
    let rx = Mutex::new(rx);
    let read_result = std::thread::scope(|s| {
        for _ in 0..opts.parallel.max(1) {
            s.spawn(|| {
                loop {
                    let next = rx.lock().expect("part queue").recv();
                    let Ok((i, body)) = next else { break };
                    if failed.load(Ordering::SeqCst) {
                        continue;
                    }
                    let len = body.len() as u64;
                    match store.upload_part(&key, &upload, i, body) {
                        Ok(etag) => {
                            done.lock().expect("parts").insert(
                                i,
                                Part {
                                    number: i,
                                    size: len,
                                    etag,
                                },
                            );
                            let mut sent = sent.lock().expect("sent");
                            *sent += len;
                            reporter.event(Event::Progress {
                                name: &name,
                                sent: *sent,
                                total: to_send.load(Ordering::SeqCst),
                            });
                        }
                        Err(e) => {
                            failed.store(true, Ordering::SeqCst);
                            first_error.lock().expect("error").get_or_insert(e);
                        }
                    }
                }
            });
        }
        // this thread reads and hashes every part in order, sending those
        // the bucket lacks or holds other bytes for
        let read = || -> Result<(String, usize), ObjError> {
            let mut f = File::open(&b.path).map_err(local)?;
            let mut hasher = Sha256::new();
            let mut kept = 0;
            for i in 1..=n {
                let len = part_len(b.size, opts.part_size, i) as usize;
                let mut buf = vec![0u8; len];
                f.read_exact(&mut buf).map_err(local)?;
                hasher.update(&buf);
                if failed.load(Ordering::SeqCst) {
                    break;
                }
                match have.get(&i) {
                    Some(p) if same_part(p, &buf) => {
                        kept += 1;
                        continue;
                    }
                    Some(_) => {
                        reporter.event(Event::Differs {
                            name: &name,
                            part: i,
                        });
                        done.lock().expect("parts").remove(&i);
                        to_send.fetch_add(len as u64, Ordering::SeqCst);
                    }
                    None => {}
                }
                if tx.send((i, Body::from(buf))).is_err() {
                    break;
                }
            }
            Ok((hex::encode(hasher.finalize()), kept))
        };
        let r = read();
        drop(tx);
        r
    });
    if let Some(e) = first_error.into_inner().expect("error") {
        return Err(e);
    }
    let (found, kept) = read_result?;
    if found != b.hex {
        // its parts are of no use to any later run
        let _ = store.abort(&key, &upload);
        return Err(ObjError::LocalCorrupt {
            path: b.path.clone(),
            found,
        });
    }
    let parts: Vec<Part> = done.into_inner().expect("parts").into_values().collect();
    store.complete(&key, &upload, &parts)?;
    let sent = sent.into_inner().expect("sent");
    stats.objects_sent += 1;
    stats.bytes_sent += sent;
    stats.parts_sent += n as usize - kept;
    stats.parts_reused += kept;
    stats.resumed += usize::from(kept > 0);
    reporter.event(Event::Done { name: &name, sent });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_blob_and_only_same_sized_ones_are_reused() {
        const M: u64 = 16;
        assert_eq!(part_count(40, M), 3);
        assert_eq!(part_count(32, M), 2);
        assert_eq!(part_count(0, M), 1);
        assert_eq!(
            (1..=3).map(|i| part_len(40, M, i)).collect::<Vec<_>>(),
            vec![16, 16, 8]
        );
        let p = |number, size| Part {
            number,
            size,
            etag: format!("e{number}"),
        };
        // part 2 was cut short, part 4 is beyond the blob, 3 is the right tail
        let have = reusable(&[p(1, 16), p(2, 10), p(3, 8), p(4, 16)], 40, M);
        assert_eq!(have.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
        // another part size: nothing fits
        assert!(reusable(&[p(1, 16)], 40, 20).is_empty());
    }

    #[test]
    fn a_part_stays_only_when_its_etag_is_the_md5_of_the_local_bytes() {
        let local = b"the bytes of part one".as_slice();
        // as `printf %s 'the bytes of part one' | md5sum` prints it
        let md5 = "a3341d70c323b220158741bed10a066e";
        let part = |etag: &str| Part {
            number: 1,
            size: local.len() as u64,
            etag: etag.into(),
        };
        assert!(same_part(&part(&format!("\"{md5}\"")), local));
        // OSS writes it in upper case; a server may leave the quotes out
        assert!(same_part(
            &part(&format!("\"{}\"", md5.to_uppercase())),
            local
        ));
        assert!(same_part(&part(md5), local));
        // other bytes of the same size
        let mut other = local.to_vec();
        other[3] ^= 1;
        assert!(!same_part(&part(&format!("\"{md5}\"")), &other));
        // an ETag that is no MD5 proves nothing
        assert!(!same_part(&part(""), local));
        assert!(!same_part(&part(&format!("\"{md5}-2\"")), local));
        // the right ETag, but the part in the bucket is of another size
        let short = Part {
            size: 3,
            ..part(md5)
        };
        assert!(!same_part(&short, local));
    }
}
