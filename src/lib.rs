//! Keysmith: personal API tokens for a product — the settings page, the team
//! controls, the notification emails and the bearer verification endpoints.

pub mod api;
pub mod app;
pub mod auth;
pub mod clock;
pub mod config;
pub mod domain;
pub mod error;
pub mod machine_layer;
pub mod mail;
pub mod metrics;
pub mod request;
pub mod scim;
pub mod serve;
pub mod service;
pub mod store;
pub mod token;
pub mod verify;
pub mod web;
