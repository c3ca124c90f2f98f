//! ICE restart for an ICE-lite answerer (RFC 9725 §4.4, RFC 8840 sdpfrags).
//!
//! A WHIP/WHEP client restarts ICE with `PATCH` + `If-Match: "*"` and an
//! `application/trickle-ice-sdpfrag` body carrying its new `a=ice-ufrag`/`a=ice-pwd` (and maybe
//! candidates). `rtc` restarts ICE on an answerer only through `set_remote_description` with an
//! offer whose credentials changed (rtc-0.21.1 `peer_connection/mod.rs`, the
//! `have_remote_credentials_change` branch), so [`apply`] rebuilds that offer from the current
//! remote description with the new credentials spliced in, answers it, and cuts our new
//! credentials and candidates out of the answer as the `200` body.
//!
//! ```text
//!   stable --PATCH "*" {ufrag', pwd'}--> set_remote_description(offer with ufrag'/pwd')
//!          --> rtc stages and applies a restart: new local ufrag''/pwd'', pairs and selected
//!              pair dropped, DTLS/SRTP/SCTP and every RTP sender untouched
//!          --> create_answer + set_local_description --> stable, answer sdpfrag {ufrag'', pwd''}
//! ```
//!
//! Media written between the restart and the client's first binding request with the new
//! credentials is dropped by `rtc` (no selected pair); NACKs recover it from the track buffers.
//! Our ufrag must change on a restart (RFC 8445 §9): `rtc` draws the new one itself, which is why
//! sessions do not pin their credentials with `SettingEngineBuilder::with_ice_credentials`
//! (`stage_ice_restart` would reuse the pinned pair, rtc-0.21.1 `peer_connection/internal.rs`).
//!
//! Pure string work plus calls on one `RTCPeerConnection`: no sockets, no clock.

use super::MediaError;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use std::time::Instant;

/// What a restart `PATCH` body asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartRequest {
    pub ufrag: String,
    pub pwd: String,
    /// `a=candidate:` values, without the `a=` prefix (`candidate:…`).
    pub candidates: Vec<String>,
}

/// What the restart produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restarted {
    /// Our new ufrag (the demultiplexer routes STUN by it).
    pub ufrag: String,
    /// The `200` body: `application/trickle-ice-sdpfrag`.
    pub sdpfrag: String,
}

/// `ice-char = ALPHA / DIGIT / "+" / "/"` (RFC 8839 §5.4).
fn ice_chars(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// The first value of `a=<name>:` in `sdp`, trimmed.
pub fn attribute<'a>(sdp: &'a str, name: &str) -> Option<&'a str> {
    sdp.lines().find_map(|line| {
        line.trim()
            .strip_prefix("a=")
            .and_then(|a| a.strip_prefix(name))
            .and_then(|a| a.strip_prefix(':'))
            .map(str::trim)
    })
}

impl RestartRequest {
    /// Parses a restart sdpfrag. The credentials must be RFC 8839 `ice-char` strings of legal
    /// length, which also keeps anything but them out of the offer they are spliced into.
    pub fn parse(sdpfrag: &str) -> Result<Self, MediaError> {
        let (Some(ufrag), Some(pwd)) = (
            attribute(sdpfrag, "ice-ufrag"),
            attribute(sdpfrag, "ice-pwd"),
        ) else {
            return Err(MediaError::BadSdpFrag(
                "an ICE restart (If-Match: \"*\") needs a=ice-ufrag and a=ice-pwd lines; \
                 to trickle candidates send the ETag instead"
                    .into(),
            ));
        };
        if !(4..=256).contains(&ufrag.len()) || !ice_chars(ufrag) {
            return Err(MediaError::BadSdpFrag(
                "a=ice-ufrag must be 4 to 256 ice-chars (A-Z a-z 0-9 + /)".into(),
            ));
        }
        if !(22..=256).contains(&pwd.len()) || !ice_chars(pwd) {
            return Err(MediaError::BadSdpFrag(
                "a=ice-pwd must be 22 to 256 ice-chars (A-Z a-z 0-9 + /)".into(),
            ));
        }
        let candidates = sdpfrag
            .lines()
            .filter_map(|l| l.trim().strip_prefix("a="))
            .filter(|a| a.starts_with("candidate:"))
            .map(str::to_owned)
            .collect();
        Ok(Self {
            ufrag: ufrag.to_owned(),
            pwd: pwd.to_owned(),
            candidates,
        })
    }
}

/// `sdp` with every `a=ice-ufrag`/`a=ice-pwd` replaced, candidates and `a=end-of-candidates`
/// removed (they belong to the old ICE generation), and the `o=` session version bumped (RFC 3264
/// §8: a new offer in the same session).
pub fn with_new_credentials(sdp: &str, ufrag: &str, pwd: &str) -> String {
    let mut out = String::with_capacity(sdp.len() + 64);
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with("a=candidate:") || line == "a=end-of-candidates" {
            continue;
        }
        if line.starts_with("a=ice-ufrag:") {
            out.push_str("a=ice-ufrag:");
            out.push_str(ufrag);
        } else if line.starts_with("a=ice-pwd:") {
            out.push_str("a=ice-pwd:");
            out.push_str(pwd);
        } else if let Some(origin) = line.strip_prefix("o=") {
            out.push_str("o=");
            out.push_str(&bump_session_version(origin));
        } else {
            out.push_str(line);
        }
        out.push_str("\r\n");
    }
    out
}

