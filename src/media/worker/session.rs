//! A session's life on its worker: answered (`open`), patched (trickle or ICE restart),
//! connected, and removed — closed by its client, replaced, kicked, or reaped because it never
//! connected or went silent.

use super::control::control_channel;
use super::{Interest, Worker, WorkerMsg};
use crate::ids::SessionId;
use crate::media::peer::{self, Peer, RouterKey};
use crate::media::restart;
use crate::media::router::Router;
use crate::media::simulcast;
use crate::media::trickle;
use crate::media::{MediaError, PatchOutcome, PatchRequest, Role, SessionAnswer, SessionRequest};
use rtc::sansio::Protocol;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;
use tracing::{info, info_span};

impl Worker {
    pub(super) fn open(
        &mut self,
        req: SessionRequest,
        session: SessionId,
        now: Instant,
    ) -> Result<SessionAnswer, MediaError> {
        let span = info_span!("session", session_id = %session, table_id = %req.table, camera = %req.camera, role = req.role.as_str(), user = %req.user);
        let peer::Answered {
            pc,
            video,
            audio,
            layers,
            sdp,
            link,
        } = peer::answer(
            req.role,
            req.relay,
            &req.offer_sdp,
            &self.local_addrs,
            self.control.max_message_bytes(),
            now,
        )
        .inspect_err(|e| span.in_scope(|| info!(error = %e, "offer refused")))?;
        let ufrag = restart::attribute(&sdp, "ice-ufrag")
            .ok_or_else(|| MediaError::Unavailable("our answer has no a=ice-ufrag".into()))?
            .to_owned();
        let etag = new_etag();
        let key = Arc::new(RouterKey {
            table: req.table.clone(),
            camera: req.camera.clone(),
        });
        let metrics = self.metrics.table(&req.table);
        let _ = link.metrics.set(metrics.clone());
        if req.role == Role::Subscriber && !req.relay {
            metrics.watch_link(&link);
        }
        // A player whose video has RTX can be probed (`probe.rs`).
        link.set_can_probe(!req.relay && video.as_ref().is_some_and(|v| v.rtx.is_some()));
        let peer = Peer {
            session: session.clone(),
            role: req.role,
            key: key.clone(),
            user: req.user,
            token_role: req.token_role,
            token: req.token,
            permit: req.permit,
            pc,
            ufrag: ufrag.clone(),
            etag: etag.clone(),
            span: span.clone(),
            metrics,
            created: now,
            connected_at: None,
            last_rx: now,
            paths: Default::default(),
            in_tracks: HashMap::new(),
            out_video: video,
            out_audio: audio,
            out_layers: layers,
            control: None,
            deadline: None,
            closing: false,
            relay: req.relay,
            view: Default::default(),
            selector: Default::default(),
            pacer: Default::default(),
            prober: Default::default(),
            link,
            video_map: Default::default(),
            relay_maps: Vec::new(),
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.peers[slot] = Some(peer);
                slot
            }
            None => {
                self.peers.push(Some(peer));
                self.generations.push(0);
                self.peers.len() - 1
            }
        };
        self.generations[slot] += 1;
        self.by_session.insert(session.clone(), slot);
        self.by_ufrag.insert(ufrag, slot);

