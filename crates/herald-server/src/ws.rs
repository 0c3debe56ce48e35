//! The websocket endpoint (`GET /ws`, the `websocket-url` of `$get-ws-binding-token`) and the
//! binding-token operation. A connection is one task: it writes the frames the websocket channel
//! queues for it, reads the client's control messages (bind, unbind, ping), and unbinds what
//! expires. Delivery itself — what to send, in which order, from which queue — is the
//! dispatcher's; see `herald-delivery::websocket` for what "delivered" means on a socket.
//!
//! Control messages, every form in use: `bind-with-token TOKEN`, `bind-with-token: TOKEN`,
//! `{"type":"bind-with-token","payload":{"token":"…"}}` (optionally with `last-event-number`, or
//! `resume: {"<subscription id>": n}`, to be sent again what followed event n); the same three
//! forms of `unbind-from-token`; `ping` (answered `{"type":"pong"}`). Herald's own messages are
//! JSON objects with a `type` (`error`, `unbound`, `pong`); notifications are Bundles.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use herald_delivery::Key;
use herald_delivery::websocket::{Socket, TokenError};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use herald_delivery::timers::unix_ms as now_ms;

/// Largest control message read from a client, in bytes.
const MAX_CONTROL_BYTES: usize = 16 * 1024;

/// A control message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Bind the subscriptions a token names.
    Bind {
        /// The token.
        token: String,
        /// Resume after this event number (every subscription of the token).
        last_event: Option<u64>,
        /// Resume per subscription id.
        resume: HashMap<String, u64>,
    },
    /// Unbind what a token bound.
    Unbind {
        /// The token.
        token: String,
    },
    /// Liveness check.
    Ping,
    /// Anything else (the reason says what was wrong).
    Invalid(String),
}

/// Reads a client's text frame.
pub fn parse_control(text: &str) -> Control {
    let t = text.trim();
    if t.starts_with('{') {
        return parse_json_control(t);
    }
    let word_and_rest = |word: &str| -> Option<String> {
        let rest = t.strip_prefix(word)?;
        let rest = rest.strip_prefix(':').unwrap_or(rest).trim();
        (!rest.is_empty() && rest.chars().all(|c| c.is_ascii_graphic())).then(|| rest.to_owned())
    };
    if t == "ping" {
        return Control::Ping;
    }
    if let Some(token) = word_and_rest("bind-with-token") {
        return Control::Bind {
            token,
            last_event: None,
            resume: HashMap::new(),
        };
    }
    if let Some(token) = word_and_rest("unbind-from-token") {
        return Control::Unbind { token };
    }
    Control::Invalid(
        "expected 'bind-with-token TOKEN', 'unbind-from-token TOKEN', 'ping' or their JSON forms"
            .to_owned(),
    )
}

fn parse_json_control(t: &str) -> Control {
    let Ok(v) = serde_json::from_str::<Value>(t) else {
        return Control::Invalid("the message is not valid JSON".to_owned());
    };
    let token = || {
        v.pointer("/payload/token")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    match v.get("type").and_then(Value::as_str) {
        Some("ping") => Control::Ping,
        Some("bind-with-token") => match token() {
            Some(token) => {
                let last_event = v
                    .pointer("/payload/last-event-number")
                    .and_then(Value::as_u64);
                let resume = v
                    .pointer("/payload/resume")
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter()
                            .filter_map(|(k, n)| Some((k.clone(), n.as_u64()?)))
                            .collect()
                    })
                    .unwrap_or_default();
                Control::Bind {
                    token,
                    last_event,
                    resume,
                }
            }
            None => Control::Invalid("bind-with-token needs payload.token".to_owned()),
        },
        Some("unbind-from-token") => match token() {
            Some(token) => Control::Unbind { token },
            None => Control::Invalid("unbind-from-token needs payload.token".to_owned()),
        },
        Some(other) => Control::Invalid(format!("unknown message type '{other}'")),
        None => Control::Invalid("a JSON message needs a 'type'".to_owned()),
    }
}

fn control_message(kind: &str, payload: Value) -> Message {
    Message::Text(Utf8Bytes::from(
        json!({"type": kind, "payload": payload}).to_string(),
    ))
}

