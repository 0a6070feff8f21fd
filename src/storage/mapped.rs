//! A log segment's shared, writable memory map: how `everysec` and `never` put a record into
//! the page cache without a system call.
//!
//! A store into a `MAP_SHARED` mapping of a file lands in the kernel's page cache at once, so it
//! survives the process being killed (kill -9 loses nothing written here); the shard's log
//! fdatasyncs the file through io_uring to make it survive power loss. The segment is
//! preallocated (unwritten extents, which read as zeros), so the first touch of a page needs
//! no disk read and no allocation: a minor fault. Writeback (converting the extents, writing
//! the pages) is the kernel's flusher or the fdatasync, never the shard's thread.
//!
//! Owns one mapping and its unmapping. It never reads the mapping back, never hands out a
//! reference into it (only raw copies in), and never maps beyond the preallocated length (a
//! store past the file's end would raise SIGBUS).

use std::os::fd::AsRawFd;
use std::path::Path;
use std::ptr::NonNull;

use super::StorageError;

/// `len` bytes of a file mapped shared and writable. `!Send`: it lives on its shard's
/// executor, the only thread that writes it.
pub(super) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    /// Maps the first `len` bytes of `file` (already preallocated to at least `len`).
    pub(super) fn new(file: &impl AsRawFd, len: u64, path: &Path) -> Result<Mapping, StorageError> {
        let len = usize::try_from(len).expect("segment sizes are bounded by STORAGE_SEGMENT_BYTES_CEILING");
        assert!(len > 0, "a segment always has room for its header");
        // SAFETY: a fresh mapping chosen by the kernel (addr NULL) of an open fd; it aliases no
        // Rust object. The file is preallocated to `len`, so every page is backed.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(StorageError::io(path, &std::io::Error::last_os_error()));
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).expect("mmap returns MAP_FAILED, never NULL, on failure");
        Ok(Mapping { ptr, len })
    }

    /// Copies `data` into the file at `offset`. Panics past the mapping: the log checks room
    /// before every append (`segment_has_room`), so that would be a bug, and a silent store
    /// past the end would corrupt memory.
    pub(super) fn write_at(&self, offset: u64, data: &[u8]) {
        let end = offset.checked_add(data.len() as u64).expect("offsets fit in u64");
        assert!(end <= self.len as u64, "a log append past its segment's mapping");
        // SAFETY: `offset..end` lies inside the mapping (checked above), which stays mapped
        // while `self` lives. No Rust reference into the mapping exists (this type hands none
        // out), so the raw copy aliases nothing; `data` is ordinary memory, not the mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(offset as usize), data.len());
        }
    }

    /// Unmaps on glommio's blocking pool rather than on the shard's thread: tearing down the
    /// page tables of a segment costs in proportion to the pages it touched (16,384 for a full
    /// 64 MiB segment).
    pub(super) fn release_in_background(self) {
        let (addr, len) = (self.ptr.as_ptr() as usize, self.len);
        std::mem::forget(self);
        let unmap = move || unmap(addr as *mut u8, len);
        glommio::spawn_local(async move { glommio::executor().spawn_blocking(unmap).await }).detach();
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        unmap(self.ptr.as_ptr(), self.len);
    }
}

/// munmap(2) of a mapping made by [`Mapping::new`]; its owner gave it up.
fn unmap(addr: *mut u8, len: usize) {
    // SAFETY: `addr..addr + len` is exactly one mapping from `Mapping::new`, whose owner was
    // consumed (forgotten or dropped), so nothing can touch it again.
    let result = unsafe { libc::munmap(addr.cast(), len) };
    if result != 0 {
        log::warn!(
            "munmap of a log segment's mapping failed: {}",
            std::io::Error::last_os_error()
        );
    }
}
