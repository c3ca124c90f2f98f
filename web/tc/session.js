// What a WHIP and a WHEP session have in common: one RTCPeerConnection,
// signalled with one POST (RFC 9725). The node is ICE-lite and its answer carries
// its own candidates, so the client gathers its candidates before the POST (at
// most `gatherTimeoutMs`) and no trickle is needed. A session is ended with
// DELETE, and restarts ICE with PATCH (If-Match: *).
//
// TURN. A node with `[turn]` lists its TURN servers as RFC 9725 `Link: <turn:…>;
// rel="ice-server"; username=…; credential=…` headers, on the 201 and on an OPTIONS
// that carries the token. The peer connection must know them before it gathers, and
// it gathers as soon as the offer is set, before the POST. Two ways to get there:
//   1. ask first: OPTIONS with the token, create the peer connection with the servers,
//      then offer and POST as always (one more round trip, before any media);
//   2. POST first, then setConfiguration() with the 201's servers and an ICE restart
//      (a PATCH): the new servers only take effect on a restart, so that is a second
//      offer, a second gathering and two more round trips, after a first connection
//      attempt that cannot succeed where UDP is blocked.
// We do 1 (`iceServersFor`). The node is ICE-lite: it answers connectivity checks but
// sends none, so Chromium (the controlling agent) checks from every candidate it has,
// including relay candidates it finishes gathering after the POST; the offer need not
// carry them and the gather timeout stays as it is. An ICE restart (`restartIce`)
// asks again, so a long session never restarts with expired TURN credentials.
import { TablecastError, request } from './http.js';

/** DTLS protocol versions as `RTCTransportStats.tlsVersion` reports them (hex of the wire version). */
const DTLS_VERSIONS = { FEFF: 'DTLS 1.0', FEFD: 'DTLS 1.2', FEFC: 'DTLS 1.3' };

/** Longest wait for ICE gathering before the offer is sent anyway. */
export const DEFAULT_GATHER_TIMEOUT_MS = 1000;

/** What publish() and play() have in common: the resource URL, stop(), events, rates. */
export class Session extends EventTarget {
  constructor(pc, resource, info) {
    super();
    /** How to ask for TURN servers again on an ICE restart (set by play()/publish()). */
    this._ice = info.ice ?? null;
    /** @type {RTCPeerConnection} */
    this.pc = pc;
    /** @type {{url: string, etag: string|null, token: string}|null} the WHIP/WHEP session resource */
    this._resource = resource;
    this.table = info.table;
    this.camera = info.camera;
    this._lastBytes = new Map();
    this._stopped = false;
    pc.addEventListener('connectionstatechange', () => this._emit('state', pc.connectionState));
  }

  /** The session's resource URL (the `Location` of the POST), absolute. */
  get resourceUrl() {
    return this._resource?.url ?? null;
  }

  /** The node's id for this session: the last segment of the resource URL. */
  get sessionId() {
    return this.resourceUrl ? this.resourceUrl.split('/').pop() : null;
  }

  /** True once stop() was called. */
  get stopped() {
    return this._stopped;
  }

