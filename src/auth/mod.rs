//! Authentication of people in browsers: random secrets, one-time sign-in
//! links, sessions, CSRF protection, and the throttle on link requests.

pub mod csrf;
pub mod oidc;
pub mod secret;
pub mod session;
pub mod signin;
pub mod throttle;
