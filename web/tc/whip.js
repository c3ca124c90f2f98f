// Publishing a camera to a table over WHIP.
import { TablecastError } from './http.js';
import {
  DEFAULT_GATHER_TIMEOUT_MS, Session, negotiate, preferCodec, sessionConfig, transportStats,
} from './session.js';

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
 * @param {RTCIceServer[]} [opts.iceServers=[]] used besides the node's TURN servers
 * @param {boolean} [opts.nodeIceServers=true] ask the node for its TURN servers (`[turn]`) first
 * @param {RTCIceTransportPolicy} [opts.iceTransportPolicy='all'] 'relay': through TURN only
 * @param {number} [opts.gatherTimeoutMs=1000]
 * @returns {Promise<Publisher>}
 */
export async function publish({
  table, camera = 'main', token, stream, simulcast = false, baseUrl = '',
  videoCodec, iceServers = [], nodeIceServers = true, iceTransportPolicy = 'all',
  gatherTimeoutMs = DEFAULT_GATHER_TIMEOUT_MS,
}) {
  if (!table) throw new TypeError('publish: table is required');
  if (!stream) throw new TypeError('publish: stream is required');
  const url = `${baseUrl}/whip/${encodeURIComponent(table)}?camera=${encodeURIComponent(camera)}`;
  const { config, ice } = await sessionConfig(url, token, { iceServers, iceTransportPolicy, nodeIceServers });
  const pc = new RTCPeerConnection(config);
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

    const resource = await negotiate(pc, url, token, 'WHIP', gatherTimeoutMs);
    if (simulcast && !takesSimulcast(pc.remoteDescription?.sdp ?? '')) {
      // Chromium accepts an answer that leaves simulcast out and then sends only the first,
      // smallest encoding: end that session and publish one full-size encoding instead.
      const headers = token ? { Authorization: `Bearer ${token}` } : {};
      fetch(resource.url, { method: 'DELETE', headers }).catch(() => {});
      throw new Error('the answer does not take simulcast (no a=simulcast:recv)');
    }
    return new Publisher(pc, resource, { table, camera, simulcast, ice });
  } catch (err) {
    pc.close();
    // A node that cannot take simulcast answers without the RID header extension (the browser
    // refuses that answer) or without a=simulcast:recv (caught above): publish one encoding
    // rather than nothing, and say so.
    if (simulcast && !(err instanceof TablecastError) && /simulcast|\bRID\b/i.test(err.message)) {
      const single = await publish({
        table, camera, token, stream, simulcast: false, baseUrl, videoCodec, iceServers, nodeIceServers,
        iceTransportPolicy, gatherTimeoutMs,
      });
      single.simulcastRefused = err.message;
      return single;
    }
    throw err;
  }
}

/** Whether an answer's video section receives simulcast (RFC 8853 `a=simulcast:recv`). */
function takesSimulcast(sdp) {
  const video = sdp.split(/\r?\n(?=m=)/).find((s) => s.startsWith('m=video')) ?? '';
  return video.split(/\r?\n/).some((l) => /^a=simulcast:\s*recv\s/.test(l));
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
