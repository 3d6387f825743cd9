//! Scopes: what a token may do.
//!
//! This file owns the scope name rules ([`ScopeName`]), the configured
//! catalogue of scopes and what each includes ([`ScopeCatalogue`]), and the
//! set of scopes a token carries ([`ScopeSet`]). A token stores the scopes it
//! was *granted*; what it may do is the catalogue's closure of those
//! ([`ScopeCatalogue::effective`]), so changing what a scope includes takes
//! effect for existing tokens.

use std::borrow::Borrow;
use std::collections::{BTreeSet, HashMap};
use std::fmt;

use serde::{Serialize, Serializer};

const MAX_SCOPE_LEN: usize = 64;

/// A scope name: 1–64 characters, `[a-z][a-z0-9_.:-]*`.
///
/// The character set leaves space free, because a token's scopes are stored
/// and sent (RFC 7662 `scope`) as one space-separated string.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScopeName(String);

impl ScopeName {
    pub fn parse(s: &str) -> Result<ScopeName, ScopeError> {
        let invalid = |reason| ScopeError::InvalidName {
            name: s.to_owned(),
            reason,
        };
        let mut chars = s.chars();
        match chars.next() {
            None => return Err(invalid("must not be empty")),
            Some(c) if !c.is_ascii_lowercase() => {
                return Err(invalid("must start with a lowercase letter"));
            }
            Some(_) => {}
        }
        if !chars.all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | ':' | '-')
        }) {
            return Err(invalid(
                "may contain only lowercase letters, digits, '_', '.', ':' and '-'",
            ));
        }
        // All ASCII by now, so bytes are characters.
        if s.len() > MAX_SCOPE_LEN {
            return Err(invalid("must be at most 64 characters"));
        }
        Ok(ScopeName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ScopeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Lets sets and maps of names be queried with a `&str`. Sound because the
/// derived `Eq`, `Ord` and `Hash` are those of the inner string.
impl Borrow<str> for ScopeName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("invalid scope name \"{name}\": {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("scope \"{0}\" is declared more than once")]
    DuplicateScope(String),
    #[error("scope \"{scope}\" includes \"{include}\", which is not declared")]
    UnknownInclude { scope: String, include: String },
    #[error("the scope catalogue must declare at least one scope")]
    Empty,
    /// `known` lists the catalogue in declaration order, so the message can
    /// tell the caller what would have worked.
    #[error("unknown scope \"{name}\" (known: {})", .known.join(", "))]
    UnknownScope { name: String, known: Vec<String> },
    #[error("choose at least one scope")]
    EmptySet,
}

/// The scopes a deployment offers, in declaration order, with what each
/// includes.
#[derive(Debug, Clone)]
pub struct ScopeCatalogue {
    scopes: Vec<ScopeName>,
    index: HashMap<ScopeName, usize>,
    /// For each scope, every scope it includes directly or transitively,
    /// itself excluded, as ascending indices (i.e. in declaration order).
    /// Computed once here so lookups on the request path are cheap.
    implied: Vec<Vec<usize>>,
}

impl ScopeCatalogue {
    pub fn new(entries: Vec<(String, Vec<String>)>) -> Result<ScopeCatalogue, ScopeError> {
        if entries.is_empty() {
            return Err(ScopeError::Empty);
        }

        let mut scopes = Vec::with_capacity(entries.len());
        let mut index = HashMap::with_capacity(entries.len());
        for (name, _) in &entries {
            let name = ScopeName::parse(name)?;
            if index.insert(name.clone(), scopes.len()).is_some() {
                return Err(ScopeError::DuplicateScope(name.0));
            }
            scopes.push(name);
        }

        // Includes are resolved after every name is known, so a scope may
        // include one declared after it.
        let mut direct = Vec::with_capacity(entries.len());
        for (scope, includes) in &entries {
            let resolved = includes
                .iter()
                .map(|include| {
                    index
                        .get(include.as_str())
                        .copied()
                        .ok_or_else(|| ScopeError::UnknownInclude {
                            scope: scope.clone(),
                            include: include.clone(),
                        })
                })
                .collect::<Result<Vec<usize>, ScopeError>>()?;
            direct.push(resolved);
        }

        let implied = (0..scopes.len())
            .map(|start| reachable_from(start, &direct))
            .collect();
        Ok(ScopeCatalogue {
            scopes,
            index,
            implied,
        })
    }

