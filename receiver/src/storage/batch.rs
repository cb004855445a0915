//! One batch of the writer inside one write transaction: remembering request ids, forgetting old
//! ones, and writing the rows behind every key a batch changed.
//!
//! Every table is opened once per batch, not once per request.

use std::cell::RefCell;
use std::rc::Rc;

use flagpost::store::redo::{LoggedTable, RedoOps};
use redb::WriteTransaction;

use crate::documents::{Dirty, EnvCache, FeatureEntry, FlagCache, Scope};
use crate::error::WriteError;
use crate::storage::documents;
use crate::storage::request_ids::{RequestId, RequestIds};
use crate::storage::rows::{self, MetaBytes, SlotBytes};
use crate::storage::{DELETED_FEATURES, ENVIRONMENTS, EnvRow, FEATURES, STATES, scope_key};
use crate::storage::{LoggedAs, logged};

type StatesTable<'txn> = LoggedTable<'txn, (u64, u64, &'static str), SlotBytes>;

/// The tables of one write transaction, open for the length of a batch. Every row goes through a
/// [`LoggedTable`], so that the redo log holds what the batch wrote.
pub struct Batch<'txn> {
    request_ids: RequestIds<'txn>,
    envs: LoggedTable<'txn, u64, &'static str>,
    features: LoggedTable<'txn, (u64, u64), MetaBytes>,
    deleted: LoggedTable<'txn, (u64, u64), ()>,
    states: StatesTable<'txn>,
    /// The row being written, laid out once for both the redo log and the table.
    row: Vec<u8>,
    /// For the tables of upstream documents, opened only when one is written.
    txn: &'txn WriteTransaction,
    ops: Rc<RefCell<RedoOps>>,
}

