//! flagpost's event ids, `evt_{instance:016x}_{sequence:012}` (written by
//! `flagpost::store::events::event_id`): the database an event comes from and where it stands in
//! that database's history. The receiver orders by them ([`crate::documents::sender`]) and keys
//! remembered request ids by them (so one sender's ids are stored in order).

/// Where a flagpost event stands in its sender's history, as its `webhook-id` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventOrigin {
    /// The random id of the flagpost database that committed the event.
    pub instance: u64,
    pub sequence: u64,
}

/// Reads a flagpost event id, `evt_{instance:016x}_{sequence:012}` (written by
/// `flagpost::store::events::event_id`); `None` for any other id. Only the exact form is read:
/// no sign, no upper case, no padding, so that one event has one id.
pub fn parse_event_id(id: &str) -> Option<EventOrigin> {
    let (instance, sequence) = id.strip_prefix("evt_")?.split_once('_')?;
    let lower_hex = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
    if instance.len() != 16 || !instance.bytes().all(lower_hex) {
        return None;
    }
    if !(12..=20).contains(&sequence.len()) || !sequence.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    // Zero-padded to 12 digits, no further: a 13th digit is never a leading zero.
    if sequence.len() > 12 && sequence.starts_with('0') {
        return None;
    }
    Some(EventOrigin {
        instance: u64::from_str_radix(instance, 16).ok()?,
        sequence: sequence.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flagpost_event_ids_read_back_and_nothing_else_does() {
        for (instance, sequence) in [(0, 1), (0x8c1f_0000_dead_beef, 42), (u64::MAX, u64::MAX)] {
            let id = flagpost::store::events::event_id(instance, sequence);
            assert_eq!(
                parse_event_id(&id),
                Some(EventOrigin { instance, sequence }),
                "{id}"
            );
        }
        for id in [
            "evt-1",
            "evt_1_000000000001",
            "evt_000000000000000A_000000000001",
            "evt_0000000000000001_+00000000001",
            "evt_0000000000000001_00000000001",
            "evt_0000000000000001_0000000000001",
            "evt_0000000000000001_000000000001_",
            "evt_0000000000000001_000000000001x",
            "evt_0000000000000001_99999999999999999999",
            "",
        ] {
            assert_eq!(parse_event_id(id), None, "{id}");
        }
    }
}
