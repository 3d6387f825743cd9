//! Authentication of people: one-time link secrets (sign-in, revoke-from-email,
//! invitation, first-run setup). Sessions and CSRF join this module as the
//! sign-in pages arrive.

pub mod links;
pub mod signin;
