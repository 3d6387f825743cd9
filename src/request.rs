//! Facts about the request that every layer records: the client's IP address
//! and user agent. One rule decides the address everywhere it is used
//! (sign-in throttles, sessions, audit events, emails, last use, the
//! development mailbox):
//!
//! - the socket's peer address, unless that peer is in
//!   `KEYSMITH_TRUSTED_PROXIES`;
//! - then the one header the operator names in `KEYSMITH_CLIENT_IP_HEADER`
//!   (`X-Forwarded-For` by default; `Forwarded` or `X-Real-IP` only when
//!   chosen), walked from the right past trusted hops. The first address not
//!   operated by a trusted proxy is the client; anything left of it was
//!   written by the client and is never believed.
//!
//! Proxies pass a client's own `Forwarded` (or `X-Forwarded-For`) through
//! unchanged, so believing any header but the one the proxy writes would let
//! a client choose its address.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, header};
use ipnet::IpNet;

use crate::app::AppState;

/// Which header a trusted proxy writes the client's address into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientIpHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx
    /// `$proxy_add_x_forwarded_for`, Caddy, Traefik).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    Forwarded,
    /// `X-Real-IP: client`, one address set (not appended) by the proxy.
    XRealIp,
}

impl ClientIpHeader {
    /// Parses the setting's value: a header name, case-insensitive.
    pub fn parse(raw: &str) -> Option<ClientIpHeader> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Some(ClientIpHeader::XForwardedFor),
            "forwarded" => Some(ClientIpHeader::Forwarded),
            "x-real-ip" => Some(ClientIpHeader::XRealIp),
            _ => None,
        }
    }

    pub fn name(self) -> HeaderName {
        match self {
            ClientIpHeader::XForwardedFor => HeaderName::from_static("x-forwarded-for"),
            ClientIpHeader::Forwarded => header::FORWARDED,
            ClientIpHeader::XRealIp => HeaderName::from_static("x-real-ip"),
        }
    }
}

/// Headers a proxy uses to describe the original request. A request that
/// carries none of them did not come through a proxy that says so.
pub const FORWARDING_HEADERS: [&str; 8] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-server",
    "x-real-ip",
    "x-original-uri",
    "via",
];

/// IPv4-mapped IPv6 peers (a listener on `[::]`) are the IPv4 address they map.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Resolves the client address from the peer and the headers.
pub fn resolve(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &[IpNet],
    from: ClientIpHeader,
) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let values = headers
        .get_all(from.name())
        .iter()
        .filter_map(|v| v.to_str().ok());
    let chain: Vec<Option<IpAddr>> = match from {
        ClientIpHeader::XRealIp => {
            // One address, written by the proxy; two values mean someone
            // else added one, and neither can be told from the other.
            let values: Vec<&str> = values.collect();
            return match values.as_slice() {
                [one] => parse_ip(one.trim()).map_or(peer, canonical),
                _ => peer,
            };
        }
        ClientIpHeader::XForwardedFor => values
            .flat_map(|v| v.split(','))
            .map(|s| parse_ip(s.trim()))
            .collect(),
        ClientIpHeader::Forwarded => values
            .flat_map(|v| v.split(','))
            .map(forwarded_for)
            .collect(),
    };
    // From the nearest hop outwards: skip our own proxies; the first other
    // address is the client. An entry that is not an address (garbage, or
    // an obfuscated `for=_hidden`) ends the walk: nothing beyond it can be
    // attributed, so the last hop we trust stands for the client.
    let mut nearest_trusted = peer;
    for entry in chain.iter().rev() {
        match entry.map(canonical) {
            Some(ip) if is_trusted(&ip) => nearest_trusted = ip,
            Some(ip) => return ip,
            None => break,
        }
    }
    nearest_trusted
}

/// The `for=` of one RFC 7239 element (`for=192.0.2.1;proto=https`,
/// `for="[2001:db8::1]:443"`); `None` when it has none that is an address.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("for")
            .then(|| parse_ip(v.trim().trim_matches('"')))?
    })
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

/// The socket peer of a request (loopback when the server was started
/// without connection info, as in router unit tests).
pub fn peer_of(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([127, 0, 0, 1]), |c| canonical(c.0.ip()))
}

