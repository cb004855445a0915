//! Flagsmith's environment document for each environment, prepared as bytes.
//!
//! A request is answered from the prepared bytes. They are looked at again only after the store
//! has committed (the store's commit counter moved) or the environment's configuration changed,
//! and rebuilt only when the store counted a change to what the document shows (the
//! environment's states, or its project's features, options and segments:
//! [`crate::store::queries::change_counts`]): a commit that touched another environment costs
//! two counter reads and leaves the bytes, their ETag and `updated_at` as they were. The bytes
//! then carry an older `last_sequence`, which stays true (no later event concerns this
//! environment). Reading and serialising run on a blocking thread ([`Store::read`]), never on a
//! tokio worker.

mod format;
pub mod upstream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use format::EnvironmentFacts;
use format::FlagsmithDocument;

use crate::changes::EnvironmentRecord;
use crate::error::StoreError;
use crate::store::Store;
use crate::store::events::database_instance;
use crate::store::queries::{EnvironmentContent, change_counts, read_environment_content};
use crate::store::upstream::{UpstreamDocument, upstream_document};

/// A document ready to send.
#[derive(Debug, Clone)]
pub struct PreparedDocument {
    pub bytes: Bytes,
    /// Changes exactly when the bytes do: the database instance and the sequence they were built at.
    pub etag: String,
    /// When the content last changed, as the document's `updated_at` says.
    pub updated_at: SystemTime,
}

/// What a prepared document was made from: while this holds, the bytes stand.
#[derive(Debug, Clone)]
struct Built {
    commits: u64,
    record: EnvironmentRecord,
    facts: EnvironmentFacts,
    /// The store's change counts of the environment and of its project when it was built.
    counts: (u64, u64),
    instance: u64,
    prepared: PreparedDocument,
}

/// What a prepared upstream document was made from.
#[derive(Debug, Clone)]
struct Relayed {
    commits: u64,
    stored: (u64, i64),
    prepared: PreparedDocument,
}

/// The prepared documents of every environment. Cheap to clone.
#[derive(Clone, Default)]
pub struct DocumentCache {
    built: Arc<Mutex<HashMap<u64, Arc<Built>>>>,
    relayed: Arc<Mutex<HashMap<u64, Relayed>>>,
}

impl DocumentCache {
    /// The document of `record`'s environment, rebuilt if the store or the configuration moved.
    pub async fn document(
        &self,
        store: &Store,
        record: EnvironmentRecord,
        facts: EnvironmentFacts,
    ) -> Result<PreparedDocument, StoreError> {
        // Read before the store: a commit after this moment makes the next request look again.
        let commits = *store.commits().borrow();
        if let Some(built) = self.lookup(record.id)
            && built.commits == commits
            && built.record == record
            && built.facts == facts
        {
            return Ok(built.prepared.clone());
        }
        let previous = self.lookup(record.id);
        let built = store
            .read(move |txn| {
                let counts = change_counts(txn, &record)?;
                let instance = database_instance(txn)?;
                if let Some(previous) = previous.filter(|p| {
                    p.counts == counts
                        && p.instance == instance
                        && p.record == record
                        && p.facts == facts
                }) {
                    return Ok(Built {
                        commits,
                        ..Built::clone(&previous)
                    });
                }
                let content = read_environment_content(txn, &record)?;
                let prepared = prepare(&record, &content, &facts, instance);
                Ok(Built {
                    commits,
                    record,
                    facts,
                    counts,
                    instance,
                    prepared,
                })
            })
            .await?;
        let prepared = built.prepared.clone();
        self.built
            .lock()
            .expect("document cache lock")
            .insert(built.record.id, Arc::new(built));
        Ok(prepared)
    }

    /// The document fetched from `environment`'s upstream Flagsmith, with flagpost's ordering
    /// field added; `None` until one was fetched.
    pub async fn relayed_document(
        &self,
        store: &Store,
        environment: u64,
    ) -> Result<Option<PreparedDocument>, StoreError> {
        let commits = *store.commits().borrow();
        let cached = self.relayed_lookup(environment);
        if let Some(relayed) = cached.as_ref().filter(|r| r.commits == commits) {
            return Ok(Some(relayed.prepared.clone()));
        }
        let (stored, instance) = store
            .read(move |txn| {
                Ok((
                    upstream_document(txn, environment)?,
                    database_instance(txn)?,
                ))
            })
            .await?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        let key = (stored.sequence, stored.updated_at_us);
        let prepared = match cached {
            Some(relayed) if relayed.stored == key => relayed.prepared,
            _ => prepare_relayed(&stored, instance),
        };
        let relayed = Relayed {
            commits,
            stored: key,
            prepared: prepared.clone(),
        };
        let mut cache = self.relayed.lock().expect("document cache lock");
        cache.insert(environment, relayed);
        Ok(Some(prepared))
    }

    fn relayed_lookup(&self, environment: u64) -> Option<Relayed> {
        let relayed = self.relayed.lock().expect("document cache lock");
        relayed.get(&environment).cloned()
    }

    fn lookup(&self, environment: u64) -> Option<Arc<Built>> {
        let built = self.built.lock().expect("document cache lock");
        built.get(&environment).cloned()
    }
}

/// Serialises the document once.
fn prepare(
    record: &EnvironmentRecord,
    content: &EnvironmentContent,
    facts: &EnvironmentFacts,
    instance: u64,
) -> PreparedDocument {
    let now = OffsetDateTime::now_utc();
    let updated_at = now
        .format(&Rfc3339)
        .expect("a UTC time formats as RFC 3339");
    let last_sequence = content.last_sequence;
    let flagsmith = FlagsmithDocument::new(record, content, facts, instance, &updated_at);
    let bytes = serde_json::to_vec(&flagsmith).expect("the document serialises");
    PreparedDocument {
        bytes: Bytes::from(bytes),
        etag: format!("\"{instance:016x}-{last_sequence}\""),
        updated_at: now.into(),
    }
}

/// The upstream bytes as they came, with `"flagpost": {last_sequence, instance}` added as their
/// last field: the document was checked to be a non-empty JSON object when it was stored.
fn prepare_relayed(stored: &UpstreamDocument, instance: u64) -> PreparedDocument {
    let bytes = &stored.bytes;
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .unwrap_or(0);
    let ordering = format!(
        ",\"flagpost\":{{\"last_sequence\":{},\"instance\":\"{instance:016x}\"}}}}",
        stored.sequence
    );
    let mut out = Vec::with_capacity(end + ordering.len());
    out.extend_from_slice(&bytes[..end]);
    out.extend_from_slice(ordering.as_bytes());
    let updated_at = std::time::UNIX_EPOCH
        + std::time::Duration::from_micros(stored.updated_at_us.max(0) as u64);
    PreparedDocument {
        bytes: Bytes::from(out),
        etag: format!(
            "\"{instance:016x}-u{}-{}\"",
            stored.sequence, stored.updated_at_us
        ),
        updated_at,
    }
}
