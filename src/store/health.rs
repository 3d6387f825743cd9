//! Whether this instance's writes are reaching the database. A full disk
//! lets reads and even small writes pass while real ones fail, so a probe
//! alone cannot tell; what the instance saw its own writes do can.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a storage failure keeps `/readyz` at 503 when no write has
/// succeeded since: long enough for a load balancer to notice, short enough
/// that an instance nobody sends writes to comes back by itself.
pub const FAILURE_MEMORY: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct WriteHealth {
    last_failure: Mutex<Option<(Instant, &'static str)>>,
}

impl WriteHealth {
    /// A write failed because the database could not store it.
    pub fn failed(&self, reason: &'static str) {
        *self.lock() = Some((Instant::now(), reason));
    }

    /// A write succeeded: whatever failed before has passed.
    pub fn succeeded(&self) {
        let mut last = self.lock();
        if last.is_some() {
            *last = None;
        }
    }

    /// Why writes are failing, if the last one failed within
    /// [`FAILURE_MEMORY`] and none has succeeded since.
    pub fn failing(&self) -> Option<&'static str> {
        let last = self.lock();
        last.filter(|(at, _)| at.elapsed() < FAILURE_MEMORY)
            .map(|(_, reason)| reason)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Instant, &'static str)>> {
        // Nothing can be left half-written under this lock: poisoning is moot.
        self.last_failure.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_reported_until_a_write_succeeds() {
        let health = WriteHealth::default();
        assert_eq!(health.failing(), None);
        health.failed("the disk is full");
        assert_eq!(health.failing(), Some("the disk is full"));
        health.succeeded();
        assert_eq!(health.failing(), None);
    }

    #[test]
    fn an_old_failure_is_forgotten() {
        let health = WriteHealth::default();
        let long_ago = Instant::now()
            .checked_sub(FAILURE_MEMORY)
            .expect("uptime over a minute");
        *health.lock() = Some((long_ago, "the disk is full"));
        assert_eq!(health.failing(), None);
    }
}
