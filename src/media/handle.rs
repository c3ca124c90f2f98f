//! [`Media`] starts the workers; [`MediaHandle`] is how the HTTP layer reaches them, by message.
//!
//! A session id starts with the index of the worker that owns it, so a PATCH or DELETE goes
//! straight to that worker without a shared directory.

use super::control::ControlHook;
use super::udp;
use super::worker::{Worker, WorkerConfig, WorkerMsg, WorkerShared};
use super::{MediaError, PatchOutcome, PatchRequest, Role, SessionAnswer, SessionRequest};
use crate::config::MediaConfig;
use crate::ids::{NodeId, SessionId, TableId, UserId};
use crate::metrics::Metrics;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

/// Why the media plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "cannot bind media UDP socket {addr}: {source}; choose another [media] udp_port or stop the process using it"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start media worker {index}: {source}")]
    Worker {
        index: usize,
        source: std::io::Error,
    },
}

/// The running media plane: its worker threads and a handle to reach them.
pub struct Media {
    pub handle: MediaHandle,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Cloneable handle to the media workers.
#[derive(Clone)]
pub struct MediaHandle {
    workers: Arc<Vec<mpsc::Sender<WorkerMsg>>>,
    next: Arc<AtomicUsize>,
    /// The addresses announced in candidates, with each worker's port.
    pub candidates: Arc<Vec<Vec<SocketAddr>>>,
    /// This node, named in every session id.
    node: NodeId,
    /// Players of each table camera on this node.
    pub viewers: Arc<super::relay::Viewers>,
    /// The frames of the cameras dealers publish on this node (what results are stamped with).
    pub frames: Arc<super::frame_clock::FrameClocks>,
}

/// The addresses to announce when the config names none.
fn default_announce(bind_ip: IpAddr) -> Vec<IpAddr> {
    if !bind_ip.is_unspecified() {
        return vec![bind_ip];
    }
    // The address of the default route's interface; `connect` on UDP sends nothing.
    let primary = UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|_| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified() && !ip.is_loopback());
    let mut ips: Vec<IpAddr> = primary.into_iter().collect();
    ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    ips
}

