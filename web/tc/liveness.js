// Noticing soon that the node serving a WHEP session is gone (killed, its
// machine lost), without mistaking a dealer's pause for it.
//
// A node that dies says nothing: no DTLS close, no data-channel close, and
// Chromium reports ICE 'disconnected' only about 5.4 s after its last packet
// (measured with a SIGKILLed node on loopback). So the client watches for itself
// and asks the node:
//
//   inbound video stops for STALL_MS after it was flowing,
//   or ICE goes 'disconnected'
//        │
//        ▼
//   GET /healthz on the session's node, at most PROBE_TIMEOUT_MS
//        │ refused, or no reply in time       │ any reply
//        ▼                                    ▼
//   the node is gone: a full reconnect       the node is alive: nothing more
//   on the next node, no ICE restart         (a paused dealer; ICE trouble keeps
//                                            its grace and ICE restart)
//
// One probe per stall: the watch is armed again only once video flows again.

/** Inbound video that stops this long after it was flowing is a stall. */
export const STALL_MS = 1000;
/** How often the video receiver's packet count is read. */
export const STALL_CHECK_MS = 250;
/**
 * The longest wait for `/healthz`. A node that answers later is taken for gone:
 * its players move to another node, which is what they should do from a node that
 * slow.
 */
export const PROBE_TIMEOUT_MS = 1000;

/**
 * Whether the node at `origin` answers `GET /healthz` within `timeoutMs`. Any
 * HTTP reply counts as alive: the process is there. The request is `no-cors`, so
 * it needs no CORS headers from the node (the reply is opaque; only its arrival
 * matters).
 *
 * @param {string} origin e.g. 'https://b.example:8443'
 * @param {number} [timeoutMs]
 * @returns {Promise<boolean>}
 */
export async function nodeAnswers(origin, timeoutMs = PROBE_TIMEOUT_MS) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  try {
    await fetch(`${origin}/healthz`, { mode: 'no-cors', cache: 'no-store', signal: abort.signal });
    return true;
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Calls `onStall()` when the peer connection's inbound video stops for
 * `stallMs` after it was flowing; once per stall. Video that never started (no
 * dealer yet) is not a stall.
 */
export class StallWatch {
  /**
   * @param {RTCPeerConnection} pc
   * @param {() => void} onStall
   * @param {{stallMs?: number, everyMs?: number}} [opts]
   */
  constructor(pc, onStall, { stallMs = STALL_MS, everyMs = STALL_CHECK_MS } = {}) {
    this.pc = pc;
    this.onStall = onStall;
    this.stallMs = stallMs;
    this._packets = 0;
    this._lastChange = performance.now();
    this._flowing = false;
    this._timer = setInterval(() => { this._check().catch(() => {}); }, everyMs);
  }

  stop() {
    clearInterval(this._timer);
  }

  async _check() {
    const receiver = this.pc.getReceivers().find((r) => r.track?.kind === 'video');
    if (!receiver || this.pc.connectionState === 'closed') return;
    let packets = 0;
    for (const s of (await receiver.getStats()).values()) {
      if (s.type === 'inbound-rtp') packets += s.packetsReceived ?? 0;
    }
    const now = performance.now();
    if (packets !== this._packets) {
      this._packets = packets;
      this._lastChange = now;
      this._flowing = true;
    } else if (this._flowing && now - this._lastChange >= this.stallMs) {
      this._flowing = false;
      this.onStall();
    }
  }
}
