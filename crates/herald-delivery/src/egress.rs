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
//! `[delivery] private_endpoint_allowlist` admits named internal endpoints while every other
//! internal address stays refused ([`Guard::admits`], the one decision all checks ask):
//!
//! - a CIDR (`10.20.0.0/16`, `fd00:1::/64`) admits the addresses in it, whatever host name
//!   led there and on any port. An IPv6 address that embeds an IPv4 address is judged by that
//!   IPv4 address against IPv4 CIDRs only, as the classifier judges it: `10.0.0.0/8` admits
//!   `[::ffff:10.1.2.3]` (and the other embeddings of `10.x`), and no IPv6 CIDR admits an
//!   embedded IPv4 address. An IPv6 CIDR made only of embeddings (`::ffff:0:0/96`) is refused
//!   at start-up for that reason.
//! - `host:port` with a host name (`receiver.internal:8443`) admits URLs with exactly that
//!   host (case-insensitive) and port (the scheme's default when the URL has none), whatever
//!   internal address the name resolves to — except loopback and unspecified addresses
//!   (`127/8`, `0/8`, `::1`, `::` and their IPv4 embeddings): a name is not an explicit
//!   consent to calling Herald's own host, an address entry is (`127.0.0.1/32` or
//!   `127.0.0.1:9000`).
//! - `host:port` with an IP literal (`10.1.2.3:9000`, `[fd00::5]:9000`) admits URLs whose host
//!   is that address and whose port is that port. Hosts are compared after WHATWG URL
//!   parsing, which turns `2130706433`, `0177.0.0.1`, `0x7f.0.0.1` and `127.1` into
//!   `127.0.0.1`, so a spelling is the address it spells, no more.
//!
//! A bare address without a prefix length or port, a CIDR with host bits set, or anything else
//! unparsable refuses start-up. Redirects are never followed (see [`crate::resthook`]), so an
//! allow-listed receiver cannot send Herald on elsewhere.
//!
//! `[delivery] allow_private_endpoints` lifts the guard entirely for local set-ups and tests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde::{Deserialize, Serialize};
use url::Host;

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

/// One `[delivery] private_endpoint_allowlist` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// A CIDR: admits the internal addresses in it, whatever the host name or port. An IPv4
    /// CIDR also admits the IPv6 forms that embed an address in it (see [`embedded_ipv4`]).
    Net(IpNet),
    /// `a.b.c.d:port` or `[v6]:port`: admits a URL whose host is that very IP literal (after URL
    /// normalisation) on that port.
    Addr(IpAddr, u16),
    /// `name:port`: admits a URL whose host is that name (case-insensitive) on that port,
    /// whatever internal address the name resolves to, except loopback and unspecified
    /// addresses, which only an address entry admits.
    Name(String, u16),
}

/// `[delivery] private_endpoint_allowlist`: the internal endpoints subscribers may target
/// although the guard refuses internal addresses. Parsed once, at start-up; an invalid entry
/// refuses the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    entries: Vec<Entry>,
    /// The entries as written, for serialising the configuration back.
    written: Vec<String>,
}

/// Why an allow-list entry is not accepted (start-up error).
fn entry_error(entry: &str, why: &str) -> String {
    format!(
        "private_endpoint_allowlist entry '{entry}': {why} (entries are CIDRs like 10.20.0.0/16 or fd00:1::/64, or host:port like receiver.internal:8443 or 10.1.2.3:9000)"
    )
}

