//! The receiver's one clock.

/// Now, in unix seconds: the clock of signatures, retention and data age.
pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