impl Media {
    /// Binds one UDP socket per worker and starts the worker threads.
    pub fn start(
        config: &MediaConfig,
        node: NodeId,
        metrics: Arc<Metrics>,
        control: Arc<dyn ControlHook>,
    ) -> Result<Media, StartError> {
        let count = if config.workers == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            config.workers
        }
        .min(64);
        let announce = if config.announce_ips.is_empty() {
            default_announce(config.bind_ip)
        } else {
            config.announce_ips.clone()
        };
        let worker_config = WorkerConfig {
            pli_throttle: Duration::from_millis(config.pli_throttle_ms),
            connect_timeout: Duration::from_secs(config.connect_timeout_secs.max(1)),
            idle_timeout: Duration::from_secs(config.idle_timeout_secs.max(1)),
            nack_buffer_packets: config.nack_buffer_packets,
        };
        let mut sockets = Vec::with_capacity(count);
        let mut candidates = Vec::with_capacity(count);
        for i in 0..count {
            let port = if config.udp_port == 0 {
                0
            } else {
                config.udp_port.saturating_add(i as u16)
            };
            let addr = SocketAddr::new(config.bind_ip, port);
            let (socket, warnings) =
                udp::bind(addr, config.socket_recv_buffer, config.socket_send_buffer)
                    .map_err(|source| StartError::Bind { addr, source })?;
            for w in warnings {
                warn!("{w}");
            }
            let local = socket
                .local_addr()
                .map_err(|source| StartError::Bind { addr, source })?;
            candidates.push(
                announce
                    .iter()
                    .map(|ip| SocketAddr::new(*ip, local.port()))
                    .collect::<Vec<_>>(),
            );
            sockets.push(socket);
        }
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..count)
            .map(|_| mpsc::channel::<WorkerMsg>(16 * 1024))
            .unzip();
        let mut threads = Vec::with_capacity(count);
        let shared = WorkerShared {
            workers: txs.clone(),
            metrics,
            config: worker_config,
            epochs: Arc::new(std::sync::atomic::AtomicU64::new(1)),
            control,
            viewers: Arc::new(Default::default()),
            frames: Arc::new(Default::default()),
        };
        for (i, (socket, rx)) in sockets.into_iter().zip(rxs).enumerate() {
            let local_addrs = candidates[i].clone();
            let shared = shared.clone();
            info!(worker = i, port = local_addrs.first().map(|a| a.port()), candidates = ?local_addrs, "media worker starting");
            let thread = std::thread::Builder::new()
                .name(format!("media-{i}"))
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        Ok(rt) => rt,
                        Err(e) => {
                            tracing::error!(worker = i, error = %e, "media worker runtime failed to start");
                            return;
                        }
                    };
                    rt.block_on(async move {
                        match Worker::new(i, socket, local_addrs, shared) {
                            Ok(worker) => worker.run(rx).await,
                            Err(e) => tracing::error!(worker = i, error = %e, "media worker failed to start"),
                        }
                    });
                })
                .map_err(|source| StartError::Worker { index: i, source })?;
            threads.push(thread);
        }
        Ok(Media {
            handle: MediaHandle {
                workers: Arc::new(txs),
                next: Arc::new(AtomicUsize::new(0)),
                candidates: Arc::new(candidates),
                node,
                viewers: shared.viewers.clone(),
                frames: shared.frames.clone(),
            },
            threads,
        })
    }

    /// Closes every session (peers get DTLS close_notify) and joins the workers.
    pub async fn shutdown(self) {
        let mut waits = Vec::new();
        for w in self.handle.workers.iter() {
            let (done, wait) = oneshot::channel();
            if w.send(WorkerMsg::Shutdown { done }).await.is_ok() {
                waits.push(wait);
            }
        }
        for w in waits {
            let _ = tokio::time::timeout(Duration::from_secs(5), w).await;
        }
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

impl MediaHandle {
    /// Sends a message of the pull of `key` to the worker that takes the pull in: the same
    /// worker for every message of one camera. A full queue loses the message (a packet the
    /// players' NACKs recover, or a keyframe request made again).
    /// The worker that takes in the pull of `key` (one per table camera).
    fn relay_worker(&self, key: &super::peer::RouterKey) -> Option<&mpsc::Sender<WorkerMsg>> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        let n = self.workers.len().max(1);
        self.workers.get(h.finish() as usize % n)
    }

    /// Hands a pull's packet to its worker; false when the worker's queue is full (the packet is
    /// lost to the edge's players: the pull has already acknowledged it to the origin).
    pub(super) fn relay_send(&self, key: &super::peer::RouterKey, msg: WorkerMsg) -> bool {
        self.relay_worker(key)
            .is_some_and(|w| w.try_send(msg).is_ok())
    }

    /// The origin's map of a pull's stream `ssrc` changed from its frame `rtp` on: every
    /// worker re-anchors its players of `key` who watch that stream (`video_map.rs`). The map
    /// itself is in the camera's clock (`frames`) already.
    /// Waits for room in each queue: a map lost here would leave the edge's players on the
    /// old clock for good.
    pub(super) async fn relay_map(&self, key: &super::peer::RouterKey, ssrc: u32, rtp: u32) {
        for w in self.workers.iter() {
            let _ = w
                .send(WorkerMsg::RelayMap {
                    key: key.clone(),
                    ssrc,
                    rtp,
                })
                .await;
        }
    }

    /// Hands a pull's start or end to its worker, waiting for room in its queue.
    pub(super) async fn relay_send_wait(&self, key: &super::peer::RouterKey, msg: WorkerMsg) {
        if let Some(w) = self.relay_worker(key) {
            let _ = w.send(msg).await;
        }
    }

    fn worker_of(&self, session: &SessionId) -> Option<&mpsc::Sender<WorkerMsg>> {
        if session.node() != Some(self.node.as_str()) {
            return None;
        }
        self.workers.get(session.worker()?)
    }

    /// Answers a WHIP or WHEP offer, placing the session on the next worker.
    pub async fn open(&self, req: SessionRequest) -> Result<SessionAnswer, MediaError> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len().max(1);
        let worker = self
            .workers
            .get(index)
            .ok_or_else(|| MediaError::Unavailable("no media workers".into()))?;
        let session = SessionId::new(index, &self.node);
        ask(worker, |reply| WorkerMsg::Open {
            req,
            session,
            reply,
        })
        .await
    }

    /// Applies a WHIP/WHEP PATCH: trickled candidates, or an ICE restart (`If-Match: "*"`).
    pub async fn patch(&self, req: PatchRequest) -> Result<PatchOutcome, MediaError> {
        let worker = self
            .worker_of(&req.session)
            .ok_or_else(|| MediaError::NoSession(req.session.to_string()))?;
        ask(worker, |reply| WorkerMsg::Patch { req, reply }).await
    }

    /// Ends a session (WHIP/WHEP DELETE) of `role` on `table`, if `requester` may: anything
    /// else answers [`MediaError::NoSession`], whether or not the session exists.
    pub async fn close(
        &self,
        role: Role,
        table: &TableId,
        session: &SessionId,
        requester: super::Requester,
    ) -> Result<(), MediaError> {
        let worker = self
            .worker_of(session)
            .ok_or_else(|| MediaError::NoSession(session.to_string()))?;
        ask(worker, |reply| WorkerMsg::Close {
            role,
            table: table.clone(),
            session: session.clone(),
            requester,
            reply,
        })
        .await
    }
}

