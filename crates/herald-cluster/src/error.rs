//! The cluster crate's one error type.

/// Why the cluster could not be joined or used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// NATS could not be reached or refused the connection.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The configured URL(s).
        url: String,
        /// The client's reason.
        reason: String,
    },
    /// A JetStream stream or bucket could not be created or opened.
    #[error("JetStream {what}: {reason}")]
    JetStream {
        /// What was being done.
        what: String,
        /// The client's reason.
        reason: String,
    },
    /// The NATS client's runtime is gone (the process is stopping).
    #[error("the NATS client has stopped")]
    Stopped,
}
