//! How two processes set up a shared-memory link: a Unix stream socket in the abstract
//! namespace (`@dms-shm/NAME`), peer credentials, and one exchange that passes the
//! memory and the second doorbell.
//!
//! 1. The acceptor listens on `@dms-shm/NAME` (abstract: no file is ever created, and
//!    the name is free again the moment its process dies, so a restart binds it first
//!    time). The dialler connects.
//! 2. Each side reads the other's credentials (`SO_PEERCRED`) and refuses a peer whose
//!    uid it does not allow (by default only its own): a process of another user cannot
//!    squat a name or reach a node.
//! 3. The dialler sends the 24-byte *hello*, `"DMS-SHM" 0x01`, then the capacity of the
//!    ring from dialler to acceptor and of the ring back (u64, little endian), with two
//!    descriptors (`SCM_RIGHTS`): the sealed memfd of both rings ([`crate::region`]) and
//!    one end of the *space* doorbell socket pair.
//! 4. The acceptor checks everything (magic and version, capacities are powers of two
//!    within its bounds, exactly two descriptors, the memfd's seals and size, the socket's
//!    type), maps the memory and answers with 8 bytes, `"DMS-SHM"` and a status
//!    ([`Status`]); 0 means the link is set up and ZMTP starts on the rings.
//!
//! The rendezvous connection stays open as the *data* doorbell ([`crate::bells`]).

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{UnixListener, UnixStream};

use crate::region::{MIN_RING, Region, RegionError};

const MAGIC: &[u8; 7] = b"DMS-SHM";
const VERSION: u8 = 1;
const HELLO_LEN: usize = 24;

/// The acceptor's answer to a hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// Set up: ZMTP starts.
    Accepted = 0,
    /// The hello was malformed (magic, version, length or descriptors).
    BadHello = 1,
    /// A ring capacity is not a power of two within the acceptor's bounds.
    BadCapacity = 2,
    /// The memory was not a sealed memfd of the right size, or the doorbell not a Unix
    /// stream socket.
    BadMemory = 3,
}

