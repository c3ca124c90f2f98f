"""Publish a test pattern to a tablecast node over WHIP with aiortc, a WebRTC stack nobody on
this project wrote (VP8 video encoded by libvpx through PyAV).

    python3 aiortc_whip.py URL TOKEN SECONDS

Prints one line of JSON when done: {"status": 201, "location": ..., "delete_status": 200,
"connection": "connected"}. Exits non-zero if the node refused the offer or ICE/DTLS failed.
"""

import asyncio
import json
import sys
import urllib.request

from aiortc import RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from av import VideoFrame


class Pattern(VideoStreamTrack):
    """A slowly changing flat picture, 320x240 at 30 fps (no numpy needed)."""

    def __init__(self):
        super().__init__()
        self.n = 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame(320, 240, "yuv420p")
        for i, plane in enumerate(frame.planes):
            value = (self.n * 3 + i * 80) % 256
            plane.update(bytes([value]) * plane.buffer_size)
        frame.pts, frame.time_base = pts, time_base
        self.n += 1
        return frame


def http(method, url, token, body=None, ctype=None):
    req = urllib.request.Request(url, data=body, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if ctype:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


async def main(url, token, seconds):
    pc = RTCPeerConnection()
    pc.addTransceiver(Pattern(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())  # aiortc gathers before returning
    status, headers, answer = await asyncio.to_thread(
        http, "POST", url, token, pc.localDescription.sdp.encode(), "application/sdp"
    )
    if status != 201:
        print(json.dumps({"status": status, "body": answer}))
        sys.exit(1)
    location = headers.get("Location") or headers.get("location")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    for _ in range(100):
        if pc.connectionState in ("connected", "failed"):
            break
        await asyncio.sleep(0.1)
    state = pc.connectionState
    if state == "connected":
        await asyncio.sleep(seconds)
    base = url.split("/whip/")[0]
    delete_status, _, _ = await asyncio.to_thread(http, "DELETE", base + location, token)
    await pc.close()
    print(json.dumps({"status": status, "location": location, "delete_status": delete_status, "connection": state}))
    sys.exit(0 if state == "connected" else 2)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
