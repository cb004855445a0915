//! Flagsmith's environment document for each environment, prepared as bytes.
//!
//! A request is answered from the prepared bytes. They are looked at again only after the store
//! has committed (the store's commit counter moved) or the environment's configuration changed,
//! and rebuilt only when the environment's content differs: a commit that touched another
//! environment leaves the bytes, their ETag and `updated_at` as they were. The bytes then carry
//! an older `last_sequence`, which stays true (no later event concerns this environment).

mod format;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use format::EnvironmentFacts;
use format::FlagsmithDocument;

use crate::changes::EnvironmentRecord;
use crate::document::EnvironmentDocument;
use crate::error::StoreError;
use crate::store::Store;
use crate::store::events::database_instance;
use crate::store::queries::read_document;

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
    /// The content, `last_sequence` left at 0, to tell a change from a commit elsewhere.
    content: EnvironmentDocument,
    instance: u64,
    prepared: PreparedDocument,
}

/// The prepared documents of every environment. Cheap to clone.
#[derive(Clone, Default)]
pub struct DocumentCache {
    built: Arc<Mutex<HashMap<u64, Arc<Built>>>>,
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
        let read_record = record.clone();
        let (mut document, instance) = store
            .read(move |txn| Ok((read_document(txn, &read_record)?, database_instance(txn)?)))
            .await?;
        let last_sequence = std::mem::take(&mut document.last_sequence);
        let previous = self.lookup(record.id);
        let prepared = match previous {
            Some(p) if p.content == document && p.facts == facts && p.instance == instance => {
                p.prepared.clone()
            }
            _ => prepare(&document, &facts, instance, last_sequence),
        };
        let built = Built {
            commits,
            record,
            facts,
            content: document,
            instance,
            prepared: prepared.clone(),
        };
        self.built
            .lock()
            .expect("document cache lock")
            .insert(built.record.id, Arc::new(built));
        Ok(prepared)
    }

    fn lookup(&self, environment: u64) -> Option<Arc<Built>> {
        let built = self.built.lock().expect("document cache lock");
        built.get(&environment).cloned()
    }
}

/// Serialises the document once; `content` has its `last_sequence` taken out.
fn prepare(
    content: &EnvironmentDocument,
    facts: &EnvironmentFacts,
    instance: u64,
    last_sequence: u64,
) -> PreparedDocument {
    let now = OffsetDateTime::now_utc();
    let updated_at = now
        .format(&Rfc3339)
        .expect("a UTC time formats as RFC 3339");
    let document = EnvironmentDocument {
        last_sequence,
        ..content.clone()
    };
    let flagsmith = FlagsmithDocument::new(&document, facts, instance, &updated_at);
    let bytes = serde_json::to_vec(&flagsmith).expect("the document serialises");
    PreparedDocument {
        bytes: Bytes::from(bytes),
        etag: format!("\"{instance:016x}-{last_sequence}\""),
        updated_at: now.into(),
    }
}
