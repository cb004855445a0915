//! What the API and the environment document read of segments and multivariate options. The
//! tables and their JSON encodings are in [`super::schema`]; the writes, in [`super::flag_state`].

use redb::{ReadTransaction, ReadableTable};

use super::StoreError;
use super::rows::state_key;
use super::schema::{MULTIVARIATE_OPTIONS, MULTIVARIATE_VALUES, SEGMENTS};
use crate::changes::{MultivariateOption, MultivariateValue, SegmentRecord, StateKey};

pub fn segment(txn: &ReadTransaction, id: u64) -> Result<Option<SegmentRecord>, StoreError> {
    let table = txn.open_table(SEGMENTS)?;
    let row = table.get(id)?;
    Ok(row.map(|v| serde_json::from_str(v.value())).transpose()?)
}

/// Every segment of a project, by id.
pub fn project_segments(
    txn: &ReadTransaction,
    project: u64,
) -> Result<Vec<SegmentRecord>, StoreError> {
    let table = txn.open_table(SEGMENTS)?;
    let mut segments = Vec::new();
    for entry in table.iter()? {
        let segment: SegmentRecord = serde_json::from_str(entry?.1.value())?;
        if segment.project == project {
            segments.push(segment);
        }
    }
    Ok(segments)
}

/// A feature's multivariate options, in the order they were added.
pub fn feature_options(
    txn: &ReadTransaction,
    feature: u64,
) -> Result<Vec<MultivariateOption>, StoreError> {
    let table = txn.open_table(MULTIVARIATE_OPTIONS)?;
    let row = table.get(feature)?;
    Ok(row
        .map(|v| serde_json::from_str(v.value()))
        .transpose()?
        .unwrap_or_default())
}

/// The multivariate allocations of one state (empty for a state without any).
pub fn state_allocations(
    txn: &ReadTransaction,
    env: u64,
    feature: u64,
    key: &StateKey,
) -> Result<Vec<MultivariateValue>, StoreError> {
    let table = txn.open_table(MULTIVARIATE_VALUES)?;
    let key = state_key(key);
    let row = table.get((env, feature, key.as_slice()))?;
    Ok(row
        .map(|v| serde_json::from_str(v.value()))
        .transpose()?
        .unwrap_or_default())
}
