// Watching a table over WHEP, with the `control` data channel for its events.
import {
  DEFAULT_GATHER_TIMEOUT_MS, Session, negotiate, sessionConfig, transportStats,
} from './session.js';

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
 * @param {RTCIceServer[]} [opts.iceServers=[]] used besides the node's TURN servers
 * @param {boolean} [opts.nodeIceServers=true] ask the node for its TURN servers (`[turn]`) first
 * @param {RTCIceTransportPolicy} [opts.iceTransportPolicy='all'] 'relay': through TURN only
 * @param {number} [opts.gatherTimeoutMs=1000]
 * @returns {Promise<Player>}
 */
export async function play({
  table, camera = 'main', token, video, control = true, baseUrl = '',
  iceServers = [], nodeIceServers = true, iceTransportPolicy = 'all',
  gatherTimeoutMs = DEFAULT_GATHER_TIMEOUT_MS,
}) {
  if (!table) throw new TypeError('play: table is required');
  const url = `${baseUrl}/whep/${encodeURIComponent(table)}?camera=${encodeURIComponent(camera)}`;
  const { config, ice } = await sessionConfig(url, token, { iceServers, iceTransportPolicy, nodeIceServers });
  const pc = new RTCPeerConnection(config);
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
    const player = new Player(pc, null, { table, camera, ice }, channel, stream);
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
