//! Every redb table, in one place, and the schema version of the file.
//!
//! Keys are chosen to sort the way they are scanned: big-endian integers and tuples, so that a
//! lane's next deliveries or an environment's states are one range. The records read and written
//! on every change or delivery (features, states, events, outbox rows, attempts, dead letters) are
//! redb tuples ([`super::rows`], [`super::deliveries`]): no JSON is parsed or written on either
//! path. Every tuple is named through [`Tuple`], so that opening its table does not build the
//! tuple's type name again. Records read rarely (environments, idempotency answers) are JSON, easy
//! to extend.

use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};

use super::StoreError;
use super::rows::{EventRow, FeatureRow, StateRow};
use super::tuple::Tuple;

/// Counters and identity of this database: `next_sequence`, `next_feature_id`, `next_state_id`,
/// `next_identity_id`, `instance_id`, `schema_version`.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// `META`'s counter of event sequences: the next event appended takes it.
pub const NEXT_SEQUENCE: &str = "next_sequence";

/// Environments as last synchronised from configuration: id → [`crate::changes::EnvironmentRecord`]
/// JSON.
pub const ENVIRONMENTS: TableDefinition<u64, &str> = TableDefinition::new("environments");

/// Features, deleted ones included (as tombstones, so ids are never reused): id → [`FeatureRow`].
pub const FEATURES: TableDefinition<u64, Tuple<FeatureRow<'static>>> =
    TableDefinition::new("features.v2");

