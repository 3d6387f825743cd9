//! Integration tests: one binary (one link step) whose modules mirror the
//! areas they test. Each test starts the real server on 127.0.0.1:0 with a
//! fresh database through `harness::TestApp`.

mod harness;

mod api_keys;
mod bad_input;
mod bearer;
mod browser;
mod cli;
mod client_ip;
mod dev_mail;
mod error_pages;
mod health;
mod lifecycle;
mod mail;
mod mail_batches;
mod mail_deadlines;
mod mcp_card;
mod metrics;
mod notifications;
mod oidc;
mod openapi;
mod proxies;
mod scim;
mod secret_scanning;
mod secrets;
mod sessions;
mod signin;
mod static_assets;
mod storage_faults;
mod store;
mod team;
mod tokens_page;
