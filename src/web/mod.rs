//! Browser-facing handlers: pages, fragments and the assets they load.

pub mod assets;
pub mod client_ip;
pub mod health;
