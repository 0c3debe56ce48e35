//! The egress guard: subscribers choose the URLs Herald calls, so by default Herald refuses
//! endpoints that are or resolve to internal addresses — when a Subscription is created
//! ([`check_endpoint`]) and again at connect time ([`GuardedResolver`] for names,
//! [`literal_refused`] for IP literals), because DNS answers change. All three ask the one
//! classifier, [`is_internal`], so they cannot disagree.
//!
//! Refused: IPv4 loopback, private, link-local, unspecified, broadcast, multicast, `0/8`,
//! carrier-grade NAT, IETF protocol assignments, the TEST-NETs, the deprecated 6to4 relay anycast,
//! benchmarking and reserved; IPv6 anything outside global unicast `2000::/3` (loopback,
//! unspecified, multicast, ULA, link-local, site-local, discard-only, …), Teredo, documentation
//! and benchmarking prefixes, and local-use NAT64. An IPv6 address that embeds an IPv4 address
//! (IPv4-compatible, -mapped, -translated, NAT64 well-known prefix, 6to4) is judged by that IPv4
//! address, since a host with the matching translator or relay delivers to it: `[::127.0.0.1]`
//! is loopback, `[64:ff9b::808:808]` is as public as `8.8.8.8`.
//!
//! `[delivery] allow_private_endpoints` lifts the guard for local set-ups and tests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Is `ip` an address a subscriber may not make Herald call?
///
/// The single classifier behind the creation check, the connect-time resolver and the
/// IP-literal check. IPv6 addresses that embed an IPv4 address (see [`embedded_ipv4`]) are
/// classified as that IPv4 address, so neither form is a way around the other.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => match embedded_ipv4(v6) {
            Some(v4) => is_internal_v4(v4),
            None => is_internal_v6(v6),
        },
    }
}

/// The IPv4 address an IPv6 address carries, for the forms where reaching the IPv6 address
/// means reaching that IPv4 address through a translator, a tunnel or the dual stack of the
/// host itself — which is why the guard must judge them by the IPv4 address:
///
/// - IPv4-compatible `::a.b.c.d` (`::/96`, deprecated by RFC 4291, but some stacks still route
///   it to IPv4): `[::127.0.0.1]` is `[::7f00:1]`. `::` and `::1` are the IPv6 unspecified and
///   loopback addresses, not embeddings, and are left to the IPv6 rules.
/// - IPv4-mapped `::ffff:a.b.c.d` (`::ffff:0:0/96`): a dual-stack socket connects to the IPv4
///   address itself.
/// - IPv4-translated `::ffff:0:a.b.c.d` (`::ffff:0:0:0/96`, SIIT, RFC 2765/6145).
/// - NAT64 well-known prefix `64:ff9b::a.b.c.d` (`64:ff9b::/96`, RFC 6052): a NAT64 gateway on
///   Herald's network forwards to the IPv4 address. Public IPv4 in this form is what DNS64 hands
///   an IPv6-only host for an ordinary site, so it must stay allowed.
/// - 6to4 `2002:aabb:ccdd::/48` (`2002::/16`, RFC 3056): a 6to4 relay tunnels to `a.b.c.d`, held
///   in bits 16..48.
///
/// Deliberately absent, and refused as a whole by [`is_internal`] instead:
/// - local-use NAT64 `64:ff9b:1::/48` (RFC 8215): the operator picks the prefix length (/48 to
///   /96, RFC 6052), so where the IPv4 address sits is not knowable from the address; the prefix
///   only ever leads to a translator inside the operator's own network.
/// - Teredo `2001::/32` (RFC 4380): it carries two IPv4 addresses (the server in bits 32..64,
///   the client obfuscated in the last 32 bits), its traffic goes through whatever relay is
///   nearest, and it is a NAT-traversal scheme for end hosts, never a place a notification
///   receiver lives.
pub fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let o = v6.octets();
    let low32 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match v6.segments() {
        _ if v6.is_unspecified() || v6.is_loopback() => None,
        // IPv4-compatible ::a.b.c.d
        [0, 0, 0, 0, 0, 0, _, _] => Some(low32),
        // IPv4-mapped ::ffff:a.b.c.d
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low32),
        // IPv4-translated ::ffff:0:a.b.c.d
        [0, 0, 0, 0, 0xffff, 0, _, _] => Some(low32),
        // NAT64 well-known prefix 64:ff9b::a.b.c.d
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low32),
        // 6to4 2002:aabb:ccdd::/48
        [0x2002, ..] => Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])),
        _ => None,
    }
}

