//! The channel between an SSE subscriber's task and the response stream it sends. (A gRPC
//! Subscribe stream has no task: it reads the log when HTTP/2 asks, see
//! [`crate::service::SubscriberStream`] and [`crate::stall`].)
//!
//! Bounded and small, because the log is the buffer: a subscriber holds a cursor, not a queue of
//! copies. Two rules make a client that stops reading cost a bounded amount:
//!
//! - a send waits for the client (for room in the channel) for at most the stall timeout
//!   (`--stall-timeout`); past it, [`Sender::send`] gives up with [`SendError::Stalled`] and the
//!   task ends, taking its cursor and the slot it holds with it;
//! - the status that ends a stalled stream cannot queue behind the responses it is stuck on (the
//!   channel is full; that is what stalled means), so [`Sender::end_with`] hands it to the
//!   stream, which yields it *in place of* whatever is still buffered. The client loses
//!   nothing it was sent: it resumes from the last response it received.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures_util::Stream;
use tokio::sync::{mpsc, oneshot};

/// A push channel holding at most `capacity` items, whose sends stall after `stall_timeout`.
pub fn channel<T>(capacity: usize, stall_timeout: Duration) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = mpsc::channel(capacity);
    let (end_tx, end_rx) = oneshot::channel();
    (
        Sender {
            tx,
            end: end_tx,
            stall_timeout,
        },
        Receiver {
            rx,
            end: Some(end_rx),
            ended: false,
        },
    )
}

/// Why a send did not happen.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The client went away (the stream was dropped).
    Gone,
    /// The client took nothing for the stall timeout while this item waited.
    Stalled,
}

/// The subscriber task's end.
#[derive(Debug)]
pub struct Sender<T> {
    tx: mpsc::Sender<T>,
    /// The last item, which jumps the queue.
    end: oneshot::Sender<T>,
    stall_timeout: Duration,
}

impl<T> Sender<T> {
    /// Sends `item` once the client has room for it, waiting at most the stall timeout.
    pub async fn send(&self, item: T) -> Result<(), SendError> {
        match tokio::time::timeout(self.stall_timeout, self.tx.send(item)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(SendError::Gone),
            Err(_) => Err(SendError::Stalled),
        }
    }

    /// A last item queued behind the others, for a client that is reading (a shutdown, an
    /// expired cursor): dropped if the client has not made room for it `within`.
    pub async fn send_last(&self, item: T, within: Duration) {
        let _ = tokio::time::timeout(within, self.tx.send(item)).await;
    }

    /// Resolves once the client has gone (the stream was dropped), even while nothing is sent.
    pub async fn closed(&self) {
        self.tx.closed().await;
    }

    /// Ends the stream with `last`, delivered before (instead of) anything still buffered.
    pub fn end_with(self, last: T) {
        // Fails only if the stream is gone, and then nobody is left to tell.
        let _ = self.end.send(last);
    }
}

/// The response stream's end: what the task sent, in order, unless [`Sender::end_with`] cut it
/// short.
#[derive(Debug)]
pub struct Receiver<T> {
    rx: mpsc::Receiver<T>,
    /// Until the task ends: `end_with`'s item, or nothing (the sender dropped without one).
    end: Option<oneshot::Receiver<T>>,
    /// The last item has been yielded; the stream is over.
    ended: bool,
}

impl<T> Receiver<T> {
    /// The item `end_with` left, if it has.
    fn poll_end(&mut self, cx: &mut Context<'_>) -> Option<T> {
        let end = self.end.as_mut()?;
        match Pin::new(end).poll(cx) {
            Poll::Ready(Ok(last)) => {
                self.end = None;
                self.ended = true;
                // What was buffered is never sent now: free it at once.
                self.rx.close();
                while self.rx.try_recv().is_ok() {}
                Some(last)
            }
            Poll::Ready(Err(_)) => {
                self.end = None;
                None
            }
            Poll::Pending => None,
        }
    }
}

impl<T> Stream for Receiver<T> {
    type Item = T;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        if let Some(last) = this.poll_end(cx) {
            return Poll::Ready(Some(last));
        }
        match this.rx.poll_recv(cx) {
            // The task may have left its last item just before it dropped the channel.
            Poll::Ready(None) => Poll::Ready(this.poll_end(cx)),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::{FutureExt as _, StreamExt as _};

    use super::*;

    const STALL: Duration = Duration::from_secs(30);

    #[tokio::test(start_paused = true)]
    async fn a_send_stalls_after_the_timeout_and_the_end_jumps_the_queue() {
        let (tx, mut rx) = channel::<u32>(2, STALL);
        tx.send(1).await.unwrap();
        tx.send(2).await.unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(tx.send(3).await, Err(SendError::Stalled));
        assert_eq!(started.elapsed(), STALL);
        tx.end_with(99);
        assert_eq!(rx.next().await, Some(99), "ahead of 1 and 2");
        assert_eq!(rx.next().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reading_client_gets_everything_in_order_then_the_end() {
        let (tx, mut rx) = channel::<u32>(2, STALL);
        let task = tokio::spawn(async move {
            for i in 0..10 {
                tx.send(i).await.unwrap();
            }
            tx.send_last(10, Duration::from_millis(200)).await;
        });
        let got: Vec<u32> = (&mut rx).collect().await;
        assert_eq!(got, (0..=10).collect::<Vec<_>>());
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_sender_dropped_without_an_end_ends_the_stream_after_what_it_sent() {
        let (tx, mut rx) = channel::<u32>(2, STALL);
        tx.send(1).await.unwrap();
        drop(tx);
        assert_eq!(rx.next().await, Some(1));
        assert_eq!(rx.next().await, None);
        let (tx, rx) = channel::<u32>(2, STALL);
        drop(rx);
        assert_eq!(tx.send(1).await, Err(SendError::Gone));
        assert!(tx.closed().now_or_never().is_some());
    }
}
