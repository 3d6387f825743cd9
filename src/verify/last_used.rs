//! "Last used" without a database write per request: each verified request
//! overwrites its token's pending use in memory (in [`super::usage`]), and
//! a background task writes every pending use in one batch every two
//! seconds (and once more at shutdown).

use std::net::IpAddr;

use crate::store::verification::LastUse;

/// The longest path kept; a longer one is cut (on a character boundary).
const MAX_PATH: usize = 512;
const MAX_METHOD: usize = 16;

/// A token's latest use that is not written yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pending {
    at: i64,
    method: String,
    path: String,
    ip: IpAddr,
}

impl Pending {
    /// Records this use in `slot`, replacing an earlier one. `path` must
    /// already be without its query string.
    pub(super) fn record(
        slot: &mut Option<Pending>,
        at: i64,
        method: &str,
        path: &str,
        ip: IpAddr,
    ) {
        let method = truncate(method, MAX_METHOD);
        let path = truncate(path, MAX_PATH);
        match slot {
            // The common case, a client repeating itself: no allocation.
            Some(p) if p.method == method && p.path == path => {
                p.at = p.at.max(at);
                p.ip = ip;
            }
            _ => {
                *slot = Some(Pending {
                    at,
                    method: method.to_owned(),
                    path: path.to_owned(),
                    ip,
                });
            }
        }
    }

    pub(super) fn into_last_use(self, token_id: i64) -> LastUse {
        LastUse {
            token_id,
            at: self.at,
            method: self.method,
            path: self.path,
            ip: self.ip.to_string(),
        }
    }

    /// A use that could not be written, to be tried again; `None` if its
    /// address does not read back.
    pub(super) fn from_last_use(u: LastUse) -> Option<Pending> {
        Some(Pending {
            at: u.at,
            ip: u.ip.parse().ok()?,
            method: u.method,
            path: u.path,
        })
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
        assert_eq!((u.at, u.ip.as_str()), (200, "::1"));
    }

    #[test]
    fn long_paths_are_cut_on_a_character_boundary() {
        let path = format!("/{}", "é".repeat(400));
        let mut slot = None;
        Pending::record(&mut slot, 1, "GET", &path, "::1".parse().unwrap());
        let u = slot.unwrap().into_last_use(1);
        assert!(u.path.len() <= MAX_PATH && path.starts_with(&u.path));
    }

    #[test]
    fn a_use_survives_the_round_trip_through_a_failed_write() {
        let mut slot = None;
        Pending::record(&mut slot, 5, "PUT", "/x", "2001:db8::1".parse().unwrap());
        let p = slot.unwrap();
        assert_eq!(Pending::from_last_use(p.clone().into_last_use(9)), Some(p));
    }
}