/// IPv6 addresses that embed no IPv4 address. Global unicast is `2000::/3` (IANA's IPv6 address
/// space registry), so everything outside it is refused wholesale rather than range by range:
/// unspecified and loopback, the rest of `::/8`, discard-only `100::/64` (RFC 6666), local-use
/// NAT64 `64:ff9b:1::/48`, ULA `fc00::/7`, link-local `fe80::/10`, site-local `fec0::/10`
/// (deprecated, but stacks still treat it as local), multicast `ff00::/8`, and whatever IANA
/// reserves later. An allow-list cannot miss a new local range the way a deny-list can; the only
/// IPv6 outside `2000::/3` that can reach a public host are the IPv4 embeddings (mapped,
/// compatible, translated, NAT64 well-known prefix), which [`embedded_ipv4`] handles before this
/// runs. Inside `2000::/3` the special-purpose ranges that
/// are never a delivery target are refused: Teredo (see [`embedded_ipv4`]), documentation
/// `2001:db8::/32` and `3fff::/20`, and benchmarking `2001:2::/48`.
fn is_internal_v6(v6: Ipv6Addr) -> bool {
    let s = v6.segments();
    let global_unicast = (s[0] & 0xe000) == 0x2000;
    !global_unicast
        || matches!(s, [0x2001, 0, ..]) // Teredo 2001::/32
        || matches!(s, [0x2001, 0x0db8, ..]) // documentation 2001:db8::/32
        || matches!(s, [0x2001, 0x0002, 0, ..]) // benchmarking 2001:2::/48
        || (s[0] == 0x3fff && s[1] < 0x1000) // documentation 3fff::/20
}

/// IPv4 addresses from IANA's special-purpose registry that no subscriber endpoint can
/// legitimately be, plus the private and multicast space. Ranges in that registry that are
/// globally reachable anycast services (AS112, AMT, PCP/TURN anycast) are left alone.
fn is_internal_v4(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || o[0] == 0 // "this network" 0/8
        || (o[0] == 100 && (64..128).contains(&o[1])) // carrier-grade NAT 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments 192.0.0/24
        || (o[0] == 192 && o[1] == 0 && o[2] == 2) // documentation TEST-NET-1 192.0.2/24
        || (o[0] == 192 && o[1] == 88 && o[2] == 99) // deprecated 6to4 relay anycast 192.88.99/24
        || (o[0] == 198 && (o[1] == 18 || o[1] == 19)) // benchmarking 198.18/15
        || (o[0] == 198 && o[1] == 51 && o[2] == 100) // documentation TEST-NET-2 198.51.100/24
        || (o[0] == 203 && o[1] == 0 && o[2] == 113) // documentation TEST-NET-3 203.0.113/24
        || o[0] >= 240 // reserved 240/4
}

/// Why an endpoint is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    /// Not an absolute http(s) URL.
    #[error("endpoint '{0}' is not an absolute http or https URL")]
    BadUrl(String),
    /// Resolves (only) to internal addresses.
    #[error(
        "endpoint host '{host}' resolves to internal address {ip}; Herald refuses loopback, private, link-local, unspecified and other non-public endpoints (also IPv4 embedded in IPv6) unless [delivery] allow_private_endpoints is set"
    )]
    Internal {
        /// Host as written.
        host: String,
        /// The offending address.
        ip: IpAddr,
    },
}

