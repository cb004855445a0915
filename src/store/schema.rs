//! Every redb table, in one place, and the schema version of the file. Keys are chosen to sort the way they are scanned: big-endian
//! integers and tuples, so that a lane's next deliveries or an environment's states are one range.
//!
//! Records that are read whole and rarely (features, states, events' metadata) are JSON, which keeps
//! the file inspectable and the schema easy to extend; hot fixed-size rows (the outbox) are tuples.

use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};

use super::StoreError;

/// Counters and identity of this database: `next_sequence`, `next_feature_id`, `next_state_id`,
/// `next_identity_id`, `instance_id`, `schema_version`.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Environments as last synchronised from configuration: id → [`crate::changes::EnvironmentRecord`] JSON.
pub const ENVIRONMENTS: TableDefinition<u64, &str> = TableDefinition::new("environments");

/// Features, deleted ones included (as tombstones, so ids are never reused): id → JSON.
pub const FEATURES: TableDefinition<u64, &str> = TableDefinition::new("features");

/// Live features by (project, name) → id.
pub const FEATURE_NAMES: TableDefinition<(u64, &str), u64> = TableDefinition::new("feature_names");

/// Feature states: (environment, feature, state key) → [`crate::changes::StateRecord`] JSON. The state key
/// is "" for the environment default, `identity:<identifier>` or `segment:<id, 20 digits>`, so that
/// one feature's states in one environment are one contiguous range with the default first.
pub const STATES: TableDefinition<(u64, u64, &str), &str> = TableDefinition::new("states");

/// Identity ids: (environment, identifier) → id, assigned on first override.
pub const IDENTITIES: TableDefinition<(u64, &str), u64> = TableDefinition::new("identities");

/// Event metadata: sequence → [`super::EventRecord`] JSON.
pub const EVENTS: TableDefinition<u64, &str> = TableDefinition::new("events");

/// Event bodies, the exact bytes that are signed and sent: sequence → body.
pub const EVENT_BODIES: TableDefinition<u64, &[u8]> = TableDefinition::new("event_bodies");

/// Pending deliveries: (endpoint name, sequence) → (attempts made, next attempt at, unix ms).
/// A row exists from the commit of its event until the endpoint took it or it was dead-lettered.
pub const OUTBOX: TableDefinition<(&str, u64), (u32, u64)> = TableDefinition::new("outbox");

/// Delivery attempts: (sequence, endpoint name, attempt number) → attempt JSON.
pub const ATTEMPTS: TableDefinition<(u64, &str, u32), &str> = TableDefinition::new("attempts");

/// Dead letters: (endpoint name, sequence) → reason, last status and error, JSON.
pub const DEAD_LETTERS: TableDefinition<(&str, u64), &str> = TableDefinition::new("dead_letters");

/// Answers to requests made with an `Idempotency-Key`: (token name, key) → stored answer JSON.
pub const IDEMPOTENCY: TableDefinition<(&str, &str), &str> = TableDefinition::new("idempotency");

/// Which features each environment's flag file declares: (environment, feature) → 1.
pub const FILE_FEATURES: TableDefinition<(u64, u64), u8> = TableDefinition::new("file_features");

/// The layout this build writes and reads.
pub const SCHEMA_VERSION: u64 = 1;

/// Creates the tables and counters of a new file, or checks the version of an existing one.
pub(super) fn initialise(db: &Database, path: &Path) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        let version = meta.get("schema_version")?.map(|v| v.value());
        match version {
            None => {
                meta.insert("schema_version", SCHEMA_VERSION)?;
                meta.insert("instance_id", fastrand::u64(..))?;
                for counter in [
                    "next_sequence",
                    "next_feature_id",
                    "next_state_id",
                    "next_identity_id",
                ] {
                    meta.insert(counter, 1)?;
                }
            }
            Some(SCHEMA_VERSION) => {}
            Some(other) => {
                return Err(StoreError::new(format!(
                    "{}: database schema version {other} is not {SCHEMA_VERSION}; this flagpost cannot read it",
                    path.display()
                )));
            }
        }
        // Create every table so that readers never meet a missing one.
        txn.open_table(ENVIRONMENTS)?;
        txn.open_table(FEATURES)?;
        txn.open_table(FEATURE_NAMES)?;
        txn.open_table(STATES)?;
        txn.open_table(IDENTITIES)?;
        txn.open_table(EVENTS)?;
        txn.open_table(EVENT_BODIES)?;
        txn.open_table(OUTBOX)?;
        txn.open_table(ATTEMPTS)?;
        txn.open_table(DEAD_LETTERS)?;
        txn.open_table(IDEMPOTENCY)?;
        txn.open_table(FILE_FEATURES)?;
    }
    txn.commit()?;
    Ok(())
}
