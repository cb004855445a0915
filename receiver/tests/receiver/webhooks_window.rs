//! Issue 9, the web-hooks-only window of the live replay (see `live_replay`): what the receiver
//! answers after a step's web hooks and before the step's documents, and why.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

use crate::live_replay::{
    Answers, ENVIRONMENTS, Replay, STEPS, assert_no_differences, flag_differences, post_webhooks,
    step,
};

/// The features a step's web hooks for `env` name: by feature name, the last environment-default
/// state sent (`None` for a deletion), or no default state if only overrides were sent.
fn named_by_webhooks(step: &Value, env: &str) -> BTreeMap<String, Option<Option<Value>>> {
    let mut named = BTreeMap::new();
    let path = format!("/env/{env}");
    for webhook in step["webhooks"].as_array().unwrap() {
        if webhook["path"] != path.as_str() {
            continue;
        }
        let data = &webhook["json"]["data"];
        let state = if data["new_state"].is_null() {
            &data["previous_state"]
        } else {
            &data["new_state"]
        };
        let name = state["feature"]["name"].as_str().unwrap().to_owned();
        let is_default = state["identity"].is_null()
            && state["identity_identifier"].is_null()
            && state["feature_segment"].is_null();
        let entry = named.entry(name).or_insert(None);
        if is_default {
            let new_state = &data["new_state"];
            *entry = Some((!new_state.is_null()).then(|| new_state.clone()));
        }
    }
    named
}

/// Issue 9, the web-hooks-only window: after a step's web hooks are acknowledged and before any
/// document of that step reaches the receiver (the stand-in holds every document request), a
/// lookup has changed at once for what the web hooks carry, and for nothing else:
///
/// - a feature no web hook of the step named answers, in `/flags/` and for every identity,
///   exactly as before the step (changes that send no web hook wait for the document);
/// - an environment default a web hook set answers its `enabled` and `feature_state_value` in
///   `/flags/` (a creation's `null` value included, where Flagsmith's state already has the
///   feature's initial value); a deleted feature is gone.
///
/// The differences from Flagsmith's answers that remain in the window are printed, step by step,
/// with their cause: the document of the step then removes them all (`live_replay::every_replayed_step_answers_as_flagsmith_did`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhooks_only_window_changes_exactly_what_the_webhooks_carry() {
    let replay = Replay::start().await;
    let mut before: HashMap<&str, Answers> = HashMap::new();
    for (env, _, client_key, _) in ENVIRONMENTS {
        before.insert(
            env,
            Answers::asked(replay.port, &step(0), env, client_key).await,
        );
    }
    let mut broken = Vec::new();
    for n in 1..STEPS {
        let recorded = step(n);
        replay.stand_in.close_gate();
        let acknowledged = post_webhooks(replay.port, &recorded).await;
        for (env, _, client_key, _) in ENVIRONMENTS {
            let window = Answers::asked(replay.port, &recorded, env, client_key).await;
            let named = named_by_webhooks(&recorded, env);
            broken.extend(
                window_rule_breaks(&window, &before[env], &named)
                    .into_iter()
                    .map(|d| format!("step {n} {env} {d}")),
            );
            let recorded_answers = Answers::recorded(&recorded, env);
            let is_named = |name: &str| named.contains_key(name);
            let unsent = window
                .only(|name| !is_named(name))
                .differences(&recorded_answers.only(|name| !is_named(name)));
            let partial = window
                .only(is_named)
                .differences(&recorded_answers.only(is_named));
            let listed = |why: &str, differences: &[String]| -> String {
                differences
                    .iter()
                    .map(|d| format!("\n  {why}: {d}"))
                    .collect()
            };
            println!(
                "step {n} {env}: {} features named by web hooks; differences from Flagsmith in the \
                 window: {} that no web hook announced, {} that the web hooks carry only in part{}{}",
                named.len(),
                unsent.len(),
                partial.len(),
                listed("sent no web hook", &unsent),
                listed("web hook lacks it", &partial),
            );
        }
        let served_from = replay.serve(&recorded, n);
        replay.stand_in.open_gate();
        replay
            .wait_for_documents(&recorded, n, &acknowledged, served_from)
            .await;
        for (env, _, client_key, _) in ENVIRONMENTS {
            before.insert(
                env,
                Answers::asked(replay.port, &recorded, env, client_key).await,
            );
        }
    }
    assert_no_differences(&broken);
}

/// Where the window's answers break the rules of the test above.
fn window_rule_breaks(
    window: &Answers,
    before: &Answers,
    named: &BTreeMap<String, Option<Option<Value>>>,
) -> Vec<String> {
    let unnamed = |flags: &BTreeMap<String, Value>| -> BTreeMap<String, Value> {
        flags
            .iter()
            .filter(|(name, _)| !named.contains_key(*name))
            .map(|(name, flag)| (name.clone(), flag.clone()))
            .collect()
    };
    let mut found = flag_differences(
        "/flags/ (not named by a web hook)",
        &unnamed(&window.flags),
        &unnamed(&before.flags),
    );
    for (identifier, (_, flags)) in &before.identities {
        let got = window
            .identities
            .get(identifier)
            .map(|(_, flags)| unnamed(flags))
            .unwrap_or_default();
        let who = format!("{identifier} (not named by a web hook)");
        found.extend(flag_differences(&who, &got, &unnamed(flags)));
    }
    for (name, default) in named {
        let Some(default) = default else { continue };
        let got = window.flags.get(name);
        let wanted = default
            .as_ref()
            .map(|state| json!([state["enabled"], state["feature_state_value"]]));
        let seen = got.map(|flag| json!([flag["enabled"], flag["feature_state_value"]]));
        // A disabled default may be hidden by hide_disabled_flags: absent is then right too.
        let hidden = got.is_none() && wanted.as_ref().is_some_and(|w| w[0] == false);
        if seen != wanted && !hidden {
            found.push(format!(
                "/flags/ {name} (set by a web hook): got {seen:?}, want {wanted:?}"
            ));
        }
    }
    found
}