/// Checks an endpoint when a Subscription is created: an IP literal or any resolved address
/// that is internal refuses it. A host that does not resolve now is accepted (DNS may be
/// temporarily unavailable); the connect-time guard still applies.
pub async fn check_endpoint(url: &str, allow_private: bool) -> Result<(), EgressError> {
    let parsed = reqwest::Url::parse(url).map_err(|_| EgressError::BadUrl(url.to_owned()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(EgressError::BadUrl(url.to_owned()));
    }
    if allow_private {
        return Ok(());
    }
    if let Some(ip) = literal_ip(&parsed) {
        return if is_internal(ip) {
            Err(EgressError::Internal {
                host: ip.to_string(),
                ip,
            })
        } else {
            Ok(())
        };
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| EgressError::BadUrl(url.to_owned()))?
        .to_owned();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let lookup = tokio::net::lookup_host((host.as_str(), port));
    let resolved: Vec<SocketAddr> =
        match tokio::time::timeout(std::time::Duration::from_secs(2), lookup).await {
            Ok(Ok(addrs)) => addrs.collect(),
            _ => Vec::new(),
        };
    match resolved.into_iter().find(|a| is_internal(a.ip())) {
        Some(a) => Err(EgressError::Internal { host, ip: a.ip() }),
        None => Ok(()),
    }
}

/// A reqwest resolver that drops internal addresses from every answer (connect-time guard).
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| !is_internal(a.ip()))
                .collect();
            if addrs.is_empty() {
                let err: Box<dyn std::error::Error + Send + Sync> =
                    format!("egress refused: '{host}' resolves only to internal addresses").into();
                return Err(err);
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// The resolver to install on the delivery client, if any.
pub fn resolver(allow_private: bool) -> Option<Arc<GuardedResolver>> {
    (!allow_private).then(|| Arc::new(GuardedResolver))
}

/// The address of an IP-literal host (an IPv6 literal without its brackets), `None` for a
/// domain name. The creation and connect-time checks both read literals through this, so they
/// judge the very same address (the URL parser has already normalised forms like `[::127.0.0.1]`
/// and `http://2130706433/`).
fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    }
}