/// Whether a request came straight from this machine: a loopback peer, no
/// proxy's forwarding headers, and a `Host` that names loopback (so a
/// same-host reverse proxy or a DNS-rebound name does not count).
pub fn is_direct_from_loopback(parts: &Parts) -> bool {
    let headers = &parts.headers;
    if !peer_of(parts).is_loopback() || FORWARDING_HEADERS.iter().any(|h| headers.contains_key(*h))
    {
        return false;
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(host), None) => host.to_str().unwrap_or(""),
        // HTTP/2 and absolute-form requests carry the authority in the URI.
        (None, None) => parts.uri.host().unwrap_or(""),
        _ => return false,
    };
    host_is_loopback(host)
}

/// `localhost`, `127.0.0.1:3000`, `[::1]:3000`…: a `Host` header value that
/// names this machine's loopback interface.
fn host_is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((ip, port)) if port.is_empty() || port.starts_with(':') => ip,
            _ => return false,
        },
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The client's address, by the rule in the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl std::fmt::Display for ClientIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ClientIp {
    pub fn of(parts: &Parts, state: &AppState) -> ClientIp {
        ClientIp(resolve(
            peer_of(parts),
            &parts.headers,
            &state.config.trusted_proxies,
            state.config.client_ip_header,
        ))
    }
}

