//! "Where a token was used" without a database write per request: each
//! verified request notes its client address in the token's usage entry
//! (in [`super::usage`]); the flush writes what was noted alongside "last
//! used".
//!
//! The entry keeps a view of the token's addresses as the store last showed
//! them. A request from an address in that view, seen within 30 days, only
//! moves a time (no allocation); any other address keeps the request's
//! method, path and user agent, and the flush decides in the database,
//! inside one transaction per token, whether it is new: only then, and
//! only if the token was used before, the owner wants it and no alert went
//! out in the hour, the alert goes into the outbox. The hour is claimed by
//! a conditional update, so instances sharing a database send one alert.

use std::net::IpAddr;

use crate::mail::{self, Mail};
use crate::store::token_ips::{self, KEPT, NEW_AFTER_SECONDS};
use crate::store::{AuditEvent, Db, StoreError, record_audit};

use super::usage::Use;

const MAX_PATH: usize = 512;
const MAX_METHOD: usize = 16;
const MAX_AGENT: usize = 512;

/// The request that brought an address the verifier did not know as in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstRequest {
    pub method: String,
    pub path: String,
    pub user_agent: Option<String>,
}

/// Uses of one address by a token since the last flush.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingIp {
    pub ip: IpAddr,
    pub first_at: i64,
    pub last_at: i64,
    /// `None` when the view showed the address in use within 30 days: the
    /// flush then only moves its last-seen time.
    pub first: Option<Box<FirstRequest>>,
}

/// A [`PendingIp`] taken for the flush.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpUse {
    pub token_id: i64,
    pub seen: PendingIp,
}

/// One token's addresses: the store's view and what waits to be written.
#[derive(Debug, Default)]
pub(super) struct IpTrack {
    /// `(address, last seen)` as the store last showed them; `None` until
    /// the first flush of this token's entry.
    known: Option<Vec<(IpAddr, i64)>>,
    pending: Vec<PendingIp>,
}

impl IpTrack {
    /// Notes a use from `used.ip` at `at` (unix seconds).
    pub(super) fn record(&mut self, at: i64, used: &Use<'_>) {
        if let Some(p) = self.pending.iter_mut().find(|p| p.ip == used.ip) {
            p.first_at = p.first_at.min(at);
            p.last_at = p.last_at.max(at);
            return;
        }
        let in_use = self.known.as_ref().is_some_and(|known| {
            known
                .iter()
                .any(|&(ip, seen)| ip == used.ip && at - seen < NEW_AFTER_SECONDS)
        });
        let first = (!in_use).then(|| {
            Box::new(FirstRequest {
                method: truncate(used.method, MAX_METHOD).to_owned(),
                path: truncate(used.path, MAX_PATH).to_owned(),
                user_agent: used.user_agent.map(|a| truncate(a, MAX_AGENT).to_owned()),
            })
        });
        // More addresses in one interval than are kept: the least recently
        // seen would be dropped by the store anyway.
        if self.pending.len() >= KEPT as usize
            && let Some(oldest) = self
                .pending
                .iter()
                .enumerate()
                .min_by_key(|(_, p)| p.last_at)
                .map(|(i, _)| i)
        {
            self.pending.swap_remove(oldest);
        }
        // Most tokens are used from one address: room for one, where a
        // first push would make room for four.
        self.pending.reserve_exact(1);
        self.pending.push(PendingIp {
            ip: used.ip,
            first_at: at,
            last_at: at,
            first,
        });
    }

    pub(super) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Moves every pending address into `out`.
    pub(super) fn take(&mut self, token_id: i64, out: &mut Vec<IpUse>) {
        // Taken with its room: a token used only now and then holds no
        // list between its uses.
        let pending = std::mem::take(&mut self.pending);
        out.extend(pending.into_iter().map(|seen| IpUse { token_id, seen }));
    }

