use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::*;

const ROWS: TableDefinition<(u64, &str), &str> = TableDefinition::new("rows");

fn apply_rows(
    txn: &WriteTransaction,
    table: u8,
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<(), ReplayError> {
    match table {
        1 => Ok(replay_op(txn, ROWS, key, value)?),
        _ => Err(ReplayError::Malformed("an op names no logged table")),
    }
}

fn log_in(dir: &tempfile::TempDir) -> RedoLog {
    RedoLog::open(&dir.path().join("db.redb"), 4096).unwrap()
}

fn numbers(log: &RedoLog) -> Vec<u64> {
    log.groups().unwrap().iter().map(|g| g.number).collect()
}

#[test]
fn groups_read_back_in_order_and_a_torn_one_is_not_taken() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_in(&dir);
    for n in 1..=3 {
        log.append(n, format!("group {n}").as_bytes()).unwrap();
        log.settle();
    }
    // A crash inside the fourth append: its header reached the disk, its payload did not.
    let end = log
        .groups()
        .unwrap()
        .iter()
        .map(|g| 20 + g.payload.len())
        .sum::<usize>();
    log.append(4, b"a fourth group").unwrap();
    std::os::unix::fs::FileExt::write_all_at(
        &std::fs::OpenOptions::new()
            .write(true)
            .open(log.path())
            .unwrap(),
        &[0xff; 4],
        (end + 22) as u64,
    )
    .unwrap();
    let groups = log.groups().unwrap();
    assert_eq!(numbers(&log), [1, 2, 3]);
    assert_eq!(groups[1].payload, b"group 2");
}

#[test]
fn after_a_restart_the_older_records_further_on_are_not_taken() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_in(&dir);
    for n in 1..=5 {
        log.append(n, &[n as u8; 40]).unwrap();
    }
    log.restart();
    assert!(log.is_empty());
    log.append(6, &[6; 10]).unwrap();
    assert_eq!(numbers(&log), [6]);
    log.append(7, &[7; 10]).unwrap();
    log.retract_last().unwrap();
    assert_eq!(numbers(&log), [6], "a group taken back is not read");
    assert_eq!(log.next_group(), 7);
}

#[test]
fn a_group_that_does_not_fit_is_refused_by_fits() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_in(&dir);
    assert!(log.fits(4096 - 20));
    assert!(!log.fits(4096 - 19));
    log.append(1, &[0; 100]).unwrap();
    assert!(!log.fits(4096 - 20));
}

/// Writes through a logged table, as a batch does, and answers the group's payload.
fn logged_writes(db: &Database) -> Vec<u8> {
    let ops = RedoOps::shared();
    let mut txn = db.begin_write().unwrap();
    txn.set_durability(Durability::None).unwrap();
    {
        let mut rows = LoggedTable::open(&txn, ROWS, 1, ops.clone()).unwrap();
        rows.insert((1, "a"), "one").unwrap();
        rows.insert((2, "b"), "two").unwrap();
        rows.insert((1, "a"), "one again").unwrap();
        rows.remove((2, "b")).unwrap();
        rows.insert((3, "c"), "three").unwrap();
    }
    txn.commit().unwrap();
    ops.borrow().payload().unwrap().to_vec()
}

fn rows_of(db: &Database) -> Vec<(u64, String, String)> {
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(ROWS).unwrap();
    table
        .iter()
        .unwrap()
        .map(|row| {
            let (key, value) = row.unwrap();
            let (n, name) = key.value();
            (n, name.to_owned(), value.value().to_owned())
        })
        .collect()
}

#[test]
fn a_replay_writes_the_same_rows_and_records_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let written = Database::create(dir.path().join("written.redb")).unwrap();
    let payload = logged_writes(&written);
    let replayed = Database::create(dir.path().join("replayed.redb")).unwrap();
    let groups = [
        Group {
            number: 1,
            payload: payload.clone(),
        },
        Group {
            number: 2,
            payload: Vec::new(),
        },
    ];
    let txn = replayed.begin_write().unwrap();
    assert_eq!(replay(&txn, &groups, apply_rows).unwrap(), 2);
    txn.commit().unwrap();
    assert_eq!(rows_of(&replayed), rows_of(&written));
    assert_eq!(rows_of(&replayed).len(), 2);
    // Replayed again (a crash before the log started over), nothing changes.
    let txn = replayed.begin_write().unwrap();
    assert_eq!(replay(&txn, &groups, apply_rows).unwrap(), 2);
    assert_eq!(position(&txn).unwrap(), 2);
}

#[test]
fn a_log_that_skips_a_group_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("db.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    set_position(&txn, 3).unwrap();
    let groups = [Group {
        number: 5,
        payload: Vec::new(),
    }];
    let refused = replay(&txn, &groups, apply_rows).unwrap_err();
    assert!(
        matches!(refused, ReplayError::Gap { held: 3, found: 5 }),
        "{refused}"
    );
    let cut = [Group {
        number: 4,
        payload: vec![1, 9, 0, 0, 0],
    }];
    let refused = replay(&txn, &cut, apply_rows).unwrap_err();
    assert!(matches!(refused, ReplayError::Malformed(_)), "{refused}");
}

#[test]
fn a_batch_larger_than_the_log_stops_recording_so_it_commits_durably() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("db.redb")).unwrap();
    let ops = RedoOps::shared();
    let txn = db.begin_write().unwrap();
    {
        let mut rows = LoggedTable::open(&txn, ROWS, 1, ops.clone()).unwrap();
        let value = "x".repeat(64 << 10);
        for n in 0..(LOG_CAPACITY / (64 << 10) + 2) {
            rows.insert((n, "big"), value.as_str()).unwrap();
        }
    }
    assert_eq!(ops.borrow().payload(), None, "no group is kept for it");
}
