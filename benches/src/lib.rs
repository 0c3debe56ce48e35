//! Herald's benchmark package: the pieces the `herald-loadgen` tool is built from — spawning the
//! real `herald` binary ([`process`]), latency summaries ([`latency`]), the disk probe
//! ([`probe`]), the matcher measured in process ([`matcher`], shared with the criterion bench)
//! and the load scenarios: [`writes`] (Task creates per durability mode),
//! [`notify`] (write → matched → delivered, against a relay baseline), [`ws`] (memory per
//! bound websocket, bind time, and fan-out of one change to many sockets), [`search`] (search
//! latency with the index at two store sizes, its rebuild, the write rate with it), [`scale`]
//! (restart with a backlog of a million events; one change matched by ten thousand
//! subscriptions) and [`cluster`] (one Herald node versus three on a NATS JetStream cluster,
//! docs/cluster.md).
#![forbid(unsafe_code)]

pub mod cluster;
pub mod latency;
pub mod matcher;
pub mod notify;
pub mod probe;
pub mod process;
pub mod scale;
pub mod search;
pub mod server_thread;
pub mod writes;
pub mod ws;

use std::time::Duration;

/// Parses a duration such as `5s`, `500ms`, `2m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (e.g. 5s, 500ms, 2m)"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        other => return Err(format!("unknown duration unit '{other}' (ms, s, m)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("'{s}' is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("fast").is_err());
    }
}
