//! Getting notifications to subscribers. This crate turns stored events into notification
//! bundles (`payload`), and — per the delivery design — owns the channels, the retry policy,
//! the scheduler and the delivery log.
#![forbid(unsafe_code)]

pub mod payload;