/// `o=<user> <sess-id> <sess-version> …` with the version plus one (left alone if malformed).
fn bump_session_version(origin: &str) -> String {
    let mut fields: Vec<String> = origin.split(' ').map(str::to_owned).collect();
    if let Some(version) = fields.get_mut(2)
        && let Ok(v) = version.parse::<u64>()
    {
        *version = v.wrapping_add(1).to_string();
    }
    fields.join(" ")
}

/// The sdpfrag of a description's ICE parameters: the session-level `a=ice-lite`,
/// `a=ice-options`, `a=group` (and credentials, if session-level), then per media section its
/// `m=` line, `a=mid`, credentials, candidates and `a=end-of-candidates` (RFC 8840 §9).
pub fn sdpfrag_of(sdp: &str) -> String {
    let mut out = String::new();
    let mut in_media = false;
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with("m=") {
            in_media = true;
            out.push_str(line);
            out.push_str("\r\n");
            continue;
        }
        let session_only = ["a=ice-lite", "a=ice-options:", "a=group:"];
        let both = [
            "a=ice-ufrag:",
            "a=ice-pwd:",
            "a=candidate:",
            "a=end-of-candidates",
        ];
        let keep = both.iter().any(|p| line.starts_with(p))
            || (!in_media && session_only.iter().any(|p| line.starts_with(p)))
            || (in_media && line.starts_with("a=mid:"));
        if keep {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out
}

/// Restarts ICE on an answering connection: applies the client's new credentials as a new offer,
/// answers it, and returns our new ufrag and the answer's sdpfrag.
///
/// Errors leave the connection as it was when the offer itself is refused; a failure after that
/// (no answer could be made) is reported as `Unavailable`, and the client should start over with
/// POST.
pub fn apply(
    pc: &mut RTCPeerConnection,
    req: &RestartRequest,
    now: Instant,
) -> Result<Restarted, MediaError> {
    let current = pc
        .remote_description()
        .map(|d| d.sdp.clone())
        .ok_or_else(|| MediaError::Unavailable("the session has no remote description".into()))?;
    if attribute(&current, "ice-ufrag") == Some(req.ufrag.as_str())
        && attribute(&current, "ice-pwd") == Some(req.pwd.as_str())
    {
        return Err(MediaError::BadSdpFrag(
            "an ICE restart needs a new a=ice-ufrag and a=ice-pwd; these are the current ones"
                .into(),
        ));
    }
    let offer = RTCSessionDescription::offer(with_new_credentials(&current, &req.ufrag, &req.pwd))
        .map_err(|e| MediaError::BadSdpFrag(e.to_string()))?;
    pc.set_remote_description(now, offer)
        .map_err(|e| MediaError::BadSdpFrag(format!("ICE restart refused: {e}")))?;
    let broken = |e: rtc::shared::error::Error| {
        MediaError::Unavailable(format!(
            "ICE restart could not be answered ({e}); start a new session with POST"
        ))
    };
    let answer = pc.create_answer(None).map_err(broken)?;
    pc.set_local_description(now, answer).map_err(broken)?;
    for candidate in &req.candidates {
        // An ICE-lite agent never checks remote candidates; it learns the client's address from
        // its binding requests. A candidate it cannot parse is no reason to fail the restart.
        let _ = pc.add_remote_candidate(RTCIceCandidateInit {
            candidate: candidate.clone(),
            ..Default::default()
        });
    }
    let sdp = pc
        .local_description()
        .map(|d| d.sdp)
        .ok_or_else(|| MediaError::Unavailable("no local description after restart".into()))?;
    let ufrag = attribute(&sdp, "ice-ufrag")
        .ok_or_else(|| MediaError::Unavailable("the restart answer has no a=ice-ufrag".into()))?
        .to_owned();
    Ok(Restarted {
        ufrag,
        sdpfrag: sdpfrag_of(&sdp),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_frag_needs_legal_credentials() {
        let ok = RestartRequest::parse(
            "a=ice-ufrag:efgh\r\na=ice-pwd:zyxwvutsrqponmlkjihgfedc\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=candidate:1 1 udp 1 127.0.0.1 5 typ host\r\n",
        )
        .expect("valid");
        assert_eq!(ok.ufrag, "efgh");
        assert_eq!(ok.pwd, "zyxwvutsrqponmlkjihgfedc");
        assert_eq!(ok.candidates, ["candidate:1 1 udp 1 127.0.0.1 5 typ host"]);
        for bad in [
            "",
            "a=ice-ufrag:efgh\r\n",
            "a=ice-ufrag:ef\r\na=ice-pwd:zyxwvutsrqponmlkjihgfedc\r\n",
            "a=ice-ufrag:ef gh\r\na=ice-pwd:zyxwvutsrqponmlkjihgfedc\r\n",
            "a=ice-ufrag:efgh\r\na=ice-pwd:short\r\n",
            "a=ice-ufrag:efgh\r\na=ice-pwd:zyxwvutsrqponmlkjihg;a=x\r\n",
        ] {
            assert!(
                matches!(RestartRequest::parse(bad), Err(MediaError::BadSdpFrag(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_new_offer_carries_only_the_new_credentials_and_a_newer_version() {
        let old = "v=0\r\no=- 42 7 IN IP4 0.0.0.0\r\ns=-\r\na=ice-ufrag:old1\r\nm=video 9 X 96\r\na=ice-ufrag:old1\r\na=ice-pwd:oldpwdoldpwdoldpwdoldpwd\r\na=candidate:1 1 udp 1 10.0.0.1 5 typ host\r\na=end-of-candidates\r\n";
        let new = with_new_credentials(old, "new1", "newpwdnewpwdnewpwdnewpwd");
        assert!(new.contains("o=- 42 8 IN IP4 0.0.0.0\r\n"), "{new}");
        assert_eq!(new.matches("a=ice-ufrag:new1\r\n").count(), 2);
        assert!(new.contains("a=ice-pwd:newpwdnewpwdnewpwdnewpwd\r\n"));
        assert!(!new.contains("old") && !new.contains("candidate"), "{new}");
    }

    #[test]
    fn rtc_answers_a_restart_with_new_credentials_of_its_own() {
        use super::super::{Role, peer};
        use rtc::peer_connection::RTCPeerConnectionBuilder;
        use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
        use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
        let now = Instant::now();
        let mut client = RTCPeerConnectionBuilder::new()
            .with_media_engine(peer::media_engine(true, true, false).unwrap())
            .build(now)
            .unwrap();
        client
            .add_transceiver_from_kind(
                RtpCodecKind::Video,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    streams: vec![],
                    send_encodings: vec![],
                }),
            )
            .unwrap();
        let offer = client.create_offer(None).unwrap();
        client.set_local_description(now, offer.clone()).unwrap();
        let addr = "127.0.0.1:10000".parse().unwrap();
        let peer::Answered {
            pc: mut server,
            video,
            sdp: answer,
            ..
        } = peer::answer(Role::Subscriber, false, &offer.sdp, &[addr], 16 * 1024, now).unwrap();
        let video = video.expect("a video stream");
        let old_ufrag = attribute(&answer, "ice-ufrag").unwrap().to_owned();

        client.restart_ice();
        let restart_offer = client.create_offer(None).unwrap();
        let request = RestartRequest::parse(&sdpfrag_of(&restart_offer.sdp)).unwrap();
        assert_ne!(
            Some(request.ufrag.as_str()),
            attribute(&offer.sdp, "ice-ufrag")
        );
        let restarted = apply(&mut server, &request, now).unwrap();
        assert_ne!(
            restarted.ufrag, old_ufrag,
            "RFC 8445 §9: our ufrag changes too"
        );
        let frag = RestartRequest::parse(&restarted.sdpfrag).expect("the answer frag parses");
        assert_eq!(frag.ufrag, restarted.ufrag);
        assert!(
            restarted.sdpfrag.contains("a=ice-lite"),
            "{}",
            restarted.sdpfrag
        );
        assert!(
            frag.candidates
                .iter()
                .any(|c| c.contains("127.0.0.1 10000 typ host")),
            "{}",
            restarted.sdpfrag
        );
        let sender = server.rtp_sender(video.sender).unwrap();
        assert_eq!(
            sender.track().ssrcs().next(),
            Some(video.stream.ssrc),
            "the sender keeps its SSRC"
        );
        assert!(
            matches!(
                apply(&mut server, &request, now),
                Err(MediaError::BadSdpFrag(_))
            ),
            "the same credentials twice are no restart"
        );
    }

    #[test]
    fn the_answer_frag_keeps_ice_lines_per_media_section() {
        let answer = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\na=ice-lite\r\na=group:BUNDLE 0 1\r\na=fingerprint:sha-256 AA\r\nm=video 9 X 96\r\na=mid:0\r\na=ice-ufrag:u\r\na=ice-pwd:p\r\na=rtpmap:96 VP8/90000\r\na=candidate:1 1 udp 1 127.0.0.1 5 typ host\r\na=end-of-candidates\r\nm=audio 9 X 111\r\na=mid:1\r\na=ice-ufrag:u\r\na=ice-pwd:p\r\n";
        assert_eq!(
            sdpfrag_of(answer),
            "a=ice-lite\r\na=group:BUNDLE 0 1\r\nm=video 9 X 96\r\na=mid:0\r\na=ice-ufrag:u\r\na=ice-pwd:p\r\na=candidate:1 1 udp 1 127.0.0.1 5 typ host\r\na=end-of-candidates\r\nm=audio 9 X 111\r\na=mid:1\r\na=ice-ufrag:u\r\na=ice-pwd:p\r\n"
        );
    }
}