        let router = self.routers.entry((*key).clone()).or_insert_with(|| {
            Router::new(self.config.nack_buffer_packets, self.config.pli_throttle)
        });
        match req.role {
            Role::Publisher => {
                let old = router.publisher.replace(slot);
                if let Some(old) = old {
                    self.remove(
                        old,
                        "replaced by a new WHIP session for the same table camera",
                    );
                    if let Some(router) = self.routers.get_mut(&*key) {
                        router.publisher = Some(slot);
                    }
                }
                for (i, w) in self.workers.iter().enumerate() {
                    if i != self.index {
                        let _ = w.try_send(WorkerMsg::ReplacePublisher {
                            key: (*key).clone(),
                            keep: session.clone(),
                        });
                    }
                }
            }
            Role::Subscriber => {
                if req.relay {
                    router.relays += 1;
                } else {
                    self.viewers.add(&key);
                }
                router.subscribers.push(slot);
                let (first, first_relay) = (
                    router.subscribers.len() == 1,
                    req.relay && router.relays == 1,
                );
                if first {
                    self.announce_interest(&key, Interest::Subscribers, true);
                }
                if first_relay {
                    self.announce_interest(&key, Interest::Relays, true);
                }
            }
        }
        if let Some(p) = self.peers[slot].as_ref() {
            sessions_gauge(&p.metrics, req.role, p.relay).fetch_add(1, Relaxed);
            p.span
                .in_scope(|| info!(candidates = ?self.local_addrs, "session answered"));
            let rids = simulcast::received_rids(&sdp);
            if !rids.is_empty() {
                p.span
                    .in_scope(|| info!(?rids, "simulcast negotiated: receiving these layers"));
            }
        }
        self.drive(slot, now);
        Ok(SessionAnswer {
            session,
            answer_sdp: sdp,
            etag,
        })
    }

    pub(super) fn patch(
        &mut self,
        req: PatchRequest,
        now: Instant,
    ) -> Result<PatchOutcome, MediaError> {
        let slot = *self
            .by_session
            .get(&req.session)
            .ok_or_else(|| MediaError::NoSession(req.session.to_string()))?;
        let peer = self.peers[slot]
            .as_mut()
            .ok_or_else(|| MediaError::NoSession(req.session.to_string()))?;
        if peer.role != req.role
            || peer.key.table != req.table
            || !req.requester.may_touch(&peer.user, &peer.token)
        {
            // Someone else's session answers as if it did not exist.
            return Err(MediaError::NoSession(req.session.to_string()));
        }
        let if_match = req
            .if_match
            .as_deref()
            .map(str::trim)
            .ok_or(MediaError::PreconditionRequired)?;
        if if_match == "*" {
            return self.restart_ice(slot, &req.sdpfrag, now);
        }
        if if_match != peer.etag {
            return Err(MediaError::PreconditionFailed);
        }
        trickle::add_candidates(&mut peer.pc, &req.sdpfrag)?;
        self.drive(slot, now);
        Ok(PatchOutcome::Trickled)
    }

    /// Restarts ICE on a session (RFC 9725 §4.4) and answers with our new credentials.
    ///
    /// The old ufrag stops routing at once: once `rtc` has applied the restart its agent checks
    /// STUN only against the new credentials (rtc-ice-0.21.1 `Agent::apply_restart`), so binding
    /// requests with the old ufrag would be refused anyway. Addresses stay routable, and a
    /// session's outgoing streams (SSRC, sequence and timestamp rewriting) are untouched: only
    /// the path changes.
    pub(super) fn restart_ice(
        &mut self,
        slot: usize,
        sdpfrag: &str,
        now: Instant,
    ) -> Result<PatchOutcome, MediaError> {
        let request = restart::RestartRequest::parse(sdpfrag)?;
        let Some(peer) = self.peers[slot].as_mut() else {
            return Err(MediaError::Unavailable("session vanished".into()));
        };
        let restarted = restart::apply(&mut peer.pc, &request, now).inspect_err(|e| {
            peer.span
                .in_scope(|| info!(error = %e, "ICE restart refused"))
        })?;
        self.by_ufrag.remove(&peer.ufrag);
        self.by_ufrag.insert(restarted.ufrag.clone(), slot);
        peer.ufrag = restarted.ufrag;
        peer.etag = new_etag();
        peer.span
            .in_scope(|| info!(remote_ufrag = %request.ufrag, "ICE restarted"));
        let etag = peer.etag.clone();
        self.drive(slot, now);
        Ok(PatchOutcome::Restarted {
            sdpfrag: restarted.sdpfrag,
            etag,
        })
    }

    pub(super) fn on_connected(&mut self, slot: usize, now: Instant) {
        let Some(peer) = self.peers[slot].as_mut() else {
            return;
        };
        let dtls = dtls_version(&mut peer.pc, now);
        let setup_ms = now.saturating_duration_since(peer.created).as_millis() as u64;
        peer.span
            .in_scope(|| info!(dtls = %dtls, setup_ms, remote = ?peer.paths.addrs().collect::<Vec<_>>(), "connected"));
        let (role, key) = (peer.role, peer.key.clone());
        // A relay to another node starts each of its layer streams on a keyframe of that layer.
        let layers = (1u8 << peer.out_layers.len().min(7)) - 1;
        if role == Role::Subscriber {
            self.request_keyframe(&key, layers, now);
        }
    }

    pub(super) fn reap(&mut self, now: Instant) {
        let mut doomed = Vec::new();
        for (slot, peer) in self.peers.iter_mut().enumerate() {
            let Some(peer) = peer else { continue };
            for addr in peer.paths.expire(now) {
                if self.by_addr.get(&addr) == Some(&slot) {
                    self.by_addr.remove(&addr);
                }
            }
            if peer.connected_at.is_none()
                && now.saturating_duration_since(peer.created) > self.config.connect_timeout
            {
                doomed.push((slot, "never connected; check that UDP to the media port is allowed and [media] announce_ips is right"));
            } else if peer.connected_at.is_some()
                && now.saturating_duration_since(peer.last_rx) > self.config.idle_timeout
            {
                doomed.push((slot, "no packets from the client within the idle timeout"));
            }
        }
        for (slot, reason) in doomed {
            self.metrics.node.sessions_reaped.fetch_add(1, Relaxed);
            self.remove(slot, reason);
        }
    }

    pub(super) fn remove(&mut self, slot: usize, reason: &str) {
        let Some(mut peer) = self.peers[slot].take() else {
            return;
        };
        if peer.control.take().is_some() && !peer.relay {
            self.control.closed(control_channel(&peer));
        }
        let _ = peer.pc.close();
        while let Some(out) = peer.pc.poll_write() {
            self.send.push(out.transport.peer_addr, out.message);
        }
        self.generations[slot] += 1;
        self.free.push(slot);
        self.by_session.remove(&peer.session);
        self.by_ufrag.remove(&peer.ufrag);
        for addr in peer.paths.addrs() {
            if self.by_addr.get(&addr) == Some(&slot) {
                self.by_addr.remove(&addr);
            }
        }
        sessions_gauge(&peer.metrics, peer.role, peer.relay).fetch_sub(1, Relaxed);
        for clock in peer.in_tracks.values().filter_map(|t| t.clock.as_ref()) {
            self.frames
                .unpublish(&peer.key.table, &peer.key.camera, clock);
        }
        let lived_ms = peer.created.elapsed().as_millis() as u64;
        peer.span
            .in_scope(|| info!(reason, lived_ms, "session closed"));
        let mut lost_interest = false;
        let mut lost_relays = false;
        if let Some(router) = self.routers.get_mut(&peer.key) {
            match peer.role {
                Role::Publisher => {
                    if router.publisher == Some(slot) {
                        router.publisher = None;
                    }
                }
                Role::Subscriber => {
                    if peer.relay {
                        router.relays = router.relays.saturating_sub(1);
                        lost_relays = router.relays == 0;
                        if lost_relays {
                            router.layers = Vec::new();
                        }
                    } else {
                        self.viewers.remove(&peer.key);
                    }
                    router.subscribers.retain(|&s| s != slot);
                    lost_interest = router.subscribers.is_empty();
                }
            }
            if router.is_idle() && !self.remote_interest.contains_key(&peer.key) {
                self.routers.remove(&peer.key);
            }
        }
        if lost_interest {
            self.announce_interest(&peer.key, Interest::Subscribers, false);
        }
        if lost_relays {
            self.announce_interest(&peer.key, Interest::Relays, false);
        }
    }

    pub(super) fn close_all(&mut self) {
        for slot in 0..self.peers.len() {
            if self.peers[slot].is_some() {
                self.remove(slot, "node shutting down");
            }
        }
    }
}

/// A fresh quoted entity tag for a session's ICE generation.
fn new_etag() -> String {
    format!("\"{}\"", hex::encode(rand::random::<[u8; 8]>()))
}

/// The negotiated DTLS version, from the transport stats.
fn dtls_version(pc: &mut rtc::peer_connection::RTCPeerConnection, now: Instant) -> String {
    let report = pc.get_stats(now, rtc::statistics::StatsSelector::None);
    report
        .transport()
        .map(|t| t.tls_version.clone())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn sessions_gauge(
    m: &crate::metrics::TableMetrics,
    role: Role,
    relay: bool,
) -> &std::sync::atomic::AtomicI64 {
    match role {
        Role::Publisher => &m.publishers,
        Role::Subscriber if relay => &m.relays_out,
        Role::Subscriber => &m.subscribers,
    }
}
