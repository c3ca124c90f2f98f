//! Control-protocol players for tests: over a WebSocket, or over the `control` data channel of
//! a real WHEP session. Both keep every message they received, parsed, in arrival order.

use super::NodeRef;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tablecast::auth::TokenRole;
use tablecast::client::{SubscribeOptions, Subscriber, Target};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// A player's token on `table`, for `user`.
pub fn token_for(node: &(impl NodeRef + ?Sized), role: TokenRole, user: &str) -> String {
    node.issue_token(role, "demo", user)
}

/// One received message and when it arrived.
#[derive(Debug, Clone)]
pub struct Got {
    pub msg: Value,
    pub at: Instant,
    pub at_ms: u64,
}

pub enum Player {
    Ws(WsPlayer),
    Dc(Box<Subscriber>),
}

impl Player {
    /// A player over a WebSocket that has said `hello`.
    pub async fn ws(
        node: &(impl NodeRef + ?Sized),
        user: &str,
        resume_after: Option<u64>,
    ) -> Player {
        let p = WsPlayer::connect(node, "demo").await;
        p.send(hello(
            &token_for(node, TokenRole::Player, user),
            resume_after,
        ));
        Player::Ws(p)
    }

    /// A player over a WHEP session's data channel that has said `hello`.
    pub async fn dc(
        node: &(impl NodeRef + ?Sized),
        user: &str,
        resume_after: Option<u64>,
    ) -> Player {
        let target = Target {
            base_url: node.base_url(),
            table: "demo".into(),
            camera: None,
            token: token_for(node, TokenRole::Player, user),
        };
        let sub = Subscriber::connect(
            target,
            SubscribeOptions {
                data_channel: true,
                wait_connected: true,
                ..Default::default()
            },
            Instant::now(),
        )
        .await
        .expect("WHEP player connects");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sub.stats().control_open {
            assert!(Instant::now() < deadline, "control channel never opened");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sub.send_control(hello("", resume_after).to_string());
        Player::Dc(Box::new(sub))
    }

    pub fn send(&self, msg: Value) {
        match self {
            Player::Ws(p) => p.send(msg),
            Player::Dc(s) => s.send_control(msg.to_string()),
        }
    }

    pub fn send_raw(&self, text: String) {
        match self {
            Player::Ws(p) => p.send_raw(text),
            Player::Dc(s) => s.send_control(text),
        }
    }

    pub fn messages(&self) -> Vec<Value> {
        match self {
            Player::Ws(p) => p.got().into_iter().map(|g| g.msg).collect(),
            Player::Dc(s) => s
                .stats()
                .control_messages
                .iter()
                .map(|t| serde_json::from_str(t).unwrap_or(Value::Null))
                .collect(),
        }
    }

    /// Waits until some message satisfies `pred`, and returns it.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(m) = self.messages().into_iter().find(|m| pred(m)) {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; got {:?}",
                self.messages()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn close(self) {
        match self {
            Player::Ws(p) => p.close().await,
            Player::Dc(s) => {
                let _ = s.close().await;
            }
        }
    }
}

pub fn hello(token: &str, resume_after: Option<u64>) -> Value {
    let mut h = json!({"type": "hello", "token": token});
    if let Some(seq) = resume_after {
        h["resume_after_seq"] = json!(seq);
    }
    h
}

/// The seq of every public event among `msgs`, in arrival order.
pub fn seqs(msgs: &[Value]) -> Vec<u64> {
    msgs.iter()
        .filter(|m| !matches!(m["type"].as_str(), Some("welcome" | "resumed")))
        .filter_map(|m| m["seq"].as_u64())
        .collect()
}

/// A WebSocket control connection.
pub struct WsPlayer {
    tx: mpsc::UnboundedSender<Message>,
    got: Arc<Mutex<Vec<Got>>>,
    pub closed: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl WsPlayer {
    pub async fn connect(node: &(impl NodeRef + ?Sized), table: &str) -> WsPlayer {
        Self::connect_from(node, table, std::net::Ipv4Addr::LOCALHOST.into())
            .await
            .unwrap_or_else(|status| panic!("WebSocket refused with {status}"))
    }

    /// A WebSocket whose TCP connection comes from `ip` (any 127.0.0.0/8 address is this
    /// machine); the HTTP status if the node refuses the upgrade.
    pub async fn connect_from(
        node: &(impl NodeRef + ?Sized),
        table: &str,
        ip: std::net::IpAddr,
    ) -> Result<WsPlayer, u16> {
        Self::connect_to(node.http_addr(), table, ip).await
    }

    /// [`Self::connect_from`] for a node at `addr`.
    pub async fn connect_to(
        addr: std::net::SocketAddr,
        table: &str,
        ip: std::net::IpAddr,
    ) -> Result<WsPlayer, u16> {
        let url = format!("ws://{addr}/ws/{table}");
        let tcp = tokio::net::TcpSocket::new_v4().expect("socket");
        tcp.bind(std::net::SocketAddr::new(ip, 0)).expect("bind");
        let stream = tcp.connect(addr).await.expect("TCP connects");
        let socket = match tokio_tungstenite::client_async(url, stream).await {
            Ok((socket, _)) => socket,
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                return Err(response.status().as_u16());
            }
            Err(e) => panic!("WebSocket handshake failed: {e}"),
        };
        let (mut sink, mut stream) = socket.split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
        let got = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(Mutex::new(None));
        let (got2, closed2) = (got.clone(), closed.clone());
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    out = rx.recv() => match out {
                        Some(m) => {
                            if sink.send(m).await.is_err() {
                                // The node closed the socket: read what it said on the way out.
                                let drain = async {
                                    while let Some(frame) = stream.next().await {
                                        match frame {
                                            Ok(Message::Text(t)) => {
                                                let msg = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                                                got2.lock().unwrap().push(Got { msg, at: Instant::now(), at_ms: now_ms() });
                                            }
                                            Ok(Message::Close(frame)) => {
                                                return frame.map(|f| f.reason.to_string()).unwrap_or_default();
                                            }
                                            Ok(_) => {}
                                            Err(e) => return format!("error: {e}"),
                                        }
                                    }
                                    String::new()
                                };
                                let reason = tokio::time::timeout(Duration::from_secs(2), drain)
                                    .await
                                    .unwrap_or_else(|_| "send failed".into());
                                closed2.lock().unwrap().get_or_insert(reason);
                                break;
                            }
                        }
                        None => { let _ = sink.close().await; break }
                    },
                    frame = stream.next() => match frame {
                        Some(Ok(Message::Text(t))) => {
                            let msg = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                            got2.lock().unwrap().push(Got { msg, at: Instant::now(), at_ms: now_ms() });
                        }
                        Some(Ok(Message::Close(frame))) => {
                            *closed2.lock().unwrap() = Some(frame.map(|f| f.reason.to_string()).unwrap_or_default());
                            break;
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => { *closed2.lock().unwrap() = Some(format!("error: {e}")); break }
                        None => { closed2.lock().unwrap().get_or_insert_with(String::new); break }
                    }
                }
            }
        });
        Ok(WsPlayer {
            tx,
            got,
            closed,
            task,
        })
    }

    pub fn send(&self, msg: Value) {
        self.send_raw(msg.to_string());
    }

    pub fn send_raw(&self, text: String) {
        let _ = self.tx.send(Message::Text(text.into()));
    }

    pub fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    pub fn is_closed(&self) -> Option<String> {
        self.closed.lock().unwrap().clone()
    }

    pub async fn close(self) {
        drop(self.tx);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A dealer action over HTTP; returns the status and the body.
pub async fn dealer(
    node: &(impl NodeRef + ?Sized),
    action: &str,
    body: Option<Value>,
) -> (u16, String) {
    let token = token_for(node, TokenRole::Dealer, "dealer-1");
    let mut req = node
        .client()
        .post(node.url(&format!("/api/v1/tables/demo/round/{action}")))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("dealer request");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// The table's snapshot over HTTP.
pub async fn snapshot(node: &(impl NodeRef + ?Sized)) -> Value {
    let token = token_for(node, TokenRole::Player, "observer");
    node.client()
        .get(node.url("/api/v1/tables/demo"))
        .bearer_auth(token)
        .send()
        .await
        .expect("snapshot request")
        .json()
        .await
        .expect("snapshot json")
}
