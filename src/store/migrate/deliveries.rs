//! Migrating the delivery tables of a schema-1 file: outbox rows gain the count of attempts made
//! before a replay (none, in a file that predates it), and attempts and dead letters go from JSON
//! to the compact rows of schema 2.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::undecodable;
use crate::store::StoreError;
use crate::store::deliveries::{AttemptRecord, DeadLetter, attempt_row, dead_letter_row};
use crate::store::schema::{ATTEMPTS, DEAD_LETTERS, OUTBOX};

pub(super) const OUTBOX_1: TableDefinition<(&str, u64), (u32, u64)> =
    TableDefinition::new("outbox");
pub(super) const ATTEMPTS_1: TableDefinition<(u64, &str, u32), &str> =
    TableDefinition::new("attempts");
pub(super) const DEAD_LETTERS_1: TableDefinition<(&str, u64), &str> =
    TableDefinition::new("dead_letters");

/// Carries every pending delivery, attempt and dead letter over, then drops the old tables.
pub(super) fn from_schema_1(txn: &WriteTransaction) -> Result<(), StoreError> {
    {
        let old = txn.open_table(OUTBOX_1)?;
        let mut new = txn.open_table(OUTBOX)?;
        for entry in old.iter()? {
            let (key, value) = entry?;
            let (attempts, next_attempt_at_ms) = value.value();
            new.insert(key.value(), (attempts, next_attempt_at_ms, 0u32))?;
        }
    }
    {
        let old = txn.open_table(ATTEMPTS_1)?;
        let mut new = txn.open_table(ATTEMPTS)?;
        for entry in old.iter()? {
            let (key, json) = entry?;
            let attempt: AttemptRecord =
                serde_json::from_str(json.value()).map_err(|e| undecodable("attempt", e))?;
            new.insert(key.value(), attempt_row(&attempt))?;
        }
    }
    {
        let old = txn.open_table(DEAD_LETTERS_1)?;
        let mut new = txn.open_table(DEAD_LETTERS)?;
        for entry in old.iter()? {
            let (key, json) = entry?;
            let letter: DeadLetter =
                serde_json::from_str(json.value()).map_err(|e| undecodable("dead letter", e))?;
            new.insert(key.value(), dead_letter_row(&letter))?;
        }
    }
    txn.delete_table(OUTBOX_1)?;
    txn.delete_table(ATTEMPTS_1)?;
    txn.delete_table(DEAD_LETTERS_1)?;
    Ok(())
}
