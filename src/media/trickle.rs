//! Trickle ICE (RFC 8838) for a WHIP/WHEP session: a `PATCH` with the session's ETag and an
//! `application/trickle-ice-sdpfrag` body (RFC 8840) carrying the client's candidates.
//!
//! Pure string work plus calls on one `RTCPeerConnection`: no sockets, no clock.

use super::MediaError;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::transport::RTCIceCandidateInit;

/// Adds every `a=candidate:` line of `sdpfrag` to `pc`, and returns how many there were.
///
/// A candidate `rtc` cannot parse refuses the body. A body without candidates is refused unless
/// it has `a=end-of-candidates` or `a=ice-ufrag`.
pub fn add_candidates(pc: &mut RTCPeerConnection, sdpfrag: &str) -> Result<usize, MediaError> {
    let mut added = 0;
    for line in sdpfrag.lines() {
        let line = line.trim();
        if let Some(candidate) = line.strip_prefix("a=candidate:") {
            let init = RTCIceCandidateInit {
                candidate: format!("candidate:{candidate}"),
                ..Default::default()
            };
            pc.add_remote_candidate(init)
                .map_err(|e| MediaError::BadSdpFrag(format!("candidate refused: {e}")))?;
            added += 1;
        }
    }
    if added == 0 && !sdpfrag.contains("a=end-of-candidates") && !sdpfrag.contains("a=ice-ufrag") {
        return Err(MediaError::BadSdpFrag(
            "no a=candidate lines in the body".into(),
        ));
    }
    Ok(added)
}
