//! Which address a request comes from. It is the TCP peer's, unless that peer
//! is a configured trusted proxy: then it is the right-most `X-Forwarded-For`
//! hop that is not itself a trusted proxy — the address the outermost trusted
//! proxy saw. Entries further left were written by the client and are never
//! believed, nor even read.
//!
//! A hop that does not parse, met before that client hop, leaves the client
//! unknown. Falling back to the peer instead would make the client the proxy
//! itself, whose address an allow-list often contains: garbage in the header
//! would then open the door the list guards.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The client's address, or `None` when a trusted proxy's header names it in
/// a form that cannot be read.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    // Several headers are one list, in order.
    let values: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().ok())
        .collect::<Option<_>>()?;
    let mut client = peer;
    for hop in values.iter().rev().flat_map(|v| v.rsplit(',')) {
        client = parse_hop(hop.trim())?;
        if !is_trusted(&client) {
            break;
        }
    }
    Some(client)
}

/// An address as proxies write it: bare, or with a port (`1.2.3.4:5678`,
/// `[2001:db8::1]:443`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for value in values {
            h.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted() -> Vec<IpNet> {
        vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.9.0.0/16".parse().unwrap(),
        ]
    }

    #[test]
    fn a_header_from_an_untrusted_peer_is_ignored() {
        let peer = ip("203.0.113.9");
        assert_eq!(resolve(peer, &xff(&["10.0.0.1"]), &[]), Some(peer));
        assert_eq!(resolve(peer, &xff(&["garbage"]), &[]), Some(peer));
    }

    #[test]
    fn the_hop_added_by_the_trusted_proxy_is_used() {
        let peer = ip("127.0.0.1");
        let got = resolve(peer, &xff(&["6.6.6.6, 198.51.100.7, 10.9.1.1"]), &trusted());
        assert_eq!(got, Some(ip("198.51.100.7")));
        assert_eq!(resolve(peer, &HeaderMap::new(), &trusted()), Some(peer));
    }

    #[test]
    fn several_headers_are_one_list() {
        let peer = ip("127.0.0.1");
        let got = resolve(peer, &xff(&["198.51.100.7", "10.9.1.1"]), &trusted());
        assert_eq!(got, Some(ip("198.51.100.7")));
    }

    #[test]
    fn an_unreadable_hop_before_the_client_leaves_it_unknown() {
        let peer = ip("127.0.0.1");
        for header in [
            "garbage",
            "198.51.100.7, garbage",
            "198.51.100.7,",
            "unknown, 10.9.1.1",
        ] {
            assert_eq!(resolve(peer, &xff(&[header]), &trusted()), None, "{header}");
        }
    }

    #[test]
    fn what_the_client_wrote_left_of_its_hop_is_not_read() {
        let peer = ip("127.0.0.1");
        let got = resolve(peer, &xff(&["garbage, 198.51.100.7"]), &trusted());
        assert_eq!(got, Some(ip("198.51.100.7")));
        let got = resolve(
            peer,
            &xff(&["not an ip", "198.51.100.7, 10.9.1.1"]),
            &trusted(),
        );
        assert_eq!(got, Some(ip("198.51.100.7")));
    }

    #[test]
    fn hops_with_ports_and_mapped_addresses_are_read() {
        let peer = ip("127.0.0.1");
        let got = resolve(peer, &xff(&["198.51.100.7:5123"]), &trusted());
        assert_eq!(got, Some(ip("198.51.100.7")));
        let got = resolve(peer, &xff(&["[2001:db8::7]:443"]), &trusted());
        assert_eq!(got, Some(ip("2001:db8::7")));
        let got = resolve(peer, &xff(&["::ffff:10.9.1.1"]), &trusted());
        assert_eq!(got, Some(ip("10.9.1.1")));
    }
}
