//! "Last used" without a database write per request: each verified request
//! overwrites its token's pending use in memory (in [`super::usage`]), and
//! a background task takes every pending use every few seconds and writes
//! them in small statements spread over a second, so the database's share
//! of the work never arrives as one burst (and once more, all at once, at
//! shutdown).

use std::net::IpAddr;
use std::time::Duration;

use tokio::sync::watch;

use crate::store::verification::{self, LastUse};
use crate::store::{Db, StoreError};

/// The longest path kept; a longer one is cut (on a character boundary).
const MAX_PATH: usize = 512;
const MAX_METHOD: usize = 16;

/// A token's latest use that is not written yet. The method and path share
/// one allocation: a busy deployment has one of these per token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pending {
    at: i64,
    ip: IpAddr,
    /// Where the method ends in `text` (at most [`MAX_METHOD`]).
    method_end: u8,
    /// The method, then the path.
    text: String,
}

impl Pending {
    fn new(at: i64, method: &str, path: &str, ip: IpAddr) -> Pending {
        let method = truncate(method, MAX_METHOD);
        let mut text = String::with_capacity(method.len() + path.len());
        text.push_str(method);
        text.push_str(path);
        Pending {
            at,
            ip,
            method_end: method.len() as u8,
            text,
        }
    }

    fn method(&self) -> &str {
        &self.text[..usize::from(self.method_end)]
    }

    fn path(&self) -> &str {
        &self.text[usize::from(self.method_end)..]
    }

    /// Records this use in `slot`, replacing an earlier one. `path` must
    /// already be without its query string.
    pub(super) fn record(
        slot: &mut Option<Pending>,
        at: i64,
        method: &str,
        path: &str,
        ip: IpAddr,
    ) {
        let path = truncate(path, MAX_PATH);
        match slot {
            // The common case, a client repeating itself: no allocation.
            Some(p) if p.method() == truncate(method, MAX_METHOD) && p.path() == path => {
                p.at = p.at.max(at);
                p.ip = ip;
            }
            _ => *slot = Some(Pending::new(at, method, path, ip)),
        }
    }

    pub(super) fn into_last_use(self, token_id: i64) -> LastUse {
        let method = self.method().to_owned();
        // The path keeps the allocation: one allocation per written use.
        let mut path = self.text;
        path.drain(..usize::from(self.method_end));
        LastUse {
            token_id,
            at: self.at,
            method,
            path,
            ip: self.ip,
        }
    }

    /// A use that could not be written, to be tried again.
    pub(super) fn from_last_use(u: LastUse) -> Pending {
        Pending::new(u.at, &u.method, &u.path, u.ip)
    }
}

/// Rows per statement when a batch is spread out: a few milliseconds of
/// database work each.
const ROWS_PER_WRITE: usize = 500;

/// Where [`write_spread`] writes: the store, or a test's record.
pub(super) trait Sink {
    fn write<'a>(
        &'a mut self,
        uses: &'a [LastUse],
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a;
}

impl Sink for &Db {
    fn write<'a>(
        &'a mut self,
        uses: &'a [LastUse],
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a {
        verification::record_last_used(self, uses)
    }
}

/// Uses that were not written, for the caller to put back: what was left
/// when the stop signal came, or the rows of the statement that failed and
/// everything after them (with its error).
pub(super) struct Unwritten {
    pub rest: Vec<LastUse>,
    pub error: Option<StoreError>,
}

/// Writes `batch` to `sink`, [`ROWS_PER_WRITE`] rows at a time, with
/// pauses between statements that spread the whole batch over about
/// `spread`. Stops early when `stop` changes or a statement fails.
pub(super) async fn write_spread(
    batch: Vec<LastUse>,
    spread: Duration,
    stop: &mut watch::Receiver<bool>,
    sink: &mut impl Sink,
) -> Result<(), Unwritten> {
    let writes = batch.len().div_ceil(ROWS_PER_WRITE).max(1);
    let pause = spread / u32::try_from(writes).unwrap_or(u32::MAX);
    let mut start = 0;
    while start < batch.len() {
        if start > 0 {
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = stop.changed() => return Err(unwritten(batch, start, None)),
            }
        }
        let end = batch.len().min(start + ROWS_PER_WRITE);
        if let Err(e) = sink.write(&batch[start..end]).await {
            return Err(unwritten(batch, start, Some(e)));
        }
        crate::metrics::last_used_written(&batch[start..end], crate::store::unix_now());
        start = end;
    }
    Ok(())
}

