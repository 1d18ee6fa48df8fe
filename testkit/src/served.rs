//! A service run in the test's own process: `producer::run_with(config, listeners, shutdown)`
//! or `consumer::run(...)` spawned on the test's runtime, on listeners bound to port 0, and
//! stopped through the shutdown future it was given.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

use crate::{PROMPTLY, init_test_log};

/// A listener on 127.0.0.1:0 and the address the kernel gave it. Binding first and handing the
/// listener over means the address is known before the server runs, and no port is ever
/// guessed.
pub async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    (listener, addr)
}

/// [`bind`] when `wanted`: for a service's optional listeners (the producer's HTTP side, the
/// consumer's `/metrics`).
pub async fn bind_if(wanted: bool) -> (Option<TcpListener>, Option<SocketAddr>) {
    if !wanted {
        return (None, None);
    }
    let (listener, addr) = bind().await;
    (Some(listener), Some(addr))
}

/// The shutdown future a served service is given: it resolves on [`Served::stop`], or when the
/// [`Served`] is dropped (a test that panicked), so no server outlives its test.
#[derive(Debug)]
pub struct Shutdown(oneshot::Receiver<()>);

impl Future for Shutdown {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Sent or dropped, either way it is time to stop.
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// A service's `run` future running as a task of the test.
#[derive(Debug)]
pub struct Served<E> {
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), E>>,
}

impl<E: Send + 'static> Served<E> {
    /// Spawns `run(shutdown)`; the closure binds nothing itself (see [`bind`]).
    pub fn spawn<Fut>(run: impl FnOnce(Shutdown) -> Fut) -> Self
    where
        Fut: Future<Output = Result<(), E>> + Send + 'static,
    {
        init_test_log();
        let (tx, rx) = oneshot::channel();
        Self {
            shutdown: Some(tx),
            handle: tokio::spawn(run(Shutdown(rx))),
        }
    }

    /// Triggers shutdown and returns what `run` returned. Panics if `run` panicked or is still
    /// running after [`PROMPTLY`]: every service must stop promptly, open streams or not.
    pub async fn stop(mut self) -> Result<(), E> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(PROMPTLY, &mut self.handle)
            .await
            .unwrap_or_else(|_| panic!("the server was still running {PROMPTLY:?} after shutdown"))
            .expect("the server task did not panic")
    }
}
