//! The table of documents from upstream Flagsmiths: each environment's last good document, kept
//! as the bytes Flagsmith sent, so that a restart (kill -9 included) starts from it.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use redb::{ReadTransaction, ReadableTable, Table, TableDefinition, WriteTransaction};

use crate::documents::{EnvCache, UpstreamDocument};
use crate::error::WriteError;
use crate::storage::corrupt;

/// Environment -> (when its fetch began in unix microseconds, when it was fetched in unix
/// seconds, the document's bytes).
pub(super) const UPSTREAM_DOCUMENTS: TableDefinition<u64, (i64, i64, &[u8])> =
    TableDefinition::new("upstream_documents");

pub(super) type DocumentsTable<'txn> = Table<'txn, u64, (i64, i64, &'static [u8])>;

pub(super) fn create(txn: &WriteTransaction) -> Result<(), WriteError> {
    txn.open_table(UPSTREAM_DOCUMENTS)?;
    Ok(())
}

pub(super) fn open<'txn>(txn: &'txn WriteTransaction) -> Result<DocumentsTable<'txn>, WriteError> {
    Ok(txn.open_table(UPSTREAM_DOCUMENTS)?)
}

/// Reads every stored document into its environment.
pub(super) fn load(
    txn: &ReadTransaction,
    envs: &mut HashMap<u64, EnvCache>,
) -> Result<(), WriteError> {
    for row in txn.open_table(UPSTREAM_DOCUMENTS)?.iter()? {
        let (id, value) = row?;
        let env = id.value();
        let (began, fetched_at, raw) = value.value();
        let doc = UpstreamDocument::parse(Bytes::copy_from_slice(raw), env, began, fetched_at)
            .map_err(|e| corrupt("upstream document", e))?;
        envs.entry(env).or_default().upstream = Some(Arc::new(doc));
    }
    Ok(())
}

/// Writes `env`'s document as the cache holds it.
pub(super) fn write(
    table: &mut DocumentsTable<'_>,
    env_id: u64,
    env: Option<&EnvCache>,
) -> Result<(), WriteError> {
    match env.and_then(|env| env.upstream.as_ref()) {
        Some(doc) => {
            let raw = doc.raw.bytes();
            let row = (doc.fetch_began_micros, doc.fetched_at, raw.as_ref());
            table.insert(env_id, row)?;
        }
        None => {
            table.remove(env_id)?;
        }
    }
    Ok(())
}
