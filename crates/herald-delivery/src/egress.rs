//! The egress guard: subscribers choose the URLs Herald calls, so by default Herald refuses
//! endpoints that resolve to loopback, private, link-local, unspecified or otherwise internal
//! addresses — when a Subscription is created and again at connect time (DNS answers change).
//! `[delivery] allow_private_endpoints` lifts it for local set-ups and tests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Is `ip` an address a subscriber may not make Herald call?
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal_v4(v4);
            }
            let seg0 = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg0 & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (seg0 & 0xffc0) == 0xfe80 // link-local fe80::/10
                || v6 == Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0)
        }
    }
}

fn is_internal_v4(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || o[0] == 0
        || (o[0] == 100 && (64..128).contains(&o[1])) // carrier-grade NAT 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] == 18 || o[1] == 19)) // benchmarking
        || o[0] >= 240 // reserved
}

/// Why an endpoint is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    /// Not an absolute http(s) URL.
    #[error("endpoint '{0}' is not an absolute http or https URL")]
    BadUrl(String),
    /// Resolves (only) to internal addresses.
    #[error(
        "endpoint host '{host}' resolves to internal address {ip}; Herald refuses loopback, private, link-local and unspecified endpoints unless [delivery] allow_private_endpoints is set"
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
    let host = parsed
        .host_str()
        .ok_or_else(|| EgressError::BadUrl(url.to_owned()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    if let Ok(ip) = host.parse::<IpAddr>() {
        return if is_internal(ip) {
            Err(EgressError::Internal { host, ip })
        } else {
            Ok(())
        };
    }
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

/// Connect-time check for IP-literal URLs (reqwest does not consult the resolver for them).
pub fn literal_refused(url: &reqwest::Url, allow_private: bool) -> Option<EgressError> {
    if allow_private {
        return None;
    }
    let ip = match url.host()? {
        url::Host::Ipv4(v4) => IpAddr::V4(v4),
        url::Host::Ipv6(v6) => IpAddr::V6(v6),
        url::Host::Domain(_) => return None,
    };
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
