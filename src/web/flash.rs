//! One-time messages carried across a redirect (plain form posts without
//! JavaScript): set on the redirect, shown and cleared by the next page.

use axum_extra::extract::cookie::{Cookie, CookieJar};

use crate::config::Config;

const FLASH: &str = "keysmith_flash";

pub fn set(jar: CookieJar, config: &Config, message: &str) -> CookieJar {
    let encoded: String = url::form_urlencoded::byte_serialize(message.as_bytes()).collect();
    let mut cookie = Cookie::new(FLASH, encoded);
    cookie.set_http_only(true);
    cookie.set_path("/");
    cookie.set_secure(config.is_https());
    cookie.set_same_site(axum_extra::extract::cookie::SameSite::Lax);
    jar.add(cookie)
}

/// The pending message, if any, and the jar that clears it.
pub fn take(jar: CookieJar) -> (CookieJar, Option<String>) {
    let Some(value) = jar.get(FLASH).map(|c| c.value().to_string()) else {
        return (jar, None);
    };
    let message = url::form_urlencoded::parse(format!("m={value}").as_bytes())
        .next()
        .map(|(_, v)| v.chars().take(300).collect::<String>());
    let mut removal = Cookie::from(FLASH);
    removal.set_path("/");
    (jar.remove(removal), message)
}
