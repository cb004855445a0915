//! A batch's writes as bytes: recorded by [`LoggedTable`], written again by [`replay_op`].
//!
//! An op is the table's number (its place in the program's list of logged tables), the key's
//! length and bytes, then either `u32::MAX` (a removal) or the value's length and bytes: the
//! tables' own redb encodings, so replaying decodes exactly what was written.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::rc::Rc;

use redb::{
    AccessGuard, Key, ReadableTable, StorageError, Table, TableDefinition, Value, WriteTransaction,
};

const REMOVED: u32 = u32::MAX;

/// The writes of one batch attempt, shared by its logged tables.
#[derive(Debug, Default)]
pub struct RedoOps {
    bytes: Vec<u8>,
    /// Something in the batch wrote where no [`LoggedTable`] records (a table opened from the
    /// transaction itself, or a write with no op of its own): the batch must commit durably.
    unlogged: bool,
}

impl RedoOps {
    pub fn shared() -> Rc<RefCell<RedoOps>> {
        Rc::new(RefCell::new(RedoOps::default()))
    }

    /// Notes that the batch wrote something the log does not hold.
    pub fn mark_unlogged(&mut self) {
        self.unlogged = true;
        self.bytes = Vec::new();
    }

    /// The group to append, or `None` when the batch must commit durably instead.
    pub fn payload(&self) -> Option<&[u8]> {
        (!self.unlogged).then_some(self.bytes.as_slice())
    }

    fn record(&mut self, table: u8, key: &[u8], value: Option<&[u8]>) {
        if self.unlogged {
            return;
        }
        if self.bytes.len() as u64 > super::LOG_CAPACITY {
            // A group larger than the log can never be appended (a flag file applied whole):
            // its batch commits durably, and its record is not kept growing for nothing.
            self.mark_unlogged();
            return;
        }
        self.bytes.push(table);
        self.bytes
            .extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(key);
        match value {
            Some(value) => {
                self.bytes
                    .extend_from_slice(&(value.len() as u32).to_le_bytes());
                self.bytes.extend_from_slice(value);
            }
            None => self.bytes.extend_from_slice(&REMOVED.to_le_bytes()),
        }
    }
}

/// A redb table whose every write is also recorded in the batch's [`RedoOps`]. Reads go straight
/// to the table (through `Deref`); there is no `DerefMut`, so no write can bypass the record.
pub struct LoggedTable<'t, K: Key + 'static, V: Value + 'static> {
    table: Table<'t, K, V>,
    number: u8,
    ops: Rc<RefCell<RedoOps>>,
}

impl<'t, K: Key + 'static, V: Value + 'static> LoggedTable<'t, K, V> {
    /// Opens `definition` in `txn` as the program's logged table `number`.
    pub fn open(
        txn: &'t WriteTransaction,
        definition: TableDefinition<K, V>,
        number: u8,
        ops: Rc<RefCell<RedoOps>>,
    ) -> Result<Self, redb::TableError> {
        Ok(LoggedTable {
            table: txn.open_table(definition)?,
            number,
            ops,
        })
    }

    pub fn insert<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> Result<Option<AccessGuard<'_, V>>, StorageError> {
        let (key, value) = (key.borrow(), value.borrow());
        self.ops.borrow_mut().record(
            self.number,
            K::as_bytes(key).as_ref(),
            Some(V::as_bytes(value).as_ref()),
        );
        self.table.insert(key, value)
    }

    pub fn remove<'k>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
    ) -> Result<Option<AccessGuard<'_, V>>, StorageError> {
        let key = key.borrow();
        self.ops
            .borrow_mut()
            .record(self.number, K::as_bytes(key).as_ref(), None);
        self.table.remove(key)
    }

    /// Removes every row in `range`, each recorded.
    pub fn remove_in<'a, KR>(
        &mut self,
        range: impl std::ops::RangeBounds<KR> + 'a,
    ) -> Result<(), StorageError>
    where
        KR: Borrow<K::SelfType<'a>> + 'a,
    {
        let keys: Vec<Vec<u8>> = self
            .table
            .range(range)?
            .map(|row| row.map(|(key, _)| K::as_bytes(&key.value()).as_ref().to_vec()))
            .collect::<Result<_, _>>()?;
        for key in &keys {
            self.ops.borrow_mut().record(self.number, key, None);
            self.table.remove(K::from_bytes(key))?;
        }
        Ok(())
    }

    /// Removes the rows `predicate` refuses. Not recorded row by row: the batch commits durably.
    pub fn retain<F>(&mut self, predicate: F) -> Result<(), StorageError>
    where
        F: for<'f> FnMut(K::SelfType<'f>, V::SelfType<'f>) -> bool,
    {
        self.ops.borrow_mut().mark_unlogged();
        self.table.retain(predicate)
    }
}

impl<'t, K: Key + 'static, V: Value + 'static> std::ops::Deref for LoggedTable<'t, K, V> {
    type Target = Table<'t, K, V>;

    fn deref(&self) -> &Self::Target {
        &self.table
    }
}

/// Writes one recorded op again into `definition`'s table.
pub fn replay_op<K: Key + 'static, V: Value + 'static>(
    txn: &WriteTransaction,
    definition: TableDefinition<K, V>,
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<(), redb::Error> {
    let mut table = txn.open_table(definition)?;
    let key = K::from_bytes(key);
    match value {
        Some(value) => drop(table.insert(key, V::from_bytes(value))?),
        None => drop(table.remove(key)?),
    }
    Ok(())
}

/// One op read back from a group.
pub(super) struct Op<'a> {
    pub table: u8,
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
}

/// The ops of a group's payload, in the order they were written.
pub(super) fn decode(mut bytes: &[u8]) -> impl Iterator<Item = Result<Op<'_>, &'static str>> {
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        let op = next_op(&mut bytes);
        if op.is_err() {
            bytes = &[];
        }
        Some(op)
    })
}

fn next_op<'a>(bytes: &mut &'a [u8]) -> Result<Op<'a>, &'static str> {
    let (&table, rest) = bytes.split_first().ok_or("no table number")?;
    *bytes = rest;
    let key_len = take_u32(bytes)?;
    let key = take(bytes, key_len as usize)?;
    let value = match take_u32(bytes)? {
        REMOVED => None,
        len => Some(take(bytes, len as usize)?),
    };
    Ok(Op { table, key, value })
}

fn take_u32(bytes: &mut &[u8]) -> Result<u32, &'static str> {
    let raw = take(bytes, 4)?;
    Ok(u32::from_le_bytes(raw.try_into().expect("4 bytes")))
}

fn take<'a>(bytes: &mut &'a [u8], len: usize) -> Result<&'a [u8], &'static str> {
    if bytes.len() < len {
        return Err("an op runs past its group's end");
    }
    let (taken, rest) = bytes.split_at(len);
    *bytes = rest;
    Ok(taken)
}
