//! A small axum server on its own runtime and OS thread, so that the load generator's baseline
//! servers (the bare-HTTP ceiling, the receiver, the relay) do not share a runtime with the
//! clients that drive them. Stops when dropped.

use std::net::SocketAddr;

use anyhow::Context;

/// An axum app served on loopback from its own two-worker runtime thread (so that it competes
/// for the cores the way a separate server would, rather than queueing behind the clients).
pub struct ServerThread {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerThread {
    /// Binds 127.0.0.1:0 and serves `app` on a 2-worker runtime named `name`.
    pub fn start(name: &str, app: axum::Router) -> anyhow::Result<ServerThread> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding loopback")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(name)
            .enable_all()
            .build()
            .with_context(|| format!("starting the {name} runtime"))?;
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async move {
                            let _ = stopped.await;
                        })
                        .await;
                });
            })
            .with_context(|| format!("starting the {name} thread"))?;
        Ok(ServerThread {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
