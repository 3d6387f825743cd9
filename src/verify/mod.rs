//! The verifier: answers "is this token good?" for the bearer endpoints
//! without a database round trip per request, and forgets its answers the
//! moment a change makes them wrong.
//!
//! - [`cache`]: the bounded digest → answer map, with its stale-fill guard.
//!   Unknown digests are cached too (in a map of their own, so garbage
//!   cannot push real tokens out).
//! - [`rate_limit`]: per-token read and write budgets.
//! - [`cluster`]: on PostgreSQL, those budgets shared by every instance
//!   through a ledger exchanged every 200 ms.
//! - [`last_used`]: "last used" coalesced in memory, flushed in batches.
//! - [`ips`]: each token's recent client addresses, flushed in the same
//!   batches, and the new-address alert decided there.
//! - [`usage`]: both of those for one token, in one entry its cached
//!   answer points at.
//! - [`listener`]: on PostgreSQL, `LISTEN keysmith_invalidate`, so a change
//!   made on another instance reaches this one's cache.
//!
//! Changes reach the cache through [`Verifier::invalidate`] (synchronous,
//! this instance) and [`store::invalidation::announce`] (other instances);
//! [`commit_and_invalidate`] does both for a write transaction.

mod cache;
mod cluster;
mod ips;
mod last_used;
mod listener;
pub mod rate_limit;
mod usage;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::{Any, Transaction};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::config::Config;
use crate::mail::MailWaker;
use crate::store::invalidation::{self, Invalidation};
use crate::store::rotation;
use crate::store::verification::{self, TokenFacts};
use crate::store::{Backend, Db, StoreError, StoreResult};
use crate::token::{ScopeSet, TokenDigest};
use cache::DigestCache;
use rate_limit::{Admission, RateDecision, RequestClass};
pub use usage::Use;
use usage::{TokenUsage, UsageTable};

/// Most tokens kept in memory. A cached token costs about 900 bytes of
/// resident memory with its usage entry and map slots (its scope set is
/// shared; `bench/million.sh` measures it), so a full cache is about
/// 200 MB. Each of the 64 shards holds at most 3,516, so under churn its
/// map settles at 8,192 slots (a map rehashes in place only below half
/// its capacity).
const KNOWN_CAPACITY: usize = 225_000;
/// Most unknown digests remembered.
const UNKNOWN_CAPACITY: usize = 20_000;
/// A cached answer older than this is re-read in the background: a safety
/// net for changes made behind Keysmith's back (by hand in SQL, say), since
/// every change Keysmith makes invalidates the cache at once.
const REFRESH_AFTER: Duration = Duration::from_secs(300);
/// Each token waits up to this much longer, by its digest, so tokens cached
/// together (after a start or a cache clear) are not all re-read together.
const REFRESH_SPREAD: Duration = Duration::from_secs(150);
/// An unknown digest is looked up again after this long.
const FORGET_UNKNOWN_AFTER: Duration = Duration::from_secs(60);
/// A token that is dead for a reason that can be undone (disabled token or
/// member, withdrawn permission) is re-read at most this long after caching.
const REVIVABLE_REFRESH_AFTER: Duration = Duration::from_secs(2);
/// How long one database read may take before the answer is "unavailable".
const LOAD_TIMEOUT: Duration = Duration::from_millis(1500);
/// After a failed read, requests that need the database fail at once for
/// this long instead of each waiting for the timeout.
const BACKOFF_AFTER_FAILURE: Duration = Duration::from_secs(1);
/// How often pending "last used" entries are taken for writing: each busy
/// token costs one row write per interval, so this trades database work for
/// freshness on the page.
const FLUSH_EVERY: Duration = Duration::from_secs(4);
/// Each batch's statements are spread over about this long.
const FLUSH_SPREAD: Duration = Duration::from_secs(1);
/// Uses a flush takes from the table at once (see [`usage::UsageTable::take_group`]).
const FLUSH_GROUP: usize = 5_000;
/// How far the stored "last used" of a token can be behind its latest use
/// (plus the time the last statement of a batch takes).
pub const LAST_USE_AT_MOST_BEHIND: Duration = FLUSH_EVERY.saturating_add(FLUSH_SPREAD);

/// A project a token is restricted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub id: i64,
    pub name: Box<str>,
}

/// Why a known token does not verify (never shown to callers: they all get
/// the same `invalid_token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Live,
    Revoked,
    Disabled,
    NotAMember,
    MemberDisabled,
    NotPermitted,
}