impl Allowlist {
    /// Parses entries; the error names the first invalid one.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Allowlist, String> {
        let mut list = Allowlist::default();
        for raw in entries {
            let written = raw.as_ref().trim();
            list.entries.push(parse_entry(written)?);
            list.written.push(written.to_owned());
        }
        Ok(list)
    }

    /// Parses a comma-separated list (the environment form); empty items are skipped.
    pub fn parse_comma_separated(s: &str) -> Result<Allowlist, String> {
        let items: Vec<&str> = s
            .split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .collect();
        Allowlist::parse(&items)
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries as written.
    pub fn entries(&self) -> &[String] {
        &self.written
    }

    /// The `name:port` entries (lower-case names), each of which gets its own connect-time
    /// resolver (the resolver does not see the port, so it is fixed per client).
    fn names(&self) -> impl Iterator<Item = (&str, u16)> {
        self.entries.iter().filter_map(|e| match e {
            Entry::Name(n, p) => Some((n.as_str(), *p)),
            _ => None,
        })
    }

    /// Does an entry admit internal address `ip`, reached through URL host `host` on `port`?
    /// `port` is `None` where it is not known (a resolver shared by all ports): then no
    /// `name:port` entry applies.
    fn admits(&self, host: &Host<&str>, port: Option<u16>, ip: IpAddr) -> bool {
        self.entries.iter().any(|e| match e {
            Entry::Net(net) => net_contains(net, ip),
            Entry::Addr(a, p) => {
                Some(*p) == port
                    && match host {
                        Host::Ipv4(v4) => IpAddr::V4(*v4) == *a,
                        Host::Ipv6(v6) => IpAddr::V6(*v6) == *a,
                        Host::Domain(_) => false,
                    }
                    && ip == *a
            }
            Entry::Name(n, p) => {
                Some(*p) == port
                    && matches!(host, Host::Domain(d) if d.eq_ignore_ascii_case(n))
                    && !is_loopback_or_unspecified(ip)
            }
        })
    }
}

/// CIDR membership with the classifier's rule for embedded IPv4: an IPv6 address that embeds
/// an IPv4 address is judged as that IPv4 address, against IPv4 CIDRs only — so `10.0.0.0/8`
/// admits `[::ffff:10.1.2.3]`, and no IPv6 CIDR (not even `::/0`) admits `[::ffff:127.0.0.1]`.
fn net_contains(net: &IpNet, ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => embedded_ipv4(v6).map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    net.contains(&ip)
}

/// Loopback or unspecified (connecting to `0.0.0.0` or `[::]` reaches the local host), also
/// embedded in IPv6: what a `name:port` entry never admits.
fn is_loopback_or_unspecified(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => embedded_ipv4(v6).map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.octets()[0] == 0,
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unspecified(),
    }
}

fn parse_entry(entry: &str) -> Result<Entry, String> {
    if entry.is_empty() {
        return Err(entry_error(entry, "empty entry"));
    }
    if entry.contains('/') {
        let net: IpNet = entry
            .parse()
            .map_err(|_| entry_error(entry, "not a CIDR"))?;
        if net.trunc() != net {
            return Err(entry_error(
                entry,
                &format!("host bits are set; did you mean {}?", net.trunc()),
            ));
        }
        if let IpNet::V6(v6) = net
            && embedded_ipv4(v6.network()).is_some()
            && embedded_ipv4(v6.broadcast()).is_some()
        {
            return Err(entry_error(
                entry,
                "these IPv6 addresses embed IPv4 addresses and are judged by them; list the IPv4 CIDR instead",
            ));
        }
        return Ok(Entry::Net(net));
    }
    if entry.parse::<IpAddr>().is_ok() {
        return Err(entry_error(
            entry,
            "an address needs a prefix length (/32, /128) or a port",
        ));
    }
    let Some((host, port)) = entry.rsplit_once(':') else {
        return Err(entry_error(entry, "a host needs a port"));
    };
    let port: u16 = match port.parse() {
        Ok(p) if p != 0 => p,
        _ => return Err(entry_error(entry, "not a port number")),
    };
    if host.is_empty() || host.contains(['@', '?', '#', '\\']) || host.contains(char::is_whitespace)
    {
        return Err(entry_error(entry, "not a host name"));
    }
    // The WHATWG host parser, as for endpoint URLs: `127.1` is 127.0.0.1, names are lower-cased.
    match Host::parse(host).map_err(|e| entry_error(entry, &e.to_string()))? {
        Host::Ipv4(v4) => Ok(Entry::Addr(IpAddr::V4(v4), port)),
        Host::Ipv6(v6) => Ok(Entry::Addr(IpAddr::V6(v6), port)),
        Host::Domain(d) => Ok(Entry::Name(d, port)),
    }
}