/// Why a shared-memory link could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The peer runs as a user this side does not allow.
    #[error("peer process {pid} runs as uid {uid}, which is not allowed")]
    UidNotAllowed {
        /// The peer's pid.
        pid: i32,
        /// The peer's uid.
        uid: u32,
    },
    /// The peer's hello was not valid (the acceptor's view).
    #[error("invalid shared-memory hello: {0}")]
    BadHello(&'static str),
    /// The memory or doorbell the peer passed was refused (the acceptor's view).
    #[error(transparent)]
    Region(#[from] RegionError),
    /// The acceptor refused our hello (the dialler's view).
    #[error("the acceptor refused the shared-memory link: {0:?}")]
    Refused(Status),
    /// The acceptor answered something that is not an answer.
    #[error("the acceptor's answer is not a DMS shared-memory answer")]
    BadAnswer,
}

impl From<SetupError> for io::Error {
    fn from(error: SetupError) -> Self {
        // Never `ConnectionRefused`: that is what a name nobody listens on gives, and the
        // kernel takes it as proof that an instance is dead. A listener that refuses our
        // hello is alive.
        let kind = match &error {
            SetupError::UidNotAllowed { .. } => io::ErrorKind::PermissionDenied,
            SetupError::Refused(_) => io::ErrorKind::Other,
            _ => io::ErrorKind::InvalidData,
        };
        Self::new(kind, error)
    }
}

/// What both sides hold once the rendezvous is over.
#[derive(Debug)]
pub(crate) struct Rendezvous {
    /// The memory of both rings (dialler to acceptor first).
    pub(crate) region: std::sync::Arc<Region>,
    /// The rendezvous connection: the data doorbell.
    pub(crate) data: OwnedFd,
    /// The space doorbell.
    pub(crate) space: OwnedFd,
    /// The peer's process id.
    pub(crate) peer_pid: i32,
}

/// Who may connect: uids allowed besides our own.
#[derive(Debug, Clone, Default)]
pub(crate) struct Policy {
    pub(crate) extra_uids: Vec<u32>,
    pub(crate) max_ring: usize,
}

impl Policy {
    fn check(&self, fd: impl AsFd) -> Result<i32, io::Error> {
        let cred = rustix::net::sockopt::socket_peercred(fd)?;
        let uid = cred.uid.as_raw();
        if uid == rustix::process::getuid().as_raw() || self.extra_uids.contains(&uid) {
            Ok(cred.pid.as_raw_nonzero().get())
        } else {
            Err(SetupError::UidNotAllowed {
                pid: cred.pid.as_raw_nonzero().get(),
                uid,
            }
            .into())
        }
    }

    fn capacity_ok(&self, capacity: u64) -> bool {
        capacity.is_power_of_two()
            && capacity >= MIN_RING as u64
            && capacity <= self.max_ring as u64
    }
}

/// Listens on the abstract name `name`. `AddrInUse` when a live process holds it.
pub(crate) fn listen(name: &[u8]) -> io::Result<UnixListener> {
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    let addr = SocketAddrUnix::new_abstract_name(name)?;
    rustix::net::bind(&fd, &addr).map_err(|e| {
        if e == rustix::io::Errno::ADDRINUSE {
            io::Error::new(
                io::ErrorKind::AddrInUse,
                "another live process has bound this shm:// name",
            )
        } else {
            e.into()
        }
    })?;
    rustix::net::listen(&fd, 128)?;
    UnixListener::from_std(std::os::unix::net::UnixListener::from(fd))
}

/// Connects to the abstract name `name` (retrying while its backlog is full).
async fn connect(name: &[u8]) -> io::Result<UnixStream> {
    let addr = SocketAddrUnix::new_abstract_name(name)?;
    loop {
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => return UnixStream::from_std(std::os::unix::net::UnixStream::from(fd)),
            // A full backlog: the acceptor is busy. The caller's timeout bounds this.
            Err(rustix::io::Errno::AGAIN) => tokio::time::sleep(Duration::from_millis(1)).await,
            Err(e) => return Err(e.into()),
        }
    }
}

fn into_fd(stream: UnixStream) -> io::Result<OwnedFd> {
    Ok(OwnedFd::from(stream.into_std()?))
}

/// The dialler's side: connects to `name` and sets up rings of `capacities` (dialler to
/// acceptor, acceptor to dialler).
pub(crate) async fn dial(
    name: &[u8],
    capacities: [usize; 2],
    policy: &Policy,
) -> io::Result<Rendezvous> {
    let mut stream = connect(name).await?;
    let peer_pid = policy.check(&stream)?;
    let (memfd, region) = Region::create(capacities).map_err(SetupError::from)?;
    let (ours, theirs) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    let mut hello = [0u8; HELLO_LEN];
    hello[..7].copy_from_slice(MAGIC);
    hello[7] = VERSION;
    hello[8..16].copy_from_slice(&(capacities[0] as u64).to_le_bytes());
    hello[16..24].copy_from_slice(&(capacities[1] as u64).to_le_bytes());
    let fds = [memfd.as_fd(), theirs.as_fd()];
    let sent = stream
        .async_io(Interest::WRITABLE, || {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            control.push(SendAncillaryMessage::ScmRights(&fds));
            rustix::net::sendmsg(
                &stream,
                &[io::IoSlice::new(&hello)],
                &mut control,
                SendFlags::NOSIGNAL,
            )
            .map_err(io::Error::from)
        })
        .await?;
    if sent != HELLO_LEN {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short hello"));
    }
    drop((memfd, theirs));
    let mut answer = [0u8; 8];
    stream.read_exact(&mut answer).await?;
    if &answer[..7] != MAGIC {
        return Err(SetupError::BadAnswer.into());
    }
    match answer[7] {
        0 => {}
        1 => return Err(SetupError::Refused(Status::BadHello).into()),
        2 => return Err(SetupError::Refused(Status::BadCapacity).into()),
        3 => return Err(SetupError::Refused(Status::BadMemory).into()),
        _ => return Err(SetupError::BadAnswer.into()),
    }
    Ok(Rendezvous {
        region,
        data: into_fd(stream)?,
        space: ours,
        peer_pid,
    })
}

