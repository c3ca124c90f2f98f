//! The link between a node that serves a table's players (an edge) and the table's owner: one
//! WebSocket per table and edge node, straight between the two nodes, never through Redis.
//!
//! ```text
//!  edge node                                            owner
//!  feed ──Subscribe/Join──▶ RemoteWriter ══ WebSocket ══▶ serve_link ──▶ writer
//!       ◀── FeedMsg ──────── (reconnects, ◀═ one FeedMsg ══            (the edge is one more
//!                             follows the    per event                   feed of the writer)
//!                             owner)
//! ```
//! - [`RemoteWriter`] sits behind a [`TableHandle`] on the edge, so the feed and the sessions
//!   there post to it exactly as to a local writer. It finds the owner in the
//!   [`OwnerDirectory`], subscribes from the last seq it passed on, re-sends the joins still
//!   unanswered, and follows the table to a new owner by itself. A command sent while no owner
//!   is reachable is refused with `unavailable` (the client sends it again; bets are idempotent).
//! - [`serve_link`] runs on the owner for each edge: the edge becomes one more feed of the
//!   writer, so events cross to each node once, whatever its number of players.

use super::feed::{FeedId, FeedMsg};
use super::writer::{DealerAction, Origin, WriterMsg};
use super::{ConnId, TableHandle};
use crate::ids::{RoundId, TableId, UserId};
use crate::metrics::TableMetrics;
use crate::protocol::{self, ClientMessage, ErrorCode, Reply, Snapshot};
use crate::table::DealerError;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};
use tracing::{Instrument, debug, info, info_span, warn};

/// The path of the link on the owner.
pub fn link_path(table: &TableId) -> String {
    format!("/cluster/v1/tables/{table}/link")
}

/// What an edge sends the owner.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum LinkUp {
    /// The first message: every public event after `after_seq`, then live.
    Subscribe {
        after_seq: u64,
    },
    Join {
        conn: ConnId,
        user: UserId,
        welcome: bool,
        ahead_of: Option<u64>,
    },
    Command {
        conn: ConnId,
        user: UserId,
        msg: ClientMessage,
    },
    Dealer {
        req: u64,
        action: DealerAction,
    },
    Snapshot {
        req: u64,
    },
}

/// What the owner sends an edge.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", content = "c", rename_all = "snake_case")]
pub enum LinkDown {
    Feed(FeedMsg),
    Dealer {
        req: u64,
        outcome: Result<RoundId, DealerError>,
    },
    Snapshot {
        req: u64,
        snapshot: Box<Snapshot>,
    },
}

/// Where each table's owner is, as this node last learnt it (kept through a Redis outage).
pub trait OwnerDirectory: Send + Sync + 'static {
    /// The base URL of the table's owner, when it is another node.
    fn owner_url(&self, table: &TableId) -> Option<String>;
    /// A bearer token the owner accepts from this node (an operator token of the cluster's
    /// shared keys).
    fn link_token(&self) -> Option<String>;
}

/// The owner's side of one edge's link: the edge is one more feed of `writer`. Reads the
/// edge's messages from `up` and writes to `down`; ends when either side closes.
pub async fn serve_link(
    writer: TableHandle,
    mut up: mpsc::Receiver<LinkUp>,
    down: mpsc::Sender<LinkDown>,
) {
    let feed = FeedId(rand::random::<u64>() | 1);
    let Some(LinkUp::Subscribe { after_seq }) = up.recv().await else {
        return;
    };
    let (tx, mut events) = mpsc::channel(super::feed::FEED_QUEUE);
    if !writer.post(WriterMsg::Subscribe {
        feed,
        tx,
        after_seq,
    }) {
        return;
    }
    debug!(feed = feed.0, after_seq, "an edge node subscribed");
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(msg) => {
                    if down.send(LinkDown::Feed(msg)).await.is_err() {
                        break;
                    }
                }
                // The writer dropped this feed (it fell behind, or stepped down): the edge
                // reconnects and subscribes again from its last seq.
                None => break,
            },
            msg = up.recv() => {
                let Some(msg) = msg else { break };
                let origin = |conn| Origin { feed, conn };
                match msg {
                    LinkUp::Subscribe { .. } => {}
                    LinkUp::Join { conn, user, welcome, ahead_of } => {
                        writer.post(WriterMsg::Join { origin: origin(conn), user, welcome, ahead_of });
                    }
                    LinkUp::Command { conn, user, msg } => {
                        writer.post(WriterMsg::Command { origin: origin(conn), user, msg });
                    }
                    LinkUp::Dealer { req, action } => {
                        let (writer, down) = (writer.clone(), down.clone());
                        tokio::spawn(async move {
                            if let Ok(outcome) = writer.dealer(action).await {
                                let _ = down.send(LinkDown::Dealer { req, outcome }).await;
                            }
                        });
                    }
                    LinkUp::Snapshot { req } => {
                        let (writer, down) = (writer.clone(), down.clone());
                        tokio::spawn(async move {
                            if let Ok(snapshot) = writer.snapshot().await {
                                let _ = down.send(LinkDown::Snapshot { req, snapshot: Box::new(snapshot) }).await;
                            }
                        });
                    }
                }
            }
        }
    }
    debug!(feed = feed.0, "an edge node's link ended");
}

