//! A TCP relay on loopback that a test can cut: a node behind it loses its Redis while the
//! other nodes keep theirs (a partition of one node).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct CutProxy {
    pub port: u16,
    upstream: Arc<AtomicU16>,
    open: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
}

impl CutProxy {
    /// Listens on a free loopback port; relays to `upstream_port` once it is set.
    pub async fn start() -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let upstream = Arc::new(AtomicU16::new(0));
        let open = Arc::new(AtomicBool::new(true));
        let (cut, _) = watch::channel(0u64);
        let (up, op, cuts) = (upstream.clone(), open.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let port = up.load(Ordering::Acquire);
                if !op.load(Ordering::Acquire) || port == 0 {
                    continue;
                }
                let mut on_cut = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", port)).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    tokio::select! {
                        _ = tokio::io::copy(&mut cr, &mut sw) => {}
                        _ = tokio::io::copy(&mut sr, &mut cw) => {}
                        _ = on_cut.changed() => {}
                    }
                });
            }
        });
        CutProxy {
            port,
            upstream,
            open,
            cut,
        }
    }

    pub fn set_upstream(&self, port: u16) {
        self.upstream.store(port, Ordering::Release);
    }

    /// Drops every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::Release);
        self.cut.send_modify(|n| *n += 1);
    }

    /// Relays again.
    pub fn mend(&self) {
        self.open.store(true, Ordering::Release);
    }
}
