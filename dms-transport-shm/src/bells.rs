//! A link's doorbells: two connected Unix stream sockets between the processes, which
//! also tell each side at once when the other is gone.
//!
//! * The *data* socket (the rendezvous connection itself): a writer that commits bytes
//!   to a ring whose reader is parked sends one byte on it; the reader waits for it to be
//!   readable. Both sides' readers wait on their end, both sides' writers ring on theirs.
//! * The *space* socket (a socket pair the dialler makes and passes over the first): the
//!   same for a writer waiting for room, rung by the reader that released some.
//!
//! Both are read and written with `MSG_DONTWAIT` on every call, so a peer that changes
//! the shared file flags can never make us block; a wake-up that does not fit (the peer
//! does not drain its socket) is dropped, since the peer has one pending already. End of
//! file on either socket means the peer closed the link or died: its kernel closes its
//! descriptors, so death is seen at once, without waiting for a heartbeat.

use std::io;
use std::os::fd::OwnedFd;
use std::task::{Context, Poll, ready};

use rustix::net::{RecvFlags, SendFlags};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// What a wait on a doorbell ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ring {
    /// The other side rang (or may have: wake-ups can be spurious).
    Rung,
    /// The other side closed its end: it closed the link or its process died.
    Gone,
}

/// One doorbell socket, registered with the runtime.
#[derive(Debug)]
pub(crate) struct Bell {
    socket: AsyncFd<OwnedFd>,
}

impl Bell {
    /// Wraps a connected, non-blocking Unix stream socket. Must run inside a tokio
    /// runtime.
    pub(crate) fn new(socket: OwnedFd) -> io::Result<Self> {
        // SAFETY: `OwnedFd` keeps its descriptor open, and returns the same one from
        // `as_raw_fd`, for as long as the `AsyncFd` owns it.
        let socket = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE)? };
        Ok(Self { socket })
    }

    /// Rings the other side (best effort: a full socket means it has a wake-up pending).
    pub(crate) fn ring(&self) {
        match rustix::net::send(
            self.socket.get_ref(),
            &[1],
            SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
        ) {
            Ok(_) | Err(rustix::io::Errno::AGAIN) => {}
            // The peer is gone: its end of file reaches whoever waits on this socket.
            Err(error) => tracing::trace!(%error, "doorbell not rung"),
        }
    }

    /// Waits until the other side rings or goes away. Only one task may wait on a bell
    /// (the link's reader on the data bell, its writer on the space bell).
    pub(crate) fn poll_wait(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ring>> {
        loop {
            let mut guard = ready!(self.socket.poll_read_ready(cx))?;
            let mut drain = [0u8; 256];
            match rustix::net::recv(self.socket.get_ref(), &mut drain, RecvFlags::DONTWAIT) {
                Ok((0, _)) => return Poll::Ready(Ok(Ring::Gone)),
                Ok(_) => return Poll::Ready(Ok(Ring::Rung)),
                Err(rustix::io::Errno::AGAIN) => guard.clear_ready(),
                Err(rustix::io::Errno::CONNRESET) => return Poll::Ready(Ok(Ring::Gone)),
                Err(error) => return Poll::Ready(Err(error.into())),
            }
        }
    }
}