/// A table's writer as seen from an edge node: the link to its owner.
pub struct RemoteWriter {
    table: TableId,
    directory: Arc<dyn OwnerDirectory>,
    inbox: mpsc::Receiver<WriterMsg>,
    /// The feed of this node, once it subscribed.
    feed: Option<mpsc::Sender<FeedMsg>>,
    /// The last public seq passed to the feed: where a new link subscribes from.
    last_seq: u64,
    /// Joins not answered yet, sent again on a new link.
    joins: HashMap<ConnId, LinkUp>,
    /// Commands sent on the current link lately, told `unavailable` if the link dies: the
    /// owner may not have had them (the client sends them again; bets are idempotent).
    inflight: std::collections::VecDeque<(tokio::time::Instant, ConnId, Option<crate::ids::BetId>)>,
    next_req: u64,
    dealer: HashMap<u64, oneshot::Sender<super::DealerOutcome>>,
    snapshots: HashMap<u64, oneshot::Sender<Snapshot>>,
}

/// How long a link may take to open before the owner is looked up again.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a link without an owner looks again.
const RETRY: Duration = Duration::from_millis(100);
/// How long a command sent on a link is remembered, to be refused if the link dies.
const INFLIGHT_KEPT: Duration = Duration::from_secs(10);
/// How often a link checks that the owner is still the owner and still answers (it pings).
const LIVENESS_CHECK: Duration = Duration::from_millis(500);
/// An owner silent this long (no event, no pong) is given up on: the link looks again.
const SILENT_OWNER: Duration = Duration::from_millis(2500);

impl RemoteWriter {
    /// Starts the link task; the handle is the table's route on this node. The task ends when
    /// every handle is dropped (the table moved here, or the node stops).
    pub fn spawn(
        table: TableId,
        directory: Arc<dyn OwnerDirectory>,
        metrics: Arc<TableMetrics>,
    ) -> TableHandle {
        let (tx, inbox) = mpsc::channel(super::writer::WRITER_QUEUE);
        let link = RemoteWriter {
            table: table.clone(),
            directory,
            inbox,
            feed: None,
            last_seq: 0,
            joins: HashMap::new(),
            inflight: Default::default(),
            next_req: 1,
            dealer: HashMap::new(),
            snapshots: HashMap::new(),
        };
        let span = info_span!("link", table_id = %table);
        tokio::spawn(link.run().instrument(span));
        TableHandle::new(table, tx, metrics, true)
    }

