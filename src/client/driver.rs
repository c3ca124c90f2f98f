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
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

/// The resource the server created for us.
#[derive(Debug, Clone)]
pub struct Resource {
    pub location: String,
    pub etag: Option<String>,
}

/// The client's HTTP client. It follows no redirect by itself: reqwest drops `Authorization`
/// on a redirect to another host, and in a cluster the `307` of a node that does not own the
/// table always names another host, so [`post_offer`] follows it with the token kept.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        // The node's certificate is self-signed by default.
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

/// How many `307`s a POST follows (a node names the owner directly, so one is the norm).
const MAX_REDIRECTS: usize = 3;
/// How many times a `503` (the table is moving between nodes) is tried again.
const MAX_UNAVAILABLE_RETRIES: usize = 5;
/// The longest `Retry-After` honoured, so that a confused node cannot stall a test or bench.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

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
    let created = post_offer(http, &url, &target.token, &sdp).await?;
    pc.set_remote_description(
        Instant::now(),
        RTCSessionDescription::answer(created.answer)?,
    )?;
    Ok(created.resource)
}

/// What a `201` to the offer gave: the answer, and the resource on the node that made it.
struct Created {
    answer: String,
    resource: Resource,
}

/// POSTs an offer to `url`, following a `307` to the table's owner (the token kept, at most
/// [`MAX_REDIRECTS`] hops) and waiting out a `503` with `Retry-After` while the table moves (or
/// an owner that a redirect named but that does not answer: it may have just died).
/// The resource's `Location` is resolved against the URL that answered `201`, so PATCH and
/// DELETE reach the node that holds the session.
async fn post_offer(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    sdp: &str,
) -> Result<Created, ClientError> {
    let start = reqwest::Url::parse(url)
        .map_err(|e| ClientError::Rtc(format!("bad signalling URL {url}: {e}")))?;
    let mut url = start.clone();
    let mut redirects = 0;
    let mut unavailable = 0;
    loop {
        let sent = http
            .post(url.clone())
            .header("Content-Type", "application/sdp")
            .bearer_auth(token)
            .body(sdp.to_owned())
            .send()
            .await;
        let resp = match sent {
            Ok(resp) => resp,
            // The owner a redirect named is unreachable (it just died, and the node that sent
            // us there has not seen it yet): ask the first node again, as for a 503.
            Err(_) if url != start && unavailable < MAX_UNAVAILABLE_RETRIES => {
                unavailable += 1;
                tokio::time::sleep(retry_delay(None)).await;
                url = start.clone();
                redirects = 0;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let status = resp.status().as_u16();
        let location = header(&resp, "location");
        let etag = header(&resp, "etag");
        let retry_after = header(&resp, "retry-after");
        let body = resp.text().await?;
        match status {
            201 => {
                let location =
                    location.ok_or_else(|| ClientError::Rtc("201 without Location".into()))?;
                let location = url.join(&location).map_err(|e| {
                    ClientError::Rtc(format!("201 with a bad Location {location:?}: {e}"))
                })?;
                let resource = Resource {
                    location: location.to_string(),
                    etag,
                };
                return Ok(Created {
                    answer: body,
                    resource,
                });
            }
            301 | 302 | 303 | 307 | 308 if redirects < MAX_REDIRECTS => {
                let Some(next) = location.and_then(|l| url.join(&l).ok()) else {
                    return Err(ClientError::Refused { status, body });
                };
                redirects += 1;
                url = next;
            }
            503 if unavailable < MAX_UNAVAILABLE_RETRIES => {
                unavailable += 1;
                tokio::time::sleep(retry_delay(retry_after.as_deref())).await;
            }
            _ => return Err(ClientError::Refused { status, body }),
        }
    }
}

/// The wait a `Retry-After` in seconds asks for (1 s when absent or unreadable), capped.
fn retry_delay(retry_after: Option<&str>) -> Duration {
    retry_after
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(1), Duration::from_secs)
        .min(MAX_RETRY_AFTER)
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

/// Adds `video` recvonly video transceivers and a recvonly audio one: what a player offers (one
/// video), or an edge node's pull (one per simulcast layer it carries).
pub fn receive_video_and_audio(
    pc: &mut RTCPeerConnection,
    video: usize,
) -> Result<(), ClientError> {
    use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
    use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
    let kinds = std::iter::repeat_n(RtpCodecKind::Video, video).chain([RtpCodecKind::Audio]);
    for kind in kinds {
        pc.add_transceiver_from_kind(
            kind,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                streams: vec![],
                send_encodings: vec![],
            }),
        )?;
    }
    Ok(())
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_in_seconds_with_a_default_and_a_cap() {
        assert_eq!(retry_delay(Some("2")), Duration::from_secs(2));
        assert_eq!(retry_delay(None), Duration::from_secs(1));
        assert_eq!(retry_delay(Some("soon")), Duration::from_secs(1));
        assert_eq!(retry_delay(Some("3600")), MAX_RETRY_AFTER);
    }
}
