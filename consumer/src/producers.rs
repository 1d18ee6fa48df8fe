//! The producers a consumer may read from (`--producer a,b,c`), and which one it reads from now.
//!
//! Several producers may serve one log: the same `log_id` and the same sequences, as producers
//! in front of one shared stream do. A cursor is then good on any of them, so when the producer
//! the reader uses fails, it moves on to the next in the list with the same cursor (round robin,
//! wrapping around), and backs off only once every producer has failed in a row. With one
//! producer that is after every failure, as it always was. Whether a response really continues
//! the cursor's log is still decided by its `log_id`, in the reader, as for any response.
//!
//! [`Rotation`] is that rule with no I/O, so tests drive it directly; [`Producers`] pairs it with
//! one gRPC client per address.

use std::time::Duration;

use pushpull::{
    grpc,
    pb::{
        producer_service_client::ProducerServiceClient,
        webhook_service_client::WebhookServiceClient,
    },
    tls::ClientFiles,
};
use tonic::{
    metadata::AsciiMetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

/// A channel to one producer that sends the bearer token, if any, with every call.
pub type Authorized = InterceptedService<Channel, BearerToken>;

/// Adds `authorization: Bearer <token>` to every call (the producer's `--tokens-file`).
#[derive(Clone)]
pub struct BearerToken(Option<AsciiMetadataValue>);

impl std::fmt::Debug for BearerToken {
    // Never the token itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("BearerToken")
            .field(&self.0.as_ref().map(|_| "…"))
            .finish()
    }
}

impl BearerToken {
    pub fn new(token: Option<&str>) -> Result<Self, String> {
        token
            .map(|t| {
                let mut value: AsciiMetadataValue = format!("Bearer {t}")
                    .parse()
                    .map_err(|_| "the producer token is not printable ASCII".to_owned())?;
                // Kept out of HPACK's dynamic table, as HTTP/2 advises for credentials.
                value.set_sensitive(true);
                Ok(value)
            })
            .transpose()
            .map(Self)
    }
}

impl Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// Which producer of the list is in use, and how many have failed since one last answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// How many producers there are; at least one.
    len: usize,
    /// The index of the producer in use.
    current: usize,
    /// Producers that failed one after the other since the last answer (or the last backoff).
    failed_in_a_row: usize,
}

/// What [`Rotation::failed`] decided: the failed producer, the one to use next, and whether to
/// back off before calling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub from: usize,
    pub to: usize,
    /// True once every producer has failed in a row: the whole list was tried without an answer.
    pub back_off: bool,
}

impl Step {
    /// Whether the reader moves to another producer (never with a list of one).
    pub fn is_failover(&self) -> bool {
        self.from != self.to
    }
}

impl Rotation {
    /// Starts with the first of `len` producers.
    pub fn new(len: usize) -> Self {
        assert!(len > 0, "a consumer reads from at least one producer");
        Self {
            len,
            current: 0,
            failed_in_a_row: 0,
        }
    }

    /// The producer in use.
    pub fn current(&self) -> usize {
        self.current
    }

    /// The producer in use failed: the next one is used (the first after the last), at once,
    /// unless this failure completes a round of the whole list without an answer, which is
    /// when the reader backs off (once per round).
    pub fn failed(&mut self) -> Step {
        let from = self.current;
        self.current = (self.current + 1) % self.len;
        self.failed_in_a_row += 1;
        let back_off = self.failed_in_a_row >= self.len;
        if back_off {
            self.failed_in_a_row = 0;
        }
        Step {
            from,
            to: self.current,
            back_off,
        }
    }

    /// The producer in use answered: a new round starts with it.
    pub fn answered(&mut self) {
        self.failed_in_a_row = 0;
    }
}

/// How long a connection attempt to one producer may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One gRPC client per `--producer` address, and the [`Rotation`] over them.
#[derive(Debug)]
pub struct Producers {
    /// The addresses as given, in order; never empty.
    urls: Vec<String>,
    /// The client of each address, by the same index. Each has a lazy channel of its own: it
    /// connects on first use and reconnects by itself after a failure, so a producer that was
    /// gone is simply asked again when its turn comes; the reader decides when to call.
    clients: Vec<ProducerServiceClient<Authorized>>,
    /// The WebhookService client of each address (webhook mode registers there), over the same
    /// channel as its ProducerService client.
    webhook_clients: Vec<WebhookServiceClient<Authorized>>,
    rotation: Rotation,
}

impl Producers {
    /// Clients for `urls` (checked by the configuration already), none connected yet; messages
    /// up to `max_message_bytes` both ways.
    pub fn new(urls: &[String], max_message_bytes: usize) -> Result<Self, String> {
        Self::with_tls(urls, max_message_bytes, &ClientFiles::default(), None)
    }

