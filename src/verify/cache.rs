//! A bounded in-memory map from token digest to what verification learned,
//! split into shards so concurrent requests rarely wait on one another.
//!
//! Inserts carry the invalidation generation their database read started
//! under, and are dropped if an invalidation happened since: a request that
//! read the database before a revocation must not put the stale answer back
//! after the revocation removed it.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::token::TokenDigest;

const SHARDS: usize = 64;

/// A digest is a SHA-256 output, uniformly distributed already, so the maps
/// use eight of its bytes as the hash instead of hashing it again. (Bytes
/// 8..16: byte 0 picks the shard.) Someone grinding tokens to collide could
/// at worst lengthen probes within one bounded shard.
#[derive(Default, Clone, Copy)]
pub(crate) struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        match bytes.get(8..16) {
            Some(eight) => {
                let mut b = [0u8; 8];
                b.copy_from_slice(eight);
                self.0 ^= u64::from_le_bytes(b);
            }
            // The length prefix and anything short: mixed in cheaply.
            None => {
                for &byte in bytes {
                    self.0 = self.0.rotate_left(8) ^ u64::from(byte);
                }
            }
        }
    }
}

type Shard<V> = HashMap<TokenDigest, V, BuildHasherDefault<DigestHasher>>;

/// One shard per 128 bytes (two cache lines, the unit adjacent-line
/// prefetchers fetch): every lookup writes its shard's lock, and two
/// shards on one line would make lookups of different shards on different
/// cores contend for it.
#[repr(align(128))]
struct Padded<T>(T);

pub(crate) struct DigestCache<V> {
    shards: Box<[Padded<Mutex<Shard<V>>>]>,
    per_shard: usize,
}

impl<V: Clone> DigestCache<V> {
    /// A cache holding at most about `capacity` entries.
    pub(crate) fn new(capacity: usize) -> Self {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        DigestCache {
            shards: (0..SHARDS)
                .map(|_| Padded(Mutex::new(Shard::default())))
                .collect(),
            per_shard,
        }
    }

    fn shard(&self, digest: &TokenDigest) -> &Mutex<Shard<V>> {
        // A digest is uniformly random already: its first byte picks the shard.
        &self.shards[usize::from(digest.as_bytes()[0]) % SHARDS].0
    }

    pub(crate) fn get(&self, digest: &TokenDigest) -> Option<V> {
        lock(self.shard(digest)).get(digest).cloned()
    }

    /// Inserts unless `generation` moved away from `seen` since the caller
    /// read the database. Returns whether it inserted.
    pub(crate) fn insert_if_current(
        &self,
        digest: TokenDigest,
        value: V,
        generation: &AtomicU64,
        seen: u64,
    ) -> bool {
        let mut shard = lock(self.shard(&digest));
        // Checked under the shard lock: an invalidation bumps the generation
        // before it takes the shard locks to remove entries, so either this
        // check sees the new generation, or the removal runs after this insert.
        if generation.load(Ordering::SeqCst) != seen {
            return false;
        }
        if shard.len() >= self.per_shard && !shard.contains_key(&digest) {
            // Full: make room by dropping an arbitrary entry. A dropped entry
            // costs one database read the next time its token is seen.
            if let Some(victim) = shard.keys().next().copied() {
                shard.remove(&victim);
            }
        }
        shard.insert(digest, value);
        true
    }

    pub(crate) fn remove(&self, digest: &TokenDigest) {
        lock(self.shard(digest)).remove(digest);
    }

    /// Removes every entry for which `doomed` is true.
    pub(crate) fn remove_where(&self, mut doomed: impl FnMut(&V) -> bool) {
        for Padded(shard) in self.shards.iter() {
            lock(shard).retain(|_, v| !doomed(v));
        }
    }

    pub(crate) fn clear(&self) {
        for Padded(shard) in self.shards.iter() {
            lock(shard).clear();
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(&s.0).len()).sum()
    }
}

/// A poisoned lock only means a panic elsewhere mid-update of a plain map;
/// the map itself is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> TokenDigest {
        let mut b = [0u8; 32];
        b[0] = n;
        b[1] = n.wrapping_mul(7);
        TokenDigest::from_bytes(b)
    }

    #[test]
    fn an_insert_after_an_invalidation_is_dropped() {
        let cache = DigestCache::new(100);
        let generation = AtomicU64::new(0);
        // A request reads the database...
        let seen = generation.load(Ordering::SeqCst);
        // ...meanwhile the token is revoked and the cache invalidated...
        generation.fetch_add(1, Ordering::SeqCst);
        cache.remove_where(|_: &u32| true);
        // ...and the stale answer must not come back.
        assert!(!cache.insert_if_current(digest(1), 7u32, &generation, seen));
        assert_eq!(cache.get(&digest(1)), None);
        let seen = generation.load(Ordering::SeqCst);
        assert!(cache.insert_if_current(digest(1), 8u32, &generation, seen));
        assert_eq!(cache.get(&digest(1)), Some(8));
    }

    #[test]
    fn the_cache_stays_within_its_bound() {
        let cache = DigestCache::new(SHARDS * 2);
        let generation = AtomicU64::new(0);
        for n in 0..=255u8 {
            for m in 0..4u8 {
                let mut b = [0u8; 32];
                b[0] = n;
                b[1] = m;
                cache.insert_if_current(TokenDigest::from_bytes(b), 1u8, &generation, 0);
            }
        }
        assert!(cache.len() <= SHARDS * 2, "{}", cache.len());
    }

    #[test]
    fn real_digests_get_distinct_hashes() {
        use std::hash::BuildHasher;
        let build = BuildHasherDefault::<DigestHasher>::default();
        let prefix = crate::token::TokenPrefix::default();
        let hashes: std::collections::HashSet<u64> = (0..1000)
            .map(|_| build.hash_one(crate::token::PlainToken::generate(&prefix).digest()))
            .collect();
        assert_eq!(hashes.len(), 1000);
    }

    #[test]
    fn remove_where_and_clear() {
        let cache = DigestCache::new(100);
        let generation = AtomicU64::new(0);
        for n in 0..10u8 {
            cache.insert_if_current(digest(n), u32::from(n), &generation, 0);
        }
        cache.remove_where(|v| v % 2 == 0);
        assert_eq!(cache.len(), 5);
        assert_eq!(cache.get(&digest(3)), Some(3));
        cache.remove(&digest(3));
        assert_eq!(cache.get(&digest(3)), None);
        cache.clear();
        assert_eq!(cache.len(), 0);
    }
}
