//! Where selectors are compiled: off the HTTP workers, on
//! [`slot_count`] threads of their own that run below the workers'
//! priority, at most one request per thread at a time.
//!
//! An HTTP worker is one thread serving many connections: a compile there
//! would hold all of them. Here a request first takes a slot (waiting at
//! most [`MAX_WAIT`], or it is refused: a flood queues here, and the queue
//! drains in bounded time), then hands its work to a compile thread and
//! waits for the answer without blocking its worker. The threads are
//! niced ([`NICENESS`], Linux): where one shares a core with a worker, the
//! worker runs first, so `/healthz` and every other request are not slowed
//! by a compile (docs/security.md, "Selector cost").
//!
//! The slot is held by the work itself: a client that leaves does not free
//! it before the compile ends.

use std::{
    num::NonZero,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{
        Arc, LazyLock, Mutex,
        mpsc::{Receiver, Sender, channel},
    },
    time::Duration,
};

use log::{debug, warn};
use tokio::sync::{Semaphore, oneshot};

/// Longest a request waits for a slot before it is refused (a `503` with
/// `Retry-After`). A request compiles in 20 ms at most (docs/security.md,
/// "Selector cost"), so a second lets dozens through per slot.
pub const MAX_WAIT: Duration = Duration::from_secs(1);
/// The niceness of the compile threads: 10 gives a worker at the default 0
/// about ten times their share of a core they both want.
const NICENESS: i32 = 10;

/// How many requests may compile at once, and how many compile threads
/// there are: one per core the process may use, so that a flood of
/// compiles keeps every core busy at most at low priority.
pub fn slot_count() -> usize {
    std::thread::available_parallelism().map_or(1, NonZero::get)
}

/// Why work was not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error("too many requests are compiling topic matchers; retry later")]
    Busy,
    /// The work panicked (its thread carries on with the next).
    #[error("compiling the topic matchers failed")]
    Failed,
}

type Job = Box<dyn FnOnce() + Send>;

/// The slots and the queue of the compile threads.
struct Pool {
    slots: Arc<Semaphore>,
    jobs: Sender<Job>,
}

static POOL: LazyLock<Pool> = LazyLock::new(|| {
    let count = slot_count();
    let (jobs, queue) = channel::<Job>();
    let queue = Arc::new(Mutex::new(queue));
    for n in 0..count {
        let queue = Arc::clone(&queue);
        let spawned = std::thread::Builder::new()
            .name(format!("mercure-compile-{n}"))
            .spawn(move || compile_thread(&queue));
        if let Err(err) = spawned {
            warn!("mercure compile thread not started error={err}");
        }
    }
    Pool {
        slots: Arc::new(Semaphore::new(count)),
        jobs,
    }
});

/// Runs `work` on a compile thread once a slot is free, and returns its
/// result.
pub async fn run<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Unavailable> {
    run_with(&POOL.slots, work).await
}

/// [`run`] with the slots given (tests take them all).
async fn run_with<T: Send + 'static>(
    slots: &Arc<Semaphore>,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Unavailable> {
    let slot = tokio::time::timeout(MAX_WAIT, Arc::clone(slots).acquire_owned())
        .await
        .map_err(|_| Unavailable::Busy)?
        .map_err(|_| Unavailable::Busy)?;
    let (answer, answered) = oneshot::channel();
    let job: Job = Box::new(move || {
        let _slot = slot;
        let _ = answer.send(work());
    });
    POOL.jobs.send(job).map_err(|_| Unavailable::Failed)?;
    answered.await.map_err(|_| Unavailable::Failed)
}

/// A compile thread: lowers its priority, then runs jobs as they come.
fn compile_thread(queue: &Mutex<Receiver<Job>>) {
    lower_priority();
    loop {
        let job = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        // A job that panics drops its answer (the request gets a 503);
        // the thread goes on.
        if catch_unwind(AssertUnwindSafe(job)).is_err() {
            warn!("mercure compile job panicked");
        }
    }
}

#[cfg(target_os = "linux")]
fn lower_priority() {
    // SAFETY: plain system calls on this thread's own id; no memory is
    // shared with them.
    let done = unsafe {
        let thread = libc::gettid() as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, thread, NICENESS)
    };
    if done != 0 {
        debug!(
            "mercure compile thread keeps its priority error={}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Work runs on a compile thread and answers; a slot that does not
    /// come within `MAX_WAIT` is `Busy`; a panic is `Failed`, and the
    /// threads go on.
    #[actix_web::test]
    async fn slots_bound_the_wait() {
        let name = run(|| std::thread::current().name().map(str::to_owned))
            .await
            .expect("runs");
        assert!(name.is_some_and(|n| n.starts_with("mercure-compile-")));

        let slots = Arc::new(Semaphore::new(1));
        let taken = Arc::clone(&slots).acquire_owned().await.expect("open");
        assert_eq!(run_with(&slots, || 1).await, Err(Unavailable::Busy));
        drop(taken);
        assert_eq!(run_with(&slots, || 2).await, Ok(2));

        let panicked = run_with(&slots, || -> u8 { panic!("a compile bug") }).await;
        assert_eq!(panicked, Err(Unavailable::Failed));
        assert_eq!(run_with(&slots, || 3).await, Ok(3));
    }
}