    /// [`Producers::new`] over TLS settings (`https://` addresses) and with a bearer token.
    pub fn with_tls(
        urls: &[String],
        max_message_bytes: usize,
        tls: &ClientFiles,
        token: Option<&str>,
    ) -> Result<Self, String> {
        let token = BearerToken::new(token)?;
        let channels = urls
            .iter()
            .map(|url| {
                Ok(
                    pushpull::tls::endpoint(url, tls, crate::config::PRODUCER_TLS_FLAGS)
                        .map_err(|e| format!("--producer {url:?}: {e}"))?
                        .connect_timeout(CONNECT_TIMEOUT)
                        .tcp_nodelay(true)
                        .http2_keep_alive_interval(grpc::HTTP2_KEEPALIVE_INTERVAL)
                        .keep_alive_timeout(grpc::HTTP2_KEEPALIVE_TIMEOUT)
                        .keep_alive_while_idle(true)
                        .connect_lazy(),
                )
            })
            .collect::<Result<Vec<Channel>, String>>()?;
        if channels.is_empty() {
            return Err("--producer names no producer".into());
        }
        let channels: Vec<Authorized> = channels
            .into_iter()
            .map(|channel| InterceptedService::new(channel, token.clone()))
            .collect();
        let clients = channels
            .iter()
            .map(|channel| {
                ProducerServiceClient::new(channel.clone())
                    .max_decoding_message_size(max_message_bytes)
                    .max_encoding_message_size(max_message_bytes)
            })
            .collect();
        let webhook_clients = channels
            .into_iter()
            .map(WebhookServiceClient::new)
            .collect();
        Ok(Self {
            urls: urls.to_vec(),
            rotation: Rotation::new(urls.len()),
            clients,
            webhook_clients,
        })
    }

    /// The client of the producer in use (a cheap clone: clients share their channel).
    pub fn client(&self) -> ProducerServiceClient<Authorized> {
        self.clients[self.rotation.current()].clone()
    }

    /// The WebhookService client of the producer in use.
    pub fn webhook_client(&self) -> WebhookServiceClient<Authorized> {
        self.webhook_clients[self.rotation.current()].clone()
    }

    /// The index of the producer in use, in `--producer` order.
    pub fn current_index(&self) -> usize {
        self.rotation.current()
    }

    /// The address of the producer in use.
    pub fn current(&self) -> &str {
        self.url(self.rotation.current())
    }

    /// The address of producer `index`.
    pub fn url(&self, index: usize) -> &str {
        &self.urls[index]
    }

    /// See [`Rotation::failed`].
    pub fn failed(&mut self) -> Step {
        self.rotation.failed()
    }

    /// See [`Rotation::answered`].
    pub fn answered(&mut self) {
        self.rotation.answered();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(from: usize, to: usize, back_off: bool) -> Step {
        Step { from, to, back_off }
    }

    #[test]
    fn failures_move_round_the_list_and_back_off_once_per_round_without_an_answer() {
        let mut r = Rotation::new(3);
        assert_eq!(r.current(), 0);
        assert_eq!(r.failed(), step(0, 1, false));
        assert_eq!(r.failed(), step(1, 2, false));
        // Every producer failed in a row: wrap around to the first, after a backoff.
        assert_eq!(r.failed(), step(2, 0, true));
        // The next round starts afresh: two moves at once, then a backoff again.
        assert_eq!(r.failed(), step(0, 1, false));
        assert_eq!(r.failed(), step(1, 2, false));
        assert_eq!(r.failed(), step(2, 0, true));
        assert_eq!(r.current(), 0);
    }

    #[test]
    fn an_answer_starts_a_new_round_from_the_producer_that_gave_it() {
        let mut r = Rotation::new(3);
        assert_eq!(r.failed(), step(0, 1, false));
        r.answered();
        // 1 answered, then fails: 2 and 0 are tried at once, and only 1 failing again (a
        // whole round since its answer) means a backoff.
        assert_eq!(r.failed(), step(1, 2, false));
        assert_eq!(r.failed(), step(2, 0, false));
        assert_eq!(r.failed(), step(0, 1, true));
    }

    #[test]
    fn with_one_producer_every_failure_backs_off_and_none_is_a_failover() {
        let mut r = Rotation::new(1);
        for _ in 0..3 {
            let s = r.failed();
            assert_eq!(s, step(0, 0, true));
            assert!(!s.is_failover());
        }
        assert!(step(1, 0, false).is_failover());
    }

    #[tokio::test]
    async fn producers_follow_the_rotation() {
        let urls = ["http://a:1".to_owned(), "http://b:2".to_owned()];
        let mut p = Producers::new(&urls, 1024).unwrap();
        assert_eq!(p.current(), "http://a:1");
        let s = p.failed();
        assert_eq!((p.url(s.from), p.url(s.to)), ("http://a:1", "http://b:2"));
        assert_eq!(p.current(), "http://b:2");
        assert!(Producers::new(&[], 1024).is_err());
    }
}
