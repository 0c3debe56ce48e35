//! The store's one error type. The server maps each variant to an HTTP status and an
//! OperationOutcome in one place (`herald-server::error`).

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The resource does not exist (never written).
    #[error("{resource_type}/{id} is not known")]
    NotFound {
        /// Resource type.
        resource_type: String,
        /// Logical id.
        id: String,
    },
    /// The resource existed and was deleted; `version` is the deletion's version.
    #[error("{resource_type}/{id} was deleted (version {version})")]
    Gone {
        /// Resource type.
        resource_type: String,
        /// Logical id.
        id: String,
        /// Version id of the deletion.
        version: u64,
    },
    /// The requested version of a resource does not exist.
    #[error("{resource_type}/{id} has no version {version}")]
    VersionNotFound {
        /// Resource type.
        resource_type: String,
        /// Logical id.
        id: String,
        /// The version asked for.
        version: u64,
    },
    /// `If-Match` named a version that is no longer current.
    #[error(
        "version conflict on {resource_type}/{id}: If-Match expected version {expected}, current is {current}"
    )]
    VersionConflict {
        /// Resource type.
        resource_type: String,
        /// Logical id.
        id: String,
        /// The version the client expected.
        expected: u64,
        /// The current version (0 when the resource does not exist).
        current: u64,
    },
    /// A create with a client-chosen id hit an existing resource.
    #[error("{resource_type}/{id} already exists")]
    AlreadyExists {
        /// Resource type.
        resource_type: String,
        /// Logical id.
        id: String,
    },
    /// The write hook (matching) refused the change; nothing was written.
    #[error("change refused while matching subscriptions: {0}")]
    Hook(String),
    /// The on-disk data could not be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The storage engine (LSM trees or sled) failed.
    #[error("storage engine error: {0}")]
    Engine(String),
    /// The store cannot be opened as configured (another engine's data directory, or one in
    /// use by another process); nothing was changed.
    #[error("the store cannot be opened: {0}")]
    Refused(String),
    /// Reading or writing the write-ahead log failed.
    #[error("write-ahead log I/O error: {0}")]
    Io(String),
    /// The write could not be applied now (the batch it was part of failed in storage, or the
    /// server is stopping); nothing of it was written, and retrying later is safe.
    #[error("the write could not be applied: {0}")]
    Unavailable(String),
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> StoreError {
        StoreError::Engine(format!("sled: {e}"))
    }
}

impl From<lsm_tree::Error> for StoreError {
    fn from(e: lsm_tree::Error) -> StoreError {
        StoreError::Engine(format!("LSM: {e}"))
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
