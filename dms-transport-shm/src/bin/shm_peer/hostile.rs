//! A hostile dialler, written from the protocol as documented (the `rendezvous`,
//! `region` and `ring` module docs), with nothing of the crate's own code: it connects
//! to `@dms-shm/NAME`, sends a hello with its own memfd and socket, reads the 8-byte
//! answer, and then (for the ring cases) breaks the rings.
//!
//! Set-up cases print `ANSWER <status>` (or `ANSWER eof`) and exit. Ring cases do the
//! ZMTP handshake by hand, print `HANDSHAKEN` (except `chaos-early`), wait for a line
//! `GO` on stdin, attack, print
//! `ATTACKED`, and then `CLOSED` once the honest side closes the data socket (or
//! `STILLOPEN` after 10 s).

use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::ExitCode;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};
use rustix::net::{
    AddressFamily, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix,
    SocketFlags, SocketType,
};

use crate::numbered::Rng;

const HEADER: usize = 128;
const CAP: usize = 64 << 10;
const REGION: usize = 2 * HEADER + 2 * CAP;

fn fail(what: &str, error: impl std::fmt::Display) -> ExitCode {
    println!("ERROR {what}: {error}");
    ExitCode::from(9)
}

/// Runs `case` against `shm://name`.
pub(crate) fn run(name: &str, case: &str, seed: u64) -> ExitCode {
    let socket = match connect(name) {
        Ok(socket) => socket,
        Err(error) => return fail("connect", error),
    };
    let mut hello = [0u8; 24];
    hello[..7].copy_from_slice(b"DMS-SHM");
    hello[7] = 1;
    let mut caps = [CAP as u64, CAP as u64];
    let mut size = REGION as u64;
    let mut seals = SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL;
    match case {
        "bad-magic" => hello[..7].copy_from_slice(b"DMS-SHX"),
        "bad-version" => hello[7] = 2,
        "bad-capacity" => caps[0] = 5000,
        "huge-capacity" => caps[1] = 1 << 40,
        "unsealed" => seals = SealFlags::empty(),
        "wrong-size" => size += 4096,
        "write-sealed" => seals |= SealFlags::WRITE,
        _ => {}
    }
    hello[8..16].copy_from_slice(&caps[0].to_le_bytes());
    hello[16..24].copy_from_slice(&caps[1].to_le_bytes());
    let memfd = match memfd(size, seals) {
        Ok(fd) => fd,
        Err(error) => return fail("memfd", error),
    };
    let (ours, theirs) = match socketpair(SocketType::STREAM) {
        Ok(pair) => pair,
        Err(error) => return fail("socketpair", error),
    };
    let extra = memfd_plain();
    let dgram = socketpair(SocketType::DGRAM);
    let fds: Vec<BorrowedFd<'_>> = match (case, &extra, &dgram) {
        ("no-fds", _, _) => vec![],
        ("one-fd", _, _) => vec![memfd.as_fd()],
        ("three-fds", Ok(extra), _) => vec![memfd.as_fd(), theirs.as_fd(), extra.as_fd()],
        ("not-a-socket", Ok(extra), _) => vec![memfd.as_fd(), extra.as_fd()],
        ("dgram-socket", _, Ok((_, dgram))) => vec![memfd.as_fd(), dgram.as_fd()],
        _ => vec![memfd.as_fd(), theirs.as_fd()],
    };
    let sent = if case == "short-hello" {
        send_with(&socket, &hello[..10], &fds)
    } else {
        send_with(&socket, &hello, &fds)
    };
    if let Err(error) = sent {
        return fail("hello", error);
    }
    if case == "short-hello" {
        // Half a hello, then nothing: the acceptor must give up on us.
        let _ = rustix::net::shutdown(&socket, rustix::net::Shutdown::Write);
    }
    let answer = read_answer(&socket);
    match answer {
        Some(status) => println!("ANSWER {status}"),
        None => println!("ANSWER eof"),
    }
    if answer != Some(0) {
        return ExitCode::SUCCESS;
    }
    let region = match Shared::map(&memfd) {
        Ok(region) => region,
        Err(error) => return fail("mmap", error),
    };
    let mut link = Link {
        region,
        data: socket,
        space: ours,
        tail: 0,
        rng: Rng::new(seed),
    };
    if case == "chaos-early" {
        link.chaos(Duration::from_millis(300));
        println!("ATTACKED");
        link.wait_closed();
        return ExitCode::SUCCESS;
    }
    if let Err(why) = link.handshake(&format!("hostile-{}", std::process::id())) {
        return fail("handshake", why);
    }
    println!("HANDSHAKEN");
    // The test says when its side has the link up (a line on stdin).
    let mut go = String::new();
    if std::io::stdin().read_line(&mut go).is_err() || go.trim() != "GO" {
        return fail("stdin", format!("{go:?} instead of GO"));
    }
    match case {
        "absurd-tail" => {
            // Far past the room we have: head + capacity is the most we may commit.
            link.region
                .tail(0)
                .store(link.tail + 7 * CAP as u64 + 3, Ordering::Release);
            link.ring_data();
        }
        "absurd-head" => {
            // The acceptor's ring to us: a head past what it ever committed. It sees it
            // on its next write (the test sends us something).
            link.region
                .head(1)
                .store(0xDEAD_BEEF_0000, Ordering::Release);
            link.ring_space();
        }
        "garbage" => {
            // A long frame of 2^62 bytes, then noise: the decoder's limits must stop it.
            let mut bytes = vec![0x02, 0x40, 0, 0, 0, 0, 0, 0, 0];
            let mut noise = vec![0u8; 1000];
            link.rng.fill(&mut noise);
            bytes.extend(noise);
            link.write(&bytes);
        }
        "chaos" => link.chaos(Duration::from_millis(300)),
        _ => return fail("case", case),
    }
    println!("ATTACKED");
    link.wait_closed();
    ExitCode::SUCCESS
}

