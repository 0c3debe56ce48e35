//! Fuzz target `egress`: the egress guard of `herald_delivery::egress`.
//!
//! - The first 4 bytes as an IPv4 address and the first 16 as an IPv6 address →
//!   `is_internal`; an IPv4 address and every IPv6 form that embeds it (mapped, compatible,
//!   translated, NAT64 `64:ff9b::/96`, 6to4) must be classified alike, and an IPv6 address from
//!   which `embedded_ipv4` extracts an address must be classified as that address.
//! - The whole input as a URL string → `reqwest::Url::parse` → `literal_refused` (the
//!   connect-time check) and, for http(s) URLs whose host is an IP literal, `check_endpoint` (the
//!   creation-time check), which must then agree with `literal_refused`. `check_endpoint` is only
//!   called for IP literals: for those it completes without resolving anything, so it is polled
//!   once without a runtime and this target never touches the network.
//! - The same string → `policy::parse_retry_after` (a subscriber's `Retry-After` header).
//!
//! A disagreement panics; otherwise only panics, aborts, stack overflows and hangs count.
#![forbid(unsafe_code)]

use std::future::Future;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use herald_delivery::egress::{
    EgressError, Guard, check_endpoint, embedded_ipv4, is_internal, literal_refused,
};
use herald_delivery::policy::parse_retry_after;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Some(b) = data.first_chunk::<4>() {
            let v4 = Ipv4Addr::from(*b);
            let internal = is_internal(IpAddr::V4(v4));
            let [x, y] = [
                u16::from_be_bytes([b[0], b[1]]),
                u16::from_be_bytes([b[2], b[3]]),
            ];
            for form in [
                v4.to_ipv6_mapped(),
                Ipv6Addr::new(0, 0, 0, 0, 0, 0, x, y),
                Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, x, y),
                Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, x, y),
                Ipv6Addr::new(0x2002, x, y, 0, 0, 0, 0, 1),
            ] {
                if form.is_unspecified() || form.is_loopback() {
                    continue; // `::` and `::1` are themselves, not embeddings
                }
                assert_eq!(
                    internal,
                    is_internal(IpAddr::V6(form)),
                    "{v4} and {form} are classified differently"
                );
            }
        }
        if let Some(b) = data.first_chunk::<16>() {
            let v6 = Ipv6Addr::from(*b);
            let internal = is_internal(IpAddr::V6(v6));
            if let Some(v4) = embedded_ipv4(v6) {
                assert_eq!(
                    internal,
                    is_internal(IpAddr::V4(v4)),
                    "{v6} embeds {v4} but is classified differently"
                );
            }
            black_box(internal);
        }
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        black_box(parse_retry_after(text));
        let Ok(url) = reqwest::Url::parse(text) else {
            return;
        };
        let guard = Guard::default();
        let at_connect = literal_refused(&url, &guard);
        assert!(
            literal_refused(&url, &Guard::allow_all()).is_none(),
            "allow_private must allow {url}"
        );
        let ip_literal = matches!(url.host(), Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)));
        if ip_literal && matches!(url.scheme(), "http" | "https") {
            let at_creation = poll_once(check_endpoint(text, &guard));
            let refused_at_creation = match at_creation {
                Some(Err(EgressError::Internal { .. })) => true,
                Some(Ok(())) => false,
                other => panic!("check_endpoint({text:?}) on an IP-literal URL gave {other:?}"),
            };
            assert_eq!(
                refused_at_creation,
                at_connect.is_some(),
                "creation-time and connect-time guards disagree on {text:?}"
            );
        }
    });
}

/// Polls `fut` once with a waker that does nothing: `Some` when it completed, `None` when it
/// would have waited (which, for an IP literal, means it tried to resolve a name).
fn poll_once<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}
