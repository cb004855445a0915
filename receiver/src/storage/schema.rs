//! The file's layout version, and the migration of a file written before it was kept.
//!
//! - 1 (no version row): features and key slots as JSON, request ids as text.
//! - 2: features and key slots as redb tuples ([`super::rows`]), request ids in a fixed width
//!   ([`super::request_ids`]).
//! - 3: the identity overrides an upstream document keeps from an earlier one have a table of
//!   their own ([`super::documents`]); a receiver of schema 2 would not read it, and would start
//!   without them. The file has an id ([`super::Storage::file_id`]).
//! - 4: descriptions and slots in the receiver's own bytes ([`super::rows`]) instead of redb
//!   tuples ([`tuples`]), in tables of new names.
//!
//! A file of an earlier schema is migrated when it is opened, in the same transaction that
//! records the new version (so a crash leaves it wholly old or wholly new); a file of a later
//! schema is refused, never misread.

use std::path::Path;

use redb::{ReadableTable, TableDefinition, TableHandle, WriteTransaction};

use crate::documents::{FeatureMeta, FlagState, SegmentState, Slot};
use crate::error::WriteError;
use crate::storage::request_ids::{REQUEST_IDS, REQUEST_IDS_BY_TIME, RequestId};
use crate::storage::{FEATURES, STATES, corrupt, rows};

/// `"schema_version"` -> the layout this file is written in; `"file_id"` -> see
/// [`super::Storage::file_id`].
const META: TableDefinition<&str, u64> = TableDefinition::new("receiver_meta");

/// The layout this build writes and reads.
pub const SCHEMA_VERSION: u64 = 4;

/// Schema 1's tables that schema 2 replaced.
const FEATURES_V1: TableDefinition<(u64, u64), &str> = TableDefinition::new("features");
const STATES_V1: TableDefinition<(u64, u64, &str), &[u8]> = TableDefinition::new("states");
const SEEN_V1: TableDefinition<&str, i64> = TableDefinition::new("seen_requests");
const SEEN_BY_TIME_V1: TableDefinition<(i64, &str), ()> =
    TableDefinition::new("seen_requests_by_time");

/// Records the version in a new file, migrates a file of an earlier schema, or refuses a later
/// one; answers the file's id, drawn here for a new file or one written before ids were kept.
pub(super) fn initialise(txn: &WriteTransaction, path: &Path) -> Result<u64, WriteError> {
    let written_before = txn
        .list_tables()?
        .any(|table| table.name() == ENVIRONMENTS_NAME);
    let mut meta = txn.open_table(META)?;
    match meta.get("schema_version")?.map(|version| version.value()) {
        Some(SCHEMA_VERSION) => {}
        // Schema 3 only added a table, which opening the file creates, and the file's id, below.
        Some(version @ (2 | 3)) => {
            tuples::migrate(txn)?;
            tracing::info!(file = %path.display(), "database migrated from schema {version} to 4");
        }
        None if written_before => {
            from_schema_1(txn)?;
            tracing::info!(file = %path.display(), "database migrated from schema 1 to 4");
        }
        None => {}
        Some(other) => {
            return Err(WriteError::DatabaseFile(format!(
                "{}: database schema version {other}, which this receiver (schema \
                 {SCHEMA_VERSION}) cannot read; run the receiver that wrote it, or delete the file \
                 and restart to load the cache again from its sources",
                path.display()
            )));
        }
    }
    meta.insert("schema_version", SCHEMA_VERSION)?;
    let kept = meta.get("file_id")?.map(|id| id.value());
    let file_id = match kept {
        Some(id) => id,
        None => {
            let drawn = fastrand::u64(..);
            meta.insert("file_id", drawn)?;
            drawn
        }
    };
    Ok(file_id)
}

/// The name of a table every file of schema 1 has (created at its first open).
const ENVIRONMENTS_NAME: &str = "environments";

/// Rewrites schema 1's JSON rows and text ids in this schema's layout, and drops the old tables.
fn from_schema_1(txn: &WriteTransaction) -> Result<(), WriteError> {
    {
        let old = txn.open_table(FEATURES_V1)?;
        let mut new = txn.open_table(FEATURES)?;
        let mut out = Vec::new();
        for row in old.iter()? {
            let (key, value) = row?;
            let meta: FeatureMeta =
                serde_json::from_str(value.value()).map_err(|e| corrupt("feature row", e))?;
            new.insert(key.value(), rows::meta(&mut out, &meta))?;
        }
    }
    migrate_states(txn)?;
    {
        let old = txn.open_table(SEEN_V1)?;
        let mut by_id = txn.open_table(REQUEST_IDS)?;
        let mut by_time = txn.open_table(REQUEST_IDS_BY_TIME)?;
        for row in old.iter()? {
            let (id, at) = row?;
            let (kind, id) = RequestId::from_text(id.value()).key();
            by_id.insert((kind, id), at.value())?;
            by_time.insert((at.value(), kind, id), ())?;
        }
    }
    txn.delete_table(FEATURES_V1)?;
    txn.delete_table(STATES_V1)?;
    txn.delete_table(SEEN_V1)?;
    txn.delete_table(SEEN_BY_TIME_V1)?;
    Ok(())
}

fn migrate_states(txn: &WriteTransaction) -> Result<(), WriteError> {
    let old = txn.open_table(STATES_V1)?;
    let mut new = txn.open_table(STATES)?;
    let mut out = Vec::new();
    for row in old.iter()? {
        let (key, value) = row?;
        let (env, feature, scope) = key.value();
        let json = value.value();
        if scope.starts_with("s:") {
            let slot: Slot<SegmentState> =
                serde_json::from_slice(json).map_err(|e| corrupt("segment state", e))?;
            new.insert((env, feature, scope), rows::segment_slot(&mut out, &slot))?;
        } else {
            let slot: Slot<FlagState> =
                serde_json::from_slice(json).map_err(|e| corrupt("state", e))?;
            new.insert((env, feature, scope), rows::flag_slot(&mut out, &slot))?;
        }
    }
    Ok(())
}

pub(super) mod tuples;

#[cfg(test)]
mod tests;