impl Standing {
    /// Dead now, but a superuser or the owner can bring it back.
    fn revivable(self) -> bool {
        matches!(
            self,
            Standing::Disabled
                | Standing::NotAMember
                | Standing::MemberDisabled
                | Standing::NotPermitted
        )
    }
}

/// What the verifier knows about one token: kept small, since a busy
/// deployment caches hundreds of thousands (see [`KNOWN_CAPACITY`]). The
/// answers the bearer routes send are built from it per request, one
/// buffer each, rather than kept beside it (kept, a bench token's 216-byte
/// whoami body and 58 bytes of headers took about 500 bytes with their
/// allocations and slots).
///
/// `repr(C)` keeps the declared order: the fields every verified request
/// reads come first, next to the reference count, so the checks touch one
/// cache line of a cached token.
#[derive(Debug)]
#[repr(C)]
pub struct TokenInfo {
    pub expires_at: Option<i64>,
    /// When the facts were last read, in milliseconds since the verifier's
    /// epoch; moved forward by a re-read that finds them unchanged.
    read_at_ms: AtomicU64,
    /// The token's rate-limit windows and pending last use.
    usage: Arc<TokenUsage>,
    /// How old the facts may get before a background re-read.
    refresh_after_ms: u32,
    pub reads_per_minute: u32,
    pub writes_per_minute: u32,
    pub standing: Standing,
    refreshing: AtomicBool,
    /// Whether `text` holds a display name.
    has_display_name: bool,
    pub token_id: i64,
    pub user_id: i64,
    pub organization_id: i64,
    /// The email address, display name, organization name, label and
    /// display prefix, back to back in one allocation; `ends` says where
    /// each of the first four ends.
    text: Box<str>,
    ends: [u32; 4],
    /// The scopes the token may use: the closure of what it was granted,
    /// narrowed by the organization's scope policy when there is one.
    /// Shared by every cached token with the same grant (see [`ScopeInterner`]).
    scopes: Arc<EffectiveScopes>,
    /// Empty: unrestricted.
    pub projects: Box<[Project]>,
    pub created_at: i64,
    /// A hash of the facts this was built from: a re-read that finds the
    /// same facts keeps this entry instead of replacing it.
    facts_hash: u64,
    /// Set when this entry is for a replaced secret in its grace period:
    /// when that ends (`expires_at` is no later). Read only for a token
    /// that is not active, so valid tokens never look at it.
    pub grace_until: Option<i64>,
}

/// How many identity headers `/auth/verify` formats (user, email, org,
/// scopes, token id, token label, user name).
pub const IDENTITY_HEADERS: usize = 7;

impl TokenInfo {
    fn from_facts(
        mut facts: TokenFacts,
        grace_until: Option<i64>,
        digest: &TokenDigest,
        read_at_ms: u64,
        usage: Arc<TokenUsage>,
        config: &Config,
        interner: &ScopeInterner,
    ) -> TokenInfo {
        // A replaced secret works until the grace period ends at the latest:
        // as its expiry, that is checked on every request like any other,
        // so no cached answer can keep the secret alive for longer.
        if let Some(until) = grace_until {
            facts.expires_at = Some(facts.expires_at.map_or(until, |at| at.min(until)));
        }
        let facts_hash = hash_of(&facts, grace_until);
        // The digest is uniformly random: its second byte spreads tokens
        // over the spread window (its first picks the cache shard).
        let spread = REFRESH_SPREAD.as_millis() as u64 * u64::from(digest.as_bytes()[1]) / 256;
        let standing = if facts.revoked_at.is_some() {
            Standing::Revoked
        } else if facts.disabled_at.is_some() {
            Standing::Disabled
        } else {
            match &facts.membership {
                None => Standing::NotAMember,
                Some(m) if m.disabled => Standing::MemberDisabled,
                Some(m) if m.role != "superuser" && !m.can_manage_tokens => Standing::NotPermitted,
                Some(_) => Standing::Live,
            }
        };
        let scopes = interner.effective(config, &facts.scopes, facts.allowed_scopes.as_deref());
        let per_minute = |own: Option<i64>, default: u32| {
            own.and_then(|n| u32::try_from(n).ok())
                .filter(|&n| n > 0)
                .unwrap_or(default)
        };
        let mut text = String::with_capacity(
            facts.email.len()
                + facts.display_name.as_ref().map_or(0, String::len)
                + facts.organization_name.len()
                + facts.label.len()
                + facts.display_prefix.len(),
        );
        let mut ends = [0u32; 4];
        for (end, part) in ends.iter_mut().zip([
            facts.email.as_str(),
            facts.display_name.as_deref().unwrap_or(""),
            &facts.organization_name,
            &facts.label,
        ]) {
            text.push_str(part);
            *end = u32::try_from(text.len()).unwrap_or(u32::MAX);
        }
        text.push_str(&facts.display_prefix);
        TokenInfo {
            token_id: facts.token_id,
            user_id: facts.user_id,
            organization_id: facts.organization_id,
            has_display_name: facts.display_name.is_some(),
            text: text.into_boxed_str(),
            ends,
            scopes,
            projects: facts
                .projects
                .into_iter()
                .map(|(id, name)| Project {
                    id,
                    name: name.into_boxed_str(),
                })
                .collect(),
            created_at: facts.created_at,
            expires_at: facts.expires_at,
            standing,
            reads_per_minute: per_minute(
                facts.reads_per_minute,
                config.rate_limits.reads_per_minute,
            ),
            writes_per_minute: per_minute(
                facts.writes_per_minute,
                config.rate_limits.writes_per_minute,
            ),
            usage,
            facts_hash,
            read_at_ms: AtomicU64::new(read_at_ms),
            refresh_after_ms: u32::try_from(REFRESH_AFTER.as_millis() as u64 + spread)
                .unwrap_or(u32::MAX),
            refreshing: AtomicBool::new(false),
            grace_until,
        }
    }