  /**
   * Subscribe to an event; returns a function that unsubscribes.
   * For 'message' the callback gets the parsed message; otherwise the event's detail.
   */
  on(type, fn) {
    const listener = (ev) => fn(ev.detail, ev);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  /**
   * End the session: `DELETE` the resource, then close the peer connection.
   * Safe to call twice. Resolves even when the node is unreachable (the node reaps
   * sessions that stop sending), but rejects on a non-2xx reply other than 404.
   */
  async stop() {
    if (this._stopped) return;
    this._stopped = true;
    const url = this.resourceUrl;
    this.pc.close();
    this._emit('state', 'closed');
    if (!url) return;
    try {
      await request(url, { method: 'DELETE', headers: this._authHeaders() }, 'DELETE session');
    } catch (err) {
      if (err instanceof TablecastError && (err.status === 0 || err.status === 404)) return;
      throw err;
    }
  }

  /**
   * ICE restart over the resource (RFC 9725 §4.3): a new offer with fresh ICE
   * credentials goes out as a `PATCH` with `If-Match: *`; the node's sdpfrag
   * answer gives its new credentials. Rejects with a TablecastError when the node
   * refuses (a node without ICE restart answers 400): start a new session then.
   */
  async restartIce(gatherTimeoutMs = DEFAULT_GATHER_TIMEOUT_MS) {
    const pc = this.pc;
    const url = this.resourceUrl;
    if (!url || pc.signalingState === 'closed') throw new TablecastError('ICE restart: no session', { status: 0 });
    if (this._ice?.fromNode) {
      // Fresh TURN credentials: the first ones may have expired by now.
      const fromNode = await iceServersFor(this._ice.url, this._resource?.token);
      if (fromNode.length) pc.setConfiguration({ ...pc.getConfiguration(), iceServers: [...this._ice.extra, ...fromNode] });
    }
    const offer = await pc.createOffer({ iceRestart: true });
    await pc.setLocalDescription(offer);
    try {
      await iceGatheringComplete(pc, gatherTimeoutMs);
      const res = await request(url, {
        method: 'PATCH',
        headers: { 'Content-Type': 'application/trickle-ice-sdpfrag', 'If-Match': '*', ...this._authHeaders() },
        body: iceRestartFragment(pc.localDescription.sdp),
      }, 'ICE restart PATCH');
      const frag = await res.text();
      if (res.status !== 200) {
        throw new TablecastError(`ICE restart PATCH: expected 200, got ${res.status}`, { status: res.status, url });
      }
      const sdp = applyRestartAnswer(pc.remoteDescription.sdp, frag);
      await pc.setRemoteDescription({ type: 'answer', sdp });
      if (this._resource) this._resource.etag = res.headers.get('ETag') ?? this._resource.etag;
    } catch (err) {
      if (pc.signalingState === 'have-local-offer') await pc.setLocalDescription({ type: 'rollback' }).catch(() => {});
      throw err;
    }
  }

  _authHeaders() {
    return this._resource?.token ? { Authorization: `Bearer ${this._resource.token}` } : {};
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /** Bits per second since the previous call for the same key (0 on the first). */
  _rate(key, bytes, now) {
    const prev = this._lastBytes.get(key);
    this._lastBytes.set(key, { bytes, now });
    if (!prev || now <= prev.now || bytes < prev.bytes) return 0;
    return Math.round(((bytes - prev.bytes) * 8 * 1000) / (now - prev.now));
  }
}

/**
 * The TURN servers a node lists for an endpoint (`url`, the POST's URL), asked with
 * `OPTIONS` and the token before the peer connection exists. `[]` when the node has no
 * `[turn]`, refuses, or cannot be reached: the POST then says what is wrong.
 * @returns {Promise<RTCIceServer[]>}
 */
export async function iceServersFor(url, token) {
  try {
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    const res = await fetch(url, { method: 'OPTIONS', headers, cache: 'no-store' });
    return res.ok ? parseIceServerLinks(res.headers.get('Link')) : [];
  } catch {
    return [];
  }
}

/**
 * The RTCIceServer of every `rel="ice-server"` in a Link header (RFC 9725 §4.6; RFC 8288
 * syntax). Several Link headers reach the page joined by ", ". `turns:` URLs (TURN over
 * TLS, e.g. on port 443) are passed on as they are: to the browser it is just a URL.
 * @param {string|null} header
 * @returns {RTCIceServer[]}
 */
export function parseIceServerLinks(header) {
  const servers = [];
  for (const link of splitLinks(header ?? '')) {
    const m = /^\s*<([^>]*)>(.*)$/s.exec(link);
    if (!m) continue;
    const params = {};
    const re = /;\s*([A-Za-z0-9!#$%&'*+.^_`|~-]+)\s*(?:=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*)))?/g;
    for (let p = re.exec(m[2]); p; p = re.exec(m[2])) {
      const name = p[1].toLowerCase();
      if (!(name in params)) params[name] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : (p[3] ?? '');
    }
    if (!(params.rel ?? '').toLowerCase().split(/\s+/).includes('ice-server')) continue;
    const server = { urls: m[1] };
    if (params.username !== undefined) server.username = params.username;
    if (params.credential !== undefined) server.credential = params.credential;
    servers.push(server);
  }
  return servers;
}

/** A Link header's links: split at commas outside <…> and quoted strings. */
function splitLinks(header) {
  const out = [];
  let start = 0;
  let inUrl = false;
  let inQuote = false;
  for (let i = 0; i < header.length; i += 1) {
    const c = header[i];
    if (inQuote) {
      if (c === '\\') i += 1;
      else if (c === '"') inQuote = false;
    } else if (inUrl) {
      if (c === '>') inUrl = false;
    } else if (c === '"') inQuote = true;
    else if (c === '<') inUrl = true;
    else if (c === ',') {
      out.push(header.slice(start, i));
      start = i + 1;
    }
  }
  out.push(header.slice(start));
  return out.filter((l) => l.trim() !== '');
}

/**
 * The RTCConfiguration of a session: the caller's `iceServers`, then the node's TURN
 * servers (asked first, see the top of this file) unless `nodeIceServers` is false.
 * `iceTransportPolicy: 'relay'` uses TURN only (for tests, or for operators who want
 * players' addresses hidden from the node).
 * @returns {Promise<{config: RTCConfiguration, ice: {url: string, extra: RTCIceServer[], fromNode: boolean}}>}
 */
export async function sessionConfig(url, token, { iceServers = [], iceTransportPolicy = 'all', nodeIceServers = true } = {}) {
  const fromNode = nodeIceServers ? await iceServersFor(url, token) : [];
  return {
    config: { iceServers: [...iceServers, ...fromNode], iceTransportPolicy, bundlePolicy: 'max-bundle' },
    ice: { url, extra: iceServers, fromNode: nodeIceServers },
  };
}

/**
 * Offer, gather, POST, answer. Returns the session resource.
 * @returns {Promise<{url: string, etag: string|null, token: string}>}
 */
export async function negotiate(pc, url, token, what, gatherTimeoutMs) {
  await pc.setLocalDescription(await pc.createOffer());
  await iceGatheringComplete(pc, gatherTimeoutMs);
  const res = await postOffer(url, token, pc.localDescription.sdp, what);
  const answer = await res.text();
  if (res.status !== 201) {
    throw new TablecastError(`${what} POST: expected 201, got ${res.status}`, { status: res.status, url: res.url });
  }
  const location = res.headers.get('Location');
  if (!location) {
    throw new TablecastError(`${what} POST: the reply has no Location header`, { status: res.status, url: res.url });
  }
  // Relative to the node that made the session (the table's owner, after a redirect): PATCH and DELETE go there.
  const resource = { url: new URL(location, res.url || url).href, etag: res.headers.get('ETag'), token };
  try {
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
  } catch (err) {
    // The node made a session for an answer this browser cannot use: end it now.
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    fetch(resource.url, { method: 'DELETE', headers }).catch(() => {});
    throw err;
  }
  return resource;
}

/** How many times an offer is sent again to the node a redirect named. */
const MAX_REDIRECTS = 3;
/** How many times a 503 (the table is moving to another node) is tried again. */
const MAX_UNAVAILABLE_RETRIES = 5;
/** The longest Retry-After honoured. */
const MAX_RETRY_AFTER_MS = 5000;

/**
 * POST an offer, following a cluster's redirect with the token kept, and waiting out a 503.
 *
 * A node that does not own the table answers `307` with `Location` on the owner, always
 * another origin. Browsers follow it, but drop `Authorization` on a cross-origin redirect
 * (Fetch spec; older browsers kept it), and `redirect: 'manual'` gives an opaque response
 * without `Location`. So the request follows the redirect: when the owner then answers 401
 * to the token-less POST, `res.url` (the owner's URL, after the redirect) gets the offer again
 * with the token. A `503` (the table has no owner for a moment: it is moving after a failure)
 * is tried again after `Retry-After` seconds (1 when the browser hides the header).
 */
export async function postOffer(url, token, sdp, what) {
  const headers = { 'Content-Type': 'application/sdp' };
  if (token) headers.Authorization = `Bearer ${token}`;
  let target = url;
  let redirects = 0;
  let unavailable = 0;
  for (;;) {
    try {
      const res = await request(target, { method: 'POST', headers, body: sdp, redirect: 'follow' }, `${what} POST`);
      return res;
    } catch (err) {
      if (!(err instanceof TablecastError)) throw err;
      const landed = err.url && err.url !== target ? err.url : null;
      if (err.status === 401 && landed && redirects < MAX_REDIRECTS) {
        // Redirected to the owner, which never saw the token: ask it directly.
        redirects += 1;
        target = landed;
        continue;
      }
      if (err.status === 503 && unavailable < MAX_UNAVAILABLE_RETRIES) {
        unavailable += 1;
        await new Promise((resolve) => setTimeout(resolve, retryAfterMs(err.retryAfter)));
        continue;
      }
      throw err;
    }
  }
}

/** Milliseconds a Retry-After of whole seconds asks for: 1 s when absent or unreadable, at most 5 s. */
export function retryAfterMs(value) {
  const secs = Number.parseInt(String(value ?? ''), 10);
  const ms = Number.isFinite(secs) && secs >= 0 ? secs * 1000 : 1000;
  return Math.min(ms, MAX_RETRY_AFTER_MS);
}

/** Resolves when ICE gathering completes, or after `timeoutMs`, whichever is first. */
function iceGatheringComplete(pc, timeoutMs) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    };
    const check = () => { if (pc.iceGatheringState === 'complete') done(); };
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

/**
 * The sdpfrag of an ICE restart (RFC 8840 / RFC 9725 §4.3): the bundle group,
 * the first media section's m= line and mid, the new credentials and candidates.
 */
export function iceRestartFragment(sdp) {
  const lines = sdp.split(/\r?\n/).filter(Boolean);
  const firstM = lines.findIndex((l) => l.startsWith('m='));
  const session = firstM < 0 ? lines : lines.slice(0, firstM);
  const media = firstM < 0 ? [] : lines.slice(firstM, nextSection(lines, firstM));
  const pick = (prefix) => media.find((l) => l.startsWith(prefix)) ?? session.find((l) => l.startsWith(prefix));
  const out = [];
  for (const prefix of ['a=ice-options:', 'a=group:BUNDLE']) {
    const line = pick(prefix);
    if (line) out.push(line);
  }
  if (media.length) out.push(media[0]);
  for (const prefix of ['a=mid:', 'a=ice-ufrag:', 'a=ice-pwd:']) {
    const line = pick(prefix);
    if (line) out.push(line);
  }
  out.push(...media.filter((l) => l.startsWith('a=candidate:')), 'a=end-of-candidates');
  return `${out.join('\r\n')}\r\n`;
}

/** The previous remote description with the credentials (and candidates, if any) of an ICE restart answer. */
export function applyRestartAnswer(remoteSdp, frag) {
  const fragLines = frag.split(/\r?\n/);
  const ufrag = fragLines.find((l) => l.startsWith('a=ice-ufrag:'));
  const pwd = fragLines.find((l) => l.startsWith('a=ice-pwd:'));
  if (!ufrag || !pwd) throw new TablecastError('ICE restart: the answer has no ice-ufrag/ice-pwd', { status: 200 });
  const candidates = fragLines.filter((l) => l.startsWith('a=candidate:'));
  const out = [];
  for (const line of remoteSdp.split(/\r?\n/)) {
    if (line.startsWith('a=ice-ufrag:')) out.push(ufrag);
    else if (line.startsWith('a=ice-pwd:')) out.push(pwd);
    else if (candidates.length && line.startsWith('a=candidate:')) continue;
    else {
      out.push(line);
      if (candidates.length && line.startsWith('a=mid:')) out.push(...candidates);
    }
  }
  return out.join('\r\n');
}

function nextSection(lines, from) {
  const i = lines.findIndex((l, idx) => idx > from && l.startsWith('m='));
  return i < 0 ? lines.length : i;
}

/** Put `codec` (e.g. 'VP8', 'H264') first in the transceiver's preferences, if the browser has it. */
export function preferCodec(transceiver, kind, codec) {
  if (!codec || typeof RTCRtpSender.getCapabilities !== 'function' || !transceiver.setCodecPreferences) return;
  const caps = RTCRtpSender.getCapabilities(kind)?.codecs ?? [];
  const wanted = `${kind}/${codec}`.toLowerCase();
  const first = caps.filter((c) => c.mimeType.toLowerCase() === wanted);
  if (first.length === 0) return;
  transceiver.setCodecPreferences([...first, ...caps.filter((c) => c.mimeType.toLowerCase() !== wanted)]);
}

/** DTLS details and round-trip time from the transport and its selected candidate pair. */
export function transportStats(report) {
  let transport = null;
  for (const s of report.values()) {
    if (s.type === 'transport') { transport = s; break; }
  }
  let pair = transport?.selectedCandidatePairId ? report.get(transport.selectedCandidatePairId) : null;
  if (!pair) {
    for (const s of report.values()) {
      if (s.type === 'candidate-pair' && (s.selected || s.nominated) && s.state === 'succeeded') { pair = s; break; }
    }
  }
  const tlsVersion = transport?.tlsVersion ?? null;
  return {
    rtt: pair?.currentRoundTripTime ?? null,
    dtls: {
      tlsVersion,
      dtlsVersion: tlsVersion ? (DTLS_VERSIONS[tlsVersion.toUpperCase()] ?? tlsVersion) : null,
      dtlsState: transport?.dtlsState ?? null,
      dtlsCipher: transport?.dtlsCipher ?? null,
      srtpCipher: transport?.srtpCipher ?? null,
    },
  };
}
