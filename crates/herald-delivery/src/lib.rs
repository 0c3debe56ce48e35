//! Getting notifications to subscribers: payload assembly from stored events (`payload`), the
//! rest-hook channel (`resthook`) behind the egress guard (`egress`), the retry policy
//! (`policy`), and the dispatcher that owns per-subscription queues, timers and status
//! transitions (`dispatcher`). Settings in `config`.
#![forbid(unsafe_code)]

pub mod config;
pub mod dispatcher;
pub mod egress;
pub mod payload;
pub mod policy;
pub mod resthook;

pub use config::DeliveryConfig;
pub use dispatcher::{Dispatcher, StatusChange};