    /// Part `n` of `text` (see there).
    fn part(&self, n: usize) -> &str {
        let start = if n == 0 { 0 } else { self.ends[n - 1] as usize };
        let end = self.ends.get(n).map_or(self.text.len(), |&e| e as usize);
        self.text.get(start..end).unwrap_or("")
    }

    pub fn email(&self) -> &str {
        self.part(0)
    }

    /// The owner's display name; `None` when the users table holds none.
    pub fn display_name(&self) -> Option<&str> {
        self.has_display_name.then(|| self.part(1))
    }

    pub fn organization_name(&self) -> &str {
        self.part(2)
    }

    pub fn label(&self) -> &str {
        self.part(3)
    }

    pub fn display_prefix(&self) -> &str {
        self.part(4)
    }

    /// The scopes the token may use.
    pub fn scopes(&self) -> &ScopeSet {
        &self.scopes.set
    }

    /// [`TokenInfo::scopes`], space separated.
    pub fn scopes_str(&self) -> &str {
        &self.scopes.text
    }

    /// The bytes of all five text parts together.
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    /// Whether the token may be used at `now` (unix seconds): live, and
    /// strictly before its expiry.
    pub fn is_active_at(&self, now: i64) -> bool {
        self.standing == Standing::Live && self.expires_at.is_none_or(|at| now < at)
    }

    /// Whether the token may be used for `project` (by name): unrestricted
    /// tokens may be used for any.
    pub fn allows_project(&self, project: &str) -> bool {
        self.projects.is_empty() || self.projects.iter().any(|p| &*p.name == project)
    }

    pub fn limit_for(&self, class: RequestClass) -> u32 {
        match class {
            RequestClass::Read => self.reads_per_minute,
            RequestClass::Write => self.writes_per_minute,
        }
    }
}

#[cfg(test)]
fn hash_facts(facts: &TokenFacts) -> u64 {
    hash_of(facts, None)
}

/// The facts of a token, and whether (until when) they are read for a
/// replaced secret in its grace period: the same token read for its
/// current and for a replaced secret must not compare equal.
fn hash_of(facts: &TokenFacts, grace_until: Option<i64>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    facts.hash(&mut h);
    if let Some(until) = grace_until {
        until.hash(&mut h);
    }
    h.finish()
}

/// Effective scope sets, shared between cached tokens: most tokens carry one
/// of a few grants, and a scope set is the largest part of a cached token.
#[derive(Default)]
struct ScopeInterner {
    sets: Mutex<HashMap<GrantKey, Arc<EffectiveScopes>>>,
}

/// A grant as stored (scope names) and the organization's scope policy.
type GrantKey = (String, Option<String>);

/// An effective scope set and its space-separated form.
#[derive(Debug)]
struct EffectiveScopes {
    set: ScopeSet,
    text: Box<str>,
}