fn connect(name: &str) -> rustix::io::Result<OwnedFd> {
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let addr = SocketAddrUnix::new_abstract_name(format!("dms-shm/{name}").as_bytes())?;
    rustix::net::connect(&fd, &addr)?;
    rustix::net::sockopt::set_socket_timeout(
        &fd,
        rustix::net::sockopt::Timeout::Recv,
        Some(Duration::from_millis(100)),
    )?;
    Ok(fd)
}

fn memfd(size: u64, seals: SealFlags) -> rustix::io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create("hostile", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    rustix::fs::ftruncate(&fd, size)?;
    if !seals.is_empty() {
        rustix::fs::fcntl_add_seals(&fd, seals)?;
    }
    Ok(fd)
}

fn memfd_plain() -> rustix::io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create("extra", MemfdFlags::CLOEXEC)?;
    rustix::fs::ftruncate(&fd, 4096)?;
    Ok(fd)
}

fn socketpair(kind: SocketType) -> rustix::io::Result<(OwnedFd, OwnedFd)> {
    rustix::net::socketpair(AddressFamily::UNIX, kind, SocketFlags::CLOEXEC, None)
}

fn send_with(socket: &OwnedFd, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> rustix::io::Result<usize> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        control.push(SendAncillaryMessage::ScmRights(fds));
    }
    rustix::net::sendmsg(
        socket,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )
}

/// The status byte of the acceptor's answer, `None` if it closed without one.
fn read_answer(socket: &OwnedFd) -> Option<u8> {
    let mut answer = [0u8; 8];
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while got < 8 && Instant::now() < deadline {
        match rustix::net::recv(socket, &mut answer[got..], RecvFlags::empty()) {
            Ok((0, _)) => return None,
            Ok((n, _)) => got += n,
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
            Err(_) => return None,
        }
    }
    (got == 8 && &answer[..7] == b"DMS-SHM").then_some(answer[7])
}

/// Our mapping of the memfd we made.
struct Shared(NonNull<u8>);

impl Shared {
    fn map(fd: &OwnedFd) -> rustix::io::Result<Self> {
        // SAFETY: a fresh shared mapping at an address the kernel picks; the memfd is
        // sealed against shrinking, so it stays backed.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                REGION,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )?
        };
        Ok(Self(
            NonNull::new(ptr.cast()).ok_or(rustix::io::Errno::NOMEM)?,
        ))
    }

    fn ring(&self, ring: usize) -> *mut u8 {
        // SAFETY: ring 0 starts at 0, ring 1 after ring 0's header and data: in the map.
        unsafe { self.0.as_ptr().add(ring * (HEADER + CAP)) }
    }

    fn u64_at(&self, ring: usize, offset: usize) -> &AtomicU64 {
        // SAFETY: an aligned u64 inside the mapping, which lives as long as `self`.
        unsafe { &*self.ring(ring).add(offset).cast::<AtomicU64>() }
    }

    fn u32_at(&self, ring: usize, offset: usize) -> &AtomicU32 {
        // SAFETY: an aligned u32 inside the mapping, which lives as long as `self`.
        unsafe { &*self.ring(ring).add(offset).cast::<AtomicU32>() }
    }

    fn tail(&self, ring: usize) -> &AtomicU64 {
        self.u64_at(ring, 0)
    }

    fn head(&self, ring: usize) -> &AtomicU64 {
        self.u64_at(ring, 64)
    }

    /// Writes `bytes` at byte `at` of the whole region (clamped to it).
    fn scribble(&self, at: usize, bytes: &[u8]) {
        let at = at % REGION;
        let n = bytes.len().min(REGION - at);
        for (i, byte) in bytes[..n].iter().enumerate() {
            // SAFETY: `at + i < REGION`: inside the mapping. Volatile: the other process
            // reads it concurrently.
            unsafe { self.0.as_ptr().add(at + i).write_volatile(*byte) };
        }
    }
}