    /// Every declared scope, in declaration order.
    pub fn names(&self) -> impl Iterator<Item = &ScopeName> {
        self.scopes.iter()
    }

    /// What `name` grants besides itself, in declaration order (for the UI:
    /// "tickets:write also grants read, comments"). `None` if undeclared.
    pub fn implied_by(&self, name: &str) -> Option<Vec<&ScopeName>> {
        let &at = self.index.get(name)?;
        Some(self.implied[at].iter().map(|&i| &self.scopes[i]).collect())
    }

    /// Reads the scopes someone chose for a new token. Blank entries are
    /// ignored (an unticked form field), the rest must be declared. Returns
    /// the granted set, not its closure: the closure is worked out when the
    /// token is used.
    pub fn parse_set<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<ScopeSet, ScopeError> {
        let mut set = BTreeSet::new();
        for name in names {
            let name = name.trim();
            if name.is_empty() {
                continue;
            }
            match self.index.get_key_value(name) {
                Some((known, _)) => {
                    set.insert(known.clone());
                }
                None => {
                    return Err(ScopeError::UnknownScope {
                        name: name.to_owned(),
                        known: self.scopes.iter().map(|s| s.0.clone()).collect(),
                    });
                }
            }
        }
        if set.is_empty() {
            return Err(ScopeError::EmptySet);
        }
        Ok(ScopeSet(set))
    }

    /// `granted` plus everything it includes, transitively. Names the
    /// catalogue no longer declares are kept as they are: a token issued
    /// before a configuration change keeps its literal names.
    pub fn effective(&self, granted: &ScopeSet) -> ScopeSet {
        let mut all = granted.0.clone();
        for name in &granted.0 {
            if let Some(&at) = self.index.get(name) {
                all.extend(self.implied[at].iter().map(|&i| self.scopes[i].clone()));
            }
        }
        ScopeSet(all)
    }
}

/// Indices reachable from `start` through `direct`, `start` excluded,
/// ascending. The visited set makes cycles harmless.
fn reachable_from(start: usize, direct: &[Vec<usize>]) -> Vec<usize> {
    let mut seen = vec![false; direct.len()];
    let mut stack = direct[start].clone();
    while let Some(at) = stack.pop() {
        if !std::mem::replace(&mut seen[at], true) {
            stack.extend(&direct[at]);
        }
    }
    seen[start] = false;
    (0..direct.len()).filter(|&i| seen[i]).collect()
}

/// The default catalogue: `read`, and `write` which includes `read`.
impl Default for ScopeCatalogue {
    fn default() -> Self {
        ScopeCatalogue::new(vec![
            (String::from("read"), vec![]),
            (String::from("write"), vec![String::from("read")]),
        ])
        // A constant that a unit test checks, not input.
        .expect("the default scope catalogue is valid")
    }
}

/// A set of scope names, sorted.
///
/// Serializes as a JSON array of strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeSet(BTreeSet<ScopeName>);

impl ScopeSet {
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &ScopeName> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Space-separated and sorted: the stored form, and the RFC 7662
    /// `scope` string.
    pub fn to_stored(&self) -> String {
        let mut out = String::new();
        for name in &self.0 {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(name.as_str());
        }
        out
    }

    /// Reads the stored form back. Lenient on purpose: a name that no
    /// longer validates is dropped rather than making the token unreadable,
    /// which can only narrow what the token may do.
    pub fn from_stored(s: &str) -> ScopeSet {
        ScopeSet(
            s.split_whitespace()
                .filter_map(|name| ScopeName::parse(name).ok())
                .collect(),
        )
    }