// For `AppState` itself rather than any state it can be made from: taking
// the configuration by reference saves a clone of the state per request.
impl FromRequestParts<AppState> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientIp::of(parts, state))
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
        let ClientIp(ip) = ClientIp::of(parts, state);
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
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

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const XFF: ClientIpHeader = ClientIpHeader::XForwardedFor;

    #[test]
    fn untrusted_peer_is_the_client_whatever_the_headers_say() {
        let peer = ip("203.0.113.9");
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("forwarded", "for=2.2.2.2"),
            ("x-real-ip", "3.3.3.3"),
        ]);
        for from in [XFF, ClientIpHeader::Forwarded, ClientIpHeader::XRealIp] {
            assert_eq!(resolve(peer, &h, &nets(&["10.0.0.0/8"]), from), peer);
            assert_eq!(resolve(peer, &h, &[], from), peer);
        }
    }

    #[test]
    fn trusted_proxy_hands_over_the_nearest_untrusted_hop() {
        // The client forged the left-most entry; the proxy appended the real one.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.4, 10.0.0.7")]);
        assert_eq!(
            resolve(ip("10.0.0.2"), &h, &nets(&["10.0.0.0/8"]), XFF),
            ip("198.51.100.4")
        );
        // Several header lines are one list, in order.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.4"),
        ]);
        assert_eq!(
            resolve(ip("10.0.0.2"), &h, &nets(&["10.0.0.0/8"]), XFF),
            ip("198.51.100.4")
        );
    }

    #[test]
    fn a_clients_own_forwarded_header_is_ignored_unless_chosen() {
        // nginx, Caddy and Traefik pass a client's `Forwarded` through and
        // append the real address to X-Forwarded-For.
        let h = headers(&[
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-for", "198.51.100.4"),
            ("x-real-ip", "7.7.7.7"),
        ]);
        let trusted = nets(&["127.0.0.1/32"]);
        assert_eq!(
            resolve(ip("127.0.0.1"), &h, &trusted, XFF),
            ip("198.51.100.4")
        );
    }

    #[test]
    fn forwarded_is_walked_from_the_right_when_chosen() {
        let h = headers(&[(
            "forwarded",
            "for=6.6.6.6, for=\"[2001:db8::7]:4711\";proto=https, for=127.0.0.1",
        )]);
        let trusted = nets(&["127.0.0.1/32"]);
        assert_eq!(
            resolve(ip("127.0.0.1"), &h, &trusted, ClientIpHeader::Forwarded),
            ip("2001:db8::7")
        );
        // An obfuscated identifier cannot be attributed: the walk stops at
        // the last hop we trust.
        let h = headers(&[("forwarded", "for=6.6.6.6, for=_hidden")]);
        assert_eq!(
            resolve(ip("127.0.0.1"), &h, &trusted, ClientIpHeader::Forwarded),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn x_real_ip_is_one_address_when_chosen() {
        let trusted = nets(&["127.0.0.1/32"]);
        let from = ClientIpHeader::XRealIp;
        let h = headers(&[
            ("x-real-ip", "198.51.100.4"),
            ("x-forwarded-for", "6.6.6.6"),
        ]);
        assert_eq!(
            resolve(ip("127.0.0.1"), &h, &trusted, from),
            ip("198.51.100.4")
        );
        let two = headers(&[("x-real-ip", "198.51.100.4"), ("x-real-ip", "6.6.6.6")]);
        assert_eq!(
            resolve(ip("127.0.0.1"), &two, &trusted, from),
            ip("127.0.0.1")
        );
        let junk = headers(&[("x-real-ip", "not an address")]);
        assert_eq!(
            resolve(ip("127.0.0.1"), &junk, &trusted, from),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn garbage_ends_the_walk_at_the_nearest_trusted_hop() {
        let trusted = nets(&["127.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "6.6.6.6, garbage, 127.0.0.5")]);
        assert_eq!(resolve(ip("127.0.0.1"), &h, &trusted, XFF), ip("127.0.0.5"));
        assert_eq!(
            resolve(ip("127.0.0.1"), &HeaderMap::new(), &trusted, XFF),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn ipv4_mapped_peers_are_their_ipv4_address() {
        let trusted = nets(&["127.0.0.1/32"]);
        let h = headers(&[("x-forwarded-for", "::ffff:198.51.100.4")]);
        assert_eq!(
            resolve(ip("::ffff:127.0.0.1"), &h, &trusted, XFF),
            ip("198.51.100.4")
        );
    }

    #[test]
    fn the_setting_names_one_of_three_headers() {
        assert_eq!(ClientIpHeader::parse("X-Forwarded-For"), Some(XFF));
        assert_eq!(
            ClientIpHeader::parse(" forwarded "),
            Some(ClientIpHeader::Forwarded)
        );
        assert_eq!(
            ClientIpHeader::parse("X-REAL-IP"),
            Some(ClientIpHeader::XRealIp)
        );
        assert_eq!(ClientIpHeader::parse("CF-Connecting-IP"), None);
    }

    #[test]
    fn loopback_hosts_are_told_from_others() {
        for host in [
            "localhost",
            "localhost:3000",
            "127.0.0.1:3000",
            "127.1.2.3",
            "[::1]:3000",
            "[::1]",
        ] {
            assert!(host_is_loopback(host), "{host}");
        }
        for host in [
            "example.com",
            "keys.example.com:3000",
            "10.0.0.1",
            "[2001:db8::1]:80",
            "localhost.evil.com",
            "[::1]x",
            "",
        ] {
            assert!(!host_is_loopback(host), "{host}");
        }
    }

    fn parts(peer: &str, pairs: &[(&'static str, &str)]) -> Parts {
        let mut req = axum::http::Request::builder().uri("/dev/mail");
        for (k, v) in pairs {
            req = req.header(*k, *v);
        }
        let (mut parts, ()) = req.body(()).unwrap().into_parts();
        parts
            .extensions
            .insert(ConnectInfo(SocketAddr::new(ip(peer), 40000)));
        parts
    }

    #[test]
    fn only_a_direct_loopback_request_is_direct() {
        assert!(is_direct_from_loopback(&parts(
            "127.0.0.1",
            &[("host", "127.0.0.1:3000")]
        )));
        assert!(is_direct_from_loopback(&parts(
            "::1",
            &[("host", "localhost:3000")]
        )));
        // A same-host reverse proxy says so in its headers.
        assert!(!is_direct_from_loopback(&parts(
            "127.0.0.1",
            &[
                ("host", "127.0.0.1:3000"),
                ("x-forwarded-for", "203.0.113.9")
            ]
        )));
        assert!(!is_direct_from_loopback(&parts(
            "127.0.0.1",
            &[("host", "localhost"), ("via", "1.1 caddy")]
        )));
        // A rebound name, or a proxy that sets no header but keeps the Host.
        assert!(!is_direct_from_loopback(&parts(
            "127.0.0.1",
            &[("host", "keys.example.com")]
        )));
        assert!(!is_direct_from_loopback(&parts(
            "203.0.113.9",
            &[("host", "127.0.0.1:3000")]
        )));
    }
}
