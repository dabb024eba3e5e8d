//! Reading a process's memory and CPU time from /proc (Linux only: the bench runs here).

use std::time::Duration;

/// Resident set size now and its high-water mark, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss: u64,
    pub peak: u64,
}

pub fn memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    Some(Memory {
        rss: field("VmRSS:")?,
        peak: field("VmHWM:")?,
    })
}

/// User plus system CPU time of every waited-for child of this process so far.
pub fn children_cpu() -> anyhow::Result<Duration> {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN)?;
    let micros = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(u64::try_from(t.tv_sec()).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec()).unwrap_or(0))
    };
    Ok(micros(usage.user_time()) + micros(usage.system_time()))
}

/// Runs a command to completion, sampling its memory every 2 ms; returns its exit status,
/// CPU time (from `getrusage`, to the microsecond) and peak resident memory. Run one at a
/// time: the CPU time is the growth of all waited-for children's.
pub fn run_sampled(
    command: &mut std::process::Command,
) -> anyhow::Result<(std::process::ExitStatus, Duration, u64)> {
    let before = children_cpu()?;
    let mut child = command.spawn()?;
    let pid = child.id();
    let mut peak = 0;
    let status = loop {
        if let Some(m) = memory(pid) {
            peak = peak.max(m.peak);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    Ok((status, children_cpu()?.saturating_sub(before), peak))
}

/// User plus system CPU time a running process has used so far (`/proc/PID/stat`).
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: count fields after its end.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // /proc counts in USER_HZ, which Linux fixes at 100 for user space on every architecture
    // the bench runs on.
    Some(Duration::from_millis(ticks * 10))
}

/// Waits until `pid` has been idle (under 5 % of a core) for a whole half-second, or `limit`.
pub async fn until_idle(pid: u32, limit: Duration) {
    let started = std::time::Instant::now();
    let mut last = process_cpu(pid);
    while started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = process_cpu(pid);
        if let (Some(before), Some(after)) = (last, now)
            && after.saturating_sub(before) < Duration::from_millis(25)
        {
            return;
        }
        last = now;
    }
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
