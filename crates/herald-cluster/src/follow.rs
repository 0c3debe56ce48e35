//! The follower: applies other nodes' records soon after they are appended, so that reads,
//! websockets and the matcher on this node are current without waiting for this node's next
//! write. Every record published on the log subject also reaches core-NATS subscribers: that is
//! the doorbell; the records themselves are read from the stream, in order, by the store's
//! catch-up (a missed doorbell is covered by a periodic look).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use herald_store::Store;

use crate::LOG_SUBJECT;
use crate::connection::Nats;

/// How often the follower looks at the stream when no doorbell rang.
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// Starts the follower thread. It blocks on the store's catch-up (which blocks on NATS), so it
/// runs on a thread of its own, never on an async runtime.
pub fn follow(nats: &Arc<Nats>, store: Arc<Store>) -> std::io::Result<()> {
    let (ring, rung) = std::sync::mpsc::sync_channel::<()>(1);
    let client = nats.client.clone();
    nats.spawn(async move {
        match client.subscribe(LOG_SUBJECT).await {
            Ok(mut sub) => {
                while sub.next().await.is_some() {
                    let _ = ring.try_send(());
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "no doorbell for the cluster log; looking every 500 ms")
            }
        }
    });
    std::thread::Builder::new()
        .name("herald-follow".into())
        .spawn(move || {
            loop {
                match rung.recv_timeout(LOOK_EVERY) {
                    Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        std::thread::sleep(LOOK_EVERY);
                    }
                }
                if let Err(e) = store.catch_up() {
                    tracing::warn!(error = %e, "cannot apply the cluster log; trying again");
                    std::thread::sleep(LOOK_EVERY);
                }
            }
        })
        .map(|_| ())
}
