//! The dispatcher's live view of each subscription and the operator actions it carries out.
//! The admin API asks the dispatcher for this view (a query on its command channel) instead of
//! reading the stored delivery state, which is written after the fact and lags an attempt in
//! flight or a retry just scheduled.

use serde::Serialize;

/// One subscription's delivery as the dispatcher holds it right now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveState {
    /// Tenant.
    pub tenant: String,
    /// Subscription id.
    pub id: String,
    /// Subscription status as the dispatcher knows it (`requested`, `active`, `error`, `off`).
    pub status: String,
    /// Channel type code (`rest-hook`, `websocket`, …).
    pub channel: String,
    /// Highest event number known durable (what may be delivered).
    pub durable: u64,
    /// Highest event number the subscriber acknowledged.
    pub acked: u64,
    /// Events waiting: `durable - acked`.
    pub queue_depth: u64,
    /// What is being sent right now (`handshake`, `heartbeat`, `events 4-6`), if anything.
    pub in_flight: Option<String>,
    /// When that attempt started (Unix ms).
    pub in_flight_since_ms: Option<u64>,
    /// When the next attempt is due (Unix ms), when a retry waits.
    pub next_attempt_at_ms: Option<u64>,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    /// The last failure's cause (`connect: connection refused`, `http-status: HTTP 503 …`).
    pub last_error: Option<String>,
    /// When the last attempt finished (Unix ms).
    pub last_attempt_at_ms: Option<u64>,
    /// When anything was last delivered (Unix ms).
    pub last_delivered_at_ms: Option<u64>,
    /// Paused by an operator.
    pub paused: bool,
    /// Retry horizon passed: nothing is attempted until a retry (redrive).
    pub parked: bool,
    /// The endpoint accepted a handshake.
    pub verified: bool,
    /// An operator's resend still to go (`first..=last`).
    pub resend: Option<(u64, u64)>,
}

/// An operator action on one subscription's delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Try now: forget the wait (and the parking); the failure streak goes on, so a failure
    /// counts towards `error` as any other.
    Retry,
    /// Start over: forget the wait, the parking and the failure streak, and try now.
    Redrive,
    /// Send nothing until resumed (events keep being recorded and queued).
    Pause,
    /// Undo a pause.
    Resume,
    /// Send delivered events `first..=last` again (the cursor stays).
    Resend(u64, u64),
}

impl Action {
    /// The name the audit log and the API use.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Retry => "retry",
            Action::Redrive => "redrive",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Resend(..) => "resend",
        }
    }
}

/// Why an action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// The dispatcher does not deliver this subscription (unknown, or not loaded).
    #[error("Subscription/{0} is not known to delivery")]
    Unknown(String),
    /// The range is not one of delivered events.
    #[error("{0}")]
    BadRange(String),
    /// The dispatcher stopped.
    #[error("delivery is not running")]
    Stopped,
}
