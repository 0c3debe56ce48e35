//! The record-log seam: where a record goes to become durable when the store is one replica of
//! a log shared by several Herald nodes (docs/cluster.md).
//!
//! The embedded store keeps its own file log (`wal.rs`, group commit in `commit.rs`). A
//! replicated store hands each record to a [`RecordLog`] instead: the append names the position
//! the record was computed at, and the log refuses it when another node appended first, so every
//! replica applies the same records in the same order and version checks and event numbers come
//! out the same everywhere. [`MemoryLog`] is the in-process implementation (several stores in one
//! process, for tests); `herald-cluster` implements it on a NATS JetStream stream.

use std::sync::Mutex;

use crate::error::Result;

/// The answer to [`RecordLog::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// The record is durable in the log at this position (1-based).
    At(u64),
    /// The log holds records after the expected position: apply them and compute again.
    Behind,
}

/// A totally ordered, durable log of records shared by the replicas.
pub trait RecordLog: Send + Sync {
    /// Appends `record` if the log's last position is `expected` (0: the log is empty), and
    /// returns once the log has it durably. Blocking: the store calls it under its log lock.
    fn append(&self, expected: u64, record: &[u8]) -> Result<Appended>;

    /// Up to `limit` records after `position`, in order, with their positions. Fewer (or none)
    /// when the log ends sooner.
    fn read_from(&self, position: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>>;
}

/// A [`RecordLog`] in memory: the replicas are stores in one process (tests).
#[derive(Debug, Default)]
pub struct MemoryLog {
    records: Mutex<Vec<Vec<u8>>>,
}

impl RecordLog for MemoryLog {
    fn append(&self, expected: u64, record: &[u8]) -> Result<Appended> {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if records.len() as u64 != expected {
            return Ok(Appended::Behind);
        }
        records.push(record.to_vec());
        Ok(Appended::At(records.len() as u64))
    }

    fn read_from(&self, position: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        Ok(records
            .iter()
            .enumerate()
            .skip(usize::try_from(position).unwrap_or(usize::MAX))
            .take(limit)
            .map(|(i, r)| (i as u64 + 1, r.clone()))
            .collect())
    }
}

/// What a record written by another replica changed, as far as the server must react: the
/// resources it wrote (a Subscription or topic changes the matcher) and, per subscription, the
/// event count it recorded (delivery is woken up to it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The log position of the record.
    pub position: u64,
    /// (tenant, resource type, id) of every resource version written.
    pub resources: Vec<(String, String, String)>,
    /// (tenant, subscription id, events recorded so far) for every counter bumped.
    pub events: Vec<(String, String, u64)>,
}