    async fn run(mut self) {
        // Between links: answer what can be answered, and look for the owner every RETRY
        // (an interval, so a stream of messages cannot put the look off).
        let mut look = tokio::time::interval(RETRY);
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let url = tokio::select! {
                msg = self.inbox.recv() => {
                    let Some(msg) = msg else { return };
                    self.offline(msg);
                    continue;
                }
                _ = look.tick() => match self.directory.owner_url(&self.table) {
                    Some(url) => url,
                    None => continue,
                },
            };
            match self.connect(&url).await {
                Ok(socket) => {
                    info!(owner = %url, after_seq = self.last_seq, "linked to the table's owner");
                    if self.linked(socket, &url).await.is_break() {
                        return;
                    }
                    info!(owner = %url, "the link to the table's owner closed; looking for the owner again");
                }
                Err(e) => debug!(owner = %url, error = %e, "cannot link to the table's owner yet"),
            }
        }
    }

    async fn connect(&self, base: &str) -> Result<Socket, String> {
        let ws = base
            .trim_end_matches('/')
            .replacen("http", "ws", 1)
            .to_string()
            + &link_path(&self.table);
        let mut request = ws.into_client_request().map_err(|e| e.to_string())?;
        let token = self.directory.link_token().ok_or("no token for the link")?;
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| "a token that is not a header value".to_owned())?;
        request.headers_mut().insert("authorization", value);
        let connect = tokio_tungstenite::connect_async_tls_with_config(
            request,
            None,
            true,
            Some(insecure_tls()),
        );
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok((socket, _))) => Ok(socket),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }

    /// Serves one link until it closes, the owner stops answering or another node owns the
    /// table (`Continue`), or every handle is gone (`Break`).
    async fn linked(&mut self, mut socket: Socket, url: &str) -> std::ops::ControlFlow<()> {
        use std::ops::ControlFlow::{Break, Continue};
        let mut hello = vec![LinkUp::Subscribe {
            after_seq: self.last_seq,
        }];
        hello.extend(self.joins.values().map(|j| match j {
            LinkUp::Join {
                conn,
                user,
                welcome,
                ahead_of,
            } => LinkUp::Join {
                conn: *conn,
                user: user.clone(),
                welcome: *welcome,
                ahead_of: *ahead_of,
            },
            _ => LinkUp::Subscribe { after_seq: 0 },
        }));
        for msg in &hello {
            if send(&mut socket, msg).await.is_err() {
                return Continue(());
            }
        }
        let mut check = tokio::time::interval(LIVENESS_CHECK);
        let mut heard = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = check.tick() => {
                    if self.directory.owner_url(&self.table).as_deref() != Some(url) {
                        info!(owner = %url, "the table has another owner now: relinking");
                        self.drop_requests();
                        return Continue(());
                    }
                    if heard.elapsed() > SILENT_OWNER {
                        warn!(owner = %url, silent_ms = heard.elapsed().as_millis() as u64, "the table's owner stopped answering: relinking");
                        self.drop_requests();
                        return Continue(());
                    }
                    if socket.send(Message::Ping(Default::default())).await.is_err() {
                        self.drop_requests();
                        return Continue(());
                    }
                }
                msg = self.inbox.recv() => {
                    let Some(msg) = msg else {
                        let _ = socket.close(None).await;
                        return Break(());
                    };
                    if let Some(up) = self.online(msg)
                        && send(&mut socket, &up).await.is_err()
                    {
                        self.drop_requests();
                        return Continue(());
                    }
                }
                frame = socket.next() => {
                    heard = tokio::time::Instant::now();
                    let text = match frame {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                            self.drop_requests();
                            return Continue(());
                        }
                        Some(Ok(_)) => continue,
                    };
                    match serde_json::from_str::<LinkDown>(text.as_str()) {
                        Ok(down) => {
                            if self.on_owner(down).await.is_break() {
                                return Break(());
                            }
                        }
                        Err(e) => {
                            warn!(error = %e, "the owner sent a message this node cannot read; are both nodes the same version?");
                            self.drop_requests();
                            return Continue(());
                        }
                    }
                }
            }
        }
    }

    /// A message while linked: what to send the owner.
    fn online(&mut self, msg: WriterMsg) -> Option<LinkUp> {
        match msg {
            WriterMsg::Subscribe { tx, after_seq, .. } => {
                // This node's feed (re)subscribes: the link already carries everything after
                // what it passed on; a feed that restarted from further back gets a reset.
                if after_seq < self.last_seq {
                    let _ = tx.try_send(FeedMsg::Reset);
                }
                // A new link subscribes from where the feed is (it drops what it already has).
                self.last_seq = self.last_seq.max(after_seq);
                self.feed = Some(tx);
                None
            }
            WriterMsg::Join {
                origin,
                user,
                welcome,
                ahead_of,
            } => {
                let join = LinkUp::Join {
                    conn: origin.conn,
                    user: user.clone(),
                    welcome,
                    ahead_of,
                };
                self.joins.insert(
                    origin.conn,
                    LinkUp::Join {
                        conn: origin.conn,
                        user,
                        welcome,
                        ahead_of,
                    },
                );
                Some(join)
            }
            WriterMsg::Command { origin, user, msg } => {
                let now = tokio::time::Instant::now();
                while self
                    .inflight
                    .front()
                    .is_some_and(|(at, _, _)| now.duration_since(*at) > INFLIGHT_KEPT)
                {
                    self.inflight.pop_front();
                }
                self.inflight
                    .push_back((now, origin.conn, msg.id().cloned()));
                Some(LinkUp::Command {
                    conn: origin.conn,
                    user,
                    msg,
                })
            }
            WriterMsg::Dealer { action, reply } => {
                let req = self.req();
                self.dealer.insert(req, reply);
                Some(LinkUp::Dealer { req, action })
            }
            WriterMsg::Snapshot { reply } => {
                let req = self.req();
                self.snapshots.insert(req, reply);
                Some(LinkUp::Snapshot { req })
            }
        }
    }

    /// A message while no owner is linked.
    fn offline(&mut self, msg: WriterMsg) {
        match msg {
            WriterMsg::Command { origin, msg, .. } => {
                let refusal = Reply::Error {
                    id: msg.id().cloned(),
                    code: ErrorCode::Unavailable,
                    message: format!(
                        "table {} is moving to another node; send this again in a moment",
                        self.table
                    ),
                };
                self.tell_feed(FeedMsg::ToConn {
                    conn: origin.conn,
                    text: Arc::from(protocol::encode(&refusal)),
                });
            }
            other => {
                // Joins wait for the next link; dealer actions and snapshots are refused (their
                // reply is dropped: the caller answers 503).
                let _ = self.online(other);
                self.dealer.clear();
                self.snapshots.clear();
            }
        }
    }

    async fn on_owner(&mut self, down: LinkDown) -> std::ops::ControlFlow<()> {
        match down {
            LinkDown::Feed(msg) => {
                match &msg {
                    FeedMsg::Public { seq, .. } => {
                        if *seq <= self.last_seq {
                            return std::ops::ControlFlow::Continue(());
                        }
                        self.last_seq = *seq;
                    }
                    FeedMsg::Welcome { conn, .. } | FeedMsg::Replies { conn, .. } => {
                        self.joins.remove(conn);
                    }
                    FeedMsg::Reset => self.last_seq = 0,
                    _ => {}
                }
                if let Some(feed) = &self.feed
                    && feed.send(msg).await.is_err()
                {
                    self.feed = None;
                }
            }
            LinkDown::Dealer { req, outcome } => {
                if let Some(reply) = self.dealer.remove(&req) {
                    let _ = reply.send(outcome);
                }
            }
            LinkDown::Snapshot { req, snapshot } => {
                if let Some(reply) = self.snapshots.remove(&req) {
                    let _ = reply.send(*snapshot);
                }
            }
        }
        std::ops::ControlFlow::Continue(())
    }

    fn tell_feed(&mut self, msg: FeedMsg) {
        if let Some(feed) = &self.feed
            && feed.try_send(msg).is_err()
        {
            warn!("this node's feed is full; a refusal was dropped");
        }
    }

    /// Dealer actions and snapshots waiting on a link that ended: their callers answer 503
    /// (a dealer action may have been done: its retry is refused by the round's state).
    fn drop_requests(&mut self) {
        self.dealer.clear();
        self.snapshots.clear();
        for (_, conn, id) in std::mem::take(&mut self.inflight) {
            let refusal = Reply::Error {
                id,
                code: ErrorCode::Unavailable,
                message: format!(
                    "table {} lost its owner while this was on its way; send it again in a moment",
                    self.table
                ),
            };
            self.tell_feed(FeedMsg::ToConn {
                conn,
                text: Arc::from(protocol::encode(&refusal)),
            });
        }
    }

    fn req(&mut self) -> u64 {
        self.next_req += 1;
        self.next_req
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn send(socket: &mut Socket, msg: &LinkUp) -> Result<(), tungstenite::Error> {
    let text = serde_json::to_string(msg).unwrap_or_default();
    socket.send(Message::Text(text.into())).await
}

/// Links run between the cluster's own nodes, which may use self-signed certificates (the
/// default): the link is authenticated by the cluster's token keys, not by the certificate
/// (docs/cluster.md: keep node-to-node traffic on a private network, or behind a proxy with
/// real certificates).
fn insecure_tls() -> tokio_tungstenite::Connector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        });
    match config {
        Ok(config) => tokio_tungstenite::Connector::Rustls(Arc::new(config)),
        Err(_) => tokio_tungstenite::Connector::Plain,
    }
}

/// Accepts the peer node's certificate, whatever it is, but checks the handshake's signatures.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
