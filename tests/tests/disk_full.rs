//! Fault test: the collector's storage fills up (`max_database_bytes`, which SQLite enforces
//! as a page limit, answering SQLITE_FULL like a full disk). The refused batch is not acked and
//! stays in the agent's spool, the collector keeps serving, the database is not corrupt, and
//! when space returns delivery resumes with nothing lost or doubled.

use std::path::Path;

use evident_tests::{Agent, Collector, debian_replay};
use rusqlite::{Connection, OpenFlags};

/// The smallest cap the collector accepts.
const CAP_BYTES: u64 = 1024 * 1024;

/// `(first, last)` sequences of each batch waiting in the agent's spool.
fn spooled(agent: &Agent) -> Vec<(u64, u64)> {
    agent
        .spool_files()
        .iter()
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?.strip_suffix(".items")?;
            let (first, last) = name.split_once('-')?;
            Some((first.parse().ok()?, last.parse().ok()?))
        })
        .collect()
}

fn pragma(conn: &Connection, name: &str) -> u64 {
    let value: i64 = conn
        .query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("PRAGMA {name}: {e}"));
    u64::try_from(value).expect("a count")
}

/// Pages the database uses and its page size, read beside the running collector.
fn pages(database: &Path) -> (u64, u64) {
    let conn = Connection::open_with_flags(database, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open the database read-only");
    (pragma(&conn, "page_count"), pragma(&conn, "page_size"))
}

fn integrity(database: &Path) -> String {
    Connection::open_with_flags(database, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open the database read-only")
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check")
}

/// Stands in for everything else on a nearly full disk: grows the stopped collector's
/// database with a table of its own until only `headroom_pages` are left under the cap.
fn fill_until(database: &Path, headroom_pages: u64) {
    let mut conn = Connection::open(database).expect("open the database");
    let tx = conn.transaction().expect("transaction");
    tx.execute("CREATE TABLE ballast (b BLOB NOT NULL)", [])
        .expect("ballast table");
    let target = CAP_BYTES / pragma(&tx, "page_size") - headroom_pages;
    while pragma(&tx, "page_count") < target {
        tx.execute("INSERT INTO ballast VALUES (zeroblob(1000))", [])
            .expect("ballast row");
    }
    tx.commit().expect("commit ballast");
}

#[test]
fn a_full_database_acks_nothing_stays_sound_and_delivery_resumes_when_space_returns() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let agent = Agent::new(&tmp.path().join("agent"));

    // Cycles of a replayed host: quick, and each (stored compressed against the first) a few
    // hundred bytes across the evidence tables and their indexes.
    let replay = debian_replay();
    let cycle = || agent.run_once_replaying(&replay, &[]);
    let collector = Collector::start(&tmp.path().join("collector"));
    let address = collector.address.clone();
    let agent_id = agent.enroll_with(&collector);
    cycle().expect_ok("first cycle");
    let database = collector.database();
    let data = collector.stop();

    // Two free pages under the cap: the next cycles fit until their tables have grown by
    // two pages, and the one after that does not.
    fill_until(&database, 2);
    let cap = CAP_BYTES.to_string();
    let collector = Collector::start_with(&data, &address, &["--max-database-bytes", &cap]);
    assert!(
        collector.log().contains("database size capped"),
        "the collector says it applied the cap: {}",
        collector.log()
    );
    let mut stored_under_cap = 0;
    let refused = loop {
        let run = cycle();
        if !run.ok() {
            break run;
        }
        stored_under_cap += 1;
        assert!(
            stored_under_cap <= 200,
            "{stored_under_cap} cycles fit in two pages of {} bytes",
            pages(&database).1
        );
    };
    assert!(
        stored_under_cap >= 1,
        "a cycle fits under the cap before it fills: {refused:#?}"
    );
    assert_eq!(refused.code, Some(2), "a delivery failure: {refused:#?}");
    assert!(
        refused.stderr.contains("collector storage is full"),
        "the agent is told why: {refused:#?}"
    );
    let refusal = evident_tests::wait_for_some(10, "the collector to log the refusal", || {
        collector
            .log()
            .lines()
            .find(|line| line.contains("batch refused"))
            .map(str::to_owned)
    });
    assert!(
        refusal.contains("storage is full") && refusal.contains("max_database_bytes"),
        "the log line says what happened and what to do: {refusal}"
    );

    // Nothing was acked that was not committed: everything stored is contiguous, and the
    // refused batch is still in the spool, right after it.
    let stored = collector.sequences(&agent_id);
    let stored_last = stored.len() as u64;
    assert_eq!(stored, (1..=stored_last).collect::<Vec<_>>());
    let waiting = spooled(&agent);
    assert_eq!(
        waiting.first().map(|(first, _)| *first),
        Some(stored_last + 1),
        "the refused batch waits in the spool: {waiting:?}"
    );
    assert_eq!(
        waiting.last().map(|(_, last)| *last),
        Some(agent.last_sequence())
    );
    assert!(
        !agent.state_dir.join("spool/quarantine").exists(),
        "a full collector is worth a retry, not a quarantine"
    );

    // The collector is still up: it answers the next delivery, with the same refusal.
    let again = cycle();
    assert!(
        again.code == Some(2) && again.stderr.contains("collector storage is full"),
        "the collector keeps serving and refusing: {again:#?}"
    );
    assert_eq!(collector.sequences(&agent_id).len() as u64, stored_last);
    assert_eq!(integrity(&collector.database()), "ok");
    collector
        .admin(&["verify"])
        .expect_ok("verify the full database");

    // Space returns: the same data directory and address, with a larger cap.
    let data = collector.stop();
    let bigger = (4 * CAP_BYTES).to_string();
    let collector = Collector::start_with(&data, &address, &["--max-database-bytes", &bigger]);
    cycle().expect_ok("delivery after space returns");
    assert!(agent.spool_files().is_empty(), "the spool is emptied");
    assert_eq!(
        collector.sequences(&agent_id),
        (1..=agent.last_sequence()).collect::<Vec<_>>(),
        "every item exactly once, in order"
    );
    assert!(
        collector
            .evidence(Some(&agent_id))
            .iter()
            .all(|e| e["check"] != "gap"),
        "nothing was dropped"
    );
    assert_eq!(integrity(&collector.database()), "ok");
    collector
        .admin(&["verify"])
        .expect_ok("verify after space returned");
}
