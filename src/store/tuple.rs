//! [`Tuple`]: a redb tuple whose type name is built once per process.
//!
//! redb checks a table's stored key and value type names against its definition's each time the
//! table is opened, in a read or a write, and builds a tuple's name by formatting its elements'
//! names, nested ones included. The tables a change opens cost its writer about 3,000
//! instructions a change that way (callgrind, `benches/callgrind/change_path.sh`), and a lane's
//! read as much again. A table keyed or valued by `Tuple<T>` is the same table as one of `T`: the
//! same bytes in the same order under the same name, so files written either way open either way.

use std::any::TypeId;
use std::cmp::Ordering;
use std::marker::PhantomData;
use std::sync::RwLock;

use redb::{Key, TypeName, Value};

/// Stored exactly as `T`; only its type name is kept once built.
#[derive(Debug)]
pub struct Tuple<T>(PhantomData<T>);

/// The names built so far: a handful of types, so a list beats a map.
static NAMES: RwLock<Vec<(TypeId, TypeName)>> = RwLock::new(Vec::new());

fn name_of<T: Value + 'static>() -> TypeName {
    let id = TypeId::of::<T>();
    let found = |names: &[(TypeId, TypeName)]| {
        names
            .iter()
            .find(|(known, _)| *known == id)
            .map(|(_, name)| name.clone())
    };
    if let Some(name) = found(&NAMES.read().unwrap_or_else(|p| p.into_inner())) {
        return name;
    }
    let mut names = NAMES.write().unwrap_or_else(|p| p.into_inner());
    if let Some(name) = found(&names) {
        return name;
    }
    let name = T::type_name();
    names.push((id, name.clone()));
    name
}

impl<T: Value + 'static> Value for Tuple<T> {
    type SelfType<'a>
        = T::SelfType<'a>
    where
        Self: 'a;
    type AsBytes<'a>
        = T::AsBytes<'a>
    where
        Self: 'a;

    const NICHE: Option<&'static [u8]> = T::NICHE;

    fn fixed_width() -> Option<usize> {
        T::fixed_width()
    }

    fn from_bytes<'a>(data: &'a [u8]) -> Self::SelfType<'a>
    where
        Self: 'a,
    {
        T::from_bytes(data)
    }

    fn as_bytes<'a, 'b: 'a>(value: &'a Self::SelfType<'b>) -> Self::AsBytes<'a>
    where
        Self: 'b,
    {
        T::as_bytes(value)
    }

    fn type_name() -> TypeName {
        name_of::<T>()
    }
}

impl<T: Key + 'static> Key for Tuple<T> {
    fn compare(data1: &[u8], data2: &[u8]) -> Ordering {
        T::compare(data1, data2)
    }

    fn separator<'a>(left: &'a [u8], right: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        T::separator(left, right)
    }

    fn min_encoded_key() -> Option<std::borrow::Cow<'static, [u8]>> {
        T::min_encoded_key()
    }
}

#[cfg(test)]
mod tests {
    use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

    use super::*;

    type Row = (u64, Option<&'static str>, (u8, u64, &'static str), bool);
    const PLAIN: TableDefinition<(u64, &str), Row> = TableDefinition::new("rows");
    const NAMED: TableDefinition<Tuple<(u64, &str)>, Tuple<Row>> = TableDefinition::new("rows");

    #[test]
    fn a_tuple_is_stored_and_named_as_its_elements() {
        assert_eq!(
            <Tuple<Row> as Value>::type_name(),
            <Row as Value>::type_name()
        );
        assert_eq!(
            <Tuple<Row> as Value>::type_name(),
            <Row as Value>::type_name(),
            "and again, from what was kept"
        );
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(PLAIN)
            .unwrap()
            .insert((1, "a"), (7, Some("x"), (5, 0, "v"), true))
            .unwrap();
        txn.open_table(NAMED)
            .unwrap()
            .insert((0, "b"), (8, None, (2, 0, ""), false))
            .unwrap();
        txn.commit().unwrap();
        let txn = db.begin_read().unwrap();
        let plain = txn.open_table(PLAIN).unwrap();
        let rows: Vec<_> = plain
            .iter()
            .unwrap()
            .map(|row| {
                let (key, value) = row.unwrap();
                (key.value().1.to_owned(), value.value().1.map(str::to_owned))
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("b".to_owned(), None),
                ("a".to_owned(), Some("x".to_owned()))
            ],
            "one table, in the tuple's order"
        );
        let named = txn.open_table(NAMED).unwrap();
        assert_eq!(named.get((1, "a")).unwrap().unwrap().value().0, 7);
    }
}
