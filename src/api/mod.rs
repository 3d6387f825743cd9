//! JSON and bearer handlers. The bearer side (`bearer`) is what scripts and
//! gateways call with a token: `GET /api/v2/whoami`, `/auth/verify` for
//! reverse proxies, and `POST /oauth/introspect` (RFC 7662) with its RFC 8414
//! metadata document (`metadata`). `openapi` serves the OpenAPI document of
//! all of them.

pub mod api_keys;
pub mod bearer;
pub mod introspect;
pub mod metadata;
pub mod openapi;
pub mod rotate;
pub mod secret_scanning;
pub mod verify;
pub mod whoami;
