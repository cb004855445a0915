use super::*;

/// Copies the file and its redo log as a crash would leave them on disk: what the writer held in
/// memory only is gone.
fn crash_copy(from: &Path, to: &Path, with_log: bool) {
    std::fs::copy(from, to).unwrap();
    let log = |db: &Path| db.with_file_name(format!("{}.redo", db.file_name().unwrap().display()));
    if with_log {
        std::fs::copy(log(from), log(to)).unwrap();
    }
}

fn ids() -> Vec<RequestId> {
    (0..20)
        .map(|n| RequestId::webhook_id(&format!("msg_{n}")))
        .collect()
}

/// Which of `ids()` the file at `path` already holds.
fn held(path: &Path) -> Vec<bool> {
    let (mut storage, _) = Storage::open(path, 1 << 20).unwrap();
    let (new, _) = storage.write(|batch| remember(batch, &ids())).unwrap();
    new.into_iter().map(|new| !new).collect()
}

/// How many of `ids()` the file at `path` already holds.
fn remembered(path: &Path) -> usize {
    held(path).into_iter().filter(|held| *held).count()
}

/// Remembers `ids` in `batch`; answers which were new.
fn remember(batch: &mut Batch<'_>, ids: &[RequestId]) -> Result<Vec<bool>, WriteError> {
    ids.iter().map(|id| batch.remember(*id, 100)).collect()
}

#[test]
fn acknowledged_batches_held_only_by_the_redo_log_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("receiver.redb");
    let (mut storage, _) = Storage::open(&path, 1 << 20).unwrap();
    // Two batches, well within the first checkpoint.
    let all = ids();
    let (first, second) = all.split_at(12);
    for batch_ids in [first, second] {
        let (new, _) = storage.write(|batch| remember(batch, batch_ids)).unwrap();
        assert!(new.iter().all(|new| *new));
    }
    let file_only = dir.path().join("file-only.redb");
    crash_copy(&path, &file_only, false);
    assert_eq!(
        remembered(&file_only),
        0,
        "the file alone holds none of them: the log made them durable"
    );
    let crashed = dir.path().join("crashed.redb");
    crash_copy(&path, &crashed, true);
    assert_eq!(remembered(&crashed), ids().len());

    storage.close();
    assert!(!path.with_file_name("receiver.redb.redo").exists());
    assert_eq!(remembered(&path), ids().len(), "a clean stop keeps them");
}

#[test]
fn a_failed_batch_leaves_nothing_and_the_batches_held_before_it_stay() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("receiver.redb");
    let (mut storage, _) = Storage::open(&path, 1 << 20).unwrap();
    let all = ids();
    let (before, rest) = all.split_at(8);
    let (failed, after) = rest.split_at(6);
    storage.write(|batch| remember(batch, before)).unwrap();
    // Written into the transaction that holds `before`, then failed: that transaction goes, and
    // `before` is in the log alone until the next batch brings it back into the file.
    let failure = storage.write(|batch| {
        remember(batch, failed)?;
        Err::<(), _>(WriteError::Corrupt(
            "a batch that fails after writing".into(),
        ))
    });
    assert!(failure.is_err());
    storage.write(|batch| remember(batch, after)).unwrap();

    let expected: Vec<bool> = (0..all.len())
        .map(|n| n < before.len() || n >= before.len() + failed.len())
        .collect();
    let crashed = dir.path().join("crashed.redb");
    crash_copy(&path, &crashed, true);
    assert_eq!(held(&crashed), expected, "after a crash");
    storage.close();
    assert_eq!(held(&path), expected, "after a clean stop");
}
