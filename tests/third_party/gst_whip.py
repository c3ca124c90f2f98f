#!/usr/bin/python3
"""Publish a test pattern to a tablecast node over WHIP with GStreamer's webrtcbin, a WebRTC
stack nobody on this project wrote (libnice ICE, OpenSSL DTLS, libsrtp; H.264 from x264 or VP8
from libvpx, Opus audio).

    /usr/bin/python3 gst_whip.py WHIP_URL TOKEN SECONDS [--codec h264|vp8] [--local-address IP]
    /usr/bin/python3 gst_whip.py --check     (is everything it needs installed?)

It stands in for Debian 12's `simple-whip-client` (the same webrtcbin), which cannot start on
bookworm: it links libsoup2 while libnice links libsoup3 ("Using libsoup2 and libsoup3 in the
same process is not supported"). WHIP is done here with urllib, so no libsoup is loaded. Like OBS
it does not trickle: it waits for ICE gathering to complete and POSTs one offer with every
candidate.

libnice (webrtcbin's ICE) never gathers loopback addresses, and it pins each host candidate's
socket to its interface (IP_UNICAST_IF). On its own it therefore cannot reach a node that
announces only 127.0.0.1, as the test nodes do: its checks leave through eth0 and are lost. When
the WHIP URL's host is a loopback address, or with --local-address, libnice uses that address
only.

Run it with Debian's /usr/bin/python3. The GStreamer bindings live in Debian's dist-packages,
which a pyenv or venv python3 does not see. They are python3-gst-1.0 and the gir1.2-gst* and
gir1.2-nice-0.1 packages, and `bash tests/run.sh` installs them.

When done it prints one line of JSON, e.g. {"status": 201, "location": ..., "connection_state":
"connected", "video_packets_sent": 120, "delete_status": 200, ...}. It exits non-zero, with a
message on stderr and an "error" in that JSON line, if the node refused the offer, ICE or DTLS
failed, nothing was sent, or a step timed out.
"""

import argparse
import ctypes
import ipaddress
import json
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

try:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstSdp", "1.0")
    gi.require_version("GstWebRTC", "1.0")
    gi.require_version("Nice", "0.1")
    from gi.repository import GLib, Gst, GstSdp, GstWebRTC, Nice
except (ImportError, ValueError) as e:
    sys.exit(
        f"gst_whip.py: cannot load the GStreamer Python bindings ({e}). Run it with Debian's "
        "/usr/bin/python3 and install python3-gst-1.0 gir1.2-gst-plugins-bad-1.0 gir1.2-nice-0.1 "
        "gstreamer1.0-nice gstreamer1.0-plugins-{base,good,bad,ugly} (`bash tests/run.sh` does)."
    )

VIDEO = {
    "h264": "videotestsrc is-live=true ! video/x-raw,width=640,height=360,framerate=30/1"
    " ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=60"
    " ! video/x-h264,profile=constrained-baseline"
    " ! rtph264pay config-interval=-1 aggregate-mode=zero-latency"
    " ! application/x-rtp,media=video,encoding-name=H264,payload=102 ! webrtc.",
    "vp8": "videotestsrc is-live=true ! video/x-raw,width=640,height=360,framerate=30/1"
    " ! vp8enc deadline=1 keyframe-max-dist=60 target-bitrate=1000000"
    " ! rtpvp8pay picture-id-mode=15-bit"
    " ! application/x-rtp,media=video,encoding-name=VP8,payload=96 ! webrtc.",
}
AUDIO = (
    "audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! opusenc"
    " ! rtpopuspay ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111 ! webrtc."
)

CAPS_TIMEOUT = 10  # seconds for the encoders to put caps on every webrtcbin pad
GATHER_TIMEOUT = 10  # seconds for ICE gathering to complete
CONNECT_TIMEOUT = 15  # seconds from setting the answer to "connected" (ICE, then DTLS)
HTTP_TIMEOUT = 10


