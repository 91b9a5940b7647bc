//! Doing netlink work inside another network namespace.
//!
//! A netlink socket belongs to the network namespace of the thread that created it. So work for namespace X
//! runs on a dedicated thread that first enters X with `setns` and then opens its rtnetlink connection there;
//! the thread ends with the work, so no shared thread (a tokio worker, the caller) ever changes namespace.

use std::{future::Future, io, os::fd::BorrowedFd};

use nix::sched::{CloneFlags, setns};
use rtnetlink::Handle;

/// Errors entering a namespace or opening a netlink connection there.
#[derive(Debug, thiserror::Error)]
pub enum RtnlError {
    #[error("cannot enter the network namespace")]
    Setns(#[source] nix::Error),
    #[error("cannot open a netlink connection")]
    Connect(#[source] io::Error),
    #[error("cannot start a thread for the namespace")]
    Thread(#[source] io::Error),
}

/// Runs `work` on a fresh thread, inside the network namespace `netns` (or the caller's one when `None`).
///
/// Panics in `work` are propagated to the caller.
pub fn in_netns<T: Send>(netns: Option<BorrowedFd<'_>>, work: impl FnOnce() -> T + Send) -> Result<T, RtnlError> {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("netns-worker".into())
            .spawn_scoped(scope, move || {
                if let Some(fd) = netns {
                    setns(fd, CloneFlags::CLONE_NEWNET).map_err(RtnlError::Setns)?;
                }
                Ok(work())
            })
            .map_err(RtnlError::Thread)?;
        thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Where work for one namespace runs: on a fresh thread that enters it ([`in_netns`]), or on the calling
/// thread, which is in it already (a worker that enters many namespaces one after another, rather than a
/// thread per request: the agent's start-up on a host with 10,000 namespaces made four threads an interface).
#[derive(Clone, Copy, Debug)]
pub enum Within<'a> {
    Enter(BorrowedFd<'a>),
    Here,
}

impl Within<'_> {
    /// Runs `work` in the namespace.
    pub fn run<T: Send>(self, work: impl FnOnce() -> T + Send) -> Result<T, RtnlError> {
        match self {
            Within::Enter(fd) => in_netns(Some(fd), work),
            Within::Here => Ok(work()),
        }
    }
}

/// An rtnetlink connection bound to the calling thread's network namespace, with the small runtime that
/// drives it. Create it on the thread that will use it (see [`in_netns`]).
pub struct Rtnl {
    runtime: tokio::runtime::Runtime,
    pub handle: Handle,
}

impl Rtnl {
    /// Opens a connection in the calling thread's current network namespace.
    pub fn connect() -> Result<Self, RtnlError> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build().map_err(RtnlError::Connect)?;
        let handle = {
            let _context = runtime.enter();
            let (connection, handle, _) = rtnetlink::new_connection().map_err(RtnlError::Connect)?;
            runtime.spawn(connection);
            handle
        };
        Ok(Rtnl { runtime, handle })
    }

    /// Runs one request (or a sequence of them) to completion.
    pub fn run<F: Future>(&self, request: F) -> F::Output {
        self.runtime.block_on(request)
    }
}

/// The errno of a netlink error reply, if `err` is one.
pub fn errno_of(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|code| -code.get()),
        _ => None,
    }
}
