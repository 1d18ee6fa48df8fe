//! Write coalescing for served connections: each burst of writes waits for one trip through
//! the runtime's run queue before it reaches the socket.
//!
//! Why: when one append wakes many subscribers on the same HTTP/2 connection, each subscriber's
//! stream queues its frame and wakes the connection's task. Tokio runs a task woken this way
//! next (its "LIFO slot"), so the connection wrote after nearly every frame: with 10,000
//! subscribers over 100 connections the producer made ~800 `writev` calls per event, 8 per
//! connection, each one a trip through the kernel's TCP stack on both ends. Deferring the
//! first write of a burst by one yield puts the connection's task behind the subscribers that
//! are already queued, so their frames go out together, in one write.
//!
//! The cost is one extra poll of the connection task per burst (about a microsecond on an idle
//! runtime), and no added delay once the run queue is empty. Only the first write after a
//! flush waits: a large response that takes several writes is not slowed further.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An I/O object whose writes are coalesced as the module doc describes; reads pass through.
#[derive(Debug)]
pub struct Coalesce<IO> {
    io: IO,
    /// The current burst has yielded once already: writes go straight through until the next
    /// flush ends it.
    yielded: bool,
}

impl<IO> Coalesce<IO> {
    pub fn new(io: IO) -> Self {
        Self { io, yielded: false }
    }

    /// Yields once per burst: wakes itself and returns `Pending`, which puts the task at the
    /// back of the run queue (tokio treats a task that wakes itself while polled as yielding).
    fn defer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Coalesce<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Coalesce<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.defer(cx));
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.defer(cx));
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.io).poll_flush(cx);
        if flushed.is_ready() {
            this.yielded = false;
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// Polls `f` once, as a runtime would.
    fn poll_once<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(std::task::Waker::noop()))
    }

    /// Counts the writes that reach it.
    struct Counting {
        writes: Arc<AtomicUsize>,
        data: Vec<u8>,
    }

    impl AsyncWrite for Counting {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.writes.fetch_add(1, Ordering::Relaxed);
            // A short write, so one burst takes several.
            let n = buf.len().min(4);
            this.data.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn the_first_write_of_a_burst_yields_once_and_the_rest_go_straight_through() {
        let writes = Arc::new(AtomicUsize::new(0));
        let mut io = Coalesce::new(Counting {
            writes: writes.clone(),
            data: Vec::new(),
        });
        let mut write = Box::pin(io.write_all(b"0123456789"));
        assert!(poll_once(write.as_mut()).is_pending(), "yields first");
        assert_eq!(writes.load(Ordering::Relaxed), 0);
        write.await.unwrap();
        assert_eq!(
            writes.load(Ordering::Relaxed),
            3,
            "4 + 4 + 2 bytes, no more yields"
        );
        io.flush().await.unwrap();
        // The flush ended the burst: the next write yields again.
        assert!(poll_once(std::pin::pin!(io.write(b"x"))).is_pending());
        assert_eq!(io.write(b"x").await.unwrap(), 1);
        assert_eq!(io.io.data, b"0123456789x");
    }

    #[tokio::test]
    async fn bytes_pass_through_unchanged_both_ways() {
        let (a, b) = tokio::io::duplex(64);
        let (mut a, mut b) = (Coalesce::new(a), Coalesce::new(b));
        let sent: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let sent = sent.clone();
            tokio::spawn(async move {
                for chunk in sent.chunks(700) {
                    a.write_all(chunk).await.unwrap();
                    a.flush().await.unwrap();
                }
                a.shutdown().await.unwrap();
            })
        };
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got, sent);
    }
}
