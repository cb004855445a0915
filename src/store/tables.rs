//! Every redb table, in one place. Keys are chosen to sort the way they are scanned: big-endian
//! integers and tuples, so that a lane's next deliveries or an environment's states are one range.
//!
//! Records that are read whole and rarely (features, states, events' metadata) are JSON, which keeps
//! the file inspectable and the schema easy to extend; hot fixed-size rows (the outbox) are tuples.

use redb::TableDefinition;

/// Counters and identity of this database: `next_sequence`, `next_feature_id`, `next_state_id`,
/// `next_identity_id`, `instance_id`, `schema_version`.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Environments as last synchronised from configuration: id → [`super::EnvironmentRecord`] JSON.
pub const ENVIRONMENTS: TableDefinition<u64, &str> = TableDefinition::new("environments");

/// Features, deleted ones included (as tombstones, so ids are never reused): id → JSON.
pub const FEATURES: TableDefinition<u64, &str> = TableDefinition::new("features");

/// Live features by (project, name) → id.
pub const FEATURE_NAMES: TableDefinition<(u64, &str), u64> = TableDefinition::new("feature_names");

/// Feature states: (environment, feature, state key) → [`super::StateRecord`] JSON. The state key
/// is "" for the environment default, `identity:<identifier>` or `segment:<id, 20 digits>`, so that
/// one feature's states in one environment are one contiguous range with the default first.
pub const STATES: TableDefinition<(u64, u64, &str), &str> = TableDefinition::new("states");

/// Identity ids: (environment, identifier) → id, assigned on first override.
pub const IDENTITIES: TableDefinition<(u64, &str), u64> = TableDefinition::new("identities");

/// Event metadata: sequence → [`super::EventRecord`] JSON.
pub const EVENTS: TableDefinition<u64, &str> = TableDefinition::new("events");

/// Event bodies, the exact bytes that are signed and sent: sequence → body.
pub const EVENT_BODIES: TableDefinition<u64, &[u8]> = TableDefinition::new("event_bodies");

/// Pending deliveries: (endpoint name, sequence) → (attempts made since the row was (re)queued,
/// next attempt at unix ms, attempts recorded before it was last requeued by a replay). A row
/// exists from the commit of its event until the endpoint took it or it was dead-lettered.
pub const OUTBOX: TableDefinition<(&str, u64), (u32, u64, u32)> = TableDefinition::new("outbox");

/// Delivery attempts: (sequence, endpoint name, attempt number) → (at unix ms, latency ms,
/// status, result, next attempt at unix ms, error); see `deliveries::AttemptRecord`.
pub const ATTEMPTS: TableDefinition<(u64, &str, u32), AttemptRow> =
    TableDefinition::new("attempts");
pub type AttemptRow = (u64, f64, Option<u16>, u8, Option<u64>, Option<&'static str>);

/// Dead letters: (endpoint name, sequence) → (event id, reason, attempts, last status, last error,
/// dead-lettered at unix ms); see `deliveries::DeadLetter`.
pub const DEAD_LETTERS: TableDefinition<(&str, u64), DeadLetterRow> =
    TableDefinition::new("dead_letters");
pub type DeadLetterRow = (
    &'static str,
    &'static str,
    u32,
    Option<u16>,
    Option<&'static str>,
    u64,
);

/// Answers to requests made with an `Idempotency-Key`: (token name, key) → stored answer JSON.
pub const IDEMPOTENCY: TableDefinition<(&str, &str), &str> = TableDefinition::new("idempotency");

/// Which features each environment's flag file declares: (environment, feature) → 1.
pub const FILE_FEATURES: TableDefinition<(u64, u64), u8> = TableDefinition::new("file_features");
