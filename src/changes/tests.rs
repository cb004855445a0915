//! The domain's rules, on the in-memory store: no database, no HTTP.

use serde_json::json;
use time::macros::datetime;

use super::memory::MemoryStore;
use super::*;
use crate::config::Config;
use crate::error::WriteError;
use crate::wire::FlagValue;

fn config() -> Config {
    Config::parse(
        r#"
[[environments]]
id = 1
name = "Development"
api_key = "k1"
project = 1
[[environments.webhooks]]
name = "dev-hook"
url = "http://127.0.0.1:9/"

[[environments]]
id = 2
name = "Production"
api_key = "k2"
project = 1
"#,
    )
    .unwrap()
}

fn new_feature(name: &str) -> NewFeature {
    NewFeature {
        project: 1,
        name: name.into(),
        feature_type: "STANDARD".into(),
        description: None,
        initial_value: Some(FlagValue::String("v1".into())),
        default_enabled: false,
    }
}

/// Runs `change` as the writer would, returning its result and the events it wrote.
fn change<T>(
    store: &mut MemoryStore,
    change: impl FnOnce(&mut Changes<MemoryStore>) -> Result<T, WriteError>,
) -> Result<(T, Vec<CommittedEvent>), WriteError> {
    let (config, author) = (config(), Author::system("tests"));
    let mut changes = Changes::new(store, &config, &author, datetime!(2026-01-02 03:04:05 UTC));
    let value = change(&mut changes)?;
    Ok((value, changes.into_events()))
}

fn event_types(events: &[CommittedEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

#[test]
fn creating_a_feature_gives_each_environment_a_default_state_and_reports_it() {
    let mut store = MemoryStore::default();
    let (feature, events) = change(&mut store, |c| {
        c.create_feature(&new_feature("dark_mode"), Owner::Api)
    })
    .unwrap();
    assert_eq!(feature.id, 1);
    assert_eq!(
        event_types(&events),
        ["FLAG_UPDATED", "FLAG_UPDATED", "AUDIT_LOG_CREATED"]
    );
    assert_eq!(store.events[0].subscribers, ["dev-hook"]);
    assert!(
        store.events[1].subscribers.is_empty(),
        "production has no hook"
    );
    let created = &store.events[0].body["data"];
    assert_eq!(created["previous_state"], json!(null));
    assert_eq!(created["new_state"]["feature_state_value"], json!("v1"));
    assert_eq!(created["timestamp"], json!("2026-01-02T03:04:05.000000Z"));
}

#[test]
fn a_feature_name_is_taken_once_per_project() {
    let mut store = MemoryStore::default();
    change(&mut store, |c| {
        c.create_feature(&new_feature("a"), Owner::Api)
    })
    .unwrap();
    let again = change(&mut store, |c| {
        c.create_feature(&new_feature("a"), Owner::Api)
    });
    assert!(matches!(
        again,
        Err(WriteError::FeatureExists { id: 1, .. })
    ));
}

#[test]
fn an_override_reports_the_new_state_and_a_repeat_changes_nothing() {
    let mut store = MemoryStore::default();
    change(&mut store, |c| {
        c.create_feature(&new_feature("a"), Owner::Api)
    })
    .unwrap();
    let key = StateKey::Identity("user-42".into());
    let update = StateUpdate {
        enabled: Some(true),
        value: Some(Some(FlagValue::Integer(7))),
        ..StateUpdate::default()
    };
    let (changed, events) =
        change(&mut store, |c| c.set_state(1, 1, &key, &update, Owner::Api)).unwrap();
    assert!(changed);
    assert_eq!(event_types(&events), ["FLAG_UPDATED", "AUDIT_LOG_CREATED"]);
    let data = &store.events.last().unwrap().body["data"];
    assert_eq!(
        data["log"],
        json!("Identity override set for feature: a identity: user-42")
    );
    let flag = &store.events[store.events.len() - 2].body["data"];
    assert_eq!(flag["new_state"]["identity_identifier"], json!("user-42"));
    assert_eq!(flag["new_state"]["identity"], json!(1));
    assert_eq!(flag["previous_state"], json!(null));

    let (changed, events) =
        change(&mut store, |c| c.set_state(1, 1, &key, &update, Owner::Api)).unwrap();
    assert!(!changed);
    assert!(events.is_empty());
}

#[test]
fn the_api_cannot_change_what_a_flag_file_owns_nor_the_reverse() {
    let mut store = MemoryStore::default();
    change(&mut store, |c| {
        c.create_feature(&new_feature("filed"), Owner::Files)
    })
    .unwrap();
    let update = StateUpdate {
        enabled: Some(true),
        ..StateUpdate::default()
    };
    let refused = change(&mut store, |c| {
        c.set_state(1, 1, &StateKey::Default, &update, Owner::Api)
    });
    assert_eq!(
        refused.unwrap_err(),
        WriteError::ManagedByFiles("filed".into())
    );
    let refused = change(&mut store, |c| c.delete_feature(1, Owner::Api));
    assert!(refused.unwrap_err().is_refusal());
}

#[test]
fn deleting_a_feature_deletes_its_states_and_keeps_a_tombstone() {
    let mut store = MemoryStore::default();
    change(&mut store, |c| {
        c.create_feature(&new_feature("a"), Owner::Api)
    })
    .unwrap();
    let segment = StateKey::Segment(9);
    change(&mut store, |c| {
        c.set_state(1, 1, &segment, &StateUpdate::default(), Owner::Api)
    })
    .unwrap();
    let (_, events) = change(&mut store, |c| c.delete_feature(1, Owner::Api)).unwrap();
    assert_eq!(
        event_types(&events),
        ["FLAG_DELETED", "FLAG_DELETED", "AUDIT_LOG_CREATED"],
        "one FLAG_DELETED per environment, for its default state"
    );
    assert!(store.states.is_empty());
    assert!(store.features[&1].deleted);
    assert!(store.names.is_empty());
    let again = change(&mut store, |c| c.delete_feature(1, Owner::Api));
    assert_eq!(again.unwrap_err(), WriteError::UnknownFeature("1".into()));
}

#[test]
fn a_new_environment_gets_every_live_feature_default_once() {
    let mut store = MemoryStore::default();
    change(&mut store, |c| {
        c.create_feature(&new_feature("a"), Owner::Api)
    })
    .unwrap();
    store.states.clear();
    let (_, events) = change(&mut store, |c| c.sync_environments()).unwrap();
    assert_eq!(event_types(&events), ["FLAG_UPDATED", "FLAG_UPDATED"]);
    let (_, events) = change(&mut store, |c| c.sync_environments()).unwrap();
    assert!(events.is_empty(), "known environments are left as they are");
}

#[test]
fn a_state_in_an_environment_configuration_does_not_have_is_refused_and_writes_nothing() {
    let mut store = MemoryStore::default();
    change(&mut store, |c| {
        c.create_feature(&new_feature("a"), Owner::Api)
    })
    .unwrap();
    let states_before = store.states.len();
    let refused = change(&mut store, |c| {
        c.set_state(
            7,
            1,
            &StateKey::Default,
            &StateUpdate::default(),
            Owner::Api,
        )
    });
    assert_eq!(
        refused.unwrap_err(),
        WriteError::UnknownEnvironment("7".into())
    );
    assert_eq!(store.states.len(), states_before);
}
