//! [`Tables`]: the tables of one write batch, opened once.
//!
//! Opening a redb table in a write transaction looks it up in the table tree and closing it writes
//! its root back; a change touches most tables twice or more, so opening them per operation cost
//! as much as the change itself. [`Tables`] opens each table on first use and keeps it open for
//! every job of the batch that works through it, and keeps the id counters in memory until the
//! batch ends.
//!
//! It also keeps what the batch read of features and environment defaults: a batch is most often
//! many changes to the same feature (its overrides), and each change reads the feature and its
//! default state. Every write of either goes through [`Tables`] (`super::flag_state`), which keeps
//! these copies current; they go with the transaction (a batch re-run after a refusal starts with
//! new `Tables`).
//!
//! Every table is opened as a [`LoggedTable`] under a number of its own, so that every row the
//! batch writes is also in its redo log group ([`super::redo`]), and [`replay_op`] writes a logged
//! row again into the table its number names.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;

use redb::{ReadableTable, WriteTransaction};

use super::StoreError;
use super::queries::{ContentScope, change_count_key};
use super::redo::{self, LoggedTable, RedoOps, ReplayError};
use super::rows::{EventRow, FeatureRow, StateRow};
use super::schema::*;
use super::tuple::Tuple;
use crate::changes::{FeatureRecord, StateRecord};

macro_rules! cached_tables {
    (
        cached { $($field:ident = $number:literal: $definition:ident, $key:ty, $value:ty;)* }
        uncached { $($other_number:ident: $other:ident;)* }
    ) => {
        /// The tables of one write transaction, each opened once.
        pub struct Tables<'t> {
            txn: &'t WriteTransaction,
            /// Every write of the batch, for the redo log.
            ops: Rc<RefCell<RedoOps>>,
            counters: BTreeMap<&'static str, u64>,
            /// What the batch changed that environment documents show.
            changed: BTreeSet<ContentScope>,
            instance_id: Option<u64>,
            /// Features read or written in this batch, by id (`None`: no such feature).
            pub(super) features_seen: HashMap<u64, Option<FeatureRecord>>,
            /// Environment defaults read or written in this batch, by (environment, feature),
            /// allocations included (`None`: no default state).
            pub(super) defaults_seen: HashMap<(u64, u64), Option<StateRecord>>,
            meta: Option<LoggedTable<'t, &'static str, u64>>,
            $($field: Option<LoggedTable<'t, $key, $value>>,)*
        }

        impl<'t> Tables<'t> {
            pub(super) fn new(txn: &'t WriteTransaction, ops: Rc<RefCell<RedoOps>>) -> Tables<'t> {
                Tables {
                    txn,
                    ops,
                    counters: BTreeMap::new(),
                    changed: BTreeSet::new(),
                    instance_id: None,
                    features_seen: HashMap::new(),
                    defaults_seen: HashMap::new(),
                    meta: None,
                    $($field: None,)*
                }
            }

            $(
                pub(super) fn $field(
                    &mut self,
                ) -> Result<&mut LoggedTable<'t, $key, $value>, StoreError> {
                    if self.$field.is_none() {
                        let table =
                            LoggedTable::open(self.txn, $definition, $number, self.ops.clone())?;
                        self.$field = Some(table);
                    }
                    Ok(self.$field.as_mut().expect("opened above"))
                }
            )*
        }

        /// Writes one op of a redo log group again: the table numbers are those above.
        pub(super) fn replay_op(
            txn: &WriteTransaction,
            table: u8,
            key: &[u8],
            value: Option<&[u8]>,
        ) -> Result<(), ReplayError> {
            match table {
                META_NUMBER => Ok(redo::replay_op(txn, META, key, value)?),
                $($number => Ok(redo::replay_op(txn, $definition, key, value)?),)*
                $($other_number => Ok(redo::replay_op(txn, $other, key, value)?),)*
                _ => Err(ReplayError::Malformed("an op names no logged table")),
            }
        }
    };
}

/// `META`'s number in the redo log; the cached tables' follow. A number, once given, keeps its
/// table and its rows' layout (a table of a new layout, such as `states.v2`, takes a new number),
/// so that a log written before an upgrade is replayed as it was written.
const META_NUMBER: u8 = 0;
/// The numbers of the tables opened through [`Tables::uncached`].
pub(super) const RELAYED_BODIES_NUMBER: u8 = 13;
pub(super) const RELAYED_BY_TIME_NUMBER: u8 = 14;
pub(super) const RELAYED_KEYS_NUMBER: u8 = 15;

