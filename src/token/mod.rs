//! The token core: everything about a personal API token that needs no I/O.
//!
//! - [`format`]: the `<prefix>_<random><checksum>` string, generating and
//!   parsing it, the SHA-256 digest that is stored instead of it, and the
//!   display prefix shown to people.
//! - [`scope`]: scope names, the configured catalogue and what each scope
//!   includes, and the set of scopes a token carries.
//! - [`expiry`]: when a token stops working, and the rules for choosing that
//!   when it is created.
//!
//! Nothing here touches the network, the database or the clock: callers
//! pass `now` in, which keeps every rule testable.

pub mod expiry;
pub mod format;
pub mod scope;

pub use expiry::{Expiry, ExpiryError, expiry_in_days, parse_new_expiry};
pub use format::{
    CHECKSUM_LEN, DisplayPrefix, PlainToken, PrefixError, RANDOM_LEN, TokenDigest,
    TokenFormatError, TokenPrefix,
};
pub use scope::{ScopeCatalogue, ScopeError, ScopeName, ScopeSet};