/// The acceptor's side of a connection just accepted.
pub(crate) async fn accept(mut stream: UnixStream, policy: &Policy) -> io::Result<Rendezvous> {
    let peer_pid = policy.check(&stream)?;
    let (hello, fds) = receive_hello(&stream).await?;
    let (status, outcome) = match check_hello(&hello, fds, policy) {
        Ok((region, space)) => (Status::Accepted, Ok((region, space))),
        Err((status, error)) => (status, Err(error)),
    };
    let mut answer = [0u8; 8];
    answer[..7].copy_from_slice(MAGIC);
    answer[7] = status as u8;
    let written = stream.write_all(&answer).await;
    let (region, space) = outcome?;
    written?;
    Ok(Rendezvous {
        region,
        data: into_fd(stream)?,
        space,
        peer_pid,
    })
}

/// Reads the hello and the descriptors that came with it (all of them are taken, so
/// none is leaked, whatever the peer sent).
async fn receive_hello(stream: &UnixStream) -> io::Result<([u8; HELLO_LEN], Vec<OwnedFd>)> {
    let mut hello = [0u8; HELLO_LEN];
    let mut fds = Vec::new();
    let mut got = 0;
    while got < HELLO_LEN {
        let (n, truncated) = stream
            .async_io(Interest::READABLE, || {
                // Room for more descriptors than allowed, to see a peer that sends more.
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
                let mut control = RecvAncillaryBuffer::new(&mut space);
                let received = rustix::net::recvmsg(
                    stream,
                    &mut [io::IoSliceMut::new(&mut hello[got..])],
                    &mut control,
                    RecvFlags::CMSG_CLOEXEC,
                )
                .map_err(io::Error::from)?;
                for message in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(received) = message {
                        fds.extend(received);
                    }
                }
                Ok((
                    received.bytes,
                    received.flags.contains(rustix::net::ReturnFlags::CTRUNC),
                ))
            })
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if truncated {
            return Err(SetupError::BadHello("too many descriptors").into());
        }
        got += n;
    }
    Ok((hello, fds))
}

type Refusal = (Status, io::Error);

fn check_hello(
    hello: &[u8; HELLO_LEN],
    fds: Vec<OwnedFd>,
    policy: &Policy,
) -> Result<(std::sync::Arc<Region>, OwnedFd), Refusal> {
    let bad = |why| (Status::BadHello, SetupError::BadHello(why).into());
    if &hello[..7] != MAGIC || hello[7] != VERSION {
        return Err(bad("not a DMS shared-memory hello of version 1"));
    }
    let [memfd, space]: [OwnedFd; 2] = fds
        .try_into()
        .map_err(|_| bad("exactly two descriptors must come with it"))?;
    let capacity = |at: usize| {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(&hello[at..at + 8]);
        u64::from_le_bytes(raw)
    };
    let capacities = [capacity(8), capacity(16)];
    if !capacities.iter().all(|c| policy.capacity_ok(*c)) {
        return Err((
            Status::BadCapacity,
            SetupError::BadHello("ring capacities out of bounds").into(),
        ));
    }
    // Both fit in usize: they are at most `max_ring`.
    let capacities = capacities.map(|c| c as usize);
    let stream_socket = rustix::net::sockopt::socket_type(&space)
        .is_ok_and(|t| t == SocketType::STREAM)
        && rustix::net::sockopt::socket_domain(&space).is_ok_and(|d| d == AddressFamily::UNIX);
    if !stream_socket {
        return Err((
            Status::BadMemory,
            SetupError::BadHello("the doorbell is not a Unix stream socket").into(),
        ));
    }
    let region = Region::open(&memfd, capacities)
        .map_err(|e| (Status::BadMemory, SetupError::from(e).into()))?;
    Ok((region, space))
}
