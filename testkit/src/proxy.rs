//! A TCP proxy in front of a service, for what the network does to a client: connections cut
//! mid-stream, a server that is gone (connections refused) and comes back, and a server that
//! comes back at another address (a producer restarted on a new port). Clients are configured
//! once, with the proxy's address, as they would be with a load balancer's.

use std::{
    io,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::{
    net::{TcpListener, TcpStream},
    task::{AbortHandle, JoinHandle},
};

use crate::PROMPTLY;

/// A TCP proxy on 127.0.0.1:0 in front of a producer. `cut()` drops every open connection (the
/// consumer sees a broken transport, as when a network path or a load balancer fails);
/// `close()` also stops listening, so new connections are refused (a producer that is gone),
/// until `open()` listens on the same address again; `retarget()` sends new connections to
/// another address (a producer restarted elsewhere).
pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
    /// The task that owns the listener and accepts; `None` while closed. A std mutex like
    /// `state`: taken to swap the handle, never held across an `.await`.
    accept: Mutex<Option<JoinHandle<()>>>,
}

struct ProxyState {
    target: SocketAddr,
    connections: Vec<AbortHandle>,
    accepted: usize,
}

/// A std mutex: held for a field update, never across an `.await`.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .expect("no proxy task panics while holding the lock")
}

impl Proxy {
    /// Starts forwarding to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let (listener, addr) = crate::bind().await;
        let state = Arc::new(Mutex::new(ProxyState {
            target,
            connections: Vec::new(),
            accepted: 0,
        }));
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&state)));
        Self {
            addr,
            state,
            accept: Mutex::new(Some(accept)),
        }
    }

    /// The address as a gRPC URL, for a client's `--producer` flag.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far: more than one means a client reconnected.
    pub fn accepted(&self) -> usize {
        lock(&self.state).accepted
    }

    /// Drops every open connection through the proxy.
    pub fn cut(&self) {
        for conn in lock(&self.state).connections.drain(..) {
            conn.abort();
        }
    }

    /// New connections go to `target`; open ones are cut.
    pub fn retarget(&self, target: SocketAddr) {
        lock(&self.state).target = target;
        self.cut();
    }

    /// Stops listening and cuts every open connection: from its return on, a connection to
    /// [`Proxy::addr`] is refused, as by a host whose server is gone. Closing a closed proxy
    /// changes nothing.
    pub async fn close(&self) {
        let accept = lock(&self.accept).take();
        if let Some(accept) = accept {
            accept.abort();
            // The listener is dropped with the task: wait for that, so no connection can
            // still land in its backlog once this returns.
            let _ = tokio::time::timeout(PROMPTLY, accept)
                .await
                .expect("an aborted accept task ends at once");
        }
        self.cut();
    }

    /// Listens on [`Proxy::addr`] again after [`Proxy::close`] (the server is back). Panics if
    /// the address cannot be bound within [`PROMPTLY`]; it is free unless another socket took
    /// the port meanwhile, which the kernel does not do to a port it handed out to a listener a
    /// moment ago except by rare chance. Opening an open proxy changes nothing.
    pub async fn open(&self) {
        if lock(&self.accept).is_some() {
            return;
        }
        let listener = bind_again(self.addr).await;
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&self.state)));
        *lock(&self.accept) = Some(accept);
    }
}

/// Binds `addr` again, retrying while it is still in use (the old listener's socket may take a
/// moment to go). tokio sets `SO_REUSEADDR`, so the connections left in TIME_WAIT do not count.
async fn bind_again(addr: SocketAddr) -> TcpListener {
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(err) if err.kind() == io::ErrorKind::AddrInUse => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "cannot listen on {addr} again within {PROMPTLY:?}: {err}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(err) => panic!("cannot listen on {addr} again: {err}"),
        }
    }
}

/// Accepts connections and forwards each to the current target, until aborted.
async fn accept_loop(listener: TcpListener, state: Arc<Mutex<ProxyState>>) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            return;
        };
        let _ = inbound.set_nodelay(true);
        let target = lock(&state).target;
        let task = tokio::spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(target).await {
                let _ = outbound.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
        let mut state = lock(&state);
        state.connections.push(task.abort_handle());
        state.accepted += 1;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(accept) = lock(&self.accept).take() {
            accept.abort();
        }
        self.cut();
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// A server that answers each connection with `hello` and closes it.
    async fn hello_server() -> SocketAddr {
        let (listener, addr) = crate::bind().await;
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let _ = conn.write_all(b"hello").await;
            }
        });
        addr
    }

    async fn greeting(addr: SocketAddr) -> io::Result<String> {
        let mut conn = TcpStream::connect(addr).await?;
        let mut text = String::new();
        conn.read_to_string(&mut text).await?;
        Ok(text)
    }

    #[tokio::test]
    async fn a_closed_proxy_refuses_connections_until_opened_again_on_the_same_address() {
        let proxy = Proxy::start(hello_server().await).await;
        assert_eq!(greeting(proxy.addr).await.unwrap(), "hello");

        proxy.close().await;
        let refused = TcpStream::connect(proxy.addr).await.unwrap_err();
        assert_eq!(
            refused.kind(),
            io::ErrorKind::ConnectionRefused,
            "{refused}"
        );
        proxy.close().await;

        proxy.open().await;
        proxy.open().await;
        assert_eq!(greeting(proxy.addr).await.unwrap(), "hello");
        assert_eq!(proxy.accepted(), 2);
    }

    #[tokio::test]
    async fn closing_cuts_open_connections() {
        let (listener, target) = crate::bind().await;
        // An echo server: a connection ends only when the proxy cuts it.
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = conn.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        let proxy = Proxy::start(target).await;
        let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
        // One round trip: the connection is through the proxy, not waiting in its backlog.
        conn.write_all(b"x").await.unwrap();
        let mut buf = [0u8; 1];
        conn.read_exact(&mut buf).await.unwrap();

        proxy.close().await;
        let read = tokio::time::timeout(PROMPTLY, conn.read(&mut buf))
            .await
            .expect("the cut connection ends");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
}
