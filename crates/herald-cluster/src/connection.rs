//! The NATS connection and the runtime it lives on.
//!
//! The store appends under its log lock from plain threads (the committer) and from async tasks
//! alike, and must block until JetStream answers. Blocking a tokio worker on a future of the
//! same runtime can deadlock, and `block_on` inside a runtime panics; so the client runs on a
//! small runtime of its own and callers wait on a plain channel ([`Nats::run`]). Nothing else
//! runs on that runtime, so a blocked caller never holds up the client's own I/O.

use std::future::Future;
use std::sync::Mutex;

use crate::error::ClusterError;

/// A connection to the NATS cluster, with its JetStream context.
pub struct Nats {
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    /// The core client (doorbell subscriptions).
    pub client: async_nats::Client,
    /// The JetStream context (streams, key-value buckets).
    pub jetstream: async_nats::jetstream::Context,
    /// This node's id.
    pub node_id: String,
}

impl Nats {
    /// Connects to `url` (comma-separated server URLs; the client fails over between them and
    /// reconnects forever). Blocking; call at start-up.
    pub fn connect(url: &str, node_id: &str) -> Result<Nats, ClusterError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("herald-nats")
            .enable_all()
            .build()
            .map_err(|e| ClusterError::Connect {
                url: url.into(),
                reason: e.to_string(),
            })?;
        let handle = runtime.handle().clone();
        let urls: Vec<String> = url.split(',').map(|u| u.trim().to_owned()).collect();
        let name = format!("herald-{node_id}");
        let client = run_on(&handle, async move {
            async_nats::ConnectOptions::new()
                .name(name)
                .retry_on_initial_connect()
                .connection_timeout(std::time::Duration::from_secs(5))
                .connect(urls.as_slice())
                .await
        })?
        .map_err(|e| ClusterError::Connect {
            url: url.into(),
            reason: e.to_string(),
        })?;
        let mut jetstream = async_nats::jetstream::new(client.clone());
        // A publish waits for the stream's quorum; a leader election after a server died takes
        // a few seconds, and the append retries within this time (see `log.rs`).
        jetstream.set_timeout(std::time::Duration::from_secs(5));
        Ok(Nats {
            runtime: Mutex::new(Some(runtime)),
            handle,
            client,
            jetstream,
            node_id: node_id.to_owned(),
        })
    }

    /// Runs `fut` on the client's runtime and blocks the calling thread until it is done.
    pub fn run<F>(&self, fut: F) -> Result<F::Output, ClusterError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        run_on(&self.handle, fut)
    }

    /// Spawns `fut` on the client's runtime.
    pub fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handle.spawn(fut);
    }
}

fn run_on<F>(handle: &tokio::runtime::Handle, fut: F) -> Result<F::Output, ClusterError>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().map_err(|_| ClusterError::Stopped)
}

impl Drop for Nats {
    fn drop(&mut self) {
        // Dropping a runtime inside another runtime panics; this never blocks.
        if let Some(rt) = self
            .runtime
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            rt.shutdown_background();
        }
    }
}
