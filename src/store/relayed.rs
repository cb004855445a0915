//! What the relay remembers (`POST /api/v1/relay/{source}`): each body relayed, to acknowledge it
//! again without storing it twice, and each cache key's last relayed timestamp, so that a late
//! body never overtakes a newer one ([`crate::changes::relay`] decides from these).
//!
//! Bodies are remembered for `storage.idempotency_retention`, far longer than Flagsmith retries;
//! key histories (one small row per key, like a flag state) are kept for good, so that a
//! captured body sent again after that still cannot take its key backwards.

use redb::ReadableTable;

use super::StoreError;
use super::events::event_id;
use super::schema::{RELAYED_BODIES, RELAYED_BY_TIME, RELAYED_KEYS};
use super::tables::{RELAYED_BODIES_NUMBER, RELAYED_BY_TIME_NUMBER, RELAYED_KEYS_NUMBER, Tables};
use crate::changes::relay::RelayedKey;

/// At most this many expired bodies are forgotten per relayed body: pruning keeps pace with
/// relaying without making one request pay for a long idle time.
const PRUNE_PER_RELAY: usize = 64;

/// The id and sequence of the event `source`'s body `sha256` became, if it was relayed within
/// the retention.
pub fn relayed_event(
    tables: &mut Tables,
    source: &str,
    sha256: &[u8; 32],
) -> Result<Option<(String, u64)>, StoreError> {
    let sequence = tables
        .uncached(RELAYED_BODIES, RELAYED_BODIES_NUMBER)?
        .get((source, sha256.as_slice()))?
        .map(|row| row.value().0);
    let Some(sequence) = sequence else {
        return Ok(None);
    };
    Ok(Some((event_id(tables.instance_id()?, sequence), sequence)))
}

/// Remembers that `source`'s body `sha256` became event `sequence` at `now_ms`, and forgets
/// bodies relayed before `forget_before_ms`.
pub fn remember_body(
    tables: &mut Tables,
    source: &str,
    sha256: &[u8; 32],
    sequence: u64,
    now_ms: u64,
    forget_before_ms: u64,
) -> Result<(), StoreError> {
    let mut bodies = tables.uncached(RELAYED_BODIES, RELAYED_BODIES_NUMBER)?;
    let mut by_time = tables.uncached(RELAYED_BY_TIME, RELAYED_BY_TIME_NUMBER)?;
    let expired: Vec<(u64, String, Vec<u8>)> = by_time
        .range((0, "", [].as_slice())..(forget_before_ms, "", [].as_slice()))?
        .take(PRUNE_PER_RELAY)
        .map(|row| {
            row.map(|(key, _)| {
                let (at, source, sha256) = key.value();
                (at, source.to_owned(), sha256.to_vec())
            })
        })
        .collect::<Result<_, _>>()?;
    for (at, source, sha256) in &expired {
        by_time.remove((*at, source.as_str(), sha256.as_slice()))?;
        bodies.remove((source.as_str(), sha256.as_slice()))?;
    }
    bodies.insert((source, sha256.as_slice()), (sequence, now_ms))?;
    by_time.insert((now_ms, source, sha256.as_slice()), ())?;
    Ok(())
}

/// The history of `source`'s cache key `key`, if anything was relayed for it.
pub fn key_history(
    tables: &mut Tables,
    source: &str,
    key: &str,
) -> Result<Option<RelayedKey>, StoreError> {
    let table = tables.uncached(RELAYED_KEYS, RELAYED_KEYS_NUMBER)?;
    let row = table.get((source, key))?;
    let Some(row) = row else { return Ok(None) };
    let (timestamp_micros, deleted, hashes) = row.value();
    let bodies = hashes
        .chunks(32)
        .map(|hash| {
            <[u8; 32]>::try_from(hash)
                .map_err(|_| StoreError::new(format!("relayed key {key:?}: a body hash is cut")))
        })
        .collect::<Result<_, _>>()?;
    Ok(Some(RelayedKey {
        timestamp_micros,
        deleted,
        bodies,
    }))
}

/// Keeps `history` as `source`'s cache key `key`'s.
pub fn keep_key_history(
    tables: &mut Tables,
    source: &str,
    key: &str,
    history: &RelayedKey,
) -> Result<(), StoreError> {
    let hashes = history.bodies.concat();
    tables.uncached(RELAYED_KEYS, RELAYED_KEYS_NUMBER)?.insert(
        (source, key),
        (history.timestamp_micros, history.deleted, hashes.as_slice()),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreOptions};

    #[tokio::test]
    async fn bodies_are_forgotten_after_the_retention_and_key_histories_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("relay.redb"), StoreOptions::default()).unwrap();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let history = RelayedKey {
            timestamp_micros: 5,
            deleted: false,
            bodies: vec![a, b],
        };
        let kept = history.clone();
        let found = store
            .write(move |tables| {
                remember_body(tables, "upstream", &a, 7, 1_000, 0)?;
                keep_key_history(tables, "upstream", "1/7/", &kept)?;
                // b is relayed long after a: a is past the retention and forgotten.
                remember_body(tables, "upstream", &b, 8, 100_000, 50_000)?;
                Ok((
                    relayed_event(tables, "upstream", &a)?,
                    relayed_event(tables, "upstream", &b)?.map(|(_, sequence)| sequence),
                    relayed_event(tables, "elsewhere", &b)?,
                    key_history(tables, "upstream", "1/7/")?,
                ))
            })
            .await
            .unwrap();
        assert_eq!(found, (None, Some(8), None, Some(history)));
        store.shutdown().await;
    }
}