/// Live features by (project, name) → id.
pub const FEATURE_NAMES: TableDefinition<Tuple<(u64, &'static str)>, u64> =
    TableDefinition::new("feature_names");

/// Feature states: (environment, feature, state key) → [`StateRow`]. The state key
/// ([`super::rows::state_key`]) is empty for the environment default, then identities, then
/// segments, so that one feature's states in one environment are one range, the default first.
pub const STATES: TableDefinition<StatesKey, Tuple<StateRow<'static>>> =
    TableDefinition::new("states.v2");
/// (environment, feature, state key): the key of `STATES` and `MULTIVARIATE_VALUES`.
pub type StatesKey = Tuple<(u64, u64, &'static [u8])>;

/// Identity ids: (environment, identifier) → id, assigned on first override.
pub const IDENTITIES: TableDefinition<Tuple<(u64, &'static str)>, u64> =
    TableDefinition::new("identities");

/// Events: sequence → [`EventRow`], metadata and the exact body bytes that are signed and sent,
/// read together. The event id is derived from the sequence ([`super::events::event_id`]).
pub const EVENTS: TableDefinition<u64, Tuple<EventRow<'static>>> =
    TableDefinition::new("events.v2");

/// Pending deliveries: (endpoint name, sequence) → (attempts made since the row was (re)queued,
/// next attempt at unix ms, attempts recorded before a replay last requeued it). A row exists
/// from the commit of its event until the endpoint took it or it was dead-lettered.
pub const OUTBOX: TableDefinition<EndpointSequence, OutboxRow> = TableDefinition::new("outbox.v2");
/// (endpoint name, sequence): the key of `OUTBOX` and `DEAD_LETTERS`.
pub type EndpointSequence = Tuple<(&'static str, u64)>;
/// (attempts since (re)queued, next attempt at unix ms, attempts before the last replay).
pub type OutboxRow = Tuple<(u32, u64, u32)>;

/// Delivery attempts: (sequence, endpoint name, attempt number) → [`AttemptRow`]; see
/// `deliveries::AttemptRecord`.
pub const ATTEMPTS: TableDefinition<Tuple<(u64, &'static str, u32)>, Tuple<AttemptRow>> =
    TableDefinition::new("attempts.v2");
/// (at unix ms, latency ms, status, result, next attempt at unix ms, error).
pub type AttemptRow = (u64, f64, Option<u16>, u8, Option<u64>, Option<&'static str>);

/// What the relay remembers ([`super::relayed`]): (source, SHA-256 of the body) → (sequence of the event it became, relayed at unix ms).
pub const RELAYED_BODIES: TableDefinition<SourceAndBody, Tuple<(u64, u64)>> =
    TableDefinition::new("relayed_bodies");
/// (source, SHA-256 of the body).
pub type SourceAndBody = Tuple<(&'static str, &'static [u8])>;

/// (relayed at unix ms, source, SHA-256 of the body), so that forgetting old bodies is a range.
pub const RELAYED_BY_TIME: TableDefinition<RelayedAt, ()> =
    TableDefinition::new("relayed_bodies_by_time");
/// (relayed at unix ms, source, SHA-256 of the body).
pub type RelayedAt = Tuple<(u64, &'static str, &'static [u8])>;

/// (source, cache key) → (timestamp in unix µs, deleted, SHA-256s of the bodies relayed at it).
pub const RELAYED_KEYS: TableDefinition<TextPair, RelayedKeyRow> =
    TableDefinition::new("relayed_keys");
/// (timestamp in unix µs, deleted, SHA-256s of the bodies relayed at it).
pub type RelayedKeyRow = Tuple<(i64, bool, &'static [u8])>;
/// Two strings: the key of `RELAYED_KEYS` (source, cache key) and `IDEMPOTENCY` (token, key).
pub type TextPair = Tuple<(&'static str, &'static str)>;

/// Dead letters: (endpoint name, sequence) → [`DeadLetterRow`]; see `deliveries::DeadLetter`.
pub const DEAD_LETTERS: TableDefinition<EndpointSequence, Tuple<DeadLetterRow>> =
    TableDefinition::new("dead_letters.v2");
/// (event id, reason, attempts, last status, last error, dead-lettered at unix ms).
pub type DeadLetterRow = (
    &'static str,
    &'static str,
    u32,
    Option<u16>,
    Option<&'static str>,
    u64,
);

/// Answers to requests made with an `Idempotency-Key`: (token name, key) → stored answer JSON.
pub const IDEMPOTENCY: TableDefinition<TextPair, &str> = TableDefinition::new("idempotency");

/// Which features each environment's flag file declares: (environment, feature) → 1.
pub const FILE_FEATURES: TableDefinition<Tuple<(u64, u64)>, u8> =
    TableDefinition::new("file_features");

/// Segments: id → [`crate::changes::SegmentRecord`] JSON (read rarely, rules nest).
pub const SEGMENTS: TableDefinition<u64, &str> = TableDefinition::new("segments");

/// Multivariate options: feature id → JSON list of [`crate::changes::MultivariateOption`].
pub const MULTIVARIATE_OPTIONS: TableDefinition<u64, &str> =
    TableDefinition::new("multivariate_options");

/// A state's multivariate allocations, keyed as `STATES`: JSON list of
/// [`crate::changes::MultivariateValue`]; no row for a state without any.
pub const MULTIVARIATE_VALUES: TableDefinition<StatesKey, &str> =
    TableDefinition::new("multivariate_values");

/// Counters added after schema 2 was first written: created at 1 in a file that lacks them.
const LATER_COUNTERS: [&str; 2] = ["next_segment_id", "next_multivariate_id"];

/// The layout this build writes and reads.
///
/// - 1 (flagpost 0.1): features, states and event metadata as JSON, event bodies apart.
/// - 2: features, states, events, outbox rows, attempts and dead letters as redb tuples, each
///   event's metadata with its body.
pub const SCHEMA_VERSION: u64 = 2;

/// Creates the tables and counters of a new file, migrates a file of schema 1, or refuses one it
/// cannot read.
pub(super) fn initialise(db: &Database, path: &Path) -> Result<(), StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_two_phase_commit(super::open::TWO_PHASE_COMMIT);
    {
        let mut meta = txn.open_table(META)?;
        let version = meta.get("schema_version")?.map(|v| v.value());
        match version {
            None => {
                meta.insert("schema_version", SCHEMA_VERSION)?;
                meta.insert("instance_id", fastrand::u64(..))?;
                for counter in [
                    NEXT_SEQUENCE,
                    "next_feature_id",
                    "next_state_id",
                    "next_identity_id",
                ] {
                    meta.insert(counter, 1)?;
                }
            }
            Some(SCHEMA_VERSION) => {}
            Some(1) => {
                super::migrate::from_schema_1(&txn)?;
                meta.insert("schema_version", SCHEMA_VERSION)?;
                tracing::info!(file = %path.display(), "database migrated from schema 1 to 2");
            }
            Some(other) => {
                return Err(StoreError::new(format!(
                    "{}: database schema version {other}, which this flagpost (schema {SCHEMA_VERSION}) cannot read; run the flagpost that wrote it, or move the file aside to start empty",
                    path.display()
                )));
            }
        }
        for counter in LATER_COUNTERS {
            if meta.get(counter)?.is_none() {
                meta.insert(counter, 1)?;
            }
        }
        // Create every table so that readers never meet a missing one.
        txn.open_table(ENVIRONMENTS)?;
        txn.open_table(FEATURES)?;
        txn.open_table(FEATURE_NAMES)?;
        txn.open_table(STATES)?;
        txn.open_table(IDENTITIES)?;
        txn.open_table(EVENTS)?;
        txn.open_table(OUTBOX)?;
        txn.open_table(ATTEMPTS)?;
        txn.open_table(DEAD_LETTERS)?;
        txn.open_table(IDEMPOTENCY)?;
        txn.open_table(FILE_FEATURES)?;
        txn.open_table(SEGMENTS)?;
        txn.open_table(MULTIVARIATE_OPTIONS)?;
        txn.open_table(MULTIVARIATE_VALUES)?;
    }
    txn.commit()?;
    Ok(())
}
