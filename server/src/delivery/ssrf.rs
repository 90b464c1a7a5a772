//! The outbound address guard: tenant-supplied endpoint URLs must not reach
//! the daemon's own network (loopback, private, link-local, metadata, ...)
//! unless an operator allowlists it in `delivery.allow_private_targets`.
//!
//! Two checks cover every way a connection gets an address:
//! - [`AddressPolicy::check_url`] for IP literals, which reqwest connects to
//!   without asking the resolver;
//! - [`GuardedResolver`] for names: reqwest connects only to the addresses it
//!   returns, so the address checked is the address used and a DNS answer
//!   that changes between check and connect (rebinding) gains nothing.
//!
//! The client must also be built with `redirect(Policy::none())` (a redirect
//! is a new URL that `check_url` never saw) and `no_proxy()` (through a proxy
//! the guard would only see the proxy's address).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use reqwest::{
    dns::{Addrs, Name, Resolve, Resolving},
    Url,
};

#[derive(Debug, thiserror::Error)]
pub enum SsrfError {
    #[error("URL scheme `{0}` is not allowed; use http or https")]
    Scheme(String),
    #[error("URL has no host")]
    NoHost,
    #[error("{ip} is {reason}; allow it with delivery.allow_private_targets")]
    Refused { ip: IpAddr, reason: String },
    #[error("could not resolve {host}: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error("{host} resolved to no addresses")]
    NoAddresses { host: String },
    #[error("every address of {host} is refused: {first}")]
    AllRefused { host: String, first: Box<SsrfError> },
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

const fn v6(segments: [u16; 8], len: u8) -> Ipv6Net {
    let [a, b, c, d, e, f, g, h] = segments;
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), len)
}

/// Refused IPv4 ranges; the first match names the reason, so narrower
/// ranges come before the ranges that contain them.
const REFUSED_V4: &[(Ipv4Net, &str)] = &[
    (v4(0, 0, 0, 0, 32), "the unspecified address"),
    (v4(0, 0, 0, 0, 8), "in 0.0.0.0/8 (\"this network\")"),
    (v4(10, 0, 0, 0, 8), "a private address"),
    (v4(100, 64, 0, 0, 10), "a carrier-grade NAT address"),
    (v4(127, 0, 0, 0, 8), "a loopback address"),
    (v4(169, 254, 169, 254, 32), "the cloud metadata address"),
    (v4(169, 254, 0, 0, 16), "a link-local address"),
    (v4(172, 16, 0, 0, 12), "a private address"),
    (
        v4(192, 0, 0, 0, 24),
        "reserved for IETF protocol assignments",
    ),
    (v4(192, 0, 2, 0, 24), "a documentation address"),
    (v4(192, 88, 99, 0, 24), "a deprecated 6to4 relay address"),
    (v4(192, 168, 0, 0, 16), "a private address"),
    (v4(198, 18, 0, 0, 15), "a benchmarking address"),
    (v4(198, 51, 100, 0, 24), "a documentation address"),
    (v4(203, 0, 113, 0, 24), "a documentation address"),
    (v4(224, 0, 0, 0, 4), "a multicast address"),
    (v4(255, 255, 255, 255, 32), "the broadcast address"),
    (v4(240, 0, 0, 0, 4), "a reserved address"),
];

const REFUSED_V6: &[(Ipv6Net, &str)] = &[
    (v6([0; 8], 128), "the unspecified address"),
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "a loopback address"),
    (
        v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
        "a local-use NAT64 address",
    ),
    (
        v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64),
        "a discard-only address",
    ),
    // SIIT's IPv4-translated form; a translator would deliver it to the
    // embedded IPv4 address, which the guard never sees.
    (
        v6([0, 0, 0, 0, 0xffff, 0, 0, 0], 96),
        "an IPv4-translated address",
    ),
    // Teredo tunnels to an IPv4 relay and an obfuscated IPv4 client that
    // could be anything, the daemon's own network included.
    (v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32), "a Teredo address"),
    (
        v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48),
        "a benchmarking address",
    ),
    (
        v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        "a documentation address",
    ),
    (
        v6([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254], 128),
        "the cloud metadata address",
    ),
    (
        v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        "a unique local (private) address",
    ),
    (
        v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
        "a link-local address",
    ),
    (
        v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
        "a deprecated site-local address",
    ),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "a multicast address"),
];

