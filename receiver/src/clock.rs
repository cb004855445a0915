//! The receiver's one clock.

/// Now, in unix seconds: the clock of signatures, retention and data age.
pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Now, in unix microseconds: when a web hook arrived and when a document fetch began, so that a
/// document supersedes exactly the changes received before its fetch began.
pub fn now_micros() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000) as i64
}