impl Serialize for Allowlist {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.written.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Allowlist {
    /// A list of entries, or one comma-separated string (`HERALD_PRIVATE_ENDPOINT_ALLOWLIST`).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            List(Vec<String>),
            Text(String),
        }
        let parsed = match Form::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "private_endpoint_allowlist must be a list of strings or a comma-separated string",
            )
        })? {
            Form::List(items) => Allowlist::parse(&items),
            Form::Text(text) => Allowlist::parse_comma_separated(&text),
        };
        parsed.map_err(serde::de::Error::custom)
    }
}

/// What the guard admits: everything (`allow_private_endpoints`), or public addresses plus the
/// allow-listed internal endpoints. Every check — creation, connect-time resolver, IP
/// literals — asks [`Guard::admits`].
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allow_private: bool,
    allowlist: Arc<Allowlist>,
}

impl Guard {
    /// A guard from the two `[delivery]` options.
    pub fn new(allow_private: bool, allowlist: Allowlist) -> Guard {
        Guard {
            allow_private,
            allowlist: Arc::new(allowlist),
        }
    }

    /// Refuses every internal address (the default).
    pub fn strict() -> Guard {
        Guard::default()
    }

    /// Admits everything (`allow_private_endpoints`).
    pub fn allow_all() -> Guard {
        Guard::new(true, Allowlist::default())
    }

    /// Is the guard off altogether?
    pub fn allows_all(&self) -> bool {
        self.allow_private
    }

    /// The single decision: may Herald connect to `ip` for a URL with host `host` on `port`?
    /// Public addresses always; internal ones only when private endpoints are allowed or an
    /// allow-list entry admits them.
    pub fn admits(&self, host: &Host<&str>, port: Option<u16>, ip: IpAddr) -> bool {
        self.allow_private || !is_internal(ip) || self.allowlist.admits(host, port, ip)
    }
}

/// Why an endpoint is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    /// Not an absolute http(s) URL.
    #[error("endpoint '{0}' is not an absolute http or https URL")]
    BadUrl(String),
    /// Resolves (only) to internal addresses.
    #[error(
        "endpoint host '{host}' resolves to internal address {ip}; Herald refuses loopback, private, link-local, unspecified and other non-public endpoints (also IPv4 embedded in IPv6) unless [delivery] private_endpoint_allowlist admits them or allow_private_endpoints is set"
    )]
    Internal {
        /// Host as written.
        host: String,
        /// The offending address.
        ip: IpAddr,
    },
}

/// Checks an endpoint when a Subscription is created: an IP literal or any resolved address
/// that the guard does not admit refuses it. A host that does not resolve now is accepted (DNS
/// may be temporarily unavailable); the connect-time guard still applies. The host judged is
/// the one the URL parser produced, so `http://2130706433/`, `http://0x7f.0.0.1/` and
/// `http://127.1/` are all judged as `127.0.0.1`.
pub async fn check_endpoint(url: &str, guard: &Guard) -> Result<(), EgressError> {
    let parsed = reqwest::Url::parse(url).map_err(|_| EgressError::BadUrl(url.to_owned()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(EgressError::BadUrl(url.to_owned()));
    }
    if guard.allows_all() {
        return Ok(());
    }
    if let Some(e) = literal_refused(&parsed, guard) {
        return Err(e);
    }
    let Some(Host::Domain(name)) = parsed.host() else {
        return Ok(()); // an admitted literal
    };
    let port = parsed.port_or_known_default().unwrap_or(443);
    let lookup = tokio::net::lookup_host((name, port));
    let resolved: Vec<SocketAddr> =
        match tokio::time::timeout(std::time::Duration::from_secs(2), lookup).await {
            Ok(Ok(addrs)) => addrs.collect(),
            _ => Vec::new(),
        };
    let host = Host::Domain(name);
    match resolved
        .into_iter()
        .find(|a| !guard.admits(&host, Some(port), a.ip()))
    {
        Some(a) => Err(EgressError::Internal {
            host: name.to_owned(),
            ip: a.ip(),
        }),
        None => Ok(()),
    }
}

/// A reqwest resolver that drops the addresses the guard does not admit from every answer
/// (connect-time guard). reqwest does not tell a resolver the port, so a client whose resolver
/// has `port: None` applies no `name:port` entry; the delivery client keeps one client per
/// `name:port` entry, whose resolver has that port and is only used for URLs on it.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    guard: Guard,
    port: Option<u16>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.guard.clone();
        let port = self.port;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| guard.admits(&Host::Domain(host.as_str()), port, a.ip()))
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

