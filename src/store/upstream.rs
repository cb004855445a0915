//! Environment documents fetched from an upstream Flagsmith (a `[[relay]]` source's `upstream`),
//! kept so that flagpost serves them across restarts and while the upstream is unreachable.
//!
//! Each is stored with the sequence it is stamped with: the last sequence committed before it was
//! fetched, so every event relayed up to that sequence is reflected in it (Flagsmith sends a web
//! hook only after the change is saved), and a receiver applies every later event after it.

use redb::{ReadTransaction, ReadableTable, TableDefinition, TableError};

use super::schema::META;
use super::{StoreError, last_sequence};
use crate::error::WriteError;

/// environment → (stamped sequence, `updated_at` in unix µs, the document's exact bytes).
const UPSTREAM_DOCUMENTS: TableDefinition<u64, (u64, i64, &[u8])> =
    TableDefinition::new("upstream_documents");

/// A stored upstream document.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamDocument {
    pub sequence: u64,
    /// The document's `updated_at`, in unix µs: a document never replaces a newer one.
    pub updated_at_us: i64,
    pub bytes: Vec<u8>,
}

/// The last committed sequence: what a document fetched after this read is stamped with.
pub fn committed_sequence(txn: &ReadTransaction) -> Result<u64, StoreError> {
    last_sequence(&txn.open_table(META)?)
}

/// The stored upstream document of `environment`, if one was ever fetched.
pub fn upstream_document(
    txn: &ReadTransaction,
    environment: u64,
) -> Result<Option<UpstreamDocument>, StoreError> {
    let table = match txn.open_table(UPSTREAM_DOCUMENTS) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    Ok(table.get(environment)?.map(|row| {
        let (sequence, updated_at_us, bytes) = row.value();
        UpstreamDocument {
            sequence,
            updated_at_us,
            bytes: bytes.to_vec(),
        }
    }))
}

/// Stores `document` as `environment`'s unless the stored one is newer (a later `updated_at`, or
/// the same one at a later sequence). Returns whether it was stored.
pub fn store_upstream_document(
    txn: &redb::WriteTransaction,
    environment: u64,
    document: &UpstreamDocument,
) -> Result<bool, WriteError> {
    let mut table = txn.open_table(UPSTREAM_DOCUMENTS)?;
    let stored = table.get(environment)?.map(|row| {
        (
            row.value().1,
            row.value().0,
            row.value().2 == document.bytes,
        )
    });
    if let Some((updated_at_us, sequence, same_bytes)) = stored {
        let newer = (updated_at_us, sequence) > (document.updated_at_us, document.sequence);
        if newer || same_bytes {
            return Ok(false);
        }
    }
    let row = (
        document.sequence,
        document.updated_at_us,
        document.bytes.as_slice(),
    );
    table.insert(environment, row)?;
    Ok(true)
}
