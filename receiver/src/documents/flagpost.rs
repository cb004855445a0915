//! Documents from flagpost (DESIGN.md "Ordering in the receiver", point 5).
//!
//! flagpost serves Flagsmith's environment document (`GET /api/v1/environment-document/`), with
//! segment rules and multivariate options, plus `"flagpost": {last_sequence, instance}`: the
//! document reflects every event of that database up to `last_sequence` and none after. So it
//! is held as the environment's base document, as an upstream Flagsmith's is, but ordered
//! exactly: it counts as applied at `last_sequence` for every key, the web-hook changes the
//! cache holds at a greater sequence stay on top of it, and a document older than one already
//! loaded changes nothing.

use std::sync::Arc;

use crate::documents::cache::{Dirty, FlagCache, Outcome};
use crate::documents::order::Order;
use crate::documents::upstream::UpstreamDocument;

/// A document read from flagpost, with where it stands in flagpost's event order.
#[derive(Debug, Clone)]
pub struct FlagpostDocument {
    /// The document as Flagsmith's SDKs read it; its bytes are served as they came.
    pub document: Arc<UpstreamDocument>,
    /// Every event up to this sequence is reflected; none after it is.
    pub last_sequence: u64,
    /// The flagpost database the sequence counts in (the instance part of its event ids).
    pub sender: u64,
}

impl FlagCache {
    /// Loads a document from flagpost (see the module's comment); `Superseded` when the cache
    /// already holds a newer one. The caller has checked its sender
    /// ([`FlagCache::check_sender`]).
    pub fn apply_flagpost_document(
        &mut self,
        doc: &FlagpostDocument,
        now_unix: i64,
        dirty: &mut Vec<Dirty>,
    ) -> Outcome {
        let env_id = doc.document.parsed.env_id;
        let last_sequence = doc.last_sequence;
        // An older document could bring back what a newer one dropped (a dropped key leaves no
        // tombstone): it adds nothing.
        let loaded = self.env(env_id).and_then(|env| env.document_seq);
        if loaded.is_some_and(|seq| seq > last_sequence) {
            return Outcome::Superseded;
        }
        let covered = |order: &Order| order.seq.is_none_or(|seq| seq <= last_sequence);
        let env = self.env_mut(env_id);
        for (id, entry) in env.features.iter_mut() {
            let entry = Arc::make_mut(entry);
            let before = entry.clone();
            entry.default.take_if(|slot| covered(&slot.order));
            entry.identities.retain(|slot| !covered(&slot.order));
            entry.segments.retain(|_, slot| !covered(&slot.order));
            if *entry != before {
                dirty.push(Dirty::FeatureRewritten(env_id, *id));
            }
        }
        // What the document holds for them is as new as anything the cache had.
        env.features.retain(|_, entry| !entry.is_empty());
        env.name = Some(doc.document.parsed.name.clone());
        env.document_seq = Some(env.document_seq.unwrap_or(0).max(last_sequence));
        env.loaded_at = Some(now_unix);
        env.refreshed_at = Some(now_unix);
        env.upstream = Some(doc.document.clone());
        dirty.push(Dirty::Env(env_id));
        dirty.push(Dirty::Upstream(env_id));
        Outcome::Applied
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use flagpost::wire::FlagValue;
    use serde_json::json;

    use super::*;
    use crate::documents::Change;
    use crate::evaluation::IdentityInput;

    /// flagpost's document for environment 1 at `last_sequence`: `banner` = `value`, and a
    /// segment `beta` (trait `plan` = `beta`) that overrides it with `"beta"`.
    fn document(last_sequence: u64, value: &str) -> FlagpostDocument {
        let state = |value: &str, segment: Option<i64>| {
            json!({
                "django_id": 10, "enabled": true,
                "feature": {"id": 7, "name": "banner", "type": "STANDARD"},
                "feature_segment": segment.map(|priority| json!({"priority": priority})),
                "feature_state_value": value,
                "featurestate_uuid": "00000000-0000-8000-8000-000000000001",
                "multivariate_feature_state_values": []
            })
        };
        let body = json!({
            "api_key": "client-key", "id": 1, "name": "Development",
            "feature_states": [state(value, None)],
            "identity_overrides": [],
            "project": {"id": 1, "name": "Shop", "hide_disabled_flags": false,
                "organisation": {"id": 1, "name": "", "feature_analytics": false,
                    "persist_trait_data": true, "stop_serving_flags": false},
                "segments": [{"id": 5, "name": "beta", "feature_states": [state("beta", Some(0))],
                    "rules": [{"type": "ALL", "rules": [], "conditions": [
                        {"operator": "EQUAL", "property_": "plan", "value": "beta"}]}]}]},
            "updated_at": "2026-01-01T00:00:00Z",
            "flagpost": {"last_sequence": last_sequence, "instance": "00000000000000ff"}
        });
        let raw = Bytes::from(serde_json::to_vec(&body).unwrap());
        FlagpostDocument {
            document: Arc::new(UpstreamDocument::parse(raw, 1, 0, 0).unwrap()),
            last_sequence,
            sender: 0xff,
        }
    }

    fn change(seq: u64, value: &str) -> Change {
        Change {
            order: Order {
                seq: Some(seq),
                ts_micros: None,
            },
            sender: Some(0xff),
            ..Change::with_string(1, 7, "banner", value)
        }
    }

    /// `banner` for an identity with `plan` = `plan`.
    fn banner(cache: &FlagCache, plan: &str) -> serde_json::Value {
        let env = cache.env(1).unwrap();
        let input = IdentityInput {
            identifier: "someone".into(),
            traits: [("plan".to_owned(), flagsmith_text(plan))].into(),
            ..Default::default()
        };
        let evaluation = env.prepared().evaluate(Some(&input), &[]);
        let flag = evaluation.flags.iter().find(|f| f.feature_id == 7).unwrap();
        flag.value.clone()
    }

    fn flagsmith_text(text: &str) -> flagsmith_flag_engine::types::FlagsmithValue {
        crate::documents::flagsmith_value(Some(&FlagValue::String(text.into())))
    }

    #[test]
    fn changes_after_the_document_stay_on_top_and_older_ones_go() {
        let mut cache = FlagCache::default();
        let mut dirty = Vec::new();
        cache.apply(&change(12, "from seq 12"), 0, &mut dirty);
        let outcome = cache.apply_flagpost_document(&document(10, "doc at 10"), 0, &mut dirty);
        assert_eq!(outcome, Outcome::Applied);
        // The change at 12 is newer than the document: it stays; the segment's rules came
        // with the document.
        assert_eq!(banner(&cache, "free"), json!("from seq 12"));
        assert_eq!(banner(&cache, "beta"), json!("beta"));
        cache.apply_flagpost_document(&document(15, "doc at 15"), 0, &mut dirty);
        assert_eq!(banner(&cache, "free"), json!("doc at 15"));
        // A change the document covers is settled; an older document changes nothing.
        cache.apply(&change(14, "from seq 14"), 0, &mut dirty);
        let outcome = cache.apply_flagpost_document(&document(11, "doc at 11"), 0, &mut dirty);
        assert_eq!(outcome, Outcome::Superseded);
        assert_eq!(banner(&cache, "free"), json!("doc at 15"));
        assert_eq!(cache.env(1).unwrap().document_seq, Some(15));
    }
}
