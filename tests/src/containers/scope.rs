//! The lifetime of what the container fixtures make.
//!
//! - One run directory per test process, `/tmp/nsmc-runs/PID`, for everything the runtimes write (rootfs,
//!   dockerd's data and exec roots, Podman's storage, LXC's container path, runc bundles).
//! - A lock (`/tmp/nsmc-runs/lock`, flock) held for the whole process: while a process holds it, no other
//!   container test runs, so everything carrying [`super::PREFIX`] that is not ours was left by a run that was
//!   killed, and is removed ([`super::leftovers`]) before anything is made.
//! - Process-wide fixtures (dockerd, the LXC bridge, Podman's network) made on first use and dropped when the
//!   process exits ([`shared`], run from `atexit`, which the test harness reaches on success and on failure).
//! - The tests' serial lock ([`serial`]): the tests name every namespace (`attach --all`) and compare the whole
//!   list, so they run one at a time whatever `--test-threads` says.

use std::{
    fs::File,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock, PoisonError},
    time::{Duration, Instant},
};

use nix::fcntl::{Flock, FlockArg};

/// Parent of every run directory.
pub const BASE: &str = "/tmp/nsmc-runs";

/// How long to wait for another container test run to finish before failing.
const LOCK_WAIT: Duration = Duration::from_secs(600);

type Cleanup = Box<dyn FnOnce() + Send>;

static AT_EXIT: Mutex<Vec<Cleanup>> = Mutex::new(Vec::new());

/// This process's run directory; the first call takes the lock, removes what killed runs left, and arranges
/// for the directory to go at exit.
pub fn run_dir() -> PathBuf {
    static RUN: OnceLock<(PathBuf, Flock<File>)> = OnceLock::new();
    RUN.get_or_init(|| {
        crate::require_root();
        std::fs::create_dir_all(BASE).unwrap_or_else(|e| panic!("mkdir {BASE}: {e}"));
        let lock = take_lock();
        let dir = Path::new(BASE).join(std::process::id().to_string());
        super::leftovers::remove();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        // SAFETY: `run_at_exit` is an `extern "C" fn()` that never unwinds out (it catches panics).
        let registered = unsafe { libc::atexit(run_at_exit) };
        assert_eq!(registered, 0, "atexit failed");
        (dir, lock)
    })
    .0
    .clone()
}

fn take_lock() -> Flock<File> {
    let path = Path::new(BASE).join("lock");
    let start = Instant::now();
    let mut file = File::options().create(true).truncate(false).write(true).open(&path);
    loop {
        let opened = file.unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        match Flock::lock(opened, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => {
                let _ = std::fs::write(Path::new(BASE).join("owner"), std::process::id().to_string());
                return lock;
            }
            Err((returned, errno)) => {
                let owner = std::fs::read_to_string(Path::new(BASE).join("owner")).unwrap_or_default();
                assert!(
                    start.elapsed() < LOCK_WAIT,
                    "another container test run (pid {owner}) held {} for {LOCK_WAIT:?} ({errno})",
                    path.display()
                );
                std::thread::sleep(Duration::from_millis(100));
                file = Ok(returned);
            }
        }
    }
}

/// Records that this run made system directory `path` (`/run/docker`, ...), so that if the run is killed the
/// next one removes it ([`super::leftovers`]).
pub fn note_made(path: &Path) {
    use std::io::Write as _;
    let record = run_dir().join(MADE);
    let mut file = File::options().create(true).append(true).open(&record).expect("open the record of made dirs");
    writeln!(file, "{}", path.display()).expect("record a made directory");
}

/// The file of a run directory that lists the system directories the run made.
pub const MADE: &str = "made";

/// Arranges for `cleanup` to run when the process exits (the last registered runs first).
pub fn at_exit(cleanup: impl FnOnce() + Send + 'static) {
    AT_EXIT.lock().unwrap_or_else(PoisonError::into_inner).push(Box::new(cleanup));
}

extern "C" fn run_at_exit() {
    let cleanups = std::mem::take(&mut *AT_EXIT.lock().unwrap_or_else(PoisonError::into_inner));
    for cleanup in cleanups.into_iter().rev() {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(cleanup)).is_err() {
            eprintln!("a container clean-up panicked at exit");
        }
    }
    let dir = Path::new(BASE).join(std::process::id().to_string());
    super::leftovers::unmount_below(&dir);
    if let Err(err) = std::fs::remove_dir_all(&dir) {
        eprintln!("cannot remove {}: {err}", dir.display());
    }
}

/// The process-wide instance in `slot`, started with `start` on first use and dropped at exit. A start that
/// panics leaves the slot empty (the next test tries again and fails with the same message).
pub fn shared<T: Send + Sync + 'static>(slot: &'static Mutex<Option<Arc<T>>>, start: impl FnOnce() -> T) -> Arc<T> {
    let _ = run_dir();
    let mut held = slot.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(existing) = &*held {
        return Arc::clone(existing);
    }
    let made = Arc::new(start());
    *held = Some(Arc::clone(&made));
    at_exit(move || drop(slot.lock().unwrap_or_else(PoisonError::into_inner).take()));
    made
}

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Held by each container test for its whole run (from a synchronous test).
pub fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.blocking_lock()
}

/// [`serial`] from an async test.
pub async fn serial_async() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}