/// The resolver to install on a delivery client, if any: `port` is the port of the
/// `name:port` entry the client is used for, `None` for the general client.
pub fn resolver(guard: &Guard, port: Option<u16>) -> Option<Arc<GuardedResolver>> {
    (!guard.allows_all()).then(|| {
        Arc::new(GuardedResolver {
            guard: guard.clone(),
            port,
        })
    })
}

/// The `name:port` entries of the guard's allow-list (lower-case names), one delivery client
/// each; empty when the guard is off.
pub fn named_endpoints(guard: &Guard) -> Vec<(String, u16)> {
    if guard.allows_all() {
        return Vec::new();
    }
    guard
        .allowlist
        .names()
        .map(|(n, p)| (n.to_owned(), p))
        .collect()
}

/// The address of an IP-literal host (an IPv6 literal without its brackets), `None` for a
/// domain name. The creation and connect-time checks both read literals through this, so they
/// judge the very same address (the URL parser has already normalised forms like `[::127.0.0.1]`
/// and `http://2130706433/`).
fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
    match url.host()? {
        Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        Host::Domain(_) => None,
    }
}

/// Connect-time check for IP-literal URLs (reqwest does not consult the resolver for them).
pub fn literal_refused(url: &reqwest::Url, guard: &Guard) -> Option<EgressError> {
    let ip = literal_ip(url)?;
    let host = url.host()?;
    (!guard.admits(&host, url.port_or_known_default(), ip)).then(|| EgressError::Internal {
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
                    check_endpoint(url, &Guard::strict()).await,
                    Err(EgressError::Internal { .. })
                ),
                "{url} should be refused at creation"
            );
            let parsed = reqwest::Url::parse(url).expect("url");
            assert!(
                literal_refused(&parsed, &Guard::strict()).is_some(),
                "{url} should be refused at connect"
            );
        }
        assert!(
            check_endpoint("http://[64:ff9b::808:808]:9/hook", &Guard::strict())
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn loopback_endpoints_are_refused_unless_allowed() {
        assert!(matches!(
            check_endpoint("http://127.0.0.1:9/hook", &Guard::strict()).await,
            Err(EgressError::Internal { .. })
        ));
        assert!(matches!(
            check_endpoint("http://localhost:9/hook", &Guard::strict()).await,
            Err(EgressError::Internal { .. })
        ));
        assert!(matches!(
            check_endpoint("http://[::1]:9/hook", &Guard::strict()).await,
            Err(EgressError::Internal { .. })
        ));
        assert!(
            check_endpoint("http://127.0.0.1:9/hook", &Guard::allow_all())
                .await
                .is_ok()
        );
        assert!(matches!(
            check_endpoint("ftp://example.org/x", &Guard::strict()).await,
            Err(EgressError::BadUrl(_))
        ));
    }

    #[test]
    fn literal_check_catches_ip_urls_at_connect_time() {
        let u = reqwest::Url::parse("http://10.0.0.5/x").expect("url");
        assert!(literal_refused(&u, &Guard::strict()).is_some());
        assert!(literal_refused(&u, &Guard::allow_all()).is_none());
        let d = reqwest::Url::parse("http://example.org/x").expect("url");
        assert!(literal_refused(&d, &Guard::strict()).is_none());
    }
}

/// The allow-list: what it admits, and that every other internal form stays refused.
#[cfg(test)]
mod allowlist {
    use super::*;

    fn guard(entries: &[&str]) -> Guard {
        Guard::new(false, Allowlist::parse(entries).expect("allow-list"))
    }

    /// The allow-list the "stays refused" tests run under: one of each kind of entry.
    fn typical() -> Guard {
        guard(&[
            "10.20.0.0/16",
            "fd00:1::/64",
            "receiver.internal:8443",
            "10.1.2.3:9000",
        ])
    }

