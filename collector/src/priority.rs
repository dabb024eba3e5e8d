//! Scheduling priority of the collector's threads. Every ack waits for the one writer thread,
//! so when the CPU is short the writer must not queue behind work that can wait: with all
//! threads equal, a busy collector left the writer waiting for a CPU almost as long as it ran.
//! The async workers (TLS, signatures, pages) run slightly below the writer and policy
//! evaluation well below both. Without privileges a thread can only lower its own priority,
//! so the writer and the checkpointer keep the process's, and are spawned from the thread that
//! runs `server::run` (the main thread), never from a lowered one: Linux threads inherit their
//! creator's niceness.

/// Nice levels the async runtime's threads run below the writer.
pub const WORKERS: i32 = 2;
/// Nice levels the evaluation thread runs below the writer: judging can wait for ingest.
pub const BACKGROUND: i32 = 10;

/// Sets the calling thread's niceness to `niceness` when that lowers its priority (Linux;
/// elsewhere nothing). Absolute, not a step: a thread inherits its creator's niceness, so
/// stepping down from an already lowered thread would lower it twice. Failing to is not an
/// error: the collector works the same, only less fairly under load.
pub fn lower_current_thread(niceness: i32) {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process};
        // On Linux, PRIO_PROCESS with a thread id addresses that thread alone.
        let thread = Some(rustix::thread::gettid());
        if getpriority_process(thread).is_ok_and(|current| niceness > current) {
            let _ = setpriority_process(thread, niceness);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = niceness;
}

/// The niceness of a thread `step` levels below the writer's, which is the niceness the
/// process started with.
pub fn below_writer(step: i32) -> i32 {
    base().unwrap_or(0).saturating_add(step).min(19)
}

/// The niceness the process started with, read on the first call: make it on the main
/// thread before any thread is lowered (`main` does, before building the runtime).
pub fn base() -> Option<i32> {
    static BASE: std::sync::OnceLock<Option<i32>> = std::sync::OnceLock::new();
    *BASE.get_or_init(current_thread_niceness)
}

/// The calling thread's niceness (Linux; `None` elsewhere).
pub fn current_thread_niceness() -> Option<i32> {
    #[cfg(target_os = "linux")]
    {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).ok()
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// The async runtime of `serve`, whose threads run `WORKERS` levels below the writer. Build it
/// on the main thread, which keeps the process's priority for the writer to inherit.
pub fn serve_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    // Read before any thread is lowered.
    base();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(|| lower_current_thread(below_writer(WORKERS)))
        .build()
}
