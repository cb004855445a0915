//! Remembered request ids: duplicates are recognised across restarts, and forgotten only after
//! the retention.

use flagpost_receiver::intake::writer::{self, IntakeOutcome};

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_survive_a_restart_and_are_forgotten_after_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("receiver.redb");
    let start = |path: std::path::PathBuf| async move {
        tokio::task::spawn_blocking(move || writer::start(&path, 1 << 20).unwrap())
            .await
            .unwrap()
    };

    let (writer, published, thread) = start(path.clone()).await;
    assert_eq!(
        writer.intake("id:a".into(), None).await.unwrap(),
        IntakeOutcome::NotApplied
    );
    assert_eq!(
        writer.intake("id:a".into(), None).await.unwrap(),
        IntakeOutcome::Duplicate
    );
    drop((writer, published));
    tokio::task::spawn_blocking(move || thread.join().unwrap())
        .await
        .unwrap();

    let (writer, _published, _thread) = start(path).await;
    assert_eq!(
        writer.intake("id:a".into(), None).await.unwrap(),
        IntakeOutcome::Duplicate,
        "remembered across a restart"
    );
    // Taken just now: a cut-off in the past keeps it.
    assert_eq!(writer.forget_requests_before(now() - 60).await.unwrap(), 0);
    assert_eq!(
        writer.intake("id:a".into(), None).await.unwrap(),
        IntakeOutcome::Duplicate
    );
    assert_eq!(writer.forget_requests_before(now() + 60).await.unwrap(), 1);
    assert_eq!(
        writer.intake("id:a".into(), None).await.unwrap(),
        IntakeOutcome::NotApplied,
        "forgotten after the retention"
    );
}
