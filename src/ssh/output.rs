//! Bounds on what a host may send: a script's stdout, the end of its
//! stderr, a probe's answer, each read no further than its limit, and text
//! from a host escaped before a terminal shows it. It owns the limits; it
//! does not talk to hosts (see [`super::session`]).

use std::io::Read;

/// The most a script's stdout may send. The largest legitimate output is
/// a store's listing: a `stat` line (about 80 bytes) per blob and a JSON
/// line of diff_ids (72 bytes a layer) per image the runtime has; ten
/// thousand blobs and a thousand images of fifty layers make about 4 MiB.
pub const STDOUT_LIMIT: u64 = 16 << 20;
/// How much of a script's stderr a message shows: its end, where the error is.
pub const STDERR_KEEP: usize = 64 << 10;
/// The most stderr read before giving up on its end.
pub const STDERR_LIMIT: u64 = 16 << 20;
/// The most a health probe's answer may weigh (ZooKeeper's `srvr`, a
/// Spark master's JSON: a few KiB).
pub const ANSWER_LIMIT: u64 = 1 << 20;

/// Why a read from a host stopped.
#[derive(Debug)]
pub(super) enum ReadError {
    Io(std::io::Error),
    TooLong,
}

/// Reads `r` to its end, or refuses once it passes `limit` bytes (having
/// read one more).
fn read_capped(r: &mut impl Read, limit: u64) -> Result<Vec<u8>, ReadError> {
    let mut out = Vec::new();
    r.take(limit + 1)
        .read_to_end(&mut out)
        .map_err(ReadError::Io)?;
    if out.len() as u64 > limit {
        return Err(ReadError::TooLong);
    }
    Ok(out)
}

/// Text from a host (a script's message, a container's log) as the
/// operator's terminal may show it: control characters but newlines and
/// tabs escaped, so a host's bytes cannot drive the terminal.
pub fn shown(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let plain = !c.is_control() || c == '\n' || c == '\t';
            let shown: Vec<char> = if plain {
                vec![c]
            } else {
                c.escape_default().collect()
            };
            shown
        })
        .collect()
}

/// A script's stdout, up to [`STDOUT_LIMIT`].
pub(super) fn read_stdout(r: &mut impl Read) -> Result<Vec<u8>, ReadError> {
    read_capped(r, STDOUT_LIMIT)
}

/// The end of a script's stderr, for a message: its last [`STDERR_KEEP`]
/// bytes of the first [`STDERR_LIMIT`], with control characters but
/// newlines and tabs shown escaped (a host's bytes must not drive the
/// terminal). A read error ends it: the status says more.
pub(super) fn read_stderr(r: &mut impl Read) -> String {
    stderr_tail(&mut r.take(STDERR_LIMIT))
}

/// The last [`STDERR_KEEP`] bytes of everything `r` gives, shown with
/// [`shown`] (`…` first when more came). Reads to the end, holding at
/// most twice [`STDERR_KEEP`]: the SSH side bounds `r` first, `--local`
/// reads a pipe whole so the script never blocks on it.
pub fn stderr_tail(r: &mut impl Read) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut dropped = false;
    let mut buf = [0u8; 16 << 10];
    while let Ok(n @ 1..) = r.read(&mut buf) {
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * STDERR_KEEP {
            kept.drain(..kept.len() - STDERR_KEEP);
            dropped = true;
        }
    }
    if kept.len() > STDERR_KEEP {
        kept.drain(..kept.len() - STDERR_KEEP);
        dropped = true;
    }
    let text = shown(&String::from_utf8_lossy(&kept));
    if dropped { format!("…{text}") } else { text }
}

/// A probe's answer, up to the server's close, and no more than [`ANSWER_LIMIT`].
pub(super) fn read_answer(r: &mut impl Read) -> Result<Vec<u8>, ReadError> {
    read_capped(r, ANSWER_LIMIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stand-ins for a host that sends too much: more stdout than a script
    /// may, a flood of stderr, an endless probe answer.
    #[test]
    fn reads_from_a_host_are_bounded() {
        let mut big = std::io::repeat(b'x').take(STDOUT_LIMIT + 1);
        assert!(matches!(read_stdout(&mut big), Err(ReadError::TooLong)));
        let mut fits = std::io::repeat(b'x').take(STDOUT_LIMIT);
        assert_eq!(read_stdout(&mut fits).unwrap().len() as u64, STDOUT_LIMIT);
        // stderr keeps its end, where the error is
        let mut flood = std::io::repeat(b'e')
            .take(4 << 20)
            .chain(&b"\nthe real error\n"[..]);
        let tail = read_stderr(&mut flood);
        assert!(tail.len() <= STDERR_KEEP + 64, "{}", tail.len());
        assert!(tail.trim_end().ends_with("the real error"), "{tail:.40}");
        // and stops reading when a host never stops
        let mut endless = std::io::repeat(b'e').take(STDERR_LIMIT * 2);
        let tail = read_stderr(&mut endless);
        assert!(tail.len() <= STDERR_KEEP + 64);
        assert_eq!(endless.limit(), STDERR_LIMIT, "read no more than the limit");
        let mut answer = std::io::repeat(b'a').take(ANSWER_LIMIT + 1);
        assert!(matches!(read_answer(&mut answer), Err(ReadError::TooLong)));
        // a host's control characters do not reach the terminal
        let mut esc = &b"bad \x1b[2J\x07thing\n"[..];
        assert_eq!(read_stderr(&mut esc), "bad \\u{1b}[2J\\u{7}thing\n");
    }
}
