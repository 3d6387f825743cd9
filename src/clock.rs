//! The time as the program sees it. Production reads the system clock; tests
//! move it forward (`advance`) to reach expiries and rate-limit windows
//! without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use time::OffsetDateTime;

#[derive(Clone, Default, Debug)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    pub fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
            + time::Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Whole unix seconds, the unit the store uses.
    pub fn unix(&self) -> i64 {
        self.now().unix_timestamp()
    }

    /// Unix milliseconds, the unit rate-limit windows count in.
    pub fn unix_ms(&self) -> i64 {
        i64::try_from(self.now().unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
    }

    /// Moves this clock (and every clone of it) forward.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_moves_every_clone() {
        let clock = Clock::default();
        let other = clock.clone();
        let before = other.unix();
        clock.advance(Duration::from_secs(3600));
        assert!(other.unix() >= before + 3600);
    }
}