/// The IPv4 address carried inside an IPv6 one, where the network would
/// deliver to that IPv4 address, with the kind of embedding.
fn embedded_v4(ip: Ipv6Addr) -> Option<(Ipv4Addr, &'static str)> {
    let s = ip.segments();
    let low = Ipv4Addr::from(ip.to_bits() as u32);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some((low, "an IPv4-mapped address")),
        // `::` and `::1` are judged as IPv6 before this is reached.
        [0, 0, 0, 0, 0, 0, _, _] => Some((low, "an IPv4-compatible address")),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some((low, "a NAT64 address")),
        [0x2002, hi, lo, ..] => {
            let bits = (u32::from(hi) << 16) | u32::from(lo);
            Some((Ipv4Addr::from(bits), "a 6to4 address"))
        }
        _ => None,
    }
}

fn refusal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    REFUSED_V4
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|(_, why)| *why)
}

/// Why `ip` is refused by default, or `None` when it is a public address.
fn refusal(ip: IpAddr) -> Option<String> {
    match ip {
        IpAddr::V4(ip) => refusal_v4(ip).map(str::to_string),
        IpAddr::V6(ip) => {
            if let Some((_, why)) = REFUSED_V6.iter().find(|(net, _)| net.contains(&ip)) {
                return Some(why.to_string());
            }
            let (inner, kind) = embedded_v4(ip)?;
            refusal_v4(inner).map(|why| format!("{kind} of {inner}, which is {why}"))
        }
    }
}

/// Which addresses outbound delivery may connect to.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allow: Vec<IpNet>,
}

impl AddressPolicy {
    /// `allow` opens ranges that are refused by default.
    pub fn new(allow: Vec<IpNet>) -> Self {
        AddressPolicy { allow }
    }

    pub fn is_allowed(&self, ip: IpAddr) -> bool {
        self.check(ip).is_ok()
    }

    pub fn check(&self, ip: IpAddr) -> Result<(), SsrfError> {
        if self.allowlisted(ip) {
            return Ok(());
        }
        match refusal(ip) {
            Some(reason) => Err(SsrfError::Refused { ip, reason }),
            None => Ok(()),
        }
    }

    /// An allowlisted IPv4 range also opens its IPv6 embeddings.
    fn allowlisted(&self, ip: IpAddr) -> bool {
        let inner = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(|(inner, _)| IpAddr::V4(inner)),
            IpAddr::V4(_) => None,
        };
        self.allow
            .iter()
            .any(|net| net.contains(&ip) || inner.is_some_and(|inner| net.contains(&inner)))
    }

    /// Checks the scheme, and the host when it is an IP literal; names are
    /// checked by [`GuardedResolver`] when they are resolved.
    pub fn check_url(&self, url: &Url) -> Result<(), SsrfError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(SsrfError::Scheme(url.scheme().to_string()));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or(SsrfError::NoHost)?;
        // The URL parser has already normalised IPv4 forms such as
        // `0x7f.1`; IPv6 literals keep their brackets.
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        match literal.parse::<IpAddr>() {
            Ok(ip) => self.check(ip),
            Err(_) => Ok(()),
        }
    }

    /// Resolves `host` and keeps only the addresses this policy allows.
    pub async fn resolve(&self, host: &str) -> Result<Vec<SocketAddr>, SsrfError> {
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
            .await
            .map_err(|source| SsrfError::Resolve {
                host: host.to_string(),
                source,
            })?
            .collect();
        let mut first_refusal = None;
        let mut allowed = Vec::with_capacity(resolved.len());
        for addr in resolved {
            match self.check(addr.ip()) {
                Ok(()) => allowed.push(addr),
                Err(refused) => {
                    first_refusal.get_or_insert(refused);
                }
            }
        }
        match (allowed.is_empty(), first_refusal) {
            (false, _) => Ok(allowed),
            (true, Some(first)) => Err(SsrfError::AllRefused {
                host: host.to_string(),
                first: Box::new(first),
            }),
            (true, None) => Err(SsrfError::NoAddresses {
                host: host.to_string(),
            }),
        }
    }
}

/// reqwest's resolver, filtered through an [`AddressPolicy`].
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<AddressPolicy>,
}