    /// Puts back a use that could not be written, unless the address was
    /// used again meanwhile (that use is newer; its first request, if kept,
    /// is the one to report).
    pub(super) fn restore(&mut self, seen: PendingIp) {
        match self.pending.iter_mut().find(|p| p.ip == seen.ip) {
            Some(p) => {
                p.first_at = p.first_at.min(seen.first_at);
                if p.first.is_none() {
                    p.first = seen.first;
                }
            }
            None => self.pending.push(seen),
        }
    }

    /// What the store now shows for this token.
    pub(super) fn learn(&mut self, mut known: Vec<(IpAddr, i64)>) {
        // Kept for as long as the token is cached: no spare room (a
        // collected list of one address has room for four).
        known.shrink_to_fit();
        self.known = Some(known);
    }

    /// A known address was written as seen at `at`.
    pub(super) fn touch(&mut self, ip: IpAddr, at: i64) {
        if let Some(known) = &mut self.known
            && let Some(entry) = known.iter_mut().find(|(k, _)| *k == ip)
        {
            entry.1 = entry.1.max(at);
        }
    }
}

/// What a flush of addresses did.
#[derive(Debug, Default)]
pub(super) struct Written {
    /// Tokens whose addresses were read back: `(token_id, [(ip, last seen)])`.
    pub learned: Vec<(i64, Vec<(IpAddr, i64)>)>,
    /// Known addresses whose time moved.
    pub touched: Vec<(i64, IpAddr, i64)>,
    /// Alerts put in the outbox.
    pub alerts: usize,
}

/// A flush that stopped part-way: what it did, what is left, and why.
pub(super) struct Unwritten {
    pub done: Written,
    pub rest: Vec<IpUse>,
    pub error: StoreError,
}

/// Writes a batch of address uses at `now`: one statement for the known
/// addresses, then one transaction per token with an address to check.
pub(super) async fn write(db: &Db, batch: Vec<IpUse>, now: i64) -> Result<Written, Unwritten> {
    let (known, mut check): (Vec<IpUse>, Vec<IpUse>) =
        batch.into_iter().partition(|u| u.seen.first.is_none());
    let mut done = Written::default();
    if let Err(error) = touch(db, &known).await {
        check.extend(known);
        return Err(Unwritten {
            done,
            rest: check,
            error,
        });
    }
    done.touched = known
        .iter()
        .map(|u| (u.token_id, u.seen.ip, u.seen.last_at))
        .collect();
    check.sort_by_key(|u| (u.token_id, u.seen.first_at));
    // A token whose view is not yet filled (every token after a start, on
    // each instance) usually comes back from an address the store already
    // shows in use: one read for all of them, and only a token with an
    // address the store does not show goes through a transaction of its
    // own. (After a restart with 200,000 busy tokens, the first flush was
    // 200,000 transactions.)
    let mut check = match seen_before(db, check, &mut done).await {
        Ok(check) => check,
        Err((check, error)) => {
            return Err(Unwritten {
                done,
                rest: check,
                error,
            });
        }
    };
    let mut start = 0;
    while start < check.len() {
        let token_id = check[start].token_id;
        let end = start + check[start..].partition_point(|u| u.token_id == token_id);
        match check_token(db, token_id, &check[start..end], now).await {
            Ok((known, alerts)) => {
                done.learned.push((token_id, known));
                done.alerts += alerts;
            }
            Err(error) => {
                return Err(Unwritten {
                    done,
                    rest: check.split_off(start),
                    error,
                });
            }
        }
        start = end;
    }
    Ok(done)
}

