// WHIP (publish) and WHEP (play) sessions: one RTCPeerConnection each, signalled
// with one POST (RFC 9725). The node is ICE-lite and its answer carries its own
// candidates, so the client gathers its candidates before the POST (at most
// `gatherTimeoutMs`) and no trickle is needed.
import { TablecastError, request } from './http.js';

/** DTLS protocol versions as `RTCTransportStats.tlsVersion` reports them (hex of the wire version). */
const DTLS_VERSIONS = { FEFF: 'DTLS 1.0', FEFD: 'DTLS 1.2', FEFC: 'DTLS 1.3' };

/** Longest wait for ICE gathering before the offer is sent anyway. */
export const DEFAULT_GATHER_TIMEOUT_MS = 1000;

/** What publish() and play() have in common: the resource URL, stop(), events, rates. */
class Session extends EventTarget {
  constructor(pc, resource, info) {
    super();
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

// ---------------------------------------------------------------------------
// Publishing (WHIP)
// ---------------------------------------------------------------------------

/** Simulcast layers, lowest first, as the dealer console offers them. */
export const SIMULCAST_ENCODINGS = Object.freeze([
  Object.freeze({ rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 200_000 }),
  Object.freeze({ rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 700_000 }),
  Object.freeze({ rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 2_500_000 }),
]);

/** The smallest camera that can carry the three simulcast layers. */
export const SIMULCAST_MIN = Object.freeze({ width: 960, height: 540 });

/**
 * Publish a camera to a table over WHIP.
 *
 * The stream's tracks stay owned by the caller: `stop()` ends the session but
 * does not stop the camera.
 *
 * @param {object} opts
 * @param {string} opts.table table id
 * @param {string} [opts.camera='main'] camera name; each camera is its own WHIP session
 * @param {string} opts.token dealer token
 * @param {MediaStream} opts.stream at most one video and one audio track are sent
 * @param {boolean} [opts.simulcast=false] send three encodings (needs at least 960x540)
 * @param {string} [opts.baseUrl=''] node origin, e.g. `https://node:8443`; '' means this page's origin
 * @param {string} [opts.videoCodec] preferred video codec, e.g. 'VP8' or 'H264'
 * @param {RTCIceServer[]} [opts.iceServers=[]]
 * @param {number} [opts.gatherTimeoutMs=1000]
 * @returns {Promise<Publisher>}
 */
export async function publish({
  table, camera = 'main', token, stream, simulcast = false, baseUrl = '',
  videoCodec, iceServers = [], gatherTimeoutMs = DEFAULT_GATHER_TIMEOUT_MS,
}) {
  if (!table) throw new TypeError('publish: table is required');
  if (!stream) throw new TypeError('publish: stream is required');
  const pc = new RTCPeerConnection({ iceServers, bundlePolicy: 'max-bundle' });
  try {
    const video = stream.getVideoTracks()[0];
    const audio = stream.getAudioTracks()[0];
    if (!video && !audio) throw new TypeError('publish: the stream has no tracks');
    if (video) {
      const init = { direction: 'sendonly', streams: [stream] };
      if (simulcast) init.sendEncodings = SIMULCAST_ENCODINGS.map((e) => ({ ...e }));
      const tx = pc.addTransceiver(video, init);
      preferCodec(tx, 'video', videoCodec);
    }
    if (audio) pc.addTransceiver(audio, { direction: 'sendonly', streams: [stream] });

    const url = `${baseUrl}/whip/${encodeURIComponent(table)}?camera=${encodeURIComponent(camera)}`;
    const resource = await negotiate(pc, url, token, 'WHIP', gatherTimeoutMs);
    return new Publisher(pc, resource, { table, camera, simulcast });
  } catch (err) {
    pc.close();
    // A node that cannot take simulcast answers without the RID header extension, and the
    // browser refuses that answer: publish one encoding rather than nothing, and say so.
    if (simulcast && !(err instanceof TablecastError) && /simulcast|\bRID\b/i.test(err.message)) {
      const single = await publish({
        table, camera, token, stream, simulcast: false, baseUrl, videoCodec, iceServers, gatherTimeoutMs,
      });
      single.simulcastRefused = err.message;
      return single;
    }
    throw err;
  }
}

/** A live WHIP session. Events: 'state' (detail: RTCPeerConnectionState). */
export class Publisher extends Session {
  constructor(pc, resource, info) {
    super(pc, resource, info);
    /** True when the three simulcast encodings are being sent. */
    this.simulcast = Boolean(info.simulcast);
    /** Why simulcast was asked for but not negotiated (the node's answer refused it), or null. */
    this.simulcastRefused = null;
  }

  /** @returns {Promise<PublisherStats>} */
  async stats() {
    const report = await this.pc.getStats();
    const now = performance.now();
    const layers = [];
    let bytesSent = 0;
    let packetsSent = 0;
    let rtt = null;
    for (const s of report.values()) {
      if (s.type === 'outbound-rtp' && s.kind === 'video') {
        bytesSent += s.bytesSent ?? 0;
        packetsSent += s.packetsSent ?? 0;
        layers.push({
          rid: s.rid ?? null,
          active: s.active ?? true,
          frameWidth: s.frameWidth ?? 0,
          frameHeight: s.frameHeight ?? 0,
          fps: s.framesPerSecond ?? 0,
          bytesSent: s.bytesSent ?? 0,
          bitrate: this._rate(`layer-${s.rid ?? s.ssrc}`, s.bytesSent ?? 0, now),
          qualityLimitationReason: s.qualityLimitationReason ?? 'none',
        });
      } else if (s.type === 'remote-inbound-rtp' && s.kind === 'video' && s.roundTripTime !== undefined) {
        rtt = s.roundTripTime;
      }
    }
    layers.sort((a, b) => b.frameWidth * b.frameHeight - a.frameWidth * a.frameHeight);
    const top = layers[0] ?? { frameWidth: 0, frameHeight: 0, fps: 0, qualityLimitationReason: 'none' };
    const transport = transportStats(report);
    return {
      bitrate: this._rate('video', bytesSent, now),
      fps: top.fps,
      frameWidth: top.frameWidth,
      frameHeight: top.frameHeight,
      bytesSent,
      packetsSent,
      qualityLimitationReason: top.qualityLimitationReason,
      layers,
      rtt: rtt ?? transport.rtt,
      ...transport.dtls,
      connectionState: this.pc.connectionState,
    };
  }
}

// ---------------------------------------------------------------------------
// Playing (WHEP)
// ---------------------------------------------------------------------------

/**
 * Watch a table over WHEP, with the `control` data channel for table events.
 *
 * A player may start before the dealer is live: the session waits and video
 * starts when the dealer publishes, with no renegotiation. When the browser
 * refuses the data channel, the session plays without one (`channel` is null
 * and `channelError` says why); use the WebSocket for table events then.
 *
 * @param {object} opts
 * @param {string} opts.table table id
 * @param {string} [opts.camera='main']
 * @param {string} opts.token player token
 * @param {HTMLVideoElement} [opts.video] gets the received stream as `srcObject`
 * @param {boolean} [opts.control=true] open the `control` data channel
 * @param {string} [opts.baseUrl='']
 * @param {RTCIceServer[]} [opts.iceServers=[]]
 * @param {number} [opts.gatherTimeoutMs=1000]
 * @returns {Promise<Player>}
 */
export async function play({
  table, camera = 'main', token, video, control = true, baseUrl = '',
  iceServers = [], gatherTimeoutMs = DEFAULT_GATHER_TIMEOUT_MS,
}) {
  if (!table) throw new TypeError('play: table is required');
  const pc = new RTCPeerConnection({ iceServers, bundlePolicy: 'max-bundle' });
  const stream = new MediaStream();
  try {
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    let channel = null;
    let channelError = null;
    if (control) {
      try {
        channel = pc.createDataChannel('control', { ordered: true });
      } catch (err) {
        channelError = err;
      }
    }
    pc.addEventListener('track', (ev) => {
      stream.addTrack(ev.track);
      if (video && video.srcObject !== stream) {
        video.srcObject = stream;
        video.play().catch(() => { /* autoplay policy: the page offers tap-to-play */ });
      }
    });
    const url = `${baseUrl}/whep/${encodeURIComponent(table)}?camera=${encodeURIComponent(camera)}`;
    const player = new Player(pc, null, { table, camera }, channel, stream);
    player.channelError = channelError;
    player._resource = await negotiate(pc, url, token, 'WHEP', gatherTimeoutMs);
    return player;
  } catch (err) {
    pc.close();
    throw err;
  }
}

/**
 * A live WHEP session.
 *
 * Events (use `on(type, fn)` or `addEventListener`):
 * - 'message': a JSON message from the table (`fn(msg)`; the event's `detail` is the message),
 * - 'open' / 'close': the control channel opened or closed,
 * - 'state': the peer connection's state changed (detail: RTCPeerConnectionState),
 * - 'track': a remote track arrived (detail: MediaStreamTrack).
 */
export class Player extends Session {
  constructor(pc, resource, info, channel, stream) {
    super(pc, resource, info);
    /** @type {RTCDataChannel|null} */
    this.channel = channel;
    /** Why the browser refused the control channel, when it did. */
    this.channelError = null;
    /** @type {MediaStream} the received audio and video */
    this.stream = stream;
    /** Messages that were not JSON objects; kept for diagnostics. */
    this.badMessages = 0;
    this._lastVideo = null;
    pc.addEventListener('track', (ev) => this._emit('track', ev.track));
    if (channel) {
      channel.addEventListener('open', () => this._emit('open', null));
      channel.addEventListener('close', () => this._emit('close', null));
      channel.addEventListener('message', (ev) => {
        let msg;
        try {
          msg = typeof ev.data === 'string' ? JSON.parse(ev.data) : null;
        } catch {
          msg = null;
        }
        if (msg === null || typeof msg !== 'object') {
          this.badMessages += 1;
          return;
        }
        this._emit('message', msg);
      });
    }
  }

  /**
   * Send one JSON message on the control channel.
   * @throws {Error} when the channel is not open
   */
  send(msg) {
    if (!this.channel || this.channel.readyState !== 'open') {
      throw new Error('tablecast: the control channel is not open');
    }
    this.channel.send(JSON.stringify(msg));
  }

  /** Resolves once the control channel is open (rejects after `timeoutMs`, or when it closes first). */
  channelOpen(timeoutMs = 10_000) {
    const ch = this.channel;
    if (!ch) return Promise.reject(this.channelError ?? new Error('tablecast: played with control=false'));
    if (ch.readyState === 'open') return Promise.resolve();
    if (ch.readyState !== 'connecting') return Promise.reject(new Error('tablecast: control channel closed'));
    return new Promise((resolve, reject) => {
      const done = (err) => {
        clearTimeout(timer);
        ch.removeEventListener('open', onOpen);
        ch.removeEventListener('close', onClose);
        if (err) reject(err); else resolve();
      };
      const onOpen = () => done(null);
      const onClose = () => done(new Error('tablecast: control channel closed before it opened'));
      const timer = setTimeout(() => done(new Error('tablecast: control channel did not open')), timeoutMs);
      ch.addEventListener('open', onOpen);
      ch.addEventListener('close', onClose);
    });
  }

  /** @returns {Promise<PlayerStats>} */
  async stats() {
    const report = await this.pc.getStats();
    const now = performance.now();
    let v = null;
    let a = null;
    for (const s of report.values()) {
      if (s.type !== 'inbound-rtp') continue;
      if (s.kind === 'video') v = s;
      else if (s.kind === 'audio') a = s;
    }
    const transport = transportStats(report);
    const videoBytes = v?.bytesReceived ?? 0;
    const audioBytes = a?.bytesReceived ?? 0;
    const packetsReceived = v?.packetsReceived ?? 0;
    const packetsLost = Math.max(0, v?.packetsLost ?? 0);
    // Loss over the interval since the previous call, not since the start.
    const prev = this._lastVideo;
    this._lastVideo = { packetsReceived, packetsLost };
    let loss = 0;
    if (prev) {
      const got = packetsReceived - prev.packetsReceived;
      const lost = packetsLost - prev.packetsLost;
      if (got + lost > 0 && lost > 0) loss = lost / (got + lost);
    }
    const emitted = v?.jitterBufferEmittedCount ?? 0;
    return {
      framesDecoded: v?.framesDecoded ?? 0,
      framesDropped: v?.framesDropped ?? 0,
      frameWidth: v?.frameWidth ?? 0,
      frameHeight: v?.frameHeight ?? 0,
      fps: v?.framesPerSecond ?? 0,
      packetsReceived,
      packetsLost,
      loss,
      freezeCount: v?.freezeCount ?? 0,
      jitter: v?.jitter ?? 0,
      jitterBufferMs: emitted > 0 ? Math.round((v.jitterBufferDelay / emitted) * 1000) : null,
      nackCount: v?.nackCount ?? 0,
      pliCount: v?.pliCount ?? 0,
      bitrate: this._rate('video', videoBytes, now),
      audio: {
        packetsReceived: a?.packetsReceived ?? 0,
        packetsLost: a?.packetsLost ?? 0,
        bitrate: this._rate('audio', audioBytes, now),
      },
      rtt: transport.rtt,
      ...transport.dtls,
      connectionState: this.pc.connectionState,
      channelState: this.channel?.readyState ?? 'none',
    };
  }
}

/**
 * Offer, gather, POST, answer. Returns the session resource.
 * @returns {Promise<{url: string, etag: string|null, token: string}>}
 */
async function negotiate(pc, url, token, what, gatherTimeoutMs) {
  await pc.setLocalDescription(await pc.createOffer());
  await iceGatheringComplete(pc, gatherTimeoutMs);
  const headers = { 'Content-Type': 'application/sdp' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await request(url, { method: 'POST', headers, body: pc.localDescription.sdp }, `${what} POST`);
  const answer = await res.text();
  if (res.status !== 201) {
    throw new TablecastError(`${what} POST: expected 201, got ${res.status}`, { status: res.status, url: res.url });
  }
  const location = res.headers.get('Location');
  if (!location) {
    throw new TablecastError(`${what} POST: the reply has no Location header`, { status: res.status, url: res.url });
  }
  const resource = { url: new URL(location, res.url).href, etag: res.headers.get('ETag'), token };
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
function preferCodec(transceiver, kind, codec) {
  if (!codec || typeof RTCRtpSender.getCapabilities !== 'function' || !transceiver.setCodecPreferences) return;
  const caps = RTCRtpSender.getCapabilities(kind)?.codecs ?? [];
  const wanted = `${kind}/${codec}`.toLowerCase();
  const first = caps.filter((c) => c.mimeType.toLowerCase() === wanted);
  if (first.length === 0) return;
  transceiver.setCodecPreferences([...first, ...caps.filter((c) => c.mimeType.toLowerCase() !== wanted)]);
}

/** DTLS details and round-trip time from the transport and its selected candidate pair. */
function transportStats(report) {
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

/**
 * @typedef {object} PublisherStats
 * @property {number} bitrate outbound video bits per second since the previous stats() call
 * @property {number} fps frames per second of the largest layer
 * @property {number} frameWidth
 * @property {number} frameHeight
 * @property {number} bytesSent
 * @property {number} packetsSent
 * @property {string} qualityLimitationReason 'none' | 'cpu' | 'bandwidth' | 'other'
 * @property {Array<object>} layers one entry per simulcast encoding, largest first
 * @property {number|null} rtt seconds
 * @property {string|null} tlsVersion e.g. 'FEFD' (DTLS 1.2) or 'FEFC' (DTLS 1.3)
 * @property {string|null} dtlsVersion 'DTLS 1.2' | 'DTLS 1.3'
 * @property {string} connectionState
 */

/**
 * @typedef {object} PlayerStats
 * @property {number} framesDecoded
 * @property {number} frameWidth
 * @property {number} frameHeight
 * @property {number} fps
 * @property {number} packetsLost video packets lost since the start
 * @property {number} loss fraction of video packets lost since the previous stats() call (0..1)
 * @property {number} freezeCount
 * @property {number|null} jitterBufferMs mean time a frame waits in the jitter buffer
 * @property {number} bitrate inbound video bits per second since the previous stats() call
 * @property {{packetsReceived: number, packetsLost: number, bitrate: number}} audio
 * @property {number|null} rtt seconds, from the selected ICE candidate pair
 * @property {string|null} tlsVersion e.g. 'FEFD' (DTLS 1.2) or 'FEFC' (DTLS 1.3)
 * @property {string|null} dtlsVersion
 * @property {string} connectionState
 * @property {string} channelState the control channel's readyState, or 'none'
 */
