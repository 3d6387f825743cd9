//! `/api/user/api-keys`: the JSON twin of the settings page.

mod create;
mod manage;