/// Writes the uses of tokens whose every address the store shows in use
/// (seen within [`NEW_AFTER_SECONDS`] of the use) as known addresses, and
/// fills those tokens' views; gives back the uses of the other tokens
/// (sorted by token, as given) for [`check_token`].
async fn seen_before(
    db: &Db,
    check: Vec<IpUse>,
    done: &mut Written,
) -> Result<Vec<IpUse>, (Vec<IpUse>, StoreError)> {
    let mut ids: Vec<i64> = check.iter().map(|u| u.token_id).collect();
    ids.dedup();
    let mut stored: std::collections::HashMap<i64, Vec<(IpAddr, i64)>> =
        std::collections::HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(ROWS_PER_READ) {
        match token_ips::for_tokens(db, chunk).await {
            Ok(rows) => {
                for (token_id, ip, at) in rows {
                    if let Ok(ip) = ip.parse() {
                        stored.entry(token_id).or_default().push((ip, at));
                    }
                }
            }
            Err(error) => return Err((check, error)),
        }
    }
    let in_use = |u: &IpUse| {
        stored.get(&u.token_id).is_some_and(|ips| {
            ips.iter()
                .any(|&(ip, at)| ip == u.seen.ip && at > u.seen.first_at - NEW_AFTER_SECONDS)
        })
    };
    // Tokens whose every use is from an address in use (`check` is sorted
    // by token).
    let all_in_use: std::collections::HashSet<i64> = check
        .chunk_by(|a, b| a.token_id == b.token_id)
        .filter(|uses| uses.iter().all(in_use))
        .map(|uses| uses[0].token_id)
        .collect();
    let (known, mut rest): (Vec<IpUse>, Vec<IpUse>) = check
        .into_iter()
        .partition(|u| all_in_use.contains(&u.token_id));
    if known.is_empty() {
        return Ok(rest);
    }
    if let Err(error) = touch(db, &known).await {
        rest.extend(known);
        rest.sort_by_key(|u| (u.token_id, u.seen.first_at));
        return Err((rest, error));
    }
    for uses in known.chunk_by(|a, b| a.token_id == b.token_id) {
        let token_id = uses[0].token_id;
        let mut view = stored.remove(&token_id).unwrap_or_default();
        for u in uses {
            if let Some(entry) = view.iter_mut().find(|(ip, _)| *ip == u.seen.ip) {
                entry.1 = entry.1.max(u.seen.last_at);
            }
        }
        done.learned.push((token_id, view));
    }
    Ok(rest)
}

/// Moves the last-seen time of addresses the store already has, in one statement.
async fn touch(db: &Db, uses: &[IpUse]) -> Result<(), StoreError> {
    let rows: Vec<(i64, String, i64)> = uses
        .iter()
        .map(|u| (u.token_id, u.seen.ip.to_string(), u.seen.last_at))
        .collect();
    token_ips::touch_known(db, &rows).await
}

/// Tokens per statement when reading stored addresses.
const ROWS_PER_READ: usize = 500;

