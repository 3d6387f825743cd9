//! "Last used" without a database write per request: each verified request
//! overwrites its token's entry in memory, and a background task writes the
//! entries in one batch every two seconds (and once more at shutdown).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use crate::store::verification::LastUse;

/// The longest path kept; a longer one is cut (on a character boundary).
const MAX_PATH: usize = 512;
const MAX_METHOD: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    at: i64,
    method: String,
    path: String,
    ip: IpAddr,
}

/// Split by token id so concurrent requests rarely share a lock.
const SHARDS: usize = 16;

pub struct LastUsedBuffer {
    shards: Box<[Mutex<HashMap<i64, Pending>>]>,
}

impl Default for LastUsedBuffer {
    fn default() -> Self {
        LastUsedBuffer {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl LastUsedBuffer {
    fn shard(&self, token_id: i64) -> &Mutex<HashMap<i64, Pending>> {
        &self.shards[token_id.rem_euclid(SHARDS as i64) as usize]
    }

    /// Remembers this use of the token, replacing an earlier one. `path`
    /// must already be without its query string.
    pub fn record(&self, token_id: i64, at: i64, method: &str, path: &str, ip: IpAddr) {
        let method = truncate(method, MAX_METHOD);
        let path = truncate(path, MAX_PATH);
        let mut pending = lock(self.shard(token_id));
        match pending.get_mut(&token_id) {
            // The common case, a client repeating itself: no allocation.
            Some(p) if p.method == method && p.path == path => {
                p.at = p.at.max(at);
                p.ip = ip;
            }
            _ => {
                pending.insert(
                    token_id,
                    Pending {
                        at,
                        method: method.to_owned(),
                        path: path.to_owned(),
                        ip,
                    },
                );
            }
        }
    }

    /// Everything recorded since the last call.
    pub fn take(&self) -> Vec<LastUse> {
        let mut batch = Vec::new();
        for shard in self.shards.iter() {
            let drained = std::mem::take(&mut *lock(shard));
            batch.extend(drained.into_iter().map(|(token_id, p)| LastUse {
                token_id,
                at: p.at,
                method: p.method,
                path: p.path,
                ip: p.ip.to_string(),
            }));
        }
        batch
    }

    /// Puts back a batch that could not be written, unless a newer use of
    /// the same token arrived meanwhile.
    pub fn restore(&self, uses: Vec<LastUse>) {
        for u in uses {
            let Ok(ip) = u.ip.parse() else { continue };
            lock(self.shard(u.token_id))
                .entry(u.token_id)
                .or_insert(Pending {
                    at: u.at,
                    method: u.method,
                    path: u.path,
                    ip,
                });
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
    fn later_uses_replace_earlier_ones_and_take_empties() {
        let buf = LastUsedBuffer::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        buf.record(1, 100, "GET", "/a", ip);
        buf.record(1, 101, "POST", "/b", ip);
        buf.record(2, 100, "GET", "/c", ip);
        let mut batch = buf.take();
        batch.sort_by_key(|u| u.token_id);
        assert_eq!(batch.len(), 2);
        assert_eq!(
            (
                batch[0].at,
                batch[0].method.as_str(),
                batch[0].path.as_str()
            ),
            (101, "POST", "/b")
        );
        assert!(buf.is_empty());
        // A failed batch comes back, but never over a newer use.
        buf.record(2, 200, "DELETE", "/d", ip);
        buf.restore(batch);
        let mut again = buf.take();
        again.sort_by_key(|u| u.token_id);
        assert_eq!(again[0].at, 101);
        assert_eq!((again[1].at, again[1].method.as_str()), (200, "DELETE"));
    }

    #[test]
    fn long_paths_are_cut_on_a_character_boundary() {
        let buf = LastUsedBuffer::default();
        let path = format!("/{}", "é".repeat(400));
        buf.record(1, 1, "GET", &path, "::1".parse().unwrap());
        let u = buf.take().remove(0);
        assert!(u.path.len() <= MAX_PATH && path.starts_with(&u.path));
    }
}
