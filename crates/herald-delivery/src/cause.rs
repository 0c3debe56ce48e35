//! Why a delivery failed, in words an operator can act on: the root of a transport error's
//! source chain ("connection refused", "timed out after 10 s", "dns error: …") instead of
//! reqwest's outermost "error sending request for url (…)", which names the symptom only.

use std::error::Error;
use std::io::ErrorKind;
use std::time::Duration;

/// The root cause of a failed request that got no response.
pub fn transport(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("timed out after {}", human(timeout));
    }
    let mut innermost: &dyn Error = e;
    let mut io_kind = None;
    let mut cur: Option<&dyn Error> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            io_kind = Some(io.kind());
        }
        innermost = err;
        cur = err.source();
    }
    let text = innermost.to_string();
    match io_kind {
        Some(ErrorKind::ConnectionRefused) => "connection refused".to_owned(),
        Some(ErrorKind::ConnectionReset) => "connection reset by the receiver".to_owned(),
        Some(ErrorKind::ConnectionAborted) => "connection aborted".to_owned(),
        Some(ErrorKind::TimedOut) => format!("timed out after {}", human(timeout)),
        Some(ErrorKind::HostUnreachable) => "host unreachable".to_owned(),
        Some(ErrorKind::NetworkUnreachable) => "network unreachable".to_owned(),
        _ if text.to_ascii_lowercase().contains("lookup") => format!("dns error: {text}"),
        _ => text,
    }
}

/// The cause of a response outside 2xx.
pub fn status(code: u16) -> String {
    match reqwest::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
    {
        Some(reason) => format!("HTTP {code} {reason}"),
        None => format!("HTTP {code}"),
    }
}

/// `10 s`, `1.5 s`, `250 ms`.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_an_operator_writes_them() {
        assert_eq!(human(Duration::from_secs(10)), "10 s");
        assert_eq!(human(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(human(Duration::from_millis(250)), "250 ms");
    }

    #[test]
    fn a_status_names_its_reason() {
        assert_eq!(status(503), "HTTP 503 Service Unavailable");
        assert_eq!(status(599), "HTTP 599");
    }

    #[tokio::test]
    async fn a_closed_port_is_connection_refused() {
        // Bind then drop: nothing listens on that port any more.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(1);
        let client = reqwest::Client::builder().no_proxy().build();
        let Ok(client) = client else { return };
        let err = client
            .post(format!("http://127.0.0.1:{port}/hook"))
            .send()
            .await
            .err();
        let Some(err) = err else {
            panic!("something answered on a port nobody listens on")
        };
        assert_eq!(
            transport(&err, Duration::from_secs(10)),
            "connection refused"
        );
    }
}