/// One token's addresses the view did not show as in use, in the order
/// they were first used: written, and each checked against the stored
/// addresses as they stand inside the transaction.
async fn check_token(
    db: &Db,
    token_id: i64,
    uses: &[IpUse],
    now: i64,
) -> Result<(Vec<(IpAddr, i64)>, usize), StoreError> {
    let mut tx = db.begin().await?;
    let Some(facts) = token_ips::alert_facts(&mut tx, token_id).await? else {
        // The token is gone (a test database reset, say): nothing to keep.
        tx.rollback().await?;
        return Ok((Vec::new(), 0));
    };
    let mut stored = token_ips::for_token(&mut tx, token_id).await?;
    let mut alerts = 0;
    for u in uses {
        let ip = u.seen.ip.to_string();
        // A row's last use at or after this one was written from this
        // very batch of uses (the address write failed and was retried):
        // not a use before it.
        let used_before =
            !stored.is_empty() || facts.last_used_at.is_some_and(|at| at < u.seen.first_at);
        let is_new = stored
            .iter()
            .find(|s| s.ip == ip)
            .is_none_or(|s| s.last_seen_at <= u.seen.first_at - NEW_AFTER_SECONDS);
        token_ips::upsert(&mut tx, token_id, &ip, u.seen.first_at, u.seen.last_at).await?;
        if let (true, true, true, false, Some(first)) = (
            is_new,
            used_before,
            facts.alerts_on,
            facts.revoked,
            u.seen.first.as_deref(),
        ) && token_ips::claim_alert(&mut tx, token_id, u.seen.first_at).await?
        {
            let detail = format!("{} {}", first.method, first.path);
            record_audit(
                &mut tx,
                &AuditEvent {
                    organization_id: Some(facts.organization_id),
                    subject_user_id: Some(facts.user_id),
                    token_id: Some(token_id),
                    action: "token.new_ip",
                    detail: Some(&detail),
                    ip: Some(&ip),
                    user_agent: first.user_agent.as_deref(),
                    ..AuditEvent::default()
                },
            )
            .await?;
            let mail = Mail::TokenNewIp {
                token_id,
                at: u.seen.first_at,
                ip: ip.clone(),
                method: first.method.clone(),
                path: first.path.clone(),
                user_agent: first.user_agent.clone(),
            };
            mail::enqueue(&mut tx, &facts.email, &mail, now).await?;
            alerts += 1;
        }
        stored = token_ips::for_token(&mut tx, token_id).await?;
    }
    tx.commit().await?;
    let known = stored
        .iter()
        .filter_map(|s| Some((s.ip.parse().ok()?, s.last_seen_at)))
        .collect();
    Ok((known, alerts))
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

    fn a_use(ip: &str) -> Use<'static> {
        Use {
            method: "GET",
            path: "/x",
            ip: ip.parse().unwrap(),
            user_agent: Some("curl/8"),
        }
    }

    fn taken(track: &mut IpTrack) -> Vec<IpUse> {
        let mut out = Vec::new();
        track.take(1, &mut out);
        out
    }

    #[test]
    fn a_repeated_address_only_moves_its_times() {
        let mut track = IpTrack::default();
        track.record(100, &a_use("192.0.2.1"));
        track.record(105, &a_use("192.0.2.1"));
        track.record(101, &a_use("192.0.2.2"));
        let out = taken(&mut track);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].seen.first_at, out[0].seen.last_at), (100, 105));
        assert!(!track.has_pending());
    }

    #[test]
    fn only_addresses_not_known_as_in_use_keep_their_request() {
        let mut track = IpTrack::default();
        // Before the store was asked, every address is checked.
        track.record(100, &a_use("192.0.2.1"));
        let out = taken(&mut track);
        let first = out[0].seen.first.as_deref().unwrap();
        assert_eq!(
            (
                first.method.as_str(),
                first.path.as_str(),
                first.user_agent.as_deref()
            ),
            ("GET", "/x", Some("curl/8"))
        );
        track.learn(vec![("192.0.2.1".parse().unwrap(), 100)]);
        track.record(200, &a_use("192.0.2.1"));
        track.record(200, &a_use("198.51.100.7"));
        let out = taken(&mut track);
        assert!(out[0].seen.first.is_none(), "known and in use");
        assert!(out[1].seen.first.is_some(), "not known");
        // Known, but unused for 30 days: checked again.
        track.record(100 + NEW_AFTER_SECONDS, &a_use("192.0.2.1"));
        assert!(taken(&mut track)[0].seen.first.is_some());
    }

    #[test]
    fn at_most_the_kept_number_of_addresses_wait() {
        let mut track = IpTrack::default();
        for n in 0..8 {
            track.record(100 + n, &a_use(&format!("192.0.2.{n}")));
        }
        let out = taken(&mut track);
        assert_eq!(out.len(), KEPT as usize);
        let mut ips: Vec<String> = out.iter().map(|u| u.seen.ip.to_string()).collect();
        ips.sort();
        assert_eq!(
            ips,
            [
                "192.0.2.3",
                "192.0.2.4",
                "192.0.2.5",
                "192.0.2.6",
                "192.0.2.7"
            ]
        );
    }

    #[test]
    fn a_restored_use_keeps_its_request_under_a_newer_one() {
        let mut track = IpTrack::default();
        track.record(100, &a_use("192.0.2.1"));
        let mut out = taken(&mut track);
        track.learn(vec![("192.0.2.1".parse().unwrap(), 100)]);
        track.record(150, &a_use("192.0.2.1"));
        track.restore(out.remove(0).seen);
        let again = taken(&mut track);
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].seen.first_at, again[0].seen.last_at), (100, 150));
        assert!(again[0].seen.first.is_some());
    }
}
