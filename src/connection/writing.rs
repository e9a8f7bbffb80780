//! Writing to the client: the whole of a batch, within the write timeout, unless the
//! connection is kicked meanwhile.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::Outbox;

pub(super) struct Writing {
    pub(super) timeout: Duration,
    /// The connection's queue. Its kick ends a blocked write.
    pub(super) outbox: Arc<Outbox>,
    /// A write has blocked past the timeout.
    pub(super) timed_out: std::sync::atomic::AtomicBool,
}

impl Writing {
    /// Writes all of `bytes`, giving up when the client stalls past the timeout or is kicked.
    ///
    /// Boxed: the write, with its timer, lives only while bytes are in flight, so the
    /// connection's task does not keep its room while the client is idle.
    pub(super) fn write<'a>(
        &'a self,
        writer: &'a mut TcpStream,
        bytes: &'a [u8],
    ) -> Pin<Box<impl Future<Output = io::Result<()>> + Send + 'a>> {
        Box::pin(self.write_unboxed(writer, bytes))
    }

    async fn write_unboxed(&self, writer: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.outbox.is_kicked() {
            return Err(io::ErrorKind::ConnectionAborted.into());
        }
        let writing = tokio::time::timeout(self.timeout, writer.write_all(bytes));
        tokio::pin!(writing);
        std::future::poll_fn(|cx| {
            // A kick wakes the task through the outbox's waker, registered before the flag is
            // looked at, so one that comes at any point ends the write.
            self.outbox.waker.register(cx.waker());
            if self.outbox.is_kicked() {
                return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
            }
            writing.as_mut().poll(cx).map(|r| match r {
                Ok(result) => result,
                Err(_) => {
                    // Logged when the connection ends, in its span.
                    self.timed_out.store(true, Ordering::Relaxed);
                    Err(io::ErrorKind::TimedOut.into())
                }
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A connected pair: the server's write half, and the client's stream.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (server, client)
    }

    fn writing(outbox: &Arc<Outbox>) -> Writing {
        Writing {
            timeout: Duration::from_millis(300),
            outbox: outbox.clone(),
            timed_out: Default::default(),
        }
    }

    #[tokio::test]
    async fn a_write_larger_than_the_socket_buffers_arrives_whole() {
        let (mut writer, mut client) = pair().await;
        let outbox = Arc::new(Outbox::default());
        let w = writing(&outbox);
        let bytes: Vec<u8> = (0..4 * 1024 * 1024).map(|i| i as u8).collect();
        let reading = tokio::spawn(async move {
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        w.write(&mut writer, &bytes).await.unwrap();
        drop(writer);
        assert_eq!(reading.await.unwrap(), bytes);
        assert!(!w.timed_out.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn a_client_that_does_not_read_times_the_write_out() {
        let (mut writer, _client) = pair().await;
        let outbox = Arc::new(Outbox::default());
        let w = writing(&outbox);
        let bytes = vec![b'x'; 64 * 1024 * 1024];
        let err = tokio::time::timeout(Duration::from_secs(10), w.write(&mut writer, &bytes))
            .await
            .expect("the write's own timeout ends it")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(w.timed_out.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn after_a_kick_nothing_more_is_written() {
        let (mut writer, mut client) = pair().await;
        let outbox = Arc::new(Outbox::default());
        let w = writing(&outbox);
        outbox.kick();
        let err = w.write(&mut writer, b"OUT\r\n").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        drop(writer);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert!(got.is_empty());
    }

    #[tokio::test]
    async fn a_kick_ends_a_blocked_write_before_its_timeout() {
        let (mut writer, _client) = pair().await;
        let outbox = Arc::new(Outbox::default());
        let mut w = writing(&outbox);
        w.timeout = Duration::from_secs(3600);
        let bytes = vec![b'x'; 64 * 1024 * 1024];
        let kicker = outbox.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            kicker.kick();
        });
        let err = tokio::time::timeout(Duration::from_secs(10), w.write(&mut writer, &bytes))
            .await
            .expect("the kick ends the write")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        assert!(!w.timed_out.load(Ordering::Relaxed));
    }
}