    /// Refused at creation and, for IP literals, at connect time too.
    async fn refused(g: &Guard, url: &str) -> bool {
        let created = matches!(
            check_endpoint(url, g).await,
            Err(EgressError::Internal { .. })
        );
        let parsed = reqwest::Url::parse(url).expect("url");
        let connect = literal_ip(&parsed).is_none() || literal_refused(&parsed, g).is_some();
        created && connect
    }

    /// Admitted at creation and at connect time (literals).
    async fn admitted(g: &Guard, url: &str) -> bool {
        let parsed = reqwest::Url::parse(url).expect("url");
        check_endpoint(url, g).await.is_ok() && literal_refused(&parsed, g).is_none()
    }

    use std::str::FromStr;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn entries_parse_as_cidrs_addresses_and_names() {
        let list = Allowlist::parse(&[
            "10.20.0.0/16",
            " fd00:1::/64 ",
            "Receiver.Internal:8443",
            "10.1.2.3:9000",
            "[fd00::5]:9000",
            "127.1:9000",
        ])
        .expect("valid");
        assert_eq!(
            list.entries,
            vec![
                Entry::Net("10.20.0.0/16".parse().expect("net")),
                Entry::Net("fd00:1::/64".parse().expect("net")),
                Entry::Name("receiver.internal".into(), 8443),
                Entry::Addr(ip("10.1.2.3"), 9000),
                Entry::Addr(ip("fd00::5"), 9000),
                Entry::Addr(ip("127.0.0.1"), 9000),
            ]
        );
        assert_eq!(list.entries()[1], "fd00:1::/64");
    }

    #[test]
    fn the_comma_separated_form_is_the_list() {
        let list = Allowlist::parse_comma_separated(" 10.20.0.0/16, receiver.internal:8443,,")
            .expect("valid");
        assert_eq!(
            list,
            Allowlist::parse(&["10.20.0.0/16", "receiver.internal:8443"]).expect("valid")
        );
        assert!(
            Allowlist::parse_comma_separated("")
                .expect("empty")
                .is_empty()
        );
    }

    #[test]
    fn invalid_entries_are_refused_naming_the_entry() {
        for (entry, why) in [
            ("10.1.2.3", "prefix length"),
            ("fd00::5", "prefix length"),
            ("10.20.1.0/16", "did you mean 10.20.0.0/16"),
            ("10.0.0.0/33", "not a CIDR"),
            ("receiver.internal", "needs a port"),
            ("receiver.internal:0", "not a port"),
            ("receiver.internal:http", "not a port"),
            ("receiver.internal:70000", "not a port"),
            (":8443", "not a host"),
            ("user@receiver.internal:8443", "not a host"),
            ("bad host:8443", "not a host"),
            ("::ffff:0:0/96", "IPv4 CIDR instead"),
            ("64:ff9b::/96", "IPv4 CIDR instead"),
            ("", "empty"),
        ] {
            let err = Allowlist::parse(&[entry]).expect_err(entry);
            assert!(err.contains(&format!("'{entry}'")), "{entry}: {err}");
            assert!(err.contains(why), "{entry}: {err}");
        }
    }

    #[tokio::test]
    async fn a_cidr_admits_the_addresses_inside_it_only() {
        let g = typical();
        assert!(admitted(&g, "http://10.20.0.1/hook").await);
        assert!(admitted(&g, "https://10.20.255.254:8443/hook").await);
        assert!(admitted(&g, "http://[fd00:1::5]:9/hook").await);
        assert!(refused(&g, "http://10.21.0.1/hook").await);
        assert!(refused(&g, "http://10.19.255.255/hook").await);
        assert!(refused(&g, "http://[fd00:2::5]/hook").await);
        // Public addresses are unaffected by the allow-list.
        assert!(admitted(&g, "http://8.8.8.8:9/hook").await);
    }

