//! Browser-facing handlers: pages, fragments and the assets they load.

pub mod account;
pub mod assets;
pub mod dev_mail;
pub mod flash;
pub mod format;
pub mod health;
pub mod layout;
pub mod mcp;
pub mod oidc;
pub mod pages;
pub mod regenerate;
pub mod revoke_link;
pub mod scim_tokens;
pub mod setup;
pub mod signin;
pub mod team;
pub mod team_audit;
pub mod token_ips;
pub mod tokens;
