//! The scripts a push, a pull and gc run on a host: constant text, every
//! value a positional parameter. List, lock, verify, upload and load live
//! here with their exit statuses and marks; taking the store's lock runs one.

use super::PushError;
use super::check::{BadValue, check_hex, check_image, check_reference, check_store};
use super::image::PushImage;
use super::plan::Runtime;
use crate::ssh::Script;
use crate::ssh::{Remote, Running, SshError};
use std::collections::BTreeSet;

/// Lists the store (`<size> <name>` lines), then whether the runtime has the
/// image. The marks are the `*_MARK` constants (a test checks they match).
pub(super) const LIST: &str = r#"S=$1 ref=$2 rt=$3
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
pub(super) const EXIT_NO_FLOCK: i32 = 10;
/// Exit status of [`STORE_LOCK`] when the lock stayed taken past the wait.
pub(crate) const EXIT_LOCKED: i32 = 11;
pub(super) const LOCKED_MARK: &str = "--ferry-locked--";

/// `$1` the store, `$2` `-s` (shared) or `-x` (exclusive), `$3` the seconds
/// to wait. Holds `flock` on `$S/lock` for as long as the channel is open:
/// `cat` keeps the lock's file descriptor and ends when stdin does, which is
/// when ferry releases the lock, closes the channel, or dies (sshd then
/// closes the pipes). It prints a line each second while it waits, so the
/// wait is progress to the command timeout. `flock -n` in a loop rather than
/// `flock -w`: busybox's flock has no `-w`. The exit statuses are
/// [`EXIT_NO_FLOCK`] and [`EXIT_LOCKED`] and the mark [`LOCKED_MARK`]
/// (a test checks them).
pub(super) const STORE_LOCK: &str = r#"S=$1 mode=$2 wait=$3
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
pub(super) const UPLOAD: &str = r#"S=$1
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
pub(super) const LOAD: &str = r#"set -e
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
