//! The replicated record log: one JetStream stream, appended with an expected last sequence.
//!
//! `append(P, record)` publishes with `Nats-Expected-Last-Sequence: P`: JetStream stores it only
//! if P is still the stream's last sequence, so exactly one record follows each position and every
//! node applies the same sequence (docs/cluster.md). Each append also carries a `Nats-Msg-Id`
//! unique to it: when an answer is lost (a server died, a leader election) the append is sent
//! again with the same id, and JetStream's de-duplication answers with the first copy's sequence
//! instead of storing it twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, RawMessageErrorKind, StorageType};
use bytes::Bytes;
use herald_store::{Appended, RecordLog, StoreError};

use crate::connection::Nats;
use crate::error::ClusterError;
use crate::{LOG_STREAM, LOG_SUBJECT};

/// How long an append keeps trying through lost answers (a NATS server died, a new stream
/// leader is being elected) before the write is refused with 503.
const APPEND_PATIENCE: Duration = Duration::from_secs(20);

/// The stream `HERALD_LOG` as a [`RecordLog`].
pub struct JetStreamLog {
    nats: Arc<Nats>,
    stream: stream::Stream,
    /// Makes each append's message id unique (with the node id and the process start).
    appends: AtomicU64,
    incarnation: u128,
}

impl JetStreamLog {
    /// Opens the stream, creating it when missing (file storage, `replicas` copies, a
    /// de-duplication window longer than an append's patience).
    pub fn open(nats: Arc<Nats>, replicas: usize) -> Result<JetStreamLog, ClusterError> {
        let js = nats.jetstream.clone();
        let stream = nats
            .run(async move {
                js.get_or_create_stream(stream::Config {
                    name: LOG_STREAM.into(),
                    subjects: vec![LOG_SUBJECT.into()],
                    storage: StorageType::File,
                    num_replicas: replicas.max(1),
                    duplicate_window: Duration::from_secs(120),
                    ..Default::default()
                })
                .await
            })?
            .map_err(|e| ClusterError::JetStream {
                what: format!("stream {LOG_STREAM}"),
                reason: e.to_string(),
            })?;
        let incarnation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Ok(JetStreamLog {
            nats,
            stream,
            appends: AtomicU64::new(0),
            incarnation,
        })
    }

    fn unavailable(reason: impl std::fmt::Display) -> StoreError {
        StoreError::Unavailable(format!(
            "the cluster log (NATS JetStream) did not answer: {reason}"
        ))
    }
}

impl RecordLog for JetStreamLog {
    fn append(&self, expected: u64, record: &[u8]) -> herald_store::Result<Appended> {
        let n = self.appends.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{:x}-{n}", self.nats.node_id, self.incarnation);
        let payload = Bytes::copy_from_slice(record);
        let js = self.nats.jetstream.clone();
        self.nats
            .run(async move {
                let began = tokio::time::Instant::now();
                loop {
                    let message = PublishMessage::build()
                        .payload(payload.clone())
                        .message_id(&id)
                        .expected_last_sequence(expected);
                    let result = match js.send_publish(LOG_SUBJECT, message).await {
                        Ok(ack) => ack.await,
                        Err(e) => Err(e),
                    };
                    match result {
                        Ok(ack) => return Ok(Appended::At(ack.sequence)),
                        Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                            return Ok(Appended::Behind);
                        }
                        Err(e) if began.elapsed() < APPEND_PATIENCE => {
                            tracing::warn!(error = %e, "cluster log append not answered; sending it again");
                            tokio::time::sleep(Duration::from_millis(250)).await;
                        }
                        Err(e) => return Err(Self::unavailable(e)),
                    }
                }
            })
            .map_err(Self::unavailable)?
    }

    fn read_from(&self, position: u64, limit: usize) -> herald_store::Result<Vec<(u64, Vec<u8>)>> {
        let stream = self.stream.clone();
        self.nats
            .run(async move {
                let mut out = Vec::new();
                let mut next = position + 1;
                while out.len() < limit {
                    match stream.get_raw_message(next).await {
                        Ok(m) => {
                            out.push((m.sequence, m.payload.to_vec()));
                            next = m.sequence + 1;
                        }
                        Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => break,
                        Err(e) => return Err(Self::unavailable(e)),
                    }
                }
                Ok(out)
            })
            .map_err(Self::unavailable)?
    }
}
