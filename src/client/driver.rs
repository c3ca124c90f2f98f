//! What the publisher and subscriber clients share: signalling over HTTP and the I/O around a
//! sans-IO peer connection on one UDP socket.

use super::{ClientError, Target};
use crate::media::restart;
use bytes::BytesMut;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::net::SocketAddr;
use std::time::Instant;
use tokio::net::UdpSocket;

/// The resource the server created for us.
#[derive(Debug, Clone)]
pub struct Resource {
    pub location: String,
    pub etag: Option<String>,
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        // The node's certificate is self-signed by default.
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap_or_default()
}

/// Offers, POSTs the offer, applies the answer.
pub async fn negotiate(
    http: &reqwest::Client,
    target: &Target,
    path: &str,
    pc: &mut RTCPeerConnection,
    local: SocketAddr,
) -> Result<Resource, ClientError> {
    let now = Instant::now();
    let offer = pc.create_offer(None)?;
    pc.set_local_description(now, offer)?;
    pc.add_local_candidate(host_candidate(local)?)?;
    let sdp = pc
        .local_description()
        .map(|d| d.sdp)
        .ok_or_else(|| ClientError::Rtc("no local description".into()))?;
    let mut url = format!(
        "{}/{}/{}",
        target.base_url.trim_end_matches('/'),
        path,
        target.table
    );
    if let Some(camera) = &target.camera {
        url.push_str(&format!("?camera={camera}"));
    }
    let resp = http
        .post(&url)
        .header("Content-Type", "application/sdp")
        .bearer_auth(&target.token)
        .body(sdp)
        .send()
        .await?;
    let status = resp.status().as_u16();
    let location = header(&resp, "location");
    let etag = header(&resp, "etag");
    let body = resp.text().await?;
    if status != 201 {
        return Err(ClientError::Refused { status, body });
    }
    let location = location.ok_or_else(|| ClientError::Rtc("201 without Location".into()))?;
    pc.set_remote_description(Instant::now(), RTCSessionDescription::answer(body)?)?;
    let location = if location.starts_with('/') {
        format!("{}{}", target.base_url.trim_end_matches('/'), location)
    } else {
        location
    };
    Ok(Resource { location, etag })
}

/// Answers an offer from a server that offers (Janus does), with our one host candidate in the
/// answer (no trickle). Returns the answer SDP to send back.
pub fn answer(
    pc: &mut RTCPeerConnection,
    offer_sdp: String,
    local: SocketAddr,
) -> Result<String, ClientError> {
    let now = Instant::now();
    pc.set_remote_description(now, RTCSessionDescription::offer(offer_sdp)?)?;
    let answer = pc.create_answer(None)?;
    pc.set_local_description(now, answer)?;
    pc.add_local_candidate(host_candidate(local)?)?;
    pc.local_description()
        .map(|d| d.sdp)
        .ok_or_else(|| ClientError::Rtc("no local description".into()))
}

/// A host candidate for `local`, as the connection wants it.
fn host_candidate(
    local: SocketAddr,
) -> Result<rtc::peer_connection::transport::RTCIceCandidateInit, ClientError> {
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: local.ip().to_string(),
            port: local.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()?;
    Ok(RTCIceCandidate::from(&candidate).to_json()?)
}

