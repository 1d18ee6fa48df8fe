//! A TCP proxy in front of a service, for what the network does to a client: connections cut
//! mid-stream, and a server that comes back at another address (a producer restarted on a new
//! port). Clients are configured once, with the proxy's address, as they would be with a load
//! balancer's.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
};

use tokio::{net::TcpStream, task::AbortHandle};

/// A TCP proxy on 127.0.0.1:0 in front of a producer. `cut()` drops every open connection (the
/// consumer sees a broken transport, as when a network path or a load balancer fails);
/// `retarget()` sends new connections to another address (a producer restarted elsewhere).
pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
    accept: AbortHandle,
}

struct ProxyState {
    target: SocketAddr,
    connections: Vec<AbortHandle>,
    accepted: usize,
}

/// A std mutex: held for a field update, never across an `.await`.
fn lock(state: &Mutex<ProxyState>) -> MutexGuard<'_, ProxyState> {
    state
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
        let accept_state = Arc::clone(&state);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let _ = inbound.set_nodelay(true);
                let target = lock(&accept_state).target;
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = outbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                let mut state = lock(&accept_state);
                state.connections.push(task.abort_handle());
                state.accepted += 1;
            }
        })
        .abort_handle();
        Self {
            addr,
            state,
            accept,
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
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