cached_tables! {
    cached {
        environments = 1: ENVIRONMENTS, u64, &'static str;
        features = 2: FEATURES, u64, Tuple<FeatureRow<'static>>;
        feature_names = 3: FEATURE_NAMES, Tuple<(u64, &'static str)>, u64;
        states = 4: STATES, StatesKey, Tuple<StateRow<'static>>;
        identities = 5: IDENTITIES, Tuple<(u64, &'static str)>, u64;
        events = 6: EVENTS, u64, Tuple<EventRow<'static>>;
        outbox = 7: OUTBOX, EndpointSequence, OutboxRow;
        idempotency = 8: IDEMPOTENCY, TextPair, &'static str;
        file_features = 9: FILE_FEATURES, Tuple<(u64, u64)>, u8;
        segments = 10: SEGMENTS, u64, &'static str;
        multivariate_options = 11: MULTIVARIATE_OPTIONS, u64, &'static str;
        multivariate_values = 12: MULTIVARIATE_VALUES, StatesKey, &'static str;
        attempts = 16: ATTEMPTS, Tuple<(u64, &'static str, u32)>, Tuple<AttemptRow>;
        dead_letters = 17: DEAD_LETTERS, EndpointSequence, Tuple<DeadLetterRow>;
    }
    uncached {
        RELAYED_BODIES_NUMBER: RELAYED_BODIES;
        RELAYED_BY_TIME_NUMBER: RELAYED_BY_TIME;
        RELAYED_KEYS_NUMBER: RELAYED_KEYS;
    }
}

impl<'t> Tables<'t> {
    /// Opens a table that is not cached here (the relay's, in `super::relayed`, used only by the
    /// rare job that needs them), as the logged table `number` (see `cached_tables!`).
    pub(super) fn uncached<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        definition: redb::TableDefinition<K, V>,
        number: u8,
    ) -> Result<LoggedTable<'t, K, V>, StoreError> {
        Ok(LoggedTable::open(
            self.txn,
            definition,
            number,
            self.ops.clone(),
        )?)
    }

    fn meta(&mut self) -> Result<&mut LoggedTable<'t, &'static str, u64>, StoreError> {
        if self.meta.is_none() {
            let table = LoggedTable::open(self.txn, META, META_NUMBER, self.ops.clone())?;
            self.meta = Some(table);
        }
        Ok(self.meta.as_mut().expect("opened above"))
    }

    fn meta_value(&mut self, key: &str) -> Result<u64, StoreError> {
        self.meta()?
            .get(key)?
            .map(|v| v.value())
            .ok_or_else(|| StoreError::new(format!("meta {key} is missing")))
    }

    /// Takes the next value of an id counter. Counters only grow, so ids are never reused; the
    /// new values reach `META` when the batch closes its tables, in the same commit.
    pub(super) fn take_counter(&mut self, counter: &'static str) -> Result<u64, StoreError> {
        let next = match self.counters.get(counter) {
            Some(next) => *next,
            None => self.meta_value(counter)?,
        };
        self.counters.insert(counter, next + 1);
        Ok(next)
    }

    /// This database's random id, part of every event id.
    pub(super) fn instance_id(&mut self) -> Result<u64, StoreError> {
        if let Some(id) = self.instance_id {
            return Ok(id);
        }
        let id = self.meta_value("instance_id")?;
        self.instance_id = Some(id);
        Ok(id)
    }

    /// Notes that the batch changed what `scope`'s documents show.
    pub(super) fn touch(&mut self, scope: ContentScope) {
        self.changed.insert(scope);
    }

    /// Writes the counters and the change counts back and closes every table, answering the
    /// sequence of the last event the batch appended, if it appended one. Dropping `Tables`
    /// instead discards them, which is right only when the transaction is aborted.
    pub(super) fn close(mut self) -> Result<Option<u64>, StoreError> {
        let counters = std::mem::take(&mut self.counters);
        let last_sequence = counters.get(NEXT_SEQUENCE).map(|next| next - 1);
        let changed = std::mem::take(&mut self.changed);
        let meta = self.meta()?;
        for (counter, next) in counters {
            meta.insert(counter, next)?;
        }
        for scope in changed {
            let key = change_count_key(scope);
            let count = meta.get(key.as_str())?.map_or(0, |v| v.value());
            meta.insert(key.as_str(), count + 1)?;
        }
        Ok(last_sequence)
    }
}
