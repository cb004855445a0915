//! The table of documents from upstream Flagsmiths: each environment's last good document, kept
//! as the bytes Flagsmith sent, so that a restart (kill -9 included) starts from it.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};

use crate::documents::{DocumentBytes, EnvCache, UpstreamDocument};
use crate::error::WriteError;
use crate::storage::corrupt;

/// Environment -> (when its fetch began in unix microseconds, when it was fetched in unix
/// seconds, the document's bytes).
pub(super) const UPSTREAM_DOCUMENTS: TableDefinition<u64, (i64, i64, &[u8])> =
    TableDefinition::new("upstream_documents");

/// Environment -> the identity overrides its document keeps from an earlier one (see
/// [`UpstreamDocument::carried_overrides`]), where it keeps any.
pub(super) const CARRIED_OVERRIDES: TableDefinition<u64, &[u8]> =
    TableDefinition::new("upstream_carried_identity_overrides");

pub(super) fn create(txn: &WriteTransaction) -> Result<(), WriteError> {
    txn.open_table(UPSTREAM_DOCUMENTS)?;
    txn.open_table(CARRIED_OVERRIDES)?;
    Ok(())
}

/// Reads every stored document into its environment.
pub(super) fn load(
    txn: &ReadTransaction,
    envs: &mut HashMap<u64, EnvCache>,
) -> Result<(), WriteError> {
    let carried = txn.open_table(CARRIED_OVERRIDES)?;
    for row in txn.open_table(UPSTREAM_DOCUMENTS)?.iter()? {
        let (id, value) = row?;
        let env = id.value();
        let (began, fetched_at, raw) = value.value();
        let mut doc = UpstreamDocument::parse(Bytes::copy_from_slice(raw), env, began, fetched_at)
            .map_err(|e| corrupt("upstream document", e))?;
        if let Some(overrides) = carried.get(env)? {
            let overrides = DocumentBytes::new(Bytes::copy_from_slice(overrides.value()));
            doc.carry_overrides(overrides)
                .map_err(|e| corrupt("carried identity overrides", e))?;
        }
        envs.entry(env).or_default().upstream = Some(Arc::new(doc));
    }
    Ok(())
}

/// Writes `env`'s document as the cache holds it. Its tables are opened here: a document is
/// written once per fetch, and most batches hold none.
pub(super) fn write(
    txn: &WriteTransaction,
    env_id: u64,
    env: Option<&EnvCache>,
) -> Result<(), WriteError> {
    let mut documents = txn.open_table(UPSTREAM_DOCUMENTS)?;
    let mut carried = txn.open_table(CARRIED_OVERRIDES)?;
    let doc = env.and_then(|env| env.upstream.as_ref());
    match doc {
        Some(doc) => {
            let raw = doc.raw.bytes();
            let row = (doc.fetch_began_micros, doc.fetched_at, raw.as_ref());
            documents.insert(env_id, row)?;
        }
        None => {
            documents.remove(env_id)?;
        }
    }
    match doc.and_then(|doc| doc.carried_overrides.as_ref()) {
        Some(overrides) => {
            carried.insert(env_id, overrides.bytes().as_ref())?;
        }
        None => {
            carried.remove(env_id)?;
        }
    }
    Ok(())
}
