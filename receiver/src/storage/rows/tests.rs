use super::*;

fn values() -> [Option<FlagValue>; 6] {
    [
        None,
        Some(FlagValue::Bool(false)),
        Some(FlagValue::Bool(true)),
        Some(FlagValue::Integer(-7)),
        Some(FlagValue::Float(0.25)),
        Some(FlagValue::String("blue".into())),
    ]
}

fn flag(value: Option<FlagValue>) -> Slot<FlagState> {
    Slot {
        order: Order {
            seq: Some(9),
            ts_micros: Some(-3),
        },
        state: Some(FlagState {
            enabled: true,
            value,
            state_id: Some(4),
            identity_id: None,
        }),
        arrived_micros: 12,
    }
}

fn segment(value: Option<FlagValue>) -> Slot<SegmentState> {
    Slot {
        order: Order::default(),
        state: Some(SegmentState {
            enabled: false,
            value,
            priority: Some(-1),
            name: Some("beta".into()),
            state_id: None,
        }),
        arrived_micros: 0,
    }
}

fn description(initial_value: Option<FlagValue>) -> FeatureMeta {
    FeatureMeta {
        name: "f".into(),
        feature_type: Some("STANDARD".into()),
        description: None,
        initial_value,
        default_enabled: Some(false),
        created_date: Some("2026-01-01T00:00:00Z".into()),
        order: Order {
            seq: None,
            ts_micros: Some(5),
        },
    }
}

#[test]
fn every_field_reads_back_as_written() {
    let mut out = Vec::new();
    for value in values() {
        let written = flag(value.clone());
        assert_eq!(
            flag_slot_of(flag_slot(&mut out, &written)).unwrap(),
            written
        );
        let written = segment(value.clone());
        assert_eq!(
            segment_slot_of(segment_slot(&mut out, &written)).unwrap(),
            written
        );
        let written = description(value);
        assert_eq!(meta_of(meta(&mut out, &written)).unwrap(), written);
    }
    for default_enabled in [None, Some(true), Some(false)] {
        let written = FeatureMeta {
            default_enabled,
            ..FeatureMeta::default()
        };
        assert_eq!(meta_of(meta(&mut out, &written)).unwrap(), written);
    }
    let identity = Slot {
        state: Some(FlagState {
            enabled: false,
            value: None,
            state_id: None,
            identity_id: Some(u64::MAX),
        }),
        ..flag(None)
    };
    assert_eq!(
        flag_slot_of(flag_slot(&mut out, &identity)).unwrap(),
        identity
    );
    let tombstone: Slot<FlagState> = Slot {
        order: Order::default(),
        state: None,
        arrived_micros: -1,
    };
    assert_eq!(
        flag_slot_of(flag_slot(&mut out, &tombstone)).unwrap(),
        tombstone
    );
}

/// The layout is the file's format: a change to it must come with a new schema version.
#[test]
fn the_layout_is_the_one_schema_4_files_hold() {
    let mut out = Vec::new();
    let slot = flag(Some(FlagValue::String("on".into())));
    let mut expected = vec![0b0001_1111];
    expected.extend_from_slice(&12i64.to_le_bytes());
    expected.extend_from_slice(&9u64.to_le_bytes());
    expected.extend_from_slice(&(-3i64).to_le_bytes());
    expected.extend_from_slice(&[5, 2, 0, 0, 0, b'o', b'n']);
    expected.extend_from_slice(&4u64.to_le_bytes());
    assert_eq!(flag_slot(&mut out, &slot), expected.as_slice());

    let mut expected = vec![0b0101_0101, 1, 0, 0, 0, b'f'];
    expected.extend_from_slice(&[8, 0, 0, 0]);
    expected.extend_from_slice(b"STANDARD");
    expected.push(2);
    expected.extend_from_slice(&[20, 0, 0, 0]);
    expected.extend_from_slice(b"2026-01-01T00:00:00Z");
    expected.extend_from_slice(&5i64.to_le_bytes());
    let written = description(Some(FlagValue::Bool(true)));
    assert_eq!(meta(&mut out, &written), expected.as_slice());
}

#[test]
fn a_damaged_row_is_refused_never_misread() {
    let mut out = Vec::new();
    let rows = [
        flag_slot(&mut out, &flag(Some(FlagValue::String("blue".into())))).to_vec(),
        segment_slot(&mut out, &segment(Some(FlagValue::Float(1.5)))).to_vec(),
        meta(&mut out, &description(Some(FlagValue::Integer(3)))).to_vec(),
    ];
    for row in &rows {
        for len in 0..row.len() {
            let cut = &row[..len];
            assert!(flag_slot_of(cut).is_err() && segment_slot_of(cut).is_err());
            assert!(meta_of(cut).is_err(), "{len} bytes of {row:?}");
        }
        let mut longer = row.clone();
        longer.push(0);
        assert!(flag_slot_of(&longer).is_err() && meta_of(&longer).is_err());
    }
    // A kind of value no layout writes.
    let mut unknown = rows[0].clone();
    unknown[25] = 9;
    assert!(matches!(
        flag_slot_of(&unknown),
        Err(WriteError::Corrupt(_))
    ));
    // A description with a field no layout writes.
    let mut unknown_field = rows[2].clone();
    unknown_field[0] |= 1 << 7;
    assert!(matches!(
        meta_of(&unknown_field),
        Err(WriteError::Corrupt(_))
    ));
    // A tombstone that claims a state's fields.
    let mut tombstone = vec![SLOT_ENABLED];
    tombstone.extend_from_slice(&0i64.to_le_bytes());
    assert!(flag_slot_of(&tombstone).is_err());
    // Text that is not UTF-8.
    let bad_text = [0, 1, 0, 0, 0, 0xff, 0];
    assert!(meta_of(&bad_text).is_err());
}