/// Distinct grants remembered; past this the interner starts over (cached
/// tokens keep their own `Arc`s).
const INTERNED_GRANTS: usize = 1024;

impl ScopeInterner {
    /// The closure of `granted`, narrowed to the closure of the
    /// organization's `policy` when it has one.
    fn effective(
        &self,
        config: &Config,
        granted: &str,
        policy: Option<&str>,
    ) -> Arc<EffectiveScopes> {
        let key = (granted.to_owned(), policy.map(str::to_owned));
        let mut sets = self
            .sets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(found) = sets.get(&key) {
            return found.clone();
        }
        let mut scopes = config.scopes.effective(&ScopeSet::from_stored(granted));
        if let Some(policy) = policy {
            let allowed = config.scopes.effective(&ScopeSet::from_stored(policy));
            let kept: Vec<&str> = scopes
                .iter()
                .map(|s| s.as_str())
                .filter(|s| allowed.contains(s))
                .collect();
            scopes = ScopeSet::from_stored(&kept.join(" "));
        }
        let value = Arc::new(EffectiveScopes {
            text: scopes.to_stored().into_boxed_str(),
            set: scopes,
        });
        if sets.len() >= INTERNED_GRANTS {
            sets.clear();
        }
        sets.insert(key, value.clone());
        value
    }
}

/// The answer for one presented token.
#[derive(Debug, Clone)]
pub enum Verdict {
    Active(Arc<TokenInfo>),
    /// Unknown, expired, revoked, disabled, or its owner may not use tokens.
    Inactive,
    /// A replaced secret of this token, past its grace period: refused like
    /// any dead token, and worth telling the owner about.
    Replaced(i64),
}

/// What one database read found for a digest.
enum Read {
    /// A token, and the grace end when the digest is a replaced secret
    /// (boxed: the facts are large and the other answers tiny).
    Token(Box<TokenFacts>, Option<i64>),
    /// A replaced secret past its grace period.
    Replaced(i64),
    Unknown,
}

/// The database could not be asked and nothing usable was cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the token store is not answering")]
pub struct Unavailable;

pub struct Verifier {
    db: Db,
    config: Arc<Config>,
    clock: Clock,
    known: DigestCache<Arc<TokenInfo>>,
    unknown: DigestCache<Instant>,
    /// Bumped by every invalidation; see [`cache`].
    generation: AtomicU64,
    /// On PostgreSQL, whether the invalidation listener is connected. While
    /// it is not, a change on another instance might go unheard, so cached
    /// answers are re-read (and used only if the database cannot be reached).
    listening: AtomicBool,
    /// Milliseconds since `epoch` until which the database counts as down.
    down_until_ms: AtomicU64,
    epoch: Instant,
    usage: UsageTable,
    /// On PostgreSQL: budgets are shared with the other instances.
    cluster: Option<cluster::Cluster>,
    scope_sets: ScopeInterner,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Woken when a flush put a new-address alert in the outbox.
    mail: MailWaker,
}