/// Restarts ICE (RFC 9725 §4.4) as if the client had moved to `new_local`: new credentials and a
/// host candidate for the new address, `PATCH` with `If-Match: "*"`, then the server's new
/// credentials and candidates applied. Updates the resource's ETag. The connection must be built
/// with `with_discard_local_candidates_during_ice_restart(true)`, so the old address is gone.
pub async fn restart_ice(
    http: &reqwest::Client,
    resource: &mut Resource,
    token: &str,
    pc: &mut RTCPeerConnection,
    new_local: SocketAddr,
) -> Result<(), ClientError> {
    pc.restart_ice();
    let offer = pc.create_offer(None)?;
    pc.set_local_description(Instant::now(), offer)?;
    pc.add_local_candidate(host_candidate(new_local)?)?;
    let sdp = pc
        .local_description()
        .map(|d| d.sdp)
        .ok_or_else(|| ClientError::Rtc("no local description".into()))?;
    let resp = http
        .patch(&resource.location)
        .header("Content-Type", "application/trickle-ice-sdpfrag")
        .header("If-Match", "*")
        .bearer_auth(token)
        .body(restart::sdpfrag_of(&sdp))
        .send()
        .await?;
    let status = resp.status().as_u16();
    let etag = header(&resp, "etag");
    let body = resp.text().await?;
    if status != 200 {
        return Err(ClientError::Refused { status, body });
    }
    let answer = restart::RestartRequest::parse(&body)
        .map_err(|e| ClientError::Rtc(format!("restart answer: {e}")))?;
    let remote = pc
        .remote_description()
        .map(|d| d.sdp.clone())
        .ok_or_else(|| ClientError::Rtc("no remote description".into()))?;
    let sdp = restart::with_new_credentials(&remote, &answer.ufrag, &answer.pwd);
    pc.set_remote_description(Instant::now(), RTCSessionDescription::answer(sdp)?)?;
    for candidate in answer.candidates {
        pc.add_remote_candidate(rtc::peer_connection::transport::RTCIceCandidateInit {
            candidate,
            ..Default::default()
        })?;
    }
    resource.etag = etag;
    Ok(())
}

/// A network change: binds a new local socket and restarts ICE from it ([`restart_ice`]).
/// Returns the new socket and its address; the caller drops the old one.
pub async fn move_and_restart(
    http: &reqwest::Client,
    resource: &mut Resource,
    token: &str,
    pc: &mut RTCPeerConnection,
) -> Result<(UdpSocket, SocketAddr), ClientError> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let local = socket.local_addr()?;
    restart_ice(http, resource, token, pc, local).await?;
    Ok((socket, local))
}

/// An ICE restart asked of a client's running task; answered with the resource's new state.
pub type RestartAsk = tokio::sync::oneshot::Sender<Result<Resource, ClientError>>;

/// Sends everything the connection has queued.
pub async fn flush(pc: &mut RTCPeerConnection, socket: &UdpSocket) {
    while let Some(out) = pc.poll_write() {
        let _ = socket.send_to(&out.message, out.transport.peer_addr).await;
    }
}

/// Sends what the connection has queued except DTLS records (RFC 7983: first byte 20-63), which
/// are dropped: a client whose handshake never gets out.
pub async fn flush_except_dtls(pc: &mut RTCPeerConnection, socket: &UdpSocket) {
    while let Some(out) = pc.poll_write() {
        if !matches!(out.message.first(), Some(20..=63)) {
            let _ = socket.send_to(&out.message, out.transport.peer_addr).await;
        }
    }
}

/// Feeds one datagram in.
pub fn feed(pc: &mut RTCPeerConnection, local: SocketAddr, from: SocketAddr, data: &[u8]) {
    let _ = pc.handle_read(TaggedBytesMut {
        now: Instant::now(),
        transport: TransportContext {
            local_addr: local,
            peer_addr: from,
            ecn: None,
            transport_protocol: TransportProtocol::UDP,
        },
        message: BytesMut::from(data),
    });
}

/// True when the event says the connection is up.
pub fn is_connected(event: &RTCPeerConnectionEvent) -> Option<bool> {
    use rtc::peer_connection::state::RTCPeerConnectionState as S;
    match event {
        RTCPeerConnectionEvent::OnConnectionStateChangeEvent(S::Connected) => Some(true),
        RTCPeerConnectionEvent::OnConnectionStateChangeEvent(
            S::Failed | S::Closed | S::Disconnected,
        ) => Some(false),
        _ => None,
    }
}

/// Ends the resource (DELETE), returning the status.
pub async fn delete(
    http: &reqwest::Client,
    resource: &Resource,
    token: &str,
) -> Result<u16, ClientError> {
    Ok(http
        .delete(&resource.location)
        .bearer_auth(token)
        .send()
        .await?
        .status()
        .as_u16())
}

/// A response header as text, when present and readable.
fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
