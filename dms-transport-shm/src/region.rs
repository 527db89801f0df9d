//! The shared memory of one link: a sealed memfd holding its two rings, mapped in both
//! processes.
//!
//! The dialler creates the memfd, sizes it and seals it against shrinking and growing
//! (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`) before it passes it over the rendezvous
//! socket. The acceptor maps it only after checking those seals and its exact size: a
//! peer can then never truncate the memory under our mapping (which would kill us with
//! `SIGBUS` on the next access). A memfd has no name in any file system, so nothing is
//! left behind in `/dev/shm`: the memory is freed when the last mapping and descriptor of
//! it are gone, whichever process dies first.
//!
//! Layout: the ring from dialler to acceptor (a [`HEADER_LEN`]-byte header, then its
//! capacity in data bytes), then the ring from acceptor to dialler.

use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::sync::Arc;

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};

use crate::ring::{HEADER_LEN, RingMemory};

/// Smallest ring accepted (bytes).
pub(crate) const MIN_RING: usize = 4096;

/// Seals a region's memfd must carry before it is mapped.
const REQUIRED_SEALS: SealFlags = SealFlags::SHRINK.union(SealFlags::GROW);

/// Why a memfd received from a peer is not mapped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegionError {
    /// The memory is not sealed against shrinking and growing (or is no memfd at all).
    #[error("the shared memory is not a sealed memfd (seals {0:?})")]
    NotSealed(String),
    /// Its size is not the size the two rings need.
    #[error("the shared memory is {actual} bytes; the rings need exactly {expected}")]
    Size {
        /// Bytes needed.
        expected: u64,
        /// Bytes it has.
        actual: u64,
    },
    /// A system call failed.
    #[error("shared memory: {0}")]
    Io(#[from] std::io::Error),
}

impl From<rustix::io::Errno> for RegionError {
    fn from(errno: rustix::io::Errno) -> Self {
        Self::Io(errno.into())
    }
}

/// Bytes a region with rings of `capacities` takes.
pub(crate) fn region_len(capacities: [usize; 2]) -> usize {
    2 * HEADER_LEN + capacities[0] + capacities[1]
}

/// A mapping of a link's memory, unmapped when the last ring using it is dropped.
#[derive(Debug)]
pub(crate) struct Region {
    base: NonNull<u8>,
    len: usize,
    capacities: [usize; 2],
}

// SAFETY: the mapping is plain shared memory; the rings on it synchronise their own use.
unsafe impl Send for Region {}
// SAFETY: as above; `Region` itself only holds the address to unmap.
unsafe impl Sync for Region {}

impl Region {
    /// A new region for rings of `capacities` (powers of two, at least [`MIN_RING`]):
    /// the sealed memfd to pass to the peer, and our mapping of it.
    pub(crate) fn create(capacities: [usize; 2]) -> Result<(OwnedFd, Arc<Self>), RegionError> {
        let len = region_len(capacities);
        let fd = rustix::fs::memfd_create(
            "dms-shm-link",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?;
        rustix::fs::ftruncate(&fd, len as u64)?;
        rustix::fs::fcntl_add_seals(&fd, REQUIRED_SEALS | SealFlags::SEAL)?;
        let region = Self::map(&fd, len, capacities)?;
        Ok((fd, region))
    }

    /// Maps a memfd the peer created for rings of `capacities`, after checking its seals
    /// and size.
    pub(crate) fn open(fd: &OwnedFd, capacities: [usize; 2]) -> Result<Arc<Self>, RegionError> {
        let seals = rustix::fs::fcntl_get_seals(fd)
            .map_err(|e| RegionError::NotSealed(format!("unreadable: {e}")))?;
        if !seals.contains(REQUIRED_SEALS) {
            return Err(RegionError::NotSealed(format!("{seals:?}")));
        }
        let len = region_len(capacities);
        let actual = rustix::fs::fstat(fd)?.st_size;
        let actual = u64::try_from(actual).unwrap_or(0);
        if actual != len as u64 {
            return Err(RegionError::Size {
                expected: len as u64,
                actual,
            });
        }
        Self::map(fd, len, capacities)
    }

    fn map(fd: &OwnedFd, len: usize, capacities: [usize; 2]) -> Result<Arc<Self>, RegionError> {
        // SAFETY: a fresh shared mapping of `len` bytes of `fd` at an address the kernel
        // picks: it aliases no Rust object. The memfd is sealed against shrinking, so the
        // mapping stays backed for its whole life.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )?
        };
        let base = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| std::io::Error::other("mmap returned a null address"))?;
        Ok(Arc::new(Self {
            base,
            len,
            capacities,
        }))
    }

    /// The two rings: dialler to acceptor, then acceptor to dialler.
    pub(crate) fn rings(self: &Arc<Self>) -> [RingMemory; 2] {
        let [first, second] = self.capacities;
        let owner: Arc<dyn Send + Sync> = self.clone();
        // SAFETY: the mapping is page-aligned and `region_len` bytes long: the first ring
        // takes `HEADER_LEN + first` bytes from its start, the second the rest; both
        // offsets are multiples of 64 (capacities are powers of two of at least 4 KiB);
        // capacities are powers of two; the memfd was zero-filled when created; each
        // ring has one producer and one consumer, one per process (the link owns them).
        unsafe {
            [
                RingMemory::from_raw(self.base, first, owner.clone()),
                RingMemory::from_raw(self.base.add(HEADER_LEN + first), second, owner),
            ]
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `base..base + len` is our mapping, and nothing uses it any more (every
        // ring holds an `Arc` of this region).
        if let Err(error) = unsafe { rustix::mm::munmap(self.base.as_ptr().cast(), self.len) } {
            tracing::warn!(%error, "munmap of a shared-memory link failed");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn a_region_opens_only_sealed_and_of_its_size() {
        let caps = [MIN_RING, 2 * MIN_RING];
        let (fd, _ours) = Region::create(caps).unwrap();
        assert!(Region::open(&fd, caps).is_ok());
        assert!(matches!(
            Region::open(&fd, [MIN_RING, MIN_RING]),
            Err(RegionError::Size { .. })
        ));
        // An unsealed memfd is refused: its creator could shrink it under our mapping.
        let unsealed = rustix::fs::memfd_create("t", MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&unsealed, region_len(caps) as u64).unwrap();
        assert!(matches!(
            Region::open(&unsealed, caps),
            Err(RegionError::NotSealed(_))
        ));
    }
}
