//! Herald nodes on a NATS JetStream cluster (docs/cluster.md): the connection ([`Nats`]), the
//! replicated record log the store appends to ([`JetStreamLog`]), the follower that applies
//! other nodes' records as they arrive ([`follow`]) and the delivery leases ([`KvLeases`]).
//! The store and the server know nothing about NATS: they see a `RecordLog` and a `Leases`.
#![forbid(unsafe_code)]

mod connection;
mod error;
mod follow;
mod leases;
mod log;

pub use connection::Nats;
pub use error::ClusterError;
pub use follow::follow;
pub use leases::KvLeases;
pub use log::JetStreamLog;

/// The stream holding every record of the cluster, in order.
pub const LOG_STREAM: &str = "HERALD_LOG";
/// The subject records are published on (also the doorbell the followers listen to).
pub const LOG_SUBJECT: &str = "herald.log";
/// The key-value bucket of delivery leases.
pub const LEASE_BUCKET: &str = "herald_leases";