    pub fn names(&self) -> Vec<String> {
        self.0.iter().map(|name| name.0.clone()).collect()
    }
}

impl Serialize for ScopeSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(ScopeName::as_str))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn entry(name: &str, includes: &[&str]) -> (String, Vec<String>) {
        (
            name.to_owned(),
            includes.iter().map(|s| (*s).to_owned()).collect(),
        )
    }

    /// The example from the design document.
    fn example() -> ScopeCatalogue {
        ScopeCatalogue::new(vec![
            entry("read", &[]),
            entry("comments", &["read"]),
            entry("tickets:write", &["read", "comments"]),
            entry("tickets:assign", &["read"]),
        ])
        .expect("example catalogue is valid")
    }

    fn names_of<'a>(names: impl IntoIterator<Item = &'a ScopeName>) -> Vec<&'a str> {
        names.into_iter().map(ScopeName::as_str).collect()
    }

    #[test]
    fn scope_name_accepts_the_documented_shape() {
        for ok in ["read", "r", "tickets:write", "a.b-c_d:9", &"a".repeat(64)] {
            assert_eq!(
                ScopeName::parse(ok).map(|n| n.to_string()),
                Ok(ok.to_owned())
            );
        }
    }

    #[test]
    fn scope_name_rejects_anything_else() {
        for bad in [
            "",
            "Read",
            "1read",
            "_read",
            ":read",
            "re ad",
            "read/write",
            "réad",
            &"a".repeat(65),
        ] {
            assert!(
                matches!(ScopeName::parse(bad), Err(ScopeError::InvalidName { ref name, .. }) if name == bad),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn default_catalogue_is_read_and_write_including_read() {
        let catalogue = ScopeCatalogue::default();
        assert_eq!(names_of(catalogue.names()), ["read", "write"]);
        assert_eq!(
            catalogue.implied_by("write").map(names_of),
            Some(vec!["read"])
        );
        assert_eq!(catalogue.implied_by("read").map(names_of), Some(vec![]));
    }

    #[test]
    fn names_keep_declaration_order() {
        assert_eq!(
            names_of(example().names()),
            ["read", "comments", "tickets:write", "tickets:assign"]
        );
    }

    #[test]
    fn implied_by_lists_transitive_includes_in_declaration_order() {
        let catalogue = example();
        assert_eq!(
            catalogue.implied_by("tickets:write").map(names_of),
            Some(vec!["read", "comments"])
        );
        assert_eq!(
            catalogue.implied_by("tickets:assign").map(names_of),
            Some(vec!["read"])
        );
        assert_eq!(
            catalogue.implied_by("comments").map(names_of),
            Some(vec!["read"])
        );
        assert_eq!(catalogue.implied_by("read").map(names_of), Some(vec![]));
    }

    #[test]
    fn implied_by_follows_includes_transitively() {
        let catalogue = ScopeCatalogue::new(vec![
            entry("admin", &["write"]),
            entry("write", &["read"]),
            entry("read", &[]),
        ])
        .expect("valid");
        assert_eq!(
            catalogue.implied_by("admin").map(names_of),
            Some(vec!["write", "read"])
        );
    }

    #[test]
    fn implied_by_unknown_scope_is_none() {
        assert_eq!(example().implied_by("admin"), None);
    }

    #[test]
    fn implied_by_excludes_the_scope_itself_in_a_cycle() {
        let catalogue = ScopeCatalogue::new(vec![
            entry("a", &["b"]),
            entry("b", &["a"]),
            entry("c", &["c"]),
        ])
        .expect("cycles are allowed");
        assert_eq!(catalogue.implied_by("a").map(names_of), Some(vec!["b"]));
        assert_eq!(catalogue.implied_by("b").map(names_of), Some(vec!["a"]));
        assert_eq!(catalogue.implied_by("c").map(names_of), Some(vec![]));
    }

    #[test]
    fn catalogue_rejects_unknown_include() {
        let err = ScopeCatalogue::new(vec![entry("read", &[]), entry("write", &["admin"])]);
        assert_eq!(
            err.as_ref().err(),
            Some(&ScopeError::UnknownInclude {
                scope: "write".into(),
                include: "admin".into()
            })
        );
        assert_eq!(
            err.err().map(|e| e.to_string()),
            Some(String::from(
                "scope \"write\" includes \"admin\", which is not declared"
            ))
        );
    }

    #[test]
    fn catalogue_allows_including_a_later_scope() {
        let catalogue = ScopeCatalogue::new(vec![entry("write", &["read"]), entry("read", &[])]);
        assert!(catalogue.is_ok());
    }

    #[test]
    fn catalogue_rejects_duplicate_scope() {
        let err = ScopeCatalogue::new(vec![entry("read", &[]), entry("read", &[])]).err();
        assert_eq!(err, Some(ScopeError::DuplicateScope("read".into())));
    }

    #[test]
    fn catalogue_rejects_invalid_name() {
        let err = ScopeCatalogue::new(vec![entry("Read", &[])]).err();
        assert!(
            matches!(err, Some(ScopeError::InvalidName { ref name, .. }) if name == "Read"),
            "{err:?}"
        );
    }

    #[test]
    fn catalogue_rejects_empty() {
        assert_eq!(ScopeCatalogue::new(vec![]).err(), Some(ScopeError::Empty));
    }

    #[test]
    fn parse_set_returns_granted_names_trimmed_and_deduplicated() {
        let set = example()
            .parse_set([" tickets:write", "read ", "read", ""])
            .expect("valid");
        assert_eq!(set.names(), ["read", "tickets:write"]);
        // Granted, not the closure: `comments` is implied, not granted.
        assert!(!set.contains("comments"));
    }

    #[test]
    fn parse_set_rejects_unknown_scope() {
        let err = ScopeCatalogue::default().parse_set(["read", "admin"]).err();
        assert_eq!(
            err.as_ref().map(ToString::to_string),
            Some(String::from("unknown scope \"admin\" (known: read, write)"))
        );
        assert!(matches!(err, Some(ScopeError::UnknownScope { ref name, .. }) if name == "admin"));
    }

    #[test]
    fn parse_set_is_case_sensitive() {
        let err = ScopeCatalogue::default().parse_set(["READ"]).err();
        assert!(
            matches!(err, Some(ScopeError::UnknownScope { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn parse_set_rejects_empty_set() {
        let catalogue = ScopeCatalogue::default();
        assert_eq!(catalogue.parse_set([]).err(), Some(ScopeError::EmptySet));
        assert_eq!(
            catalogue.parse_set(["", "  "]).err(),
            Some(ScopeError::EmptySet)
        );
        assert_eq!(
            ScopeError::EmptySet.to_string(),
            "choose at least one scope"
        );
    }

    #[test]
    fn effective_adds_everything_included() {
        let catalogue = example();
        let granted = catalogue.parse_set(["tickets:write"]).expect("valid");
        let effective = catalogue.effective(&granted);
        assert_eq!(effective.names(), ["comments", "read", "tickets:write"]);
    }

    #[test]
    fn effective_keeps_names_no_longer_declared() {
        let granted = ScopeSet::from_stored("legacy:admin write");
        let effective = ScopeCatalogue::default().effective(&granted);
        assert_eq!(effective.to_stored(), "legacy:admin read write");
    }

    #[test]
    fn to_stored_is_sorted_and_space_separated() {
        let set = example()
            .parse_set(["tickets:write", "comments", "read"])
            .expect("valid");
        assert_eq!(set.to_stored(), "comments read tickets:write");
        assert_eq!(ScopeSet::from_stored("").to_stored(), "");
    }

    #[test]
    fn from_stored_skips_invalid_names() {
        let set = ScopeSet::from_stored("  write\tBAD read\n read 9x ");
        assert_eq!(set.names(), ["read", "write"]);
        assert_eq!(set.len(), 2);
        assert!(!set.is_empty());
        assert!(set.contains("write"));
        assert!(!set.contains("BAD"));
        assert!(ScopeSet::from_stored(" ").is_empty());
    }

    #[test]
    fn scope_set_serializes_as_json_array() {
        let set = ScopeSet::from_stored("write read");
        assert_eq!(
            serde_json::to_string(&set).ok(),
            Some(String::from(r#"["read","write"]"#))
        );
    }

    fn scope_name() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9_.:-]{0,63}"
    }

    /// A catalogue of `n` scopes `s0..` with arbitrary includes, cycles and
    /// self-includes allowed.
    fn arbitrary_graph() -> impl Strategy<Value = Vec<Vec<usize>>> {
        (1..12usize)
            .prop_flat_map(|n| proptest::collection::vec(proptest::collection::vec(0..n, 0..4), n))
    }

    proptest! {
        #[test]
        fn scope_name_parse_accepts_exactly_the_documented_shape(s in "\\PC{0,70}") {
            let expected = (1..=64).contains(&s.len())
                && s.starts_with(|c: char| c.is_ascii_lowercase())
                && s.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || "_.:-".contains(c)
                });
            prop_assert_eq!(ScopeName::parse(&s).is_ok(), expected);
        }

        #[test]
        fn valid_scope_names_parse(s in scope_name()) {
            prop_assert_eq!(ScopeName::parse(&s).map(|n| n.as_str().to_owned()), Ok(s));
        }

        #[test]
        fn stored_form_round_trips(names in proptest::collection::vec(scope_name(), 0..8)) {
            let set = ScopeSet::from_stored(&names.join(" "));
            prop_assert_eq!(ScopeSet::from_stored(&set.to_stored()), set.clone());
            let mut expected = names.clone();
            expected.sort();
            expected.dedup();
            prop_assert_eq!(set.names(), expected);
        }

        #[test]
        fn closure_terminates_and_includes_everything_reachable(graph in arbitrary_graph()) {
            let name = |i: usize| format!("s{i}");
            let entries = graph
                .iter()
                .enumerate()
                .map(|(i, includes)| (name(i), includes.iter().map(|&j| name(j)).collect()))
                .collect();
            let catalogue = ScopeCatalogue::new(entries).expect("valid");

            // Reference: grow each scope's set by one step of includes until
            // nothing changes (a different method from the code under test).
            let mut reach: Vec<BTreeSet<usize>> = graph
                .iter()
                .map(|includes| includes.iter().copied().collect())
                .collect();
            loop {
                let next: Vec<BTreeSet<usize>> = reach
                    .iter()
                    .map(|set| {
                        let further = set.iter().flat_map(|&k| reach[k].iter().copied());
                        set.iter().copied().chain(further).collect()
                    })
                    .collect();
                if next == reach {
                    break;
                }
                reach = next;
            }

            for (i, reachable) in reach.iter().enumerate() {
                let expected: Vec<String> =
                    reachable.iter().copied().filter(|&j| j != i).map(name).collect();
                let implied = catalogue.implied_by(&name(i)).map(|v| {
                    v.into_iter().map(|s| s.to_string()).collect::<Vec<_>>()
                });
                prop_assert_eq!(implied, Some(expected.clone()));

                let granted = catalogue.parse_set([name(i).as_str()]).expect("declared");
                let effective = catalogue.effective(&granted);
                prop_assert!(effective.contains(&name(i)));
                for e in &expected {
                    prop_assert!(effective.contains(e));
                }
                prop_assert_eq!(effective.len(), expected.len() + 1);
            }
        }
    }
}
