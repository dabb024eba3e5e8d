//! Every ack waits for the one writer thread, so under load it must not queue behind request
//! handling or policy evaluation: `serve` runs its async workers a little below the writer and
//! its evaluation thread well below (collector/src/priority.rs). Read from the running
//! collector's threads in /proc.

#![cfg(target_os = "linux")]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use evident_tests::Collector;

/// A thread's name and niceness (field 19 of its stat).
fn thread(stat: &str) -> (String, i32) {
    let name = stat[stat.find('(').expect("(") + 1..stat.rfind(')').expect(")")].to_owned();
    let fields: Vec<&str> = stat[stat.rfind(')').expect(")") + 1..]
        .split_whitespace()
        .collect();
    // Fields after the name start at field 3 (state).
    (name, fields[19 - 3].parse().expect("niceness"))
}

/// Every thread of process `pid`.
fn threads(pid: u32) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let path = task.expect("task").path();
        // A thread that ended meanwhile has no stat.
        if let Ok(stat) = std::fs::read_to_string(path.join("stat")) {
            out.push(thread(&stat));
        }
    }
    out
}

#[test]
fn the_writer_keeps_the_process_priority_and_the_rest_run_below_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(dir.path());
    let pid = collector.pid();
    let deadline = Instant::now() + Duration::from_secs(20);
    let by_name = loop {
        let all = threads(pid);
        // The threads start one after another as `serve` comes up: wait for all of them.
        let started = ["evident-writer", "evident-checkpo", "evident-evaluat"]
            .iter()
            .all(|wanted| all.iter().any(|(name, _)| name == wanted));
        if started || Instant::now() > deadline {
            let mut by_name: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            for (name, nice) in all {
                by_name.entry(name).or_default().push(nice);
            }
            break by_name;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let one = |name: &str| -> i32 {
        let found = by_name
            .get(name)
            .unwrap_or_else(|| panic!("no {name} thread: {by_name:?}"));
        assert_eq!(found.len(), 1, "{name}: {by_name:?}");
        found[0]
    };
    // The main thread's task id is the process id.
    let (_, base) = thread(
        &std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/stat")).expect("main thread"),
    );
    let below = |step: i32| (base + step).min(19);
    assert_eq!(one("evident-writer"), base, "{by_name:?}");
    assert_eq!(one("evident-checkpo"), base, "{by_name:?}");
    assert_eq!(one("evident-evaluat"), below(10), "{by_name:?}");
    let workers: Vec<i32> = by_name
        .iter()
        .filter(|(name, _)| name.starts_with("tokio-"))
        .flat_map(|(_, nice)| nice.iter().copied())
        .collect();
    assert!(!workers.is_empty(), "{by_name:?}");
    assert!(workers.iter().all(|n| *n == below(2)), "{by_name:?}");
}
