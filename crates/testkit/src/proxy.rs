//! A TCP proxy that a test can break on purpose: it sits between a node and
//! one of its services (PostgreSQL, Redis) or between a client and the
//! load balancer, and can cut the link (new connections refused, open ones
//! dropped), hold it silent (a partition: nothing passes, nothing closes),
//! add latency, or corrupt bytes, while the other links keep working.
//!
//! Each accepted connection is two pipes (one per direction): a reader
//! that stamps each chunk with the time it arrived and a writer that sends
//! it once the link's latency has passed, so latency delays every byte by
//! the same amount and keeps their order. The link's mode is a
//! [`tokio::sync::watch`] channel that every pipe follows, so a change
//! applies to open connections at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Size of one read from either side.
const CHUNK: usize = 16 * 1024;

/// What the link does to the bytes that cross it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMode {
    /// Bytes pass unchanged.
    Pass,
    /// Every chunk is delayed by this much (each direction).
    Latency(Duration),
    /// New connections are closed at once; open ones are dropped (both
    /// sides see the connection end).
    Cut,
    /// Nothing passes and nothing is closed: a network partition. Bytes
    /// read meanwhile are delivered when the link passes again.
    Blackhole,
    /// One byte of every `n`th chunk is flipped (a broken middlebox).
    Corrupt(u32),
}

struct Shared {
    upstream: SocketAddr,
    mode: watch::Sender<LinkMode>,
    accepted: AtomicU64,
    dropped: AtomicU64,
}

/// A running proxy on a free loopback port, forwarding to `upstream`.
/// Dropping it stops accepting; open connections end with their peers.
pub struct TcpProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Starts a proxy to `upstream` on a free loopback port.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            mode: watch::channel(LinkMode::Pass).0,
            accepted: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(TcpProxy {
            addr,
            shared,
            accept,
        })
    }

    /// The address clients connect to instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The loopback port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Sets what the link does from now on, for new and open connections.
    pub fn set(&self, mode: LinkMode) {
        self.shared.mode.send_replace(mode);
    }

    /// What the link does now.
    pub fn mode(&self) -> LinkMode {
        *self.shared.mode.borrow()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Connections ended by a cut so far.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Open connections follow the mode: a cut ends them.
        self.shared.mode.send_replace(LinkMode::Cut);
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        if *shared.mode.borrow() == LinkMode::Cut {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            drop(client);
            continue;
        }
        tokio::spawn(connection(client, Arc::clone(&shared)));
    }
}

/// One proxied connection: connects upstream (waiting while the link is a
/// black hole), then runs both pipes until either side ends or the link
/// is cut.
async fn connection(client: TcpStream, shared: Arc<Shared>) {
    let mut mode = shared.mode.subscribe();
    let cut = |m: &LinkMode| *m == LinkMode::Cut;
    let open = async {
        if mode.wait_for(|m| *m != LinkMode::Blackhole).await.is_err() {
            return None;
        }
        TcpStream::connect(shared.upstream).await.ok()
    };
    let mut cut_watch = shared.mode.subscribe();
    let upstream = tokio::select! {
        upstream = open => upstream,
        _ = cut_watch.wait_for(cut) => None,
    };
    let Some(upstream) = upstream else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let there = pipe(client_read, upstream_write, shared.mode.subscribe());
    let back = pipe(upstream_read, client_write, shared.mode.subscribe());
    let mut watch_cut = shared.mode.subscribe();
    tokio::select! {
        _ = async { tokio::join!(there, back) } => {}
        _ = watch_cut.wait_for(cut) => {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Copies `from` to `to` following the link's mode; ends when `from` ends
/// (then shuts `to` down for writing) or a write fails.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: watch::Receiver<LinkMode>,
) {
    let (chunks, mut queued) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let mut reader_mode = mode.clone();
    let reader = async move {
        let mut buffer = vec![0u8; CHUNK];
        loop {
            let n = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if chunks.send((Instant::now(), buffer[..n].to_vec())).is_err() {
                break;
            }
            // A black hole stops reading too, so the sender's buffers fill
            // as on a real partition.
            if reader_mode
                .wait_for(|m| *m != LinkMode::Blackhole)
                .await
                .is_err()
            {
                break;
            }
        }
    };
    let mut writer_mode = mode;
    let writer = async move {
        let mut count: u64 = 0;
        while let Some((arrived, mut chunk)) = queued.recv().await {
            if writer_mode
                .wait_for(|m| *m != LinkMode::Blackhole)
                .await
                .is_err()
            {
                return;
            }
            let current = *writer_mode.borrow();
            match current {
                LinkMode::Latency(delay) => tokio::time::sleep_until(arrived + delay).await,
                LinkMode::Corrupt(every) => {
                    count += 1;
                    if every > 0 && count.is_multiple_of(u64::from(every)) && !chunk.is_empty() {
                        let at = chunk.len() / 2;
                        chunk[at] = chunk[at].wrapping_add(1);
                    }
                }
                _ => {}
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback; returns its address.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.write_all(bytes).await?;
        let mut back = vec![0u8; bytes.len()];
        stream.read_exact(&mut back).await?;
        Ok(back)
    }

    #[tokio::test]
    async fn passes_delays_cuts_and_corrupts() {
        let proxy = TcpProxy::start(echo().await).await.expect("proxy");
        let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert_eq!(
            round_trip(&mut stream, b"hello").await.expect("echo"),
            b"hello"
        );

        proxy.set(LinkMode::Latency(Duration::from_millis(200)));
        let started = Instant::now();
        assert_eq!(
            round_trip(&mut stream, b"slow").await.expect("echo"),
            b"slow"
        );
        // 200 ms each way.
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );

        proxy.set(LinkMode::Corrupt(1));
        let back = round_trip(&mut stream, b"abcdef").await.expect("echo");
        assert_ne!(back, b"abcdef");

        proxy.set(LinkMode::Cut);
        let mut rest = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
            .await
            .expect("the cut ends the open connection");
        assert!(ended.is_err() || rest.is_empty());
        let mut refused = TcpStream::connect(proxy.addr()).await.expect("accepted");
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), refused.read(&mut byte))
            .await
            .expect("closed at once");
        assert!(matches!(n, Ok(0) | Err(_)));

        proxy.set(LinkMode::Pass);
        let mut again = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert_eq!(
            round_trip(&mut again, b"back").await.expect("echo"),
            b"back"
        );
    }

    #[tokio::test]
    async fn a_black_hole_holds_bytes_until_it_heals() {
        let proxy = TcpProxy::start(echo().await).await.expect("proxy");
        let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert_eq!(round_trip(&mut stream, b"one").await.expect("echo"), b"one");
        proxy.set(LinkMode::Blackhole);
        stream.write_all(b"two").await.expect("write");
        let mut back = [0u8; 3];
        assert!(
            tokio::time::timeout(Duration::from_millis(300), stream.read_exact(&mut back))
                .await
                .is_err(),
            "nothing crosses a black hole"
        );
        proxy.set(LinkMode::Pass);
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
            .await
            .expect("delivered after healing")
            .expect("read");
        assert_eq!(&back, b"two");
    }
}