impl GuardedResolver {
    pub fn new(policy: Arc<AddressPolicy>) -> Self {
        GuardedResolver { policy }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let addrs = policy.resolve(name.as_str()).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::str::FromStr;

    use tokio::{
        io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
        net::TcpListener,
    };

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn open(nets: &[&str]) -> AddressPolicy {
        AddressPolicy::new(nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    // Embedded IPv4 (mapped, compatible, NAT64, 6to4) is judged by the IPv4.
    const REFUSED: &str = "127.0.0.1 127.255.255.254 ::1 10.1.2.3 172.16.0.1 172.31.255.255 \
        192.168.1.1 fc00::1 fd12:3456::1 169.254.0.1 169.254.169.254 fe80::1 100.64.0.1 \
        100.127.255.255 224.0.0.1 239.255.255.250 ff02::1 0.0.0.0 :: 255.255.255.255 192.0.2.1 \
        198.51.100.7 203.0.113.9 198.18.0.1 198.19.255.255 0.1.2.3 240.0.0.1 192.0.0.170 \
        fd00:ec2::254 2001:db8::1 100::1 fec0::1 64:ff9b:1::1 ::ffff:127.0.0.1 ::ffff:10.0.0.1 \
        ::ffff:169.254.169.254 ::127.0.0.1 64:ff9b::a00:1 64:ff9b::127.0.0.1 2002:7f00:1::1";

    const ALLOWED: &str = "1.1.1.1 8.8.8.8 93.184.216.34 100.63.255.255 100.128.0.0 \
        172.15.255.255 172.32.0.0 169.253.255.255 198.17.255.255 198.20.0.0 223.255.255.255 \
        2606:4700::1111 2001:4860:4860::8888 ::ffff:8.8.8.8 64:ff9b::808:808 2002:808:808::1";

    #[test]
    fn refuses_every_special_range_by_default() {
        let policy = AddressPolicy::default();
        for addr in REFUSED.split_whitespace() {
            assert!(!policy.is_allowed(ip(addr)), "{addr} should be refused");
        }
        for addr in ALLOWED.split_whitespace() {
            assert!(policy.is_allowed(ip(addr)), "{addr} should be allowed");
        }
    }

    #[test]
    fn refusals_say_why() {
        let policy = AddressPolicy::default();
        let message = |addr| policy.check(ip(addr)).unwrap_err().to_string();
        let loopback =
            "127.0.0.1 is a loopback address; allow it with delivery.allow_private_targets";
        assert_eq!(message("127.0.0.1"), loopback);
        assert!(message("169.254.169.254").contains("the cloud metadata address"));
        assert!(message("100.64.1.1").contains("carrier-grade NAT"));
        let mapped = "::ffff:127.0.0.1 is an IPv4-mapped address of 127.0.0.1, which is a loopback";
        assert!(message("::ffff:127.0.0.1").starts_with(mapped));
    }

    #[test]
    fn teredo_is_refused_whatever_it_embeds() {
        let policy = AddressPolicy::default();
        // Server 65.54.227.120, client obfuscated: both parts are public.
        for addr in [
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:0:ffff::",
        ] {
            let refused = policy.check(ip(addr)).unwrap_err().to_string();
            assert!(refused.contains("a Teredo address"), "{addr}: {refused}");
        }
        // Neighbours outside 2001::/32 stay public.
        assert!(policy.is_allowed(ip("2001:1::1")));
        assert!(policy.is_allowed(ip("2001:4860:4860::8888")));
    }

    #[test]
    fn ipv4_translated_is_refused_even_for_a_public_ipv4() {
        let policy = AddressPolicy::default();
        for addr in ["::ffff:0:8.8.8.8", "::ffff:0:127.0.0.1", "::ffff:0:0:0"] {
            let refused = policy.check(ip(addr)).unwrap_err().to_string();
            assert!(
                refused.contains("an IPv4-translated address"),
                "{addr}: {refused}"
            );
        }
    }

    #[test]
    fn local_use_nat64_is_refused_and_well_known_nat64_follows_its_ipv4() {
        let policy = AddressPolicy::default();
        for addr in ["64:ff9b:1::1", "64:ff9b:1::808:808", "64:ff9b:1:ffff::1"] {
            let refused = policy.check(ip(addr)).unwrap_err().to_string();
            assert!(
                refused.contains("a local-use NAT64 address"),
                "{addr}: {refused}"
            );
        }
        assert!(policy.is_allowed(ip("64:ff9b::8.8.8.8")));
        assert!(!policy.is_allowed(ip("64:ff9b::10.0.0.1")));
        assert!(policy.is_allowed(ip("64:ff9b:2::1")));
    }

    #[test]
    fn ipv4_mapped_is_judged_by_its_ipv4() {
        let policy = AddressPolicy::default();
        for inner in [
            "127.0.0.1",
            "10.0.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
        ] {
            let mapped = format!("::ffff:{inner}");
            let refused = policy.check(ip(&mapped)).unwrap_err().to_string();
            let expected = format!("an IPv4-mapped address of {inner}, which is");
            assert!(refused.contains(&expected), "{mapped}: {refused}");
        }
        assert!(policy.is_allowed(ip("::ffff:1.1.1.1")));
        assert!(open(&["10.0.0.0/8"]).is_allowed(ip("::ffff:10.0.0.1")));
    }

    #[test]
    fn allowlist_opens_only_its_ranges() {
        let policy = open(&["127.0.0.0/8", "fd00::/8"]);
        for addr in ["127.0.0.1", "127.1.2.3", "::ffff:127.0.0.1", "fd12::1"] {
            assert!(policy.is_allowed(ip(addr)), "{addr}");
        }
        for addr in ["::1", "10.0.0.1", "fc00::1", "169.254.169.254"] {
            assert!(!policy.is_allowed(ip(addr)), "{addr}");
        }
        assert!(open(&["0.0.0.0/0", "::/0"]).is_allowed(ip("169.254.169.254")));
    }

    #[test]
    fn check_url_checks_scheme_and_literals() {
        let policy = AddressPolicy::default();
        let check = |url: &str| policy.check_url(&Url::parse(url).unwrap());
        for url in [
            "https://example.com/a",
            "http://93.184.216.34:8080/",
            "https://[2606:4700::1111]/",
        ] {
            assert!(check(url).is_ok(), "{url}");
        }
        // The URL parser normalises hex, integer and trailing-dot IPv4 forms.
        let refused = "http://127.0.0.1/ http://[::1]:9000/ http://[::ffff:7f00:1]/ \
            http://0x7f.1/ http://2130706433/ http://127.0.0.1./ http://0/ \
            https://169.254.169.254/latest/meta-data/ http://[fd00:ec2::254]/";
        for url in refused.split_whitespace() {
            assert!(
                matches!(check(url), Err(SsrfError::Refused { .. })),
                "{url}"
            );
        }
        assert!(matches!(check("ftp://example.com/"), Err(SsrfError::Scheme(s)) if s == "ftp"));
        assert!(matches!(
            check("file:///etc/passwd"),
            Err(SsrfError::Scheme(_))
        ));
        let local = Url::parse("http://127.0.0.1:1/").unwrap();
        assert!(open(&["127.0.0.0/8"]).check_url(&local).is_ok());
    }

    #[tokio::test]
    async fn resolver_refuses_localhost_unless_allowlisted() {
        let name = || Name::from_str("localhost").unwrap();
        let guarded = GuardedResolver::new(Arc::new(AddressPolicy::default()));
        let error = guarded.resolve(name()).await.err().unwrap().to_string();
        assert!(
            error.starts_with("every address of localhost is refused: "),
            "{error}"
        );

        let guarded = GuardedResolver::new(Arc::new(open(&["127.0.0.0/8"])));
        let addrs: Vec<_> = guarded.resolve(name()).await.unwrap().collect();
        // `::1`, if localhost has it, is still refused.
        let all_v4_loopback = addrs
            .iter()
            .all(|a| a.ip().is_ipv4() && a.ip().is_loopback());
        assert!(!addrs.is_empty() && all_v4_loopback, "{addrs:?}");
    }

    #[tokio::test]
    async fn client_connects_only_where_the_resolver_allows() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://localhost:{}/",
            listener.local_addr().unwrap().port()
        );
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                // Answer after the request head, as hyper expects.
                let mut socket = BufReader::new(socket);
                let mut line = String::new();
                while socket.read_line(&mut line).await.unwrap_or(0) > 2 {
                    line.clear();
                }
                let reply = b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n";
                let _ = socket.get_mut().write_all(reply).await;
            }
        });
        let client = |policy: AddressPolicy| {
            let resolver = Arc::new(GuardedResolver::new(Arc::new(policy)));
            let builder = reqwest::Client::builder().dns_resolver(resolver).no_proxy();
            builder
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap()
        };
        let refused = client(AddressPolicy::default()).post(&url).send().await;
        // The sender logs the error's source chain; the reason must be in it.
        let error = refused.unwrap_err();
        let chain: Vec<String> =
            std::iter::successors(std::error::Error::source(&error), |e| e.source())
                .map(|e| e.to_string())
                .collect();
        let expected = "every address of localhost is refused: 127.0.0.1 is a loopback address";
        assert!(chain.iter().any(|e| e.starts_with(expected)), "{chain:?}");
        let allowed = client(open(&["127.0.0.0/8"])).post(&url).send().await;
        assert_eq!(allowed.unwrap().status(), 204);
    }
}
