//! What the domain needs of storage: one batch's view of flag state and the outbox, as plain
//! values. The store implements it over redb tables ([`crate::store::Tables`]); the domain's unit
//! tests implement it in memory.

use std::collections::{BTreeMap, BTreeSet};

use super::multivariate::MultivariateOption;
use super::records::{CommittedEvent, EnvironmentRecord, FeatureRecord, StateKey, StateRecord};
use super::segments::SegmentRecord;
use crate::error::StoreError;
use crate::wire::EventType;

/// The id counters. Counters only grow, so ids are never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Counter {
    Feature,
    State,
    Identity,
    Segment,
    /// Multivariate options and their allocations in states.
    Multivariate,
}

/// An event to append to the outbox, with the endpoints subscribed to it now.
#[derive(Debug)]
pub struct NewEvent<'a> {
    pub event_type: EventType,
    pub environment: Option<u64>,
    pub committed_at_ms: u64,
    pub changed_by: &'a str,
    /// The exact bytes that are signed and sent.
    pub body: &'a [u8],
    pub subscribers: &'a [String],
}

/// Reads and writes of one write transaction. Every write is undone with the transaction when a
/// change refuses, so callers check nothing in advance for the store's sake.
pub trait FlagStore {
    /// A feature, deleted ones (tombstones) included.
    fn feature(&mut self, id: u64) -> Result<Option<FeatureRecord>, StoreError>;
    /// The id of the live feature named `name` in `project`.
    fn feature_id(&mut self, project: u64, name: &str) -> Result<Option<u64>, StoreError>;
    /// Writes a feature, indexing a live one by name and taking a deleted one out of the index.
    fn put_feature(&mut self, feature: &FeatureRecord) -> Result<(), StoreError>;
    /// Every live feature of a project.
    fn live_features(&mut self, project: u64) -> Result<Vec<FeatureRecord>, StoreError>;

    fn state(
        &mut self,
        environment: u64,
        feature: u64,
        key: &StateKey,
    ) -> Result<Option<StateRecord>, StoreError>;
    /// Every state of a feature in an environment, the default first.
    fn states(
        &mut self,
        environment: u64,
        feature: u64,
    ) -> Result<BTreeMap<StateKey, StateRecord>, StoreError>;
    fn put_state(
        &mut self,
        environment: u64,
        feature: u64,
        key: &StateKey,
        state: &StateRecord,
    ) -> Result<(), StoreError>;
    fn remove_state(
        &mut self,
        environment: u64,
        feature: u64,
        key: &StateKey,
    ) -> Result<(), StoreError>;

    fn identity_id(
        &mut self,
        environment: u64,
        identifier: &str,
    ) -> Result<Option<u64>, StoreError>;
    fn put_identity_id(
        &mut self,
        environment: u64,
        identifier: &str,
        id: u64,
    ) -> Result<(), StoreError>;

    fn next_id(&mut self, counter: Counter) -> Result<u64, StoreError>;

    /// An environment as last synchronised from configuration.
    fn environment(&mut self, id: u64) -> Result<Option<EnvironmentRecord>, StoreError>;
    fn put_environment(&mut self, record: &EnvironmentRecord) -> Result<(), StoreError>;

    /// The features `environment`'s flag file declares.
    fn file_features(&mut self, environment: u64) -> Result<BTreeSet<u64>, StoreError>;
    fn is_file_feature(&mut self, environment: u64, feature: u64) -> Result<bool, StoreError>;
    fn set_file_feature(
        &mut self,
        environment: u64,
        feature: u64,
        declared: bool,
    ) -> Result<(), StoreError>;

    fn segment(&mut self, id: u64) -> Result<Option<SegmentRecord>, StoreError>;
    /// Every segment of a project.
    fn project_segments(&mut self, project: u64) -> Result<Vec<SegmentRecord>, StoreError>;
    fn put_segment(&mut self, segment: &SegmentRecord) -> Result<(), StoreError>;
    fn remove_segment(&mut self, id: u64) -> Result<(), StoreError>;

    /// A feature's multivariate options, in the order they were added.
    fn multivariate_options(&mut self, feature: u64)
    -> Result<Vec<MultivariateOption>, StoreError>;
    fn put_multivariate_options(
        &mut self,
        feature: u64,
        options: &[MultivariateOption],
    ) -> Result<(), StoreError>;

    /// Stores the next event and one delivery row per subscriber.
    fn append_event(&mut self, event: &NewEvent<'_>) -> Result<CommittedEvent, StoreError>;
}