impl<'txn> Batch<'txn> {
    pub(super) fn open(
        txn: &'txn WriteTransaction,
        ops: &Rc<RefCell<RedoOps>>,
    ) -> Result<Batch<'txn>, WriteError> {
        Ok(Batch {
            request_ids: RequestIds::open(txn, ops)?,
            envs: logged(txn, ENVIRONMENTS, LoggedAs::Environments, ops)?,
            features: logged(txn, FEATURES, LoggedAs::Features, ops)?,
            deleted: logged(txn, DELETED_FEATURES, LoggedAs::DeletedFeatures, ops)?,
            states: logged(txn, STATES, LoggedAs::States, ops)?,
            row: Vec::new(),
            txn,
            ops: ops.clone(),
        })
    }

    /// Records a request id; false when it was already taken (by this batch or an earlier one).
    pub fn remember(&mut self, request_id: RequestId, now_unix: i64) -> Result<bool, WriteError> {
        self.request_ids.remember(request_id, now_unix)
    }

    /// Forgets request ids taken before `before_unix`; returns how many.
    pub fn forget_before(&mut self, before_unix: i64) -> Result<u64, WriteError> {
        self.request_ids.forget_before(before_unix)
    }

    /// Writes the rows behind every dirty key, reading their new content from `cache`.
    pub fn write(&mut self, cache: &FlagCache, dirty: &mut Vec<Dirty>) -> Result<(), WriteError> {
        dirty.sort();
        dirty.dedup();
        for key in dirty.iter() {
            match key {
                Dirty::Env(id) => {
                    if let Some(env) = cache.env(*id) {
                        self.write_env(*id, env)?;
                    }
                }
                Dirty::FeatureMeta(env, feature) => {
                    if let Some(entry) = feature_entry(cache, *env, *feature) {
                        self.write_meta(*env, *feature, entry)?;
                    }
                }
                Dirty::State(env, feature, scope) => {
                    self.write_state(*env, *feature, scope, feature_entry(cache, *env, *feature))?
                }
                Dirty::FeatureDeleted(env, feature) => {
                    remove_feature_states(&mut self.states, *env, *feature)?;
                    self.features.remove((*env, *feature))?;
                    self.deleted.insert((*env, *feature), ())?;
                }
                Dirty::FeatureRewritten(env, feature) => {
                    self.rewrite_feature(*env, *feature, feature_entry(cache, *env, *feature))?
                }
                Dirty::Undeleted(env, feature) => {
                    // Unless the same batch deleted it again afterwards.
                    let deleted = cache
                        .env(*env)
                        .is_some_and(|e| e.deleted_features.contains(feature));
                    if !deleted {
                        self.deleted.remove((*env, *feature))?;
                    }
                }
                Dirty::Upstream(env) => {
                    // A document is large and written once per fetch: its batch commits the
                    // file durably rather than logging it.
                    self.ops.borrow_mut().mark_unlogged();
                    let held = cache.env(*env).map(|env| env.as_ref());
                    documents::write(self.txn, *env, held)?
                }
            }
        }
        Ok(())
    }

    fn write_env(&mut self, id: u64, env: &EnvCache) -> Result<(), WriteError> {
        let row = serde_json::to_string(&EnvRow {
            name: env.name.clone(),
            document_seq: env.document_seq,
            loaded_at: env.loaded_at,
            refreshed_at: env.refreshed_at,
            sender: env.sender,
            retired_senders: env.retired_senders.clone(),
            revision: env.revision,
            updated_at_micros: env.updated_at_micros,
        })
        .expect("environment rows serialise");
        self.envs.insert(id, row.as_str())?;
        Ok(())
    }

    fn write_meta(
        &mut self,
        env: u64,
        feature: u64,
        entry: &FeatureEntry,
    ) -> Result<(), WriteError> {
        let row = rows::meta(&mut self.row, &entry.meta);
        self.features.insert((env, feature), row)?;
        Ok(())
    }

    fn write_state(
        &mut self,
        env: u64,
        feature: u64,
        scope: &Scope,
        entry: Option<&FeatureEntry>,
    ) -> Result<(), WriteError> {
        let key = scope_key(scope);
        let out = &mut self.row;
        let row = entry.and_then(|entry| match scope {
            Scope::Default => entry
                .default
                .as_ref()
                .map(|slot| rows::flag_slot(out, slot)),
            Scope::Identity(identifier) => entry
                .identities
                .get(identifier)
                .map(|slot| rows::flag_slot(out, slot)),
            Scope::Segment(segment) => entry
                .segments
                .get(segment)
                .map(|slot| rows::segment_slot(out, slot)),
        });
        match row {
            Some(row) => self.states.insert((env, feature, key.as_str()), row)?,
            None => self.states.remove((env, feature, key.as_str()))?,
        };
        Ok(())
    }

    /// Replaces every row of a feature by what `entry` holds (a document rewrote it).
    fn rewrite_feature(
        &mut self,
        env: u64,
        feature: u64,
        entry: Option<&FeatureEntry>,
    ) -> Result<(), WriteError> {
        remove_feature_states(&mut self.states, env, feature)?;
        let Some(entry) = entry else {
            self.features.remove((env, feature))?;
            return Ok(());
        };
        self.write_meta(env, feature, entry)?;
        let out = &mut self.row;
        if let Some(slot) = &entry.default {
            self.states
                .insert((env, feature, ""), rows::flag_slot(out, slot))?;
        }
        for (identifier, slot) in entry.identities.iter() {
            let key = scope_key(&Scope::Identity(identifier.into()));
            self.states
                .insert((env, feature, key.as_str()), rows::flag_slot(out, slot))?;
        }
        for (segment, slot) in &entry.segments {
            let key = scope_key(&Scope::Segment(*segment));
            self.states
                .insert((env, feature, key.as_str()), rows::segment_slot(out, slot))?;
        }
        Ok(())
    }
}

fn feature_entry(cache: &FlagCache, env: u64, feature: u64) -> Option<&FeatureEntry> {
    cache
        .env(env)
        .and_then(|env| env.features.get(&feature))
        .map(|entry| entry.as_ref())
}

fn remove_feature_states(
    states: &mut StatesTable<'_>,
    env: u64,
    feature: u64,
) -> Result<(), WriteError> {
    // Every key is "", "i:..." or "s:...", all below "t".
    states.remove_in((env, feature, "")..(env, feature, "t"))?;
    Ok(())
}