fn unwritten(mut batch: Vec<LastUse>, from: usize, error: Option<StoreError>) -> Unwritten {
    Unwritten {
        rest: batch.split_off(from),
        error,
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_use_replaces_an_earlier_one() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mut slot = None;
        Pending::record(&mut slot, 100, "GET", "/a", ip);
        Pending::record(&mut slot, 101, "POST", "/b", ip);
        let u = slot.take().unwrap().into_last_use(1);
        assert_eq!(
            (u.at, u.method.as_str(), u.path.as_str()),
            (101, "POST", "/b")
        );
        // The same request again only moves the time (never backwards).
        Pending::record(&mut slot, 200, "GET", "/c", ip);
        Pending::record(&mut slot, 150, "GET", "/c", "::1".parse().unwrap());
        let u = slot.unwrap().into_last_use(1);
        assert_eq!((u.at, u.ip.to_string().as_str()), (200, "::1"));
    }

    #[test]
    fn long_paths_are_cut_on_a_character_boundary() {
        let path = format!("/{}", "é".repeat(400));
        let mut slot = None;
        Pending::record(&mut slot, 1, "GET", &path, "::1".parse().unwrap());
        let u = slot.unwrap().into_last_use(1);
        assert!(u.path.len() <= MAX_PATH && path.starts_with(&u.path));
    }

    fn uses(n: i64) -> Vec<LastUse> {
        (0..n)
            .map(|id| LastUse {
                token_id: id,
                at: 1,
                method: "GET".into(),
                path: "/".into(),
                ip: "::1".parse().unwrap(),
            })
            .collect()
    }

    fn ids(uses: &[LastUse]) -> Vec<i64> {
        uses.iter().map(|u| u.token_id).collect()
    }

    /// Records each statement's token ids; fails the `fail_at`th one; sends
    /// the stop signal after the first when given a sender.
    #[derive(Default)]
    struct Record {
        written: Vec<Vec<i64>>,
        fail_at: Option<usize>,
        stop_after_first: Option<watch::Sender<bool>>,
    }

    impl Sink for Record {
        async fn write(&mut self, uses: &[LastUse]) -> Result<(), StoreError> {
            if self.fail_at == Some(self.written.len() + 1) {
                return Err(StoreError::Unavailable);
            }
            self.written.push(ids(uses));
            if let Some(stop) = &self.stop_after_first {
                stop.send(true).unwrap();
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_spread_batch_is_written_whole_in_order_in_small_statements() {
        let (_tx, mut stop) = watch::channel(false);
        let mut sink = Record::default();
        let spread = Duration::from_millis(60);
        let started = std::time::Instant::now();
        let result = write_spread(uses(1200), spread, &mut stop, &mut sink).await;
        assert!(result.is_ok());
        let sizes: Vec<usize> = sink.written.iter().map(Vec::len).collect();
        assert_eq!(sizes, [500, 500, 200]);
        assert_eq!(sink.written.concat(), (0..1200).collect::<Vec<_>>());
        // Two pauses of a third of the spread each.
        assert!(
            started.elapsed() >= spread * 2 / 3,
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_failed_statement_hands_back_its_rows_and_the_rest() {
        let (_tx, mut stop) = watch::channel(false);
        let mut sink = Record {
            fail_at: Some(2),
            ..Record::default()
        };
        let result = write_spread(uses(1200), Duration::ZERO, &mut stop, &mut sink).await;
        let Err(u) = result else {
            panic!("the failure was not reported")
        };
        assert!(matches!(u.error, Some(StoreError::Unavailable)));
        assert_eq!(ids(&u.rest), (500..1200).collect::<Vec<_>>());
        assert_eq!(sink.written.len(), 1, "nothing is written after a failure");
    }

    #[tokio::test]
    async fn a_stop_during_a_pause_hands_back_what_is_left() {
        let (tx, mut stop) = watch::channel(false);
        let mut sink = Record {
            stop_after_first: Some(tx),
            ..Record::default()
        };
        let result = write_spread(uses(1200), Duration::from_secs(60), &mut stop, &mut sink).await;
        let Err(u) = result else {
            panic!("the stop was not noticed")
        };
        assert!(u.error.is_none());
        assert_eq!(ids(&u.rest), (500..1200).collect::<Vec<_>>());
        assert_eq!(sink.written.len(), 1);
    }

    #[test]
    fn a_use_survives_the_round_trip_through_a_failed_write() {
        let mut slot = None;
        Pending::record(&mut slot, 5, "PUT", "/x", "2001:db8::1".parse().unwrap());
        let p = slot.unwrap();
        assert_eq!(Pending::from_last_use(p.clone().into_last_use(9)), p);
    }
}
