//! What a receiver keeps of its upstream documents across a restart: everything it answers from
//! is in its cache file, so a restart never takes its answers backwards, even with the upstream
//! unreachable.

use crate::common::*;
use crate::upstream::{
    Answer, ENVS, compare_step, document, environments_toml, receiver_at_step, step, trigger_fetch,
    wait_for_step,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_overrides_kept_from_an_earlier_document_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // At step 35 qa's document carries its identity overrides; from step 36 it carries none
    // (`use_identity_overrides_in_local_eval` off), and Flagsmith still answers with those of 35.
    let (receiver, stand_in) = receiver_at_step(dir.path(), 35, 10).await;
    let at_36 = step(36);
    assert_eq!(
        at_36["environment_documents"]["qa"]["use_identity_overrides_in_local_eval"],
        false
    );
    for (env, _, _, server) in ENVS {
        stand_in.answer(server, Answer::Document(document(&at_36, env)));
    }
    trigger_fetch(&receiver, 36).await;
    answers_as_flagsmith_at_36(&receiver, &at_36).await;
    receiver.stop().await;

    // Started again with its upstream gone (nothing listens on the discard port): only what the
    // file kept answers, and it answers as Flagsmith did.
    let unreachable = environments_toml("http://127.0.0.1:9", 1);
    let toml = config_toml(dir.path(), ANY_AGE, &unreachable);
    let receiver = Receiver::start(dir.path(), &toml).await;
    answers_as_flagsmith_at_36(&receiver, &at_36).await;
    receiver.stop().await;
}

/// Once the receiver holds step 36's documents, every recorded answer of that step is its own.
async fn answers_as_flagsmith_at_36(receiver: &Receiver, at_36: &serde_json::Value) {
    wait_for_step(receiver, at_36).await;
    assert_eq!(
        compare_step(receiver, at_36, 36).await,
        Vec::<String>::new()
    );
}
