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

/// How many of `ids()` the file at `path` already holds.
fn remembered(path: &Path) -> usize {
    let (mut storage, _) = Storage::open(path, 1 << 20).unwrap();
    let (taken, _) = storage
        .write(|batch| {
            ids()
                .into_iter()
                .map(|id| batch.remember(id, 100))
                .collect::<Result<Vec<bool>, _>>()
        })
        .unwrap();
    taken.iter().filter(|new| !**new).count()
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
        let (new, _) = storage
            .write(|batch| {
                batch_ids
                    .iter()
                    .map(|id| batch.remember(*id, 100))
                    .collect::<Result<Vec<bool>, _>>()
            })
            .unwrap();
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