struct Link {
    region: Shared,
    data: OwnedFd,
    space: OwnedFd,
    /// Bytes we committed to ring 0.
    tail: u64,
    rng: Rng,
}

impl Link {
    fn ring_data(&self) {
        let _ = rustix::net::send(&self.data, &[1], SendFlags::DONTWAIT | SendFlags::NOSIGNAL);
    }

    fn ring_space(&self) {
        let _ = rustix::net::send(&self.space, &[1], SendFlags::DONTWAIT | SendFlags::NOSIGNAL);
    }

    /// Commits `bytes` to ring 0 (they fit: we write little) and rings the acceptor.
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            let at = HEADER + (self.tail as usize % CAP);
            self.region.scribble(at, &[*byte]);
            self.tail += 1;
        }
        self.region.tail(0).store(self.tail, Ordering::Release);
        self.ring_data();
    }

    /// The ZMTP 3.1 NULL handshake, by hand: our greeting and READY, then wait for the
    /// acceptor's (and release them).
    fn handshake(&mut self, identity: &str) -> Result<(), String> {
        let mut greeting = [0u8; 64];
        greeting[0] = 0xFF;
        greeting[9] = 0x7F;
        greeting[10] = 3;
        greeting[11] = 1;
        greeting[12..16].copy_from_slice(b"NULL");
        let mut body = vec![5];
        body.extend_from_slice(b"READY");
        for (name, value) in [("Socket-Type", "ROUTER"), ("Identity", identity)] {
            body.push(name.len() as u8);
            body.extend_from_slice(name.as_bytes());
            body.extend_from_slice(&(value.len() as u32).to_be_bytes());
            body.extend_from_slice(value.as_bytes());
        }
        let mut bytes = greeting.to_vec();
        bytes.push(0x04);
        bytes.push(body.len() as u8);
        bytes.extend(body);
        self.write(&bytes);
        // The acceptor's greeting (64) and READY (2 + 5 + 1 + 11 + 4 + 6 + ...) bytes.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let tail = self.region.tail(1).load(Ordering::Acquire);
            if tail >= 64 + 2 + 6 + 22 {
                self.region.head(1).store(tail, Ordering::Release);
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no greeting and READY from the acceptor ({tail} bytes)"
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Random damage for `time`: bytes anywhere (headers included), absurd and plausible
    /// positions, flags; both doorbells rung after each.
    fn chaos(&mut self, time: Duration) {
        let end = Instant::now() + time;
        while Instant::now() < end {
            let r = &mut self.rng;
            match r.below(7) {
                0 => {
                    let mut bytes = vec![0u8; 1 + r.below(256) as usize];
                    r.fill(&mut bytes);
                    let at = r.below(REGION as u64) as usize;
                    self.region.scribble(at, &bytes);
                }
                1 => self.region.tail(0).store(r.next_u64(), Ordering::Release),
                2 => {
                    let mut bytes = vec![0u8; 1 + r.below(512) as usize];
                    r.fill(&mut bytes);
                    self.write(&bytes);
                }
                3 => self.region.head(1).store(r.next_u64(), Ordering::Release),
                4 => {
                    let tail = self.region.tail(1).load(Ordering::Acquire);
                    self.region.head(1).store(tail, Ordering::Release);
                }
                5 => {
                    let (ring, offset) = (r.below(2) as usize, [8, 72][r.below(2) as usize]);
                    let value = r.next_u64() as u32;
                    self.region
                        .u32_at(ring, offset)
                        .store(value, Ordering::Relaxed);
                }
                _ => {
                    let value = r.below(3) as u32;
                    self.region.u32_at(0, 12).store(value, Ordering::Release);
                }
            }
            self.ring_data();
            self.ring_space();
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Waits for the acceptor to close the data socket (it drops the link).
    fn wait_closed(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut sink = [0u8; 64];
        while Instant::now() < deadline {
            match rustix::net::recv(&self.data, &mut sink, RecvFlags::empty()) {
                Ok((0, _)) | Err(rustix::io::Errno::CONNRESET) => {
                    println!("CLOSED");
                    return;
                }
                Ok(_) | Err(_) => {}
            }
        }
        println!("STILLOPEN");
    }
}
