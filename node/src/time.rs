//! The wall clock: now, in seconds and as an RFC 3339 timestamp (formatting and parsing are
//! pure and live in `shoal_protocol::time`), and [`Clock`], the wall clock as a part that the
//! simulator replaces with a skewed one per node.

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

/// The wall clock as a swappable part: production reads the system's ([`SystemClock`]); the
/// simulator gives each node its own, skewed, or set back at a restart.
pub trait Clock: Send + Sync + 'static {
    /// Microseconds since the Unix epoch.
    fn unix_micros(&self) -> i64;

    /// Seconds since the Unix epoch.
    fn unix_now(&self) -> i64 {
        self.unix_micros().div_euclid(1_000_000)
    }
}

/// A clock shared by the parts of one node.
pub type SharedClock = std::sync::Arc<dyn Clock>;

/// A clock that always says `unix_secs` (tests).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub i64);

impl Clock for FixedClock {
    fn unix_micros(&self) -> i64 {
        self.0.saturating_mul(1_000_000)
    }
}

/// The system's wall clock, shared.
pub fn system_clock() -> SharedClock {
    std::sync::Arc::new(SystemClock)
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn unix_micros(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
    }
}