/// Connect-time check for IP-literal URLs (reqwest does not consult the resolver for them).
pub fn literal_refused(url: &reqwest::Url, allow_private: bool) -> Option<EgressError> {
    if allow_private {
        return None;
    }
    let ip = literal_ip(url)?;
    is_internal(ip).then(|| EgressError::Internal {
        host: ip.to_string(),
        ip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_ranges_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(
                is_internal(ip.parse().expect("ip")),
                "{ip} should be internal"
            );
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(
                !is_internal(ip.parse().expect("ip")),
                "{ip} should be public"
            );
        }
    }

    fn internal(ip: &str) -> bool {
        is_internal(ip.parse().expect("ip"))
    }

    /// The six forms a probe got past the guard before the classifier judged embedded IPv4.
    #[test]
    fn probed_ipv6_forms_of_loopback_and_site_local_are_internal() {
        for ip in [
            "::7f00:1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "::ffff:0:7f00:1",
            "fec0::1",
        ] {
            assert!(internal(ip), "{ip} should be internal");
        }
    }

    #[test]
    fn each_embedding_form_is_judged_by_its_ipv4_address() {
        for (form, v4) in [
            ("::a9fe:a9fe", "169.254.169.254"),
            ("::ffff:a00:1", "10.0.0.1"),
            ("::ffff:0:c0a8:101", "192.168.1.1"),
            ("64:ff9b::a00:1", "10.0.0.1"),
            ("64:ff9b::a9fe:a9fe", "169.254.169.254"),
            ("2002:a00:1:5::9", "10.0.0.1"),
            ("2002:c0a8:101::", "192.168.1.1"),
        ] {
            assert_eq!(
                embedded_ipv4(form.parse().expect("ip")),
                Some(v4.parse().expect("v4")),
                "{form}"
            );
            assert!(internal(form), "{form} should be internal");
        }
    }

    /// DNS64 hands IPv6-only hosts `64:ff9b::/96` addresses for ordinary sites; blocking them
    /// (or public IPv4 in the other forms) would break legitimate subscribers.
    #[test]
    fn public_ipv4_embedded_in_ipv6_is_not_internal() {
        for ip in [
            "::808:808",
            "::8.8.8.8",
            "::ffff:808:808",
            "::ffff:0:808:808",
            "64:ff9b::808:808",
            "64:ff9b::5db8:d822",
            "2002:808:808::",
            "2002:808:808:1::1",
        ] {
            assert!(!internal(ip), "{ip} should be public");
        }
    }

    #[test]
    fn unspecified_and_loopback_ipv6_are_not_embeddings_but_stay_internal() {
        assert_eq!(embedded_ipv4(Ipv6Addr::UNSPECIFIED), None);
        assert_eq!(embedded_ipv4(Ipv6Addr::LOCALHOST), None);
        assert!(internal("::"));
        assert!(internal("::1"));
    }

    #[test]
    fn site_local_ipv6_is_refused() {
        for ip in ["fec0::1", "fed0::1", "feff:ffff::1"] {
            assert!(internal(ip), "{ip} should be internal");
        }
        // fe80::/10 and fec0::/10 are neighbours; the boundary must not be off by one.
        assert!(internal("febf::1"));
    }

    #[test]
    fn local_use_nat64_and_teredo_are_refused_whole() {
        for ip in [
            "64:ff9b:1::808:808",
            "64:ff9b:1:ffff::1",
            "2001::4136:e378:8000:63bf:3fff:fdd2",
            "2001:0:808:808::f7f7:f7f7",
        ] {
            assert!(internal(ip), "{ip} should be internal");
            assert_eq!(embedded_ipv4(ip.parse().expect("ip")), None, "{ip}");
        }
    }

    #[test]
    fn documentation_discard_and_benchmarking_ranges_are_refused() {
        for ip in [
            "2001:db8::1",
            "3fff::1",
            "3fff:fff::1",
            "100::1",
            "2001:2::1",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.200",
            "192.88.99.1",
            "198.18.0.1",
        ] {
            assert!(internal(ip), "{ip} should be internal");
        }
        // Neighbours that are ordinary global unicast stay allowed.
        for ip in [
            "2001:db9::1",
            "3fff:1000::1",
            "2001:2:1::1",
            "2001:4860::8888",
        ] {
            assert!(!internal(ip), "{ip} should be public");
        }
    }

    #[test]
    fn ipv6_outside_global_unicast_is_refused() {
        for ip in [
            "::1:0:0:0",
            "100::",
            "5f00::1",
            "4000::1",
            "e000::1",
            "ff02::1",
        ] {
            assert!(internal(ip), "{ip} should be internal");
        }
    }

    #[tokio::test]
    async fn probed_ipv6_literal_endpoints_are_refused_at_creation_and_connect() {
        for url in [
            "http://[::7f00:1]:9/hook",
            "http://[::127.0.0.1]:9/hook",
            "http://[64:ff9b::7f00:1]:9/hook",
            "http://[2002:7f00:1::]:9/hook",
            "http://[::ffff:0:7f00:1]:9/hook",
            "http://[fec0::1]:9/hook",
        ] {
            assert!(
                matches!(
                    check_endpoint(url, false).await,
                    Err(EgressError::Internal { .. })
                ),
                "{url} should be refused at creation"
            );
            let parsed = reqwest::Url::parse(url).expect("url");
            assert!(
                literal_refused(&parsed, false).is_some(),
                "{url} should be refused at connect"
            );
        }
        assert!(
            check_endpoint("http://[64:ff9b::808:808]:9/hook", false)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn loopback_endpoints_are_refused_unless_allowed() {
        assert!(matches!(
            check_endpoint("http://127.0.0.1:9/hook", false).await,
            Err(EgressError::Internal { .. })
        ));
        assert!(matches!(
            check_endpoint("http://localhost:9/hook", false).await,
            Err(EgressError::Internal { .. })
        ));
        assert!(matches!(
            check_endpoint("http://[::1]:9/hook", false).await,
            Err(EgressError::Internal { .. })
        ));
        assert!(
            check_endpoint("http://127.0.0.1:9/hook", true)
                .await
                .is_ok()
        );
        assert!(matches!(
            check_endpoint("ftp://example.org/x", false).await,
            Err(EgressError::BadUrl(_))
        ));
    }

    #[test]
    fn literal_check_catches_ip_urls_at_connect_time() {
        let u = reqwest::Url::parse("http://10.0.0.5/x").expect("url");
        assert!(literal_refused(&u, false).is_some());
        assert!(literal_refused(&u, true).is_none());
        let d = reqwest::Url::parse("http://example.org/x").expect("url");
        assert!(literal_refused(&d, false).is_none());
    }
}

/// Property tests: the classifier against a reference written independently, as a table of
/// `u128`/`u32` prefixes, over random addresses biased so that every special prefix is hit.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// IPv4 ranges refused, as (network, prefix length).
    const V4_REFUSED: &[(u32, u32)] = &[
        (0x0000_0000, 8),  // 0.0.0.0/8
        (0x0a00_0000, 8),  // 10/8
        (0x6440_0000, 10), // 100.64/10
        (0x7f00_0000, 8),  // 127/8
        (0xa9fe_0000, 16), // 169.254/16
        (0xac10_0000, 12), // 172.16/12
        (0xc000_0000, 24), // 192.0.0/24
        (0xc000_0200, 24), // 192.0.2/24
        (0xc058_6300, 24), // 192.88.99/24
        (0xc0a8_0000, 16), // 192.168/16
        (0xc612_0000, 15), // 198.18/15
        (0xc633_6400, 24), // 198.51.100/24
        (0xcb00_7100, 24), // 203.0.113/24
        (0xe000_0000, 4),  // 224/4
        (0xf000_0000, 4),  // 240/4 (includes 255.255.255.255)
    ];

    /// IPv6 prefixes whose last 32 bits are an IPv4 address judged as such.
    const V6_LOW32: &[(u128, u32)] = &[
        (0, 96),                      // ::/96 (:: and ::1 land in 0/8: refused either way)
        (0xffff_0000_0000, 96),       // ::ffff:0:0/96
        (0xffff_0000_0000_0000, 96),  // ::ffff:0:0:0/96
        (0x0064_ff9b_u128 << 96, 96), // 64:ff9b::/96
    ];

    /// 6to4: IPv4 in bits 16..48.
    const V6_6TO4: (u128, u32) = (0x2002_u128 << 112, 16);

    /// IPv6 refused whole inside global unicast 2000::/3.
    const V6_REFUSED: &[(u128, u32)] = &[
        (0x2001_0000_u128 << 96, 32),      // Teredo
        (0x2001_0db8_u128 << 96, 32),      // documentation
        (0x2001_0002_0000_u128 << 80, 48), // benchmarking
        (0x3fff_u128 << 112, 20),          // documentation
    ];

    /// Global unicast, everything else (without an IPv4 inside) is refused.
    const V6_GLOBAL: (u128, u32) = (0x2000_u128 << 112, 3);

    /// Prefixes the IPv6 strategy aims at, beyond the tables above.
    const V6_OTHER: &[(u128, u32)] = &[
        (0x0064_ff9b_0001_u128 << 80, 48), // local-use NAT64
        (0x0100_u128 << 112, 64),          // discard-only
        (0xfc00_u128 << 112, 7),           // ULA
        (0xfe80_u128 << 112, 10),          // link-local
        (0xfec0_u128 << 112, 10),          // site-local
        (0xff00_u128 << 112, 8),           // multicast
        (0, 8),                            // ::/8
        (0x2000_u128 << 112, 3),           // global unicast
    ];

    fn in_v4(a: u32, (net, len): (u32, u32)) -> bool {
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        a & mask == net
    }

    fn in_v6(a: u128, (net, len): (u128, u32)) -> bool {
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - len)
        };
        a & mask == net
    }

    fn reference_v4(a: u32) -> bool {
        V4_REFUSED.iter().any(|&r| in_v4(a, r))
    }

    fn reference_v6(a: u128) -> bool {
        if V6_LOW32.iter().any(|&r| in_v6(a, r)) {
            return reference_v4(a as u32);
        }
        if in_v6(a, V6_6TO4) {
            return reference_v4((a >> 80) as u32);
        }
        !in_v6(a, V6_GLOBAL) || V6_REFUSED.iter().any(|&r| in_v6(a, r))
    }

    /// Any one prefix of `table`.
    fn under<T: Copy + std::fmt::Debug + 'static>(
        table: &'static [(T, u32)],
    ) -> impl Strategy<Value = (T, u32)> {
        proptest::sample::select(table)
    }

    fn fill_v6((net, len): (u128, u32), bits: u128) -> u128 {
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - len)
        };
        net | (bits & !mask)
    }

    fn ipv4s() -> impl Strategy<Value = u32> {
        prop_oneof![
            any::<u32>(),
            (under(V4_REFUSED), any::<u32>()).prop_map(|((net, len), bits)| {
                let mask = u32::MAX << (32 - len);
                net | (bits & !mask)
            }),
            // Just outside each refused range: the boundaries are where masks go wrong.
            (under(V4_REFUSED), any::<bool>()).prop_map(|((net, len), below)| {
                let size = 1u32 << (32 - len);
                if below {
                    net.wrapping_sub(1)
                } else {
                    net.wrapping_add(size)
                }
            }),
        ]
    }

    fn ipv6s() -> impl Strategy<Value = u128> {
        let all: Vec<(u128, u32)> = V6_LOW32
            .iter()
            .chain(V6_REFUSED)
            .chain(V6_OTHER)
            .copied()
            .chain([V6_6TO4])
            .collect();
        prop_oneof![
            1 => any::<u128>(),
            6 => (proptest::sample::select(all.clone()), any::<u128>()).prop_map(|(p, bits)| fill_v6(p, bits)),
            // First and last address of each prefix and the addresses just outside it.
            2 => (proptest::sample::select(all), 0..4u8).prop_map(|((net, len), end)| {
                let last = fill_v6((net, len), u128::MAX);
                match end {
                    0 => net,
                    1 => last,
                    2 => net.wrapping_sub(1),
                    _ => last.wrapping_add(1),
                }
            }),
            // Embedding forms with an IPv4 drawn from the biased IPv4 strategy, so internal and
            // public embedded addresses are both common.
            3 => (under(V6_LOW32), ipv4s(), any::<u128>())
                .prop_map(|(p, v4, bits)| fill_v6(p, (bits & !0xffff_ffff) | u128::from(v4))),
            2 => (ipv4s(), any::<u128>()).prop_map(|(v4, bits)| {
                fill_v6(V6_6TO4, (bits & !(0xffff_ffff_u128 << 80)) | (u128::from(v4) << 80))
            }),
        ]
    }

    /// Every embedding of `v4` that is judged by the IPv4 address, with `bits` filling what the
    /// form leaves free (6to4 subnet and interface id).
    fn embeddings(v4: u32, bits: u128) -> Vec<u128> {
        let low = u128::from(v4);
        let mut out: Vec<u128> = V6_LOW32.iter().map(|&(net, _)| net | low).collect();
        out.push(fill_v6(
            V6_6TO4,
            (bits & 0xffff_ffff_ffff_ffff_ffff) | (low << 80),
        ));
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn ipv4_classification_matches_the_reference(a in ipv4s()) {
            prop_assert_eq!(is_internal(IpAddr::V4(Ipv4Addr::from(a))), reference_v4(a));
        }

        #[test]
        fn ipv6_classification_matches_the_reference(a in ipv6s()) {
            let ip = Ipv6Addr::from(a);
            prop_assert_eq!(is_internal(IpAddr::V6(ip)), reference_v6(a), "{}", ip);
        }

        #[test]
        fn every_embedding_of_an_ipv4_classifies_like_the_ipv4(a in ipv4s(), bits in any::<u128>()) {
            let v4 = Ipv4Addr::from(a);
            let expected = is_internal(IpAddr::V4(v4));
            for e in embeddings(a, bits) {
                let ip = Ipv6Addr::from(e);
                prop_assert_eq!(is_internal(IpAddr::V6(ip)), expected, "{} embeds {}", ip, v4);
            }
        }

        #[test]
        fn local_use_nat64_and_teredo_are_internal_whatever_they_carry(bits in any::<u128>()) {
            for p in [(0x0064_ff9b_0001_u128 << 80, 48), (0x2001_0000_u128 << 96, 32)] {
                let ip = Ipv6Addr::from(fill_v6(p, bits));
                prop_assert!(is_internal(IpAddr::V6(ip)), "{}", ip);
            }
        }
    }
}
