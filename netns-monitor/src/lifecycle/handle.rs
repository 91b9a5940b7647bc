//! nsfs file handles (Linux >= 6.18): reopen a network namespace from its 64-bit id and inode, without anything
//! keeping it alive in between.
//!
//! `name_to_handle_at` on an nsfs file gives a handle of type `FILEID_NSFS` (0xf1) whose bytes are
//! `struct nsfs_file_handle { __u64 ns_id; __u32 ns_type; __u32 ns_inum; }` (include/uapi/linux/nsfs.h). The
//! kernel programs read `ns_id` and the inode at creation, so the handle can be built from an event alone, and
//! `open_by_handle_at` either opens that very namespace (ids are never reused, inodes are) or fails with
//! `ESTALE` once it is gone. That is how tier 2 learns the fate of a namespace whose creator left before the
//! agent could look: alive (it gets a netns id and is watched like any other) or already destroyed.

use std::{
    fs::File,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use netns_monitor_common::ns::CLONE_NEWNET;

/// `FILEID_NSFS` (include/linux/exportfs.h).
const FILEID_NSFS: i32 = 0xf1;

/// `struct file_handle` with room for exactly one `struct nsfs_file_handle`.
#[repr(C)]
struct NsfsHandle {
    handle_bytes: u32,
    handle_type: i32,
    ns_id: u64,
    ns_type: u32,
    ns_inum: u32,
}

const _: () = assert!(size_of::<NsfsHandle>() == 24);

/// Opens network namespaces by handle.
#[derive(Debug)]
pub struct Opener {
    /// Any file on nsfs: `open_by_handle_at` decodes the handle on the file system of this descriptor.
    nsfs: File,
}

/// What a handle says about a namespace.
#[derive(Debug)]
pub enum Reopened {
    Alive(File),
    /// The kernel has no namespace with this id any more.
    Gone,
}

impl Opener {
    /// An opener, if this kernel has nsfs file handles (checked by asking for the handle of our own namespace).
    pub fn probe() -> Option<Self> {
        let nsfs = File::open("/proc/self/ns/net").ok()?;
        let mut handle = NsfsHandle { handle_bytes: 16, handle_type: 0, ns_id: 0, ns_type: 0, ns_inum: 0 };
        let mut mount_id: libc::c_int = 0;
        // SAFETY: `handle` is a struct file_handle with `handle_bytes` (16) bytes of room after its header, the
        // path is a NUL-terminated empty string, and both out-pointers are valid for the call.
        let ret = unsafe {
            libc::name_to_handle_at(
                nsfs.as_raw_fd(),
                c"".as_ptr(),
                (&raw mut handle).cast(),
                &mut mount_id,
                libc::AT_EMPTY_PATH,
            )
        };
        (ret == 0 && handle.handle_type == FILEID_NSFS && handle.ns_id != 0).then_some(Self { nsfs })
    }

    /// Reopens network namespace `ns_id` (the kernel's `ns_common.ns_id`) with inode `inode`.
    pub fn open(&self, ns_id: u64, inode: u32) -> io::Result<Reopened> {
        let mut handle = NsfsHandle {
            handle_bytes: 16,
            handle_type: FILEID_NSFS,
            ns_id,
            ns_type: CLONE_NEWNET as u32,
            ns_inum: inode,
        };
        // SAFETY: `handle` is a complete struct file_handle (header plus 16 bytes); the kernel only reads it.
        let fd = unsafe {
            libc::open_by_handle_at(self.nsfs.as_raw_fd(), (&raw mut handle).cast(), libc::O_RDONLY | libc::O_CLOEXEC)
        };
        if fd < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::ESTALE) => Ok(Reopened::Gone),
                _ => Err(err),
            };
        }
        // SAFETY: open_by_handle_at returned a new descriptor that nothing else owns.
        Ok(Reopened::Alive(File::from(unsafe { OwnedFd::from_raw_fd(fd) })))
    }
}