impl Verifier {
    pub fn new(db: Db, config: Arc<Config>, clock: Clock, mail: MailWaker) -> Verifier {
        let (stop, _) = watch::channel(false);
        let backend = db.backend();
        Verifier {
            mail,
            listening: AtomicBool::new(backend == Backend::Sqlite),
            db,
            config,
            clock,
            known: DigestCache::new(KNOWN_CAPACITY),
            unknown: DigestCache::new(UNKNOWN_CAPACITY),
            generation: AtomicU64::new(0),
            down_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            usage: UsageTable::default(),
            cluster: (backend == Backend::Postgres).then(cluster::Cluster::new),
            scope_sets: ScopeInterner::default(),
            stop,
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// Decides whether the token with this digest may be used now.
    pub async fn verify_digest(
        self: &Arc<Self>,
        digest: TokenDigest,
    ) -> Result<Verdict, Unavailable> {
        let trusted = self.listening.load(Ordering::Acquire);
        if let Some(info) = self.known.get(&digest) {
            let age_ms = self
                .millis_since_epoch()
                .saturating_sub(info.read_at_ms.load(Ordering::Acquire));
            let must_reread = !trusted
                || (info.standing.revivable()
                    && age_ms >= REVIVABLE_REFRESH_AFTER.as_millis() as u64);
            if !must_reread {
                crate::metrics::cache(true);
                if age_ms >= u64::from(info.refresh_after_ms)
                    && !info.refreshing.swap(true, Ordering::AcqRel)
                {
                    let (this, stale) = (Arc::clone(self), Arc::clone(&info));
                    tokio::spawn(async move {
                        let _ = this.load(digest, Some(&stale)).await;
                        // Whatever the outcome: after a failed read, or a
                        // new answer an invalidation kept out of the cache,
                        // this entry may be cached still and must be re-read
                        // again later.
                        stale.refreshing.store(false, Ordering::Release);
                    });
                }
                let verdict = self.verdict(info);
                if let Verdict::Replaced(_) = verdict {
                    // Its grace is over: remembered as unknown from now on,
                    // so a client retrying it costs no database reads and
                    // raises no alert per request.
                    self.known.remove(&digest);
                    self.unknown.insert_if_current(
                        digest,
                        Instant::now(),
                        &self.generation,
                        self.generation.load(Ordering::SeqCst),
                    );
                }
                return Ok(verdict);
            }
            crate::metrics::cache(false);
            return match self.load(digest, Some(&info)).await {
                Ok(verdict) => Ok(verdict),
                // The database is out of reach: the last known answer is
                // better than none, and it was right when it was read.
                Err(Unavailable) => Ok(self.verdict(info)),
            };
        }
        if let Some(seen) = self.unknown.get(&digest)
            && seen.elapsed() < FORGET_UNKNOWN_AFTER
        {
            crate::metrics::cache(true);
            return Ok(Verdict::Inactive);
        }
        crate::metrics::cache(false);
        self.load(digest, None).await
    }

    fn verdict(&self, info: Arc<TokenInfo>) -> Verdict {
        let now = self.clock.unix();
        if info.is_active_at(now) {
            Verdict::Active(info)
        } else if info.grace_until.is_some_and(|until| now >= until) {
            Verdict::Replaced(info.token_id)
        } else {
            Verdict::Inactive
        }
    }

    /// Reads the token from the database and caches the answer. `cached` is
    /// the entry being re-read, if any: when the facts have not changed it
    /// stays, marked as read now.
    async fn load(
        &self,
        digest: TokenDigest,
        cached: Option<&Arc<TokenInfo>>,
    ) -> Result<Verdict, Unavailable> {
        let now_ms = self.millis_since_epoch();
        if now_ms < self.down_until_ms.load(Ordering::Acquire) {
            return Err(Unavailable);
        }
        let seen = self.generation.load(Ordering::SeqCst);
        let read = tokio::time::timeout(LOAD_TIMEOUT, self.read(&digest)).await;
        match read {
            Ok(Ok(Read::Token(facts, grace_until))) => {
                if let Some(cached) = cached
                    && cached.grace_until == grace_until
                    && cached.facts_hash == hash_of(&facts, grace_until)
                {
                    // Unchanged. If an invalidation removed the entry
                    // meanwhile, this touches a value no longer in the cache.
                    cached.read_at_ms.store(now_ms, Ordering::Release);
                    return Ok(self.verdict(Arc::clone(cached)));
                }
                let usage = self.usage.for_token(facts.token_id);
                let info = Arc::new(TokenInfo::from_facts(
                    *facts,
                    grace_until,
                    &digest,
                    now_ms,
                    usage,
                    &self.config,
                    &self.scope_sets,
                ));
                self.known
                    .insert_if_current(digest, Arc::clone(&info), &self.generation, seen);
                self.unknown.remove(&digest);
                Ok(self.verdict(info))
            }
            Ok(Ok(Read::Unknown)) => {
                self.unknown
                    .insert_if_current(digest, Instant::now(), &self.generation, seen);
                Ok(Verdict::Inactive)
            }
            Ok(Ok(Read::Replaced(token_id))) => {
                self.known.remove(&digest);
                self.unknown
                    .insert_if_current(digest, Instant::now(), &self.generation, seen);
                Ok(Verdict::Replaced(token_id))
            }
            Ok(Err(e)) => {
                self.note_failure(&e.to_string());
                Err(Unavailable)
            }
            Err(_) => {
                self.note_failure("timed out");
                Err(Unavailable)
            }
        }
    }

    /// What the store knows about a digest: the token whose current secret
    /// it is (one query, the common case); failing that, a replaced secret
    /// (asked only for digests no token has now): in its grace period it
    /// reads as the token, with the grace end as its latest expiry.
    async fn read(&self, digest: &TokenDigest) -> StoreResult<Read> {
        if let Some(facts) = verification::load_by_digest(&self.db, digest).await? {
            return Ok(Read::Token(Box::new(facts), None));
        }
        let Some(replaced) = rotation::find_replaced(&self.db, digest).await? else {
            return Ok(Read::Unknown);
        };
        if self.clock.unix() >= replaced.grace_until {
            return Ok(Read::Replaced(replaced.token_id));
        }
        Ok(
            match verification::load_by_digest(&self.db, &replaced.current).await? {
                Some(facts) => Read::Token(Box::new(facts), Some(replaced.grace_until)),
                // Rotated again between the two reads: ask again next time.
                None => Read::Unknown,
            },
        )
    }

    fn note_failure(&self, why: &str) {
        tracing::warn!(
            error = why,
            "token verification could not read the database"
        );
        let until = self.millis_since_epoch() + BACKOFF_AFTER_FAILURE.as_millis() as u64;
        self.down_until_ms.store(until, Ordering::Release);
    }

    fn millis_since_epoch(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Forgets every cached answer `what` affects. Local and synchronous:
    /// once this returns, the next request on this instance for an affected
    /// token re-reads the database.
    pub fn invalidate(&self, what: &Invalidation) {
        // First the generation, then the removal: see `cache`.
        self.generation.fetch_add(1, Ordering::SeqCst);
        match *what {
            Invalidation::Token(id) => self.known.remove_where(|t| t.token_id == id),
            Invalidation::Member {
                organization_id,
                user_id,
            } => self
                .known
                .remove_where(|t| t.organization_id == organization_id && t.user_id == user_id),
            Invalidation::Organization(id) => self.known.remove_where(|t| t.organization_id == id),
        }
    }

    /// Forgets every cached answer.
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.known.clear();
        self.unknown.clear();
    }

    /// Whether cached answers are trusted: always on SQLite; on PostgreSQL
    /// while the invalidation listener is connected.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// Why the token with this digest was just refused, for the metrics:
    /// read from the cached answer (an unknown digest has none).
    pub fn refusal_reason(&self, digest: &TokenDigest) -> crate::metrics::Outcome {
        use crate::metrics::Outcome;
        let Some(info) = self.known.get(digest) else {
            return Outcome::Unknown;
        };
        match info.standing {
            Standing::Revoked => Outcome::Revoked,
            Standing::Disabled => Outcome::Disabled,
            Standing::NotAMember => Outcome::NotAMember,
            Standing::MemberDisabled => Outcome::MemberDisabled,
            Standing::NotPermitted => Outcome::NotPermitted,
            Standing::Live if info.is_active_at(self.clock.unix()) => Outcome::Unknown,
            Standing::Live => Outcome::Expired,
        }
    }

    /// How many tokens are cached (known ones only).
    pub fn cached_tokens(&self) -> usize {
        self.known.len()
    }

    /// Counts this request against `token`'s budget for its method's class
    /// and, if it is allowed, remembers it for the next "last used" flush:
    /// one look at the clock and one lock for both. A refused request is
    /// neither counted nor recorded.
    ///
    /// In a cluster, a request that finds this instance's share used up
    /// while the cluster may have more waits for an exchange (the only
    /// time a request waits for the database here).
    pub async fn admit(&self, token: &TokenInfo, used: Use<'_>) -> RateDecision {
        let class = RequestClass::of_method(used.method);
        let limit = token.limit_for(class);
        let Some(cluster) = &self.cluster else {
            return token.usage.admit(class, limit, self.clock.unix_ms(), used);
        };
        let mut may_wait = true;
        loop {
            let (admission, want) = token.usage.admit_shared(
                class,
                limit,
                self.clock.unix_ms(),
                used,
                cluster.view(),
                may_wait,
            );
            if want {
                cluster.want(token.token_id);
            }
            match admission {
                Admission::Decided(decision) => return decision,
                Admission::Exchange => {
                    cluster.exchanged().await;
                    // Counted again without waiting: `count` decides.
                    may_wait = false;
                }
            }
        }
    }

    /// In a cluster, how many live instances the last exchange counted
    /// (0 before the first); `None` on SQLite.
    pub fn cluster_instances(&self) -> Option<u32> {
        self.cluster.as_ref().map(cluster::Cluster::instances)
    }

    /// Writes the pending "last used" entries and client addresses now
    /// (and puts any new-address alerts in the outbox), a group of tokens
    /// at a time. On failure what was not written is kept for the next
    /// attempt.
    pub async fn flush_last_used(&self) -> StoreResult<()> {
        let mut part = 0;
        while part < usage::SHARDS {
            let (ips, uses) = self.usage.take_group(&mut part, FLUSH_GROUP);
            if let Err(e) = self.write_ips(ips).await {
                self.usage.restore(uses);
                return Err(e);
            }
            if uses.is_empty() {
                continue;
            }
            if let Err(e) = verification::record_last_used(&self.db, &uses).await {
                self.usage.restore(uses);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Writes address uses taken from the table; before "last used", so a
    /// token's first use ever is still told apart by an empty row.
    async fn write_ips(&self, batch: Vec<ips::IpUse>) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let (written, failed) = match ips::write(&self.db, batch, self.clock.unix()).await {
            Ok(written) => (written, None),
            Err(unwritten) => {
                self.usage.restore_ips(unwritten.rest);
                (unwritten.done, Some(unwritten.error))
            }
        };
        if written.alerts > 0 {
            self.mail.wake();
        }
        self.usage.learn_ips(written);
        failed.map_or(Ok(()), Err)
    }

    /// Starts the background work: the "last used" flusher, and on
    /// PostgreSQL the invalidation listener. Call once, from `app::start`.
    pub fn start_background(self: &Arc<Self>) {
        let mut tasks = self
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tasks.push(tokio::spawn(flusher(
            Arc::clone(self),
            self.stop.subscribe(),
        )));
        if self.cluster.is_some() {
            tasks.push(tokio::spawn(cluster::run(
                Arc::clone(self),
                self.stop.subscribe(),
            )));
        }
        if let crate::config::DatabaseUrl::Postgres(url) = &self.config.database_url {
            tasks.push(tokio::spawn(listener::run(
                Arc::clone(self),
                url.clone(),
                self.stop.subscribe(),
            )));
        }
    }

    /// Stops the background work and writes what is still pending.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(
            &mut *self
                .tasks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for task in tasks {
            let _ = task.await;
        }
        if let Err(e) = self.flush_last_used().await {
            tracing::warn!(error = %e, pending = self.usage.pending(), "could not record last use of tokens at shutdown");
        }
    }

    fn set_listening(&self, on: bool) {
        self.listening.store(on, Ordering::Release);
    }
}

async fn flusher(verifier: Arc<Verifier>, mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(FLUSH_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.changed() => return,
        }
        // A group of tokens at a time, each group's last uses spread over
        // its share of the spread.
        let mut part = 0;
        while part < usage::SHARDS {
            let first = part;
            let (ips, uses) = verifier.usage.take_group(&mut part, FLUSH_GROUP);
            if let Err(e) = verifier.write_ips(ips).await {
                tracing::warn!(error = %e, "could not record the client addresses of tokens; will retry");
            }
            let share = u32::try_from(part - first).unwrap_or(1);
            let spread = FLUSH_SPREAD * share / u32::try_from(usage::SHARDS).unwrap_or(1);
            let written = last_used::write_spread(uses, spread, &mut stop, &mut &verifier.db).await;
            if let Err(unwritten) = written {
                verifier.usage.restore(unwritten.rest);
                let Some(e) = unwritten.error else {
                    // Stopping: `shutdown` writes the rest.
                    return;
                };
                tracing::warn!(error = %e, "could not record last use of tokens; will retry");
                break;
            }
        }
        verifier.usage.prune(verifier.clock.unix_ms());
    }
}

/// Commits a write transaction that kills or narrows tokens and makes every
/// instance forget what it cached about them: each change is announced
/// inside the transaction (PostgreSQL delivers the notifications only if it
/// commits), then, once committed, this instance's cache is invalidated
/// before returning.
pub async fn commit_and_invalidate(
    mut tx: Transaction<'static, Any>,
    verifier: &Verifier,
    what: &[Invalidation],
) -> StoreResult<()> {
    let backend = verifier.db.backend();
    for w in what {
        invalidation::announce(&mut tx, backend, w).await?;
    }
    let committed = tx.commit().await;
    // Invalidate even if the commit reported an error: the outcome of a
    // failed commit is uncertain, and forgetting costs only a re-read.
    for w in what {
        verifier.invalidate(w);
    }
    committed.map_err(StoreError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_token_is_small_and_its_checks_read_one_cache_line() {
        use std::mem::{offset_of, size_of};
        // An `Arc`'s two counts come first in its allocation.
        let start = 2 * size_of::<usize>();
        let checks_end = start + offset_of!(TokenInfo, has_display_name);
        assert!(checks_end <= 64, "the checks read up to byte {checks_end}");
        // With its counts, 176 bytes: one 192-byte block of glibc's malloc
        // (plus `text`).
        assert!(
            start + size_of::<TokenInfo>() <= 176,
            "{} bytes",
            size_of::<TokenInfo>()
        );
    }

    #[test]
    fn the_text_parts_come_back_as_they_went_in() {
        let config = config();
        let interner = ScopeInterner::default();
        let digest = crate::token::TokenDigest::from_bytes([7; 32]);
        let info = |facts: TokenFacts| {
            TokenInfo::from_facts(facts, None, &digest, 0, Arc::default(), &config, &interner)
        };
        let plain = info(facts());
        assert_eq!(
            (
                plain.email(),
                plain.display_name(),
                plain.organization_name(),
                plain.label(),
                plain.display_prefix()
            ),
            ("ada@example.com", None, "Acme", "ci", "ks_abcdefgh")
        );
        let mut named = facts();
        named.display_name = Some("Ada Lovelace".into());
        named.label = "déploiement «prod»".into();
        named.email = "a@b.c".into();
        let named = info(named);
        assert_eq!(named.email(), "a@b.c");
        assert_eq!(named.display_name(), Some("Ada Lovelace"));
        assert_eq!(named.label(), "déploiement «prod»");
        assert_eq!(named.display_prefix(), "ks_abcdefgh");
        // An empty display name is a name, not a missing one.
        let mut empty = facts();
        empty.display_name = Some(String::new());
        assert_eq!(info(empty).display_name(), Some(""));
    }

    fn config() -> Config {
        let vars = std::collections::HashMap::from([(
            "KEYSMITH_CONFIG".to_string(),
            "/dev/null".to_string(),
        )]);
        Config::from_vars(&vars).unwrap()
    }

    fn facts() -> TokenFacts {
        TokenFacts {
            token_id: 7,
            user_id: 3,
            email: "ada@example.com".into(),
            display_name: None,
            organization_id: 1,
            organization_name: "Acme".into(),
            label: "ci".into(),
            display_prefix: "ks_abcdefgh".into(),
            scopes: "write".into(),
            created_at: 1_700_000_000,
            expires_at: None,
            disabled_at: None,
            revoked_at: None,
            membership: Some(verification::MembershipFacts {
                role: "member".into(),
                can_manage_tokens: true,
                disabled: false,
            }),
            reads_per_minute: None,
            writes_per_minute: None,
            allowed_scopes: None,
            projects: vec![],
        }
    }

    #[test]
    fn a_reread_tells_changed_facts_from_unchanged_ones() {
        let same = hash_facts(&facts());
        assert_eq!(hash_facts(&facts()), same);
        let changes: [fn(&mut TokenFacts); 10] = [
            |f| f.label = "deploy".into(),
            |f| f.display_name = Some("Ada".into()),
            |f| f.revoked_at = Some(1),
            |f| f.disabled_at = Some(1),
            |f| f.expires_at = Some(1),
            |f| f.scopes = "read".into(),
            |f| f.membership = None,
            |f| f.membership.as_mut().unwrap().can_manage_tokens = false,
            |f| f.allowed_scopes = Some("read".into()),
            |f| f.projects.push((1, "web".into())),
        ];
        for (n, change) in changes.iter().enumerate() {
            let mut f = facts();
            change(&mut f);
            assert_ne!(hash_facts(&f), same, "change {n}");
        }
    }

    #[test]
    fn effective_scopes_are_the_closure_narrowed_by_policy_and_shared() {
        let config = config();
        let interner = ScopeInterner::default();
        let write = interner.effective(&config, "write", None);
        assert_eq!(
            (write.set.to_stored(), &*write.text),
            ("read write".into(), "read write")
        );
        let again = interner.effective(&config, "write", None);
        assert!(Arc::ptr_eq(&write, &again), "one set for one grant");
        let narrowed = interner.effective(&config, "write", Some("read"));
        assert_eq!(
            (narrowed.set.to_stored(), &*narrowed.text),
            ("read".into(), "read")
        );
    }
}