fn error_message(text: &str) -> Message {
    control_message("error", json!({ "message": text }))
}

/// `GET /ws`: upgrades to a websocket.
pub async fn upgrade(
    State(state): State<Arc<AppState>>,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    if state.dispatcher.websocket().is_none() {
        return Err(ApiError::not_found("this server has no websocket channel"));
    }
    // Small buffers: thousands of idle sockets must stay cheap (docs/benchmarks.md).
    Ok(ws
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(MAX_CONTROL_BYTES)
        .on_upgrade(move |socket| connection(state, socket)))
}

/// What one connection has bound: per subscription, when the binding ends (Unix ms), and
/// which token bound it.
#[derive(Default)]
struct Bound {
    until: HashMap<Key, u64>,
    by_token: HashMap<String, Vec<Key>>,
}

impl Bound {
    fn earliest(&self) -> Option<u64> {
        self.until.values().min().copied()
    }
}

async fn connection(state: Arc<AppState>, mut ws: WebSocket) {
    let Some(hub) = state.dispatcher.websocket().cloned() else {
        return;
    };
    let (socket, mut frames) = hub.open("websocket");
    crate::metrics::METRICS.websocket_connections.inc();
    let peer = format!("socket {}", socket.id());
    let mut bound = Bound::default();
    tracing::debug!(socket = socket.id(), %peer, "websocket connected");
    let closing: Option<String> = loop {
        let wait = bound
            .earliest()
            .map(|t| Duration::from_millis(t.saturating_sub(now_ms())));
        let expiry = async {
            match wait {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            frame = frames.recv() => {
                let Some(bytes) = frame else { break None };
                let Ok(text) = Utf8Bytes::try_from(bytes) else { continue };
                if ws.send(Message::Text(text)).await.is_err() {
                    break None;
                }
            }
            msg = ws.recv() => match msg {
                Some(Ok(Message::Text(text))) => {
                    if let Some(reply) = control(&state, &socket, &mut bound, text.as_str()).await
                        && ws.send(reply).await.is_err()
                    {
                        break None;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    if ws.send(error_message("binary frames are not understood; send text")).await.is_err() {
                        break None;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break None,
                Some(Ok(_)) => {} // ping/pong frames: answered by the library
            },
            reason = socket.evicted() => break Some(reason),
            () = expiry => {
                let now = now_ms();
                let expired: Vec<Key> = bound
                    .until
                    .iter()
                    .filter(|(_, t)| **t <= now)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in &expired {
                    bound.until.remove(k);
                    hub.detach(k, socket.id());
                }
                let ids: Vec<&str> = expired.iter().map(|k| k.1.as_str()).collect();
                let msg = control_message(
                    "unbound",
                    json!({"subscriptions": ids, "reason": "the binding token expired; bind again with a fresh token"}),
                );
                if ws.send(msg).await.is_err() {
                    break None;
                }
            }
        }
    };
    let keys: Vec<Key> = bound.until.keys().cloned().collect();
    hub.close(socket.id(), &keys);
    crate::metrics::METRICS.websocket_connections.dec();
    if let Some(reason) = closing {
        tracing::info!(socket = socket.id(), %peer, %reason, "websocket disconnected");
        let _ = ws.send(error_message(&reason)).await;
        let _ = ws
            .send(Message::Close(Some(CloseFrame {
                code: 1008,
                reason: Utf8Bytes::from("slow consumer"),
            })))
            .await;
    }
}

/// Handles one control message; returns the reply to send, if any.
async fn control(
    state: &AppState,
    socket: &Arc<Socket>,
    bound: &mut Bound,
    text: &str,
) -> Option<Message> {
    let hub = state.dispatcher.websocket()?;
    match parse_control(text) {
        Control::Ping => Some(control_message("pong", json!({}))),
        Control::Invalid(why) => Some(error_message(&why)),
        Control::Unbind { token } => {
            let Some(keys) = bound.by_token.remove(&token) else {
                return Some(error_message("no subscription is bound with that token"));
            };
            for k in &keys {
                bound.until.remove(k);
                hub.detach(k, socket.id());
            }
            let ids: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
            Some(control_message(
                "unbound",
                json!({"subscriptions": ids, "reason": "unbind-from-token"}),
            ))
        }
        Control::Bind {
            token,
            last_event,
            resume,
        } => {
            let grant = match hub.redeem(&token, now_ms()) {
                Ok(g) => g,
                Err(e @ (TokenError::Unknown | TokenError::Expired)) => {
                    return Some(error_message(&e.to_string()));
                }
            };
            let mut resume = resume;
            if let Some(n) = last_event {
                for id in &grant.ids {
                    resume.entry(id.clone()).or_insert(n);
                }
            }
            let results = state
                .dispatcher
                .bind(&grant.tenant, grant.ids.clone(), Arc::clone(socket), resume)
                .await;
            let mut failures = Vec::new();
            let mut keys = Vec::new();
            for (id, r) in results {
                match r {
                    Ok(()) => {
                        let key = (grant.tenant.clone(), id);
                        bound.until.insert(key.clone(), grant.expires_ms);
                        keys.push(key);
                    }
                    Err(why) => failures.push(why),
                }
            }
            bound.by_token.insert(token, keys);
            (!failures.is_empty()).then(|| error_message(&failures.join("; ")))
        }
    }
}

/// A Unix-ms time as a FHIR instant.
pub fn instant(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Issues a binding token for `ids` (already checked) and builds the operation's answer.
pub fn binding_token(
    state: &AppState,
    tenant: &crate::Tenant,
    base: &str,
    ids: Vec<String>,
) -> ApiResult<Value> {
    let hub = state
        .dispatcher
        .websocket()
        .ok_or_else(|| ApiError::not_found("this server has no websocket channel"))?;
    let subs: Vec<Value> = ids
        .iter()
        .map(|id| json!({"name": "subscription", "valueString": format!("{base}/Subscription/{id}")}))
        .collect();
    let (token, grant) = hub.issue(&tenant.name, ids, now_ms());
    let root = base
        .strip_suffix(&format!("/fhir/{}", tenant.name))
        .unwrap_or(base);
    let ws_root = if let Some(rest) = root.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = root.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        root.to_owned()
    };
    let mut parameter = vec![
        json!({"name": "token", "valueString": token}),
        json!({"name": "expiration", "valueDateTime": instant(grant.expires_ms)}),
    ];
    parameter.extend(subs);
    parameter.push(json!({"name": "websocket-url", "valueUrl": format!("{ws_root}/ws")}));
    Ok(json!({"resourceType": "Parameters", "parameter": parameter}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bind_form_in_use_is_understood() {
        for text in [
            "bind-with-token abc",
            "bind-with-token: abc",
            "  bind-with-token:abc \n",
            r#"{"type":"bind-with-token","payload":{"token":"abc"}}"#,
        ] {
            assert_eq!(
                parse_control(text),
                Control::Bind {
                    token: "abc".into(),
                    last_event: None,
                    resume: HashMap::new()
                },
                "{text}"
            );
        }
    }

    #[test]
    fn the_json_bind_form_carries_resume_points() {
        let c = parse_control(
            r#"{"type":"bind-with-token","payload":{"token":"t","last-event-number":7,"resume":{"s1":3}}}"#,
        );
        assert_eq!(
            c,
            Control::Bind {
                token: "t".into(),
                last_event: Some(7),
                resume: HashMap::from([("s1".to_owned(), 3)])
            }
        );
    }

    #[test]
    fn unbind_and_ping_forms_are_understood() {
        for text in [
            "unbind-from-token abc",
            "unbind-from-token: abc",
            r#"{"type":"unbind-from-token","payload":{"token":"abc"}}"#,
        ] {
            assert_eq!(
                parse_control(text),
                Control::Unbind {
                    token: "abc".into()
                },
                "{text}"
            );
        }
        assert_eq!(parse_control("ping"), Control::Ping);
        assert_eq!(parse_control(r#"{"type":"ping"}"#), Control::Ping);
    }

    #[test]
    fn anything_else_is_invalid_with_a_reason() {
        for text in [
            "",
            "bind-with-token",
            "bind-with-token: ",
            "hello",
            "{",
            r#"{"type":"bind-with-token"}"#,
            r#"{"type":"subscribe"}"#,
            r#"{"payload":{}}"#,
        ] {
            assert!(matches!(parse_control(text), Control::Invalid(_)), "{text}");
        }
    }
}
