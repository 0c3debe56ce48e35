//! Getting notifications to subscribers. The dispatcher (`dispatcher`) owns per-subscription
//! queues and carries out the delivery policy, which is pure: what to send next and what an
//! outcome changes (`transition`), retry delays (`policy`), deadlines (`timers`). Each attempt
//! (`attempt`) builds its Bundle from stored events (`payload`) and hands it to a channel
//! (`channel`: the seam; `resthook` behind the egress guard `egress`, signing each request
//! with `signing`). Settings in `config`.
#![forbid(unsafe_code)]

pub mod attempt;
pub mod cause;
pub mod channel;
pub mod config;
pub mod dispatcher;
pub mod egress;
pub mod live;
pub mod message;
pub mod metrics;
pub mod payload;
pub mod policy;
pub mod resthook;
pub mod signing;
pub mod timers;
pub mod transition;
pub mod websocket;

pub use channel::{Channel, Key, Notification, Sent};
pub use config::DeliveryConfig;
pub use dispatcher::{Channels, Dispatcher, StatusChange};
pub use websocket::WsHub;
