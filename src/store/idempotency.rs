//! Answers kept for requests made with an `Idempotency-Key`, keyed by the caller's token name and
//! the key, written in the same transaction as the change they answer.

use redb::{ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::StoreError;
use super::tables::Tables;

/// An answer kept for an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredAnswer {
    /// What makes a retry "the same request": method, path and body, hashed.
    pub fingerprint: String,
    pub status: u16,
    pub body: Value,
    pub at_ms: u64,
}

/// The answer kept for `caller`'s `key`, if any.
pub fn lookup(
    tables: &mut Tables,
    caller: &str,
    key: &str,
) -> Result<Option<StoredAnswer>, StoreError> {
    let table = tables.idempotency()?;
    let answer = table
        .get((caller, key))?
        .map(|v| serde_json::from_str(v.value()))
        .transpose()?;
    Ok(answer)
}

/// Keeps `answer` for `caller`'s `key`.
pub fn keep(
    tables: &mut Tables,
    caller: &str,
    key: &str,
    answer: &StoredAnswer,
) -> Result<(), StoreError> {
    tables
        .idempotency()?
        .insert((caller, key), serde_json::to_string(answer)?.as_str())?;
    Ok(())
}

/// Removes answers kept since before `cutoff_ms`; returns how many.
pub fn prune(tables: &mut Tables, cutoff_ms: u64) -> Result<usize, StoreError> {
    let table = tables.idempotency()?;
    let before = table.len()?;
    table.retain(|_, answer| {
        serde_json::from_str::<StoredAnswer>(answer).is_ok_and(|a| a.at_ms >= cutoff_ms)
    })?;
    Ok((before - table.len()?) as usize)
}
