//! The client's IP address, by one rule used everywhere an address is
//! recorded (last use, audit, emails): the socket's peer address, unless that
//! peer is a configured trusted proxy, in which case the right-most address in
//! `X-Forwarded-For` (or `Forwarded: for=`) that is not itself a trusted proxy.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;

use crate::app::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl std::fmt::Display for ClientIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Resolves the client address from the peer and the headers.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    // Walk the chain from the nearest hop outwards; the first address not
    // operated by us is the client. Anything further left is client-supplied.
    let mut chain: Vec<IpAddr> = forwarded_for(headers);
    if chain.is_empty() {
        chain = x_forwarded_for(headers);
    }
    for ip in chain.iter().rev() {
        if !is_trusted(ip) {
            return *ip;
        }
    }
    chain.first().copied().unwrap_or(peer)
}

fn x_forwarded_for(headers: &HeaderMap) -> Vec<IpAddr> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| parse_ip(s.trim()))
        .collect()
}

/// RFC 7239 `Forwarded: for=192.0.2.1;proto=https, for="[2001:db8::1]:443"`.
fn forwarded_for(headers: &HeaderMap) -> Vec<IpAddr> {
    headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .flat_map(|element| element.split(';'))
        .filter_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("for")
                .then(|| parse_ip(v.trim().trim_matches('"')))?
        })
        .collect()
}

/// Accepts `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1` and `[2001:db8::1]:443`.
fn parse_ip(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sock) = s.parse::<SocketAddr>() {
        return Some(sock.ip());
    }
    s.strip_prefix('[')
        .and_then(|r| r.split_once(']'))
        .and_then(|(ip, _)| ip.parse().ok())
}

// For `AppState` itself rather than any state it can be made from: taking
// the configuration by reference saves a clone of the state per request.
impl FromRequestParts<AppState> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        Ok(ClientIp(resolve(
            peer,
            &parts.headers,
            &state.config.trusted_proxies,
        )))
    }
}

/// Where a request came from, as recorded in audit events and emails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestMeta {
    pub ip: IpAddr,
    pub user_agent: Option<String>,
}

impl RequestMeta {
    pub fn ip_string(&self) -> String {
        self.ip.to_string()
    }
}

impl FromRequestParts<AppState> for RequestMeta {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let ClientIp(ip) = ClientIp::from_request_parts(parts, state).await?;
        let user_agent = parts
            .headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            // Stored and mailed: keep it to a sane size.
            .map(|v| v.chars().take(512).collect());
        Ok(RequestMeta { ip, user_agent })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_the_headers_say() {
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "1.1.1.1"), ("forwarded", "for=2.2.2.2")]);
        assert_eq!(resolve(peer, &h, &nets(&["10.0.0.0/8"])), peer);
        assert_eq!(resolve(peer, &h, &[]), peer);
    }

    #[test]
    fn trusted_proxy_hands_over_the_nearest_untrusted_hop() {
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        // The client forged the left-most entry; the proxy appended the real one.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.4, 10.0.0.7")]);
        assert_eq!(
            resolve(peer, &h, &nets(&["10.0.0.0/8"])).to_string(),
            "198.51.100.4"
        );
    }

    #[test]
    fn forwarded_header_is_understood_and_preferred() {
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let h = headers(&[
            ("forwarded", "for=\"[2001:db8::7]:4711\";proto=https"),
            ("x-forwarded-for", "198.51.100.4"),
        ]);
        assert_eq!(
            resolve(peer, &h, &nets(&["127.0.0.1/32"])).to_string(),
            "2001:db8::7"
        );
    }

    #[test]
    fn trusted_peer_without_headers_is_itself() {
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            resolve(peer, &HeaderMap::new(), &nets(&["127.0.0.0/8"])),
            peer
        );
        let h = headers(&[("x-forwarded-for", "garbage, also garbage")]);
        assert_eq!(resolve(peer, &h, &nets(&["127.0.0.0/8"])), peer);
    }
}