    /// The documented decision: an IPv6 form that embeds an IPv4 address is judged by that IPv4
    /// address against IPv4 CIDRs, as the classifier judges it.
    #[tokio::test]
    async fn an_ipv4_cidr_admits_the_ipv6_forms_embedding_its_addresses() {
        let g = guard(&["10.0.0.0/8"]);
        for url in [
            "http://[::ffff:10.1.2.3]:9/hook",
            "http://[::ffff:0:a01:203]:9/hook",
            "http://[64:ff9b::a01:203]:9/hook",
            "http://[2002:a01:203::1]:9/hook",
        ] {
            assert!(admitted(&g, url).await, "{url}");
        }
        assert!(refused(&g, "http://[::ffff:192.168.1.1]:9/hook").await);
        assert!(refused(&g, "http://[::ffff:127.0.0.1]:9/hook").await);
    }

    #[tokio::test]
    async fn no_ipv6_cidr_admits_an_embedded_ipv4_address() {
        let g = guard(&["::/0"]);
        assert!(admitted(&g, "http://[fd00::1]:9/hook").await);
        for url in [
            "http://[::ffff:127.0.0.1]:9/hook",
            "http://[::ffff:10.1.2.3]:9/hook",
            "http://[64:ff9b::7f00:1]:9/hook",
        ] {
            assert!(refused(&g, url).await, "{url}");
        }
    }

    #[test]
    fn a_name_entry_admits_that_name_and_port_only() {
        let g = typical();
        let name = Host::Domain("receiver.internal");
        assert!(g.admits(&name, Some(8443), ip("10.9.9.9")));
        assert!(g.admits(&name, Some(8443), ip("fd00:9::9")));
        assert!(g.admits(
            &Host::Domain("RECEIVER.internal"),
            Some(8443),
            ip("10.9.9.9")
        ));
        assert!(!g.admits(&name, Some(8444), ip("10.9.9.9")));
        assert!(!g.admits(&name, Some(443), ip("10.9.9.9")));
        // The general client's resolver does not know the port: no name entry applies.
        assert!(!g.admits(&name, None, ip("10.9.9.9")));
        assert!(!g.admits(&Host::Domain("other.internal"), Some(8443), ip("10.9.9.9")));
        assert!(!g.admits(
            &Host::Domain("receiver.internal.evil"),
            Some(8443),
            ip("10.9.9.9")
        ));
        // An IP literal is not the name, even on the name's port.
        assert!(!g.admits(
            &Host::Ipv4("10.9.9.9".parse().expect("v4")),
            Some(8443),
            ip("10.9.9.9")
        ));
    }

    /// A name is not consent to calling Herald's own host; only an address entry is.
    #[test]
    fn a_name_entry_never_admits_loopback_or_unspecified_addresses() {
        let g = typical();
        let name = Host::Domain("receiver.internal");
        for a in [
            "127.0.0.1",
            "127.8.9.10",
            "::1",
            "0.0.0.0",
            "::",
            "::ffff:127.0.0.1",
            "64:ff9b::7f00:1",
        ] {
            assert!(!g.admits(&name, Some(8443), ip(a)), "{a}");
        }
    }

    #[tokio::test]
    async fn localhost_listed_by_name_is_still_refused() {
        let g = guard(&["localhost:9"]);
        assert!(refused(&g, "http://localhost:9/hook").await);
    }

    #[tokio::test]
    async fn loopback_is_admitted_by_an_explicit_address_entry() {
        let g = guard(&["127.0.0.1:9000"]);
        assert!(admitted(&g, "http://127.0.0.1:9000/hook").await);
        assert!(refused(&g, "http://127.0.0.1:9001/hook").await);
        assert!(refused(&g, "http://127.0.0.2:9000/hook").await);
        assert!(refused(&g, "http://localhost:9000/hook").await);
        assert!(refused(&g, "http://[::ffff:127.0.0.1]:9000/hook").await);
        assert!(refused(&g, "http://[::1]:9000/hook").await);
        let g = guard(&["127.0.0.0/8", "::1/128"]);
        assert!(admitted(&g, "http://localhost:9/hook").await);
        assert!(admitted(&g, "http://[::ffff:127.0.0.1]:9/hook").await);
    }

