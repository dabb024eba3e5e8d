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

/// User plus system CPU time of a process, and whether it has exited (a zombie not yet
/// reaped still shows its final times).
pub fn cpu(pid: u32) -> Option<(Duration, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: fields start after ")".
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux configuration the bench runs on.
    let ticks = utime + stime;
    Some((Duration::from_millis(ticks * 10), *state == "Z"))
}

/// Runs a command to completion, sampling its memory every 2 ms; returns its exit status,
/// CPU time and peak resident memory.
pub fn run_sampled(
    command: &mut std::process::Command,
) -> anyhow::Result<(std::process::ExitStatus, Duration, u64)> {
    let mut child = command.spawn()?;
    let pid = child.id();
    let mut peak = 0;
    let mut cpu_time = Duration::ZERO;
    loop {
        if let Some(m) = memory(pid) {
            peak = peak.max(m.peak);
        }
        if let Some((time, exited)) = cpu(pid) {
            cpu_time = time;
            if exited {
                break;
            }
        }
        if let Some(status) = child.try_wait()? {
            return Ok((status, cpu_time, peak));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let status = child.wait()?;
    Ok((status, cpu_time, peak))
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
