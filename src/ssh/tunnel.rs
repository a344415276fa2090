//! The tunnel through a jump host, as OpenSSH's ProxyJump makes it: an
//! inner session's bytes carried through a `direct-tcpip` channel of the
//! jump host's session by a thread of their own. It owns that thread and
//! the socket pair; it does not log in or check keys (see [`super::session`]).

use std::io::{ErrorKind, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use ssh2::{BlockDirections, Channel, Session};

/// A logged-in session, and what keeps its transport alive.
pub(super) struct Hop {
    pub sess: Session,
    /// A duplicate of the session's socket, to wait on when it is a jump host.
    pub fd: OwnedFd,
    pub tunnel: Option<Tunnel>,
}

/// Carries the bytes of an inner SSH session through a `direct-tcpip`
/// channel of the jump host's session, as `ssh -W` does for ProxyJump.
/// libssh2 wants a file descriptor for the inner session, so it gets one end
/// of a socket pair, and a thread copies between the other end and the
/// channel. The jump host's session is non-blocking and used by that thread
/// alone (a blocking read would hold the session's lock against the writes).
pub(super) struct Tunnel {
    stop: Arc<AtomicBool>,
    pump: Option<std::thread::JoinHandle<()>>,
}

impl Tunnel {
    pub fn start(bastion: Hop, channel: Channel, sock: UnixStream) -> std::io::Result<Tunnel> {
        sock.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let pump = std::thread::Builder::new()
            .name("ssh-jump".into())
            .spawn(move || pump(bastion, channel, sock, &flag))?;
        Ok(Tunnel {
            stop,
            pump: Some(pump),
        })
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(p) = self.pump.take() {
            let _ = p.join();
        }
    }
}

/// Bytes read from one side and not yet written to the other.
struct Pending {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Pending {
    fn new() -> Pending {
        Pending {
            buf: vec![0; 256 << 10],
            start: 0,
            end: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Reads into the empty buffer; `Ok(false)` at the end of the stream.
    fn fill(&mut self, r: &mut impl Read) -> std::io::Result<bool> {
        let n = r.read(&mut self.buf)?;
        (self.start, self.end) = (0, n);
        Ok(n > 0)
    }

    fn drain(&mut self, w: &mut impl Write) -> std::io::Result<()> {
        self.start += w.write(&self.buf[self.start..self.end])?;
        Ok(())
    }
}

/// Moves bytes both ways until either side ends or the tunnel is dropped.
/// Any error ends it: the inner session then sees its socket close.
fn pump(bastion: Hop, mut ch: Channel, mut sock: UnixStream, stop: &AtomicBool) {
    bastion.sess.set_blocking(false);
    let would_block = |e: &std::io::Error| e.kind() == ErrorKind::WouldBlock;
    let (mut up, mut down) = (Pending::new(), Pending::new());
    let mut channel_ended = false;
    let mut idle = 0;
    while !stop.load(Ordering::SeqCst) {
        let before = (up.start, up.end, down.start, down.end);
        // the inner session's bytes towards the host
        if up.is_empty() {
            match up.fill(&mut sock) {
                Ok(true) => {}
                Ok(false) => break, // the inner session is gone
                Err(e) if would_block(&e) => {}
                Err(_) => break,
            }
        }
        if !up.is_empty() {
            match up.drain(&mut ch) {
                Err(e) if !would_block(&e) => break,
                _ => {}
            }
        }
        // and the host's answers back
        if down.is_empty() && !channel_ended {
            match down.fill(&mut ch) {
                Ok(true) => {}
                Ok(false) => channel_ended = true,
                Err(e) if would_block(&e) => {}
                Err(_) => break,
            }
        }
        if !down.is_empty() {
            match down.drain(&mut sock) {
                Err(e) if !would_block(&e) => break,
                _ => {}
            }
        }
        if channel_ended && down.is_empty() {
            break;
        }
        if before != (up.start, up.end, down.start, down.end) {
            idle = 0;
            continue;
        }
        // libssh2 may have buffered a packet while a call would have
        // blocked: one more round before waiting in poll
        idle += 1;
        if idle < 2 {
            continue;
        }
        let mut remote = PollFlags::IN;
        if matches!(
            bastion.sess.block_directions(),
            BlockDirections::Outbound | BlockDirections::Both
        ) {
            remote |= PollFlags::OUT;
        }
        let mut local = PollFlags::empty();
        if up.is_empty() {
            local |= PollFlags::IN;
        }
        if !down.is_empty() {
            local |= PollFlags::OUT;
        }
        let mut fds = [PollFd::new(&bastion.fd, remote), PollFd::new(&sock, local)];
        // the timeout only bounds how long dropping the tunnel waits
        let tick = Timespec {
            tv_sec: 0,
            tv_nsec: 200_000_000,
        };
        match poll(&mut fds, Some(&tick)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(_) => break,
        }
    }
    let _ = ch.close();
}
