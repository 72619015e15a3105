//! A TCP relay in front of the S3 server, for taking S3 away mid-request
//! and bringing it back: `cut` drops every connection and stops listening
//! (as a crashed server would), `restore` listens again on the same port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

pub struct Relay {
    pub addr: SocketAddr,
    upstream: SocketAddr,
    /// Bytes relayed towards the server since the last `restore`.
    pub sent: Arc<AtomicU64>,
    /// Cut when this many bytes have gone towards the server.
    cut_after: Arc<AtomicU64>,
    cut: Arc<Notify>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Relay {
    /// Relay a free loopback port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let mut relay = Relay {
            addr: listener.local_addr().unwrap(),
            upstream,
            sent: Arc::default(),
            cut_after: Arc::new(AtomicU64::new(u64::MAX)),
            cut: Arc::new(Notify::new()),
            task: None,
        };
        relay.serve(listener);
        relay
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn serve(&mut self, listener: TcpListener) {
        // A fresh signal per listening spell: a permit left by the last
        // cut must not end this one.
        self.cut = Arc::new(Notify::new());
        let (upstream, sent, cut_after, cut) = (
            self.upstream,
            self.sent.clone(),
            self.cut_after.clone(),
            self.cut.clone(),
        );
        self.task = Some(tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = cut.notified() => break,
                    accepted = listener.accept() => {
                        let Ok((client, _)) = accepted else { break };
                        let (sent, cut_after, cut) = (sent.clone(), cut_after.clone(), cut.clone());
                        connections.spawn(async move {
                            let Ok(server) = TcpStream::connect(upstream).await else { return };
                            pipe(client, server, sent, cut_after, cut).await;
                        });
                    }
                }
            }
            // Dropping the set drops every connection, mid-request or not.
            connections.abort_all();
        }));
    }

    /// Take S3 away once `bytes` more have been sent towards it.
    pub fn cut_after(&self, bytes: u64) {
        self.cut_after
            .store(self.sent.load(Ordering::SeqCst) + bytes, Ordering::SeqCst);
    }

    /// Take S3 away now.
    pub async fn cut(&mut self) {
        self.cut.notify_one();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Wait until the relay has been cut (by `cut_after`).
    pub async fn wait_cut(&mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Bring S3 back on the same port.
    pub async fn restore(&mut self) {
        self.cut().await;
        self.cut_after.store(u64::MAX, Ordering::SeqCst);
        let listener = TcpListener::bind(self.addr).await.expect("rebind the relay's port");
        self.serve(listener);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn pipe(client: TcpStream, server: TcpStream, sent: Arc<AtomicU64>, cut_after: Arc<AtomicU64>, cut: Arc<Notify>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = async {
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
            let total = sent.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
            if total >= cut_after.load(Ordering::SeqCst) {
                cut.notify_one();
                // Stay here until the relay drops this connection.
                std::future::pending::<()>().await;
            }
        }
    };
    let down = async {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    };
    tokio::join!(up, down);
}
