//! The wall clock: now, in seconds and as an RFC 3339 timestamp (formatting and parsing are
//! pure and live in `shoal_protocol::time`).

use std::time::{SystemTime, UNIX_EPOCH};

pub use shoal_protocol::time::rfc3339;

/// Seconds since the Unix epoch, now (0 if the clock is before 1970, which no real clock is).
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Now as `2026-11-25T18:27:00Z`.
pub fn rfc3339_now() -> String {
    rfc3339(unix_now())
}