impl MediaHandle {
    /// How many media workers there are (session ids name theirs: [`Self::worker_index`]).
    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// The worker that owns a session.
    pub fn worker_index(&self, session: &SessionId) -> Option<usize> {
        session.worker().filter(|&i| i < self.workers.len())
    }

    /// Sends `text` on the `control` data channel of every session in `groups[w]`, the sessions
    /// of worker `w`: one message per worker, however many players. Never waits, so a table
    /// actor is never stalled by a worker; a worker whose queue is full misses the message and
    /// says so (its players see a seq gap and resume: see docs/protocol.md).
    pub fn control_fanout(&self, groups: &[Arc<[SessionId]>], text: &Arc<str>) {
        for (worker, sessions) in self.workers.iter().zip(groups) {
            if !sessions.is_empty() {
                let msg = WorkerMsg::ControlSend {
                    sessions: sessions.clone(),
                    text: text.clone(),
                };
                if let Err(e) = worker.try_send(msg) {
                    warn!(error = %e, "media worker queue full: a control message was dropped; its players will resume");
                }
            }
        }
    }

    /// Sends `text` on one session's `control` data channel.
    pub fn control_send(&self, session: &SessionId, text: Arc<str>) {
        let Some(worker) = self.worker_of(session) else {
            return;
        };
        let msg = WorkerMsg::ControlSend {
            sessions: Arc::from([session.clone()]),
            text,
        };
        if let Err(e) = worker.try_send(msg) {
            warn!(error = %e, %session, "media worker queue full: a control message was dropped; the player will resume");
        }
    }

    /// Records how a player's page shows the video (`video.view`). Ignored unless `session` is a
    /// subscriber of `user`'s on this node. Never waits; a full worker queue drops it (the page
    /// sends its view again when it changes, and every few seconds).
    pub fn set_view(
        &self,
        session: &SessionId,
        user: &UserId,
        view: super::View,
        maps: Option<super::video_map::MapSocket>,
    ) {
        let Some(worker) = self.worker_of(session) else {
            return;
        };
        let msg = WorkerMsg::View {
            session: session.clone(),
            user: user.clone(),
            view,
            maps,
        };
        if let Err(e) = worker.try_send(msg) {
            warn!(error = %e, %session, "media worker queue full: a player's view was dropped");
        }
    }

    /// Every session of `table` (all tables when `None`), from every worker.
    pub async fn sessions(&self, table: Option<&TableId>) -> Vec<super::SessionInfo> {
        let mut all = Vec::new();
        for worker in self.workers.iter() {
            let (reply, rx) = oneshot::channel();
            let msg = WorkerMsg::List {
                table: table.cloned(),
                reply,
            };
            if worker.send(msg).await.is_ok()
                && let Ok(list) = rx.await
            {
                all.extend(list);
            }
        }
        all.sort_by_key(|s| std::cmp::Reverse(s.age_ms));
        all
    }

    /// Closes a session without waiting for the worker to confirm (from a worker's own thread).
    pub fn kick_later(&self, session: &SessionId, reason: impl Into<String>) {
        if let Some(worker) = self.worker_of(session) {
            let (reply, _) = oneshot::channel();
            let _ = worker.try_send(WorkerMsg::Kick {
                session: session.clone(),
                reason: reason.into(),
                reply,
            });
        }
    }

    /// Closes a session for the node's own reason (an operator's kick, a flooding client).
    pub async fn kick(
        &self,
        session: &SessionId,
        reason: impl Into<String>,
    ) -> Result<(), MediaError> {
        let worker = self
            .worker_of(session)
            .ok_or_else(|| MediaError::NoSession(session.to_string()))?;
        let session = session.clone();
        let reason = reason.into();
        ask(worker, |reply| WorkerMsg::Kick {
            session,
            reason,
            reply,
        })
        .await
    }
}

/// Sends a request to a worker and waits for its reply.
async fn ask<T>(
    worker: &mpsc::Sender<WorkerMsg>,
    msg: impl FnOnce(oneshot::Sender<Result<T, MediaError>>) -> WorkerMsg,
) -> Result<T, MediaError> {
    let stopped = || MediaError::Unavailable("media worker stopped".into());
    let (reply, answer) = oneshot::channel();
    worker.send(msg(reply)).await.map_err(|_| stopped())?;
    answer.await.map_err(|_| stopped())?
}
