//! Operations that the pages and the JSON API share: permission checks,
//! validation into domain types, one transaction each, audit and
//! invalidation. Handlers stay thin by calling these.

pub mod leaks;
pub mod rotation;
pub mod team;
pub mod tokens;