    #[tokio::test]
    async fn an_address_entry_admits_that_address_and_port_only() {
        let g = typical();
        assert!(admitted(&g, "http://10.1.2.3:9000/hook").await);
        assert!(refused(&g, "http://10.1.2.3:9001/hook").await);
        assert!(refused(&g, "http://10.1.2.3/hook").await);
        assert!(refused(&g, "https://10.1.2.3/hook").await);
        assert!(refused(&g, "http://10.1.2.4:9000/hook").await);
    }

    #[tokio::test]
    async fn every_other_internal_form_stays_refused_with_an_allowlist_set() {
        let g = typical();
        for url in [
            "http://127.0.0.1/hook",
            "http://127.0.0.1:9000/hook",
            "http://[::1]/hook",
            "http://10.0.0.1/hook",
            "http://172.16.0.1/hook",
            "http://192.168.1.1/hook",
            "http://100.64.0.1/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://[fe80::1]/hook",
            "http://[fd00::1]/hook",
            "http://[fd00:1:0:1::1]/hook",
            "http://[::ffff:127.0.0.1]/hook",
            "http://[::ffff:10.0.0.1]/hook",
            "http://[::ffff:10.1.2.3]:9000/hook",
            "http://[64:ff9b::a9fe:a9fe]/hook",
            "http://0.0.0.0/hook",
            "http://0.0.0.0:8443/hook",
            "http://[::]/hook",
            "http://localhost/hook",
            "http://localhost:8443/hook",
            "http://2130706433/hook",
            "http://0177.0.0.1/hook",
            "http://0x7f.0.0.1/hook",
            "http://127.1/hook",
        ] {
            assert!(refused(&g, url).await, "{url} should stay refused");
        }
    }

    /// The URL parser (WHATWG) turns each spelling into `127.0.0.1`; the guard judges that.
    async fn spelling_is_loopback(url: &str) {
        let parsed = reqwest::Url::parse(url).expect("url");
        assert_eq!(parsed.host_str(), Some("127.0.0.1"), "{url}");
        assert!(refused(&typical(), url).await, "{url}");
        assert!(refused(&Guard::strict(), url).await, "{url}");
    }

    #[tokio::test]
    async fn decimal_ipv4_spelling_is_judged_as_loopback() {
        spelling_is_loopback("http://2130706433/").await;
    }

    #[tokio::test]
    async fn octal_ipv4_spelling_is_judged_as_loopback() {
        spelling_is_loopback("http://0177.0.0.1/").await;
    }

    #[tokio::test]
    async fn hex_ipv4_spelling_is_judged_as_loopback() {
        spelling_is_loopback("http://0x7f.0.0.1/").await;
    }

    #[tokio::test]
    async fn short_ipv4_spelling_is_judged_as_loopback() {
        spelling_is_loopback("http://127.1/").await;
    }

    /// A spelling of an allow-listed address on its port is that endpoint, nothing more.
    #[tokio::test]
    async fn a_spelling_of_an_allowlisted_address_is_that_address() {
        let g = typical();
        assert!(admitted(&g, "http://0x0a.1.2.3:9000/hook").await);
        assert!(admitted(&g, "http://167838211:9000/hook").await);
        assert!(refused(&g, "http://167838211:9001/hook").await);
    }

    #[tokio::test]
    async fn the_resolver_drops_what_the_guard_does_not_admit() {
        let name = || Name::from_str("localhost").expect("name");
        let strict = resolver(&typical(), None).expect("resolver");
        assert!(strict.resolve(name()).await.is_err());
        let by_name = resolver(&guard(&["localhost:9"]), Some(9)).expect("resolver");
        assert!(by_name.resolve(name()).await.is_err());
        let by_cidr = resolver(&guard(&["127.0.0.0/8", "::1/128"]), None).expect("resolver");
        let addrs: Vec<SocketAddr> = by_cidr.resolve(name()).await.expect("admitted").collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
        assert!(resolver(&Guard::allow_all(), None).is_none());
    }

    #[test]
    fn name_entries_get_their_own_clients_unless_the_guard_is_off() {
        assert_eq!(
            named_endpoints(&typical()),
            vec![("receiver.internal".to_owned(), 8443)]
        );
        let off = Guard::new(
            true,
            Allowlist::parse(&["receiver.internal:8443"]).expect("list"),
        );
        assert!(named_endpoints(&off).is_empty());
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