class Failure(Exception):
    """A step failed; the message says which and why."""


def pipeline_text(codec):
    return f"webrtcbin name=webrtc bundle-policy=max-bundle {VIDEO[codec]} {AUDIO}"


def loopback_of(url):
    """The loopback address the WHIP URL's host resolves to, if it does."""
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        addrs = {info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_UDP)}
    except OSError:
        return None
    loopbacks = sorted(a for a in addrs if ipaddress.ip_address(a).is_loopback)
    return loopbacks[0] if loopbacks and len(loopbacks) == len(addrs) else None


def http(method, url, token, body=None, ctype=None):
    """One WHIP request: (status, headers, body text). Non-2xx is returned, not raised."""
    req = urllib.request.Request(url, data=body, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if ctype:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as resp:
            return resp.status, resp.headers, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as e:
        raise Failure(f"{method} {url}: {e}") from e


def check_bus(pipeline):
    """Raises on an ERROR message from any element; reports warnings; drains the rest."""
    bus = pipeline.get_bus()
    while True:
        msg = bus.pop_filtered(Gst.MessageType.ERROR | Gst.MessageType.WARNING)
        if msg is None:
            return
        if msg.type == Gst.MessageType.ERROR:
            err, debug = msg.parse_error()
            raise Failure(f"GStreamer error from {msg.src.get_name()}: {err.message} ({debug})")
        warn, _ = msg.parse_warning()
        print(f"gst_whip.py: warning from {msg.src.get_name()}: {warn.message}", file=sys.stderr)


def wait_until(pipeline, what, timeout, done):
    """Polls `done()` (and the bus) every 50 ms until it is true; raises after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not done():
        check_bus(pipeline)
        if time.monotonic() > deadline:
            raise Failure(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def promise_reply(webrtc, signal, *args):
    """Emits an action signal that answers through a Gst.Promise and returns the reply.

    PyGObject hands back a copy of the reply structure, and a boxed value taken from it with
    get_value (the offer) points into that copy: keep the reply referenced while you use it."""
    promise = Gst.Promise.new()
    webrtc.emit(signal, *args, promise)
    if promise.wait() != Gst.PromiseResult.REPLIED:
        raise Failure(f"webrtcbin {signal}: no reply")
    reply = promise.get_reply()
    if reply is not None and reply.has_field("error"):
        raise Failure(f"webrtcbin {signal}: {reply.get_value('error')}")
    return reply


def transceivers(webrtc):
    """webrtcbin's transceivers, one per linked pad. PyGObject cannot read the GArray that
    get-transceivers returns, so this asks for them one index at a time."""
    found = []
    while (t := webrtc.emit("get-transceiver", len(found))) is not None:
        found.append(t)
    return found


def state_name(webrtc, prop):
    return webrtc.get_property(prop).value_nick


def field(s, name, default=None):
    return s.get_value(name) if s is not None and s.has_field(name) else default


def outbound_stats(webrtc):
    """{"video"|"audio": {"packets", "bytes", "ssrc"}} from webrtcbin's get-stats.

    Under BUNDLE, webrtcbin 1.22 labels every outbound-rtp entry with the last transceiver's
    kind and codec-id (both "audio" here). Its codec entries carry the right SSRC and mime-type,
    so outbound entries are matched to those by SSRC."""
    reply = promise_reply(webrtc, "get-stats", None)
    entries = [reply.get_value(reply.nth_field_name(i)) for i in range(reply.n_fields())]
    entries = [e for e in entries if isinstance(e, Gst.Structure)]
    kind_of_ssrc = {
        field(e, "ssrc"): field(e, "mime-type", "").split("/")[0]
        for e in entries
        if field(e, "type") == GstWebRTC.WebRTCStatsType.CODEC and field(e, "ssrc") is not None
    }
    out = {}
    for e in entries:
        if field(e, "type") != GstWebRTC.WebRTCStatsType.OUTBOUND_RTP:
            continue
        kind = kind_of_ssrc.get(field(e, "ssrc")) or field(e, "kind")
        out[kind] = {
            "packets": field(e, "packets-sent", 0),
            "bytes": field(e, "bytes-sent", 0),
            "ssrc": field(e, "ssrc"),
        }
    return out


def ice_agent(webrtc):
    """webrtcbin's GstWebRTCNice, safe to drop afterwards.

    webrtcbin 1.22 keeps its ICE object as a floating reference. PyGObject sinks that reference
    when it first wraps the object and releases it with the wrapper, which frees the ICE agent
    under webrtcbin (a segfault at the next step). So this takes a C reference of its own and
    leaves it to webrtcbin (ctypes: PyGObject's own ref() is dropped with the wrapper)."""
    ice = webrtc.get_property("ice-agent")
    gobject = ctypes.CDLL("libgobject-2.0.so.0")
    gobject.g_object_ref.argtypes = [ctypes.c_void_p]
    gobject.g_object_ref.restype = ctypes.c_void_p
    capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    capsule_pointer.restype = ctypes.c_void_p
    gobject.g_object_ref(capsule_pointer(ice.__gpointer__, None))
    return ice


def restrict_ice_to(webrtc, address):
    """Makes libnice gather host candidates on `address` only (loopback included)."""
    nice_addr = Nice.Address.new()
    if not nice_addr.set_from_string(address):
        raise Failure(f"--local-address {address} is not an IP address")
    agent = ice_agent(webrtc).get_property("agent")
    if not agent.add_local_address(nice_addr):
        raise Failure(f"libnice refused the local address {address}")


def publish(url, token, seconds, codec, local_address, report):
    Gst.init(None)
    pipeline = Gst.parse_launch(pipeline_text(codec))
    webrtc = pipeline.get_by_name("webrtc")
    try:
        if local_address:
            restrict_ice_to(webrtc, local_address)
        if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            check_bus(pipeline)
            raise Failure("the pipeline does not start")

        # The offer's rtpmap/fmtp come from the payloaders' caps (H.264 packetization-mode,
        # profile-level-id, sprop-parameter-sets), so wait until every webrtcbin pad has them.
        pads = list(webrtc.sinkpads)
        wait_until(pipeline, "encoded media on every webrtcbin pad", CAPS_TIMEOUT,
                   lambda: all(p.get_current_caps() is not None for p in pads))
        for t in transceivers(webrtc):  # request pads make sendrecv transceivers; WHIP sends
            t.set_property("direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY)

        offer_reply = promise_reply(webrtc, "create-offer", None)  # keep: `offer` points into it
        offer = offer_reply.get_value("offer")
        promise_reply(webrtc, "set-local-description", offer)
        wait_until(pipeline, "ICE gathering to complete", GATHER_TIMEOUT,
                   lambda: state_name(webrtc, "ice-gathering-state") == "complete")
        sdp = webrtc.get_property("local-description").sdp.as_text()
        if "a=candidate" not in sdp:
            raise Failure(f"ICE gathering completed without a candidate; offer:\n{sdp}")

        status, headers, body = http("POST", url, token, sdp.encode(), "application/sdp")
        report["status"] = status
        if status != 201:
            raise Failure(f"POST {url}: HTTP {status}: {body.strip()}")
        location = headers.get("Location")
        if not location:
            raise Failure(f"POST {url}: 201 without a Location header")
        report["location"] = location
        try:
            stream(pipeline, webrtc, body, seconds, report)
        finally:
            resource = urllib.parse.urljoin(url, location)
            delete_status, _, delete_body = http("DELETE", resource, token)
            report["delete_status"] = delete_status
            if delete_status != 200 and sys.exc_info()[0] is None:
                raise Failure(f"DELETE {resource}: HTTP {delete_status}: {delete_body.strip()}")
    finally:
        pipeline.set_state(Gst.State.NULL)


def stream(pipeline, webrtc, answer_text, seconds, report):
    """Sets the node's answer, waits for ICE + DTLS, then sends for `seconds`, polling stats."""
    result, answer = GstSdp.SDPMessage.new_from_text(answer_text)
    if result != GstSdp.SDPResult.OK:
        raise Failure(f"the node's answer is not valid SDP ({result.value_nick}):\n{answer_text}")
    desc = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, answer)
    promise_reply(webrtc, "set-remote-description", desc)

    def states():
        report["connection_state"] = state_name(webrtc, "connection-state")
        report["ice_connection_state"] = state_name(webrtc, "ice-connection-state")
        return report["connection_state"]

    wait_until(pipeline, "the connection (ICE, then DTLS)", CONNECT_TIMEOUT,
               lambda: states() in ("connected", "failed", "closed"))
    if states() != "connected":
        raise Failure(f"connection {report['connection_state']} (ICE "
                      f"{report['ice_connection_state']}); the node's answer was:\n{answer_text}")

    end = time.monotonic() + seconds
    while True:
        check_bus(pipeline)
        sent = outbound_stats(webrtc)
        video, audio = sent.get("video", {}), sent.get("audio", {})
        report["video_packets_sent"] = video.get("packets", 0)
        report["video_bytes_sent"] = video.get("bytes", 0)
        report["video_ssrc"] = video.get("ssrc")
        report["audio_packets_sent"] = audio.get("packets", 0)
        if states() != "connected":
            raise Failure(f"the connection became {report['connection_state']} while streaming")
        if time.monotonic() >= end:
            break
        time.sleep(min(0.5, max(0.0, end - time.monotonic())))
    if report["video_packets_sent"] == 0:
        raise Failure("connected, but webrtcbin reports no video RTP packets sent")


def check():
    """`gst_whip.py --check`: exits non-zero, naming what is missing, unless every element both
    pipelines and webrtcbin's transport need is installed."""
    Gst.init(None)
    missing = []
    for codec in sorted(VIDEO):
        try:
            Gst.parse_launch(pipeline_text(codec)).set_state(Gst.State.NULL)
        except GLib.Error as e:
            missing.append(f"{codec} pipeline: {e.message}")
    # webrtcbin creates these only once it negotiates.
    for name in ("nicesrc", "nicesink", "dtlssrtpenc", "dtlssrtpdec", "srtpenc", "srtpdec"):
        if Gst.ElementFactory.find(name) is None:
            missing.append(f"GStreamer element {name}")
    if missing:
        sys.exit("gst_whip.py: missing " + "; ".join(missing)
                 + " (install gstreamer1.0-nice gstreamer1.0-plugins-{base,good,bad,ugly})")
    print("gst_whip.py: GStreamer, webrtcbin, libnice and the encoders are all present")


def main():
    if sys.argv[1:] == ["--check"]:
        return check()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the WHIP endpoint, e.g. http://127.0.0.1:8443/whip/demo")
    parser.add_argument("token", help="a dealer token (sent as Authorization: Bearer)")
    parser.add_argument("seconds", type=float, help="how long to stream once connected")
    parser.add_argument("--codec", choices=sorted(VIDEO), default="h264")
    parser.add_argument("--local-address", metavar="IP",
                        help="the only address libnice gathers candidates on (default: the "
                        "loopback address when the URL's host is loopback, else all interfaces)")
    args = parser.parse_args()
    local_address = args.local_address or loopback_of(args.url)
    report = {"status": None, "location": None, "connection_state": None,
              "video_packets_sent": 0, "delete_status": None, "codec": args.codec,
              "local_address": local_address}
    try:
        publish(args.url, args.token, args.seconds, args.codec, local_address, report)
    except Failure as e:
        report["error"] = str(e)
        print(json.dumps(report), flush=True)
        print(f"gst_whip.py: {e}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
