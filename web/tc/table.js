// A player at a table: the dealer's video over WHEP and the table's events on
// the session's `control` data channel, or over a WebSocket when the data
// channel cannot be had. It recovers by itself:
//
//   ICE trouble or a network change ─▶ ICE restart (WHEP PATCH, If-Match: *)
//        │ refused (a node without ICE restart answers 400) or no luck in 5 s
//        ▼
//   full reconnect: a new WHEP session on the next node, then `hello` with
//   resume_after_seq, retried with backoff (0, 0.5, 1, 2, 4, 8 s)
//
// A session the node closes (its data channel or DTLS transport closes) goes
// straight to the full reconnect, and so does a node found gone: when video
// stalls for 1 s or ICE goes 'disconnected', the session's node is asked
// `GET /healthz`, and no answer within 1 s means it is gone (liveness.js).
// The page sees 'connection' events (connecting → live → reconnecting → live …)
// and never a gap or a duplicate in the table's events (see ControlSession).
//
// It tells the node how the page shows the video (`video.view`: the rendered
// size, whether the page is hidden, the player's quality preference; view.js),
// so the node sends the layer the player needs, and none to a hidden tab.
import { backoffMs, sleep } from './backoff.js';
import { ControlSession } from './control.js';
import { channelTransport, openSocket } from './transport.js';
import { wsUrl } from './http.js';
import { DEFAULT_GATHER_TIMEOUT_MS } from './session.js';
import { NodeRing, chooseNodes } from './nodes.js';
import { StallWatch, nodeAnswers } from './liveness.js';
import { play } from './whep.js';
import { ViewReporter, checkQuality, layerName } from './view.js';
import { FrameMap, FRAME_WAIT_MS, Presented, waitForFrame } from './frames.js';

/** ICE 'disconnected' this long counts as trouble (it often heals by itself sooner). */
const ICE_GRACE_MS = 2000;
/** How long an ICE restart may take to connect again. */
const ICE_RESTART_TIMEOUT_MS = 5000;

/**
 * Join a table as a player. Resolves once the table said `welcome`; rejects when
 * the first connection fails for good (a refused token: `err.status` 401/403).
 *
 * @param {object} opts
 * @param {string} opts.table
 * @param {string|(() => Promise<string>)} opts.token player token, or a function that gets a fresh one
 * @param {HTMLVideoElement} [opts.video] shows the dealer's video
 * @param {string} [opts.camera='main']
 * @param {string} [opts.baseUrl=''] node origin; '' means this page's origin
 * @param {string[]} [opts.nodes] node origins to use in turn: the client moves to the next
 *   one whenever it reconnects, so a player whose node stopped carries on on another
 *   (default: `[baseUrl]`)
 * @param {boolean} [opts.chooseNode] ask `baseUrl` which node to use
 *   (`GET /api/v1/tables/{table}/join`): the least-loaded node of the player's region, then
 *   every other serving node, in the order the client moves through them when its node is
 *   lost (default: true unless `nodes` is given; a node that cannot say leaves the list as it is)
 * @param {string} [opts.region] the player's region for that choice (default: the node's own)
 * @param {boolean} [opts.dataChannel=true] false: table events over the WebSocket only
 * @param {'auto'|'high'|'low'} [opts.videoQuality='auto'] the player's quality preference
 *   (see setQuality)
 * @param {RTCIceServer[]} [opts.iceServers=[]] used besides the node's TURN servers (`[turn]`)
 * @param {RTCIceTransportPolicy} [opts.iceTransportPolicy='all'] 'relay': video through TURN only
 * @returns {Promise<TableClient>}
 */
export async function joinTable(opts) {
  const client = new TableClient(opts);
  await client.start();
  return client;
}

export class TableClient extends ControlSession {
  constructor({
    table, token, video = null, camera = 'main', baseUrl = '', nodes, chooseNode = nodes === undefined, region,
    dataChannel = true, videoQuality = 'auto',
    iceServers = [], iceTransportPolicy = 'all', gatherTimeoutMs = DEFAULT_GATHER_TIMEOUT_MS, channelTimeoutMs = 5000,
    statsIntervalMs = 1000, ...rest
  }) {
    super({ table, ...rest });
    this.video = video;
    this.camera = camera;
    /** The nodes to use in turn; `baseUrl` is the one in use. */
    this.nodes = new NodeRing(nodes, baseUrl);
    this.baseUrl = this.nodes.current;
    this.chooseNode = chooseNode;
    this.region = region;
    this.iceServers = iceServers;
    this.iceTransportPolicy = iceTransportPolicy;
    this.gatherTimeoutMs = gatherTimeoutMs;
    this.channelTimeoutMs = channelTimeoutMs;
    this.statsIntervalMs = statsIntervalMs;
    /** Whether to ask for the data channel; turns false for good once the browser or the node refuses it. */
    this.useDataChannel = dataChannel;
    /** Why the data channel is not used, when it is not. */
    this.fallbackReason = dataChannel ? null : 'disabled';
    /** @type {import('./whep.js').Player|null} the current WHEP session */
    this.player = null;
    /**
     * Connection quality for an indicator: level 'good' | 'poor' | 'reconnecting' | 'connecting', and the
     * numbers, with the layer received (`frameWidth`×`frameHeight`, `layer` such as '720p', `fps`, `bitrate`).
     */
    this.quality = { level: 'connecting', bitrate: 0, loss: 0, rtt: null, fps: 0, video: false };
    /**
     * Recoveries: ICE restarts tried and succeeded, full reconnects, and the node
     * checks made on a video stall or ICE 'disconnected' (`nodeChecks`), of which
     * found the node gone (`nodesGone`).
     */
    this.recovery = { iceRestarts: 0, iceRestartsOk: 0, reconnects: 0, nodeChecks: 0, nodesGone: 0, lastMs: null };
    this._tokenSource = token;
    this._closed = false;
    this._recovering = false;
    this._iceTimer = null;
    /** @type {StallWatch|null} watches the current session's inbound video */
    this._stallWatch = null;
    this._checkingNode = false;
    this._statsTimer = null;
    this._poorSamples = 0;
    this._goodSamples = 0;
    this._onNetwork = () => this._recover('network change');
    /** Says how the page shows the video (`video.view`); made by start(). */
    this._view = null;
    this._videoQuality = checkQuality(videoQuality);
    /** `video.view` messages sent (diagnostics and tests). */
    this.viewsSent = 0;
    /** The current session's `video.map`s: which camera frame each of its frames is. */
    this.frames = new FrameMap();
    /** What the video shows now (its presented frames' RTP timestamps). */
    this._presented = new Presented();
    /**
     * How results are revealed: 'frame' (on the frame they name) or 'arrival' (when the first
     * frame after them shows), and why not 'frame'. Also in `quality.reveal`.
     */
    this.reveal = { mode: 'frame', reason: null };
    // On a WebSocket a map names its WHEP session: one of an older session is not this one's.
    this.on('video.map', (msg) => {
      if (msg.session === undefined || msg.session === this.player?.sessionId) this.frames.add(msg);
    });
    this.on('joined', () => this._view?.flush());
  }

  async start() {
    this._setConnection('connecting', null);
    if (this.chooseNode) await this._chooseNode();
    // The first connection tries each node once; a refused token (fatal) stops at once.
    for (let tried = 1; ; tried += 1) {
      try {
        await this._connect();
        break;
      } catch (err) {
        if (err.fatal || tried >= this.nodes.size || this._closed) throw err;
        this.baseUrl = this.nodes.advance();
      }
    }
    this._view = new ViewReporter((view) => this._sendView(view), { quality: this._videoQuality });
    this._view.watch(this.video);
    this._setConnection('live', this._transport?.kind ?? null);
    this._statsTimer = setInterval(() => { this._sample().catch(() => {}); }, this.statsIntervalMs);
    globalThis.addEventListener?.('online', this._onNetwork);
    globalThis.navigator?.connection?.addEventListener?.('change', this._onNetwork);
  }

  /** Show the video in another element. */
  attachVideo(video) {
    this.video = video;
    this._view?.watch(video);
    if (video && this.player?.stream.getTracks().length) this._showStream(this.player.stream);
  }

  /**
   * Resolves once the video on screen has caught up with this moment: the first
   * frame received after the call is presented. Call it when an event arrives
   * (a result) and show the event when it resolves, so the page and the video
   * agree. Resolves at once when no video is playing, and after `maxWaitMs` at
   * the latest. Resolves with the wait in ms.
   */
  inStepWithVideo(maxWaitMs = 1500) {
    // An event that names no frame waits for the first frame received after it.
    return waitForFrame(this.video, this.frames, {}, {
      maxWaitMs, hasVideo: this.quality.video && !this.view.hidden, jitterBufferMs: this.quality.jitterBufferMs ?? 80,
    }).then((r) => r.waitedMs);
  }

  /**
   * Resolves when the frame of the dealer's video that `event` names (a `round.result`'s
   * `media_ts`) is on screen: show the event then, and every player sees it on the same
   * frame. Resolves with {via, waitedMs, frames, rtp}: via 'frame' when that frame (or one
   * `frames` later) was presented; 'arrival' when the browser gives no `rtpTimestamp` or the
   * event names no frame, and it waited as inStepWithVideo() does (then `quality.reveal` says
   * so); 'timeout' after `maxWaitMs` (video paused, a layer gone); 'no-video' at once when
   * nothing plays. Emits 'revealed' ({event, ...the same}) just before it resolves.
   */
  async onFrame(event, maxWaitMs = FRAME_WAIT_MS) {
    // An event this session's maps cannot place (no frame named, no map in its clock: a result
    // from before the dealer's current stream) is shown as inStepWithVideo() would.
    const named = Number.isInteger(event?.media_ts) && Number.isInteger(event?.media_clock);
    const placed = named && this.frames.knows(event.media_clock >>> 0);
    const r = await waitForFrame(this.video, this.frames, placed ? event : {}, {
      maxWaitMs,
      // A stall with a map still waits (the frame may come); without one, as inStepWithVideo().
      hasVideo: !this.view.hidden && (placed || this.quality.video),
      jitterBufferMs: this.quality.jitterBufferMs ?? 80,
      presented: this._presented,
    });
    if (r.via === 'arrival' || r.via === 'frame') {
      const reason = r.via === 'frame' ? null
        : !named ? 'the event names no frame'
          : this.frames.maps.length === 0 ? 'the node sent this session no video.map yet'
            : !placed ? 'no video.map in the event\'s clock (a result from before the dealer\'s current stream)'
              : 'this browser gives no rtpTimestamp for video frames';
      this.reveal = { mode: r.via, reason };
      this.quality = { ...this.quality, reveal: r.via, revealReason: reason };
    }
    // Still in the task that presented the frame: a listener can draw it (tests do).
    this._emit('revealed', { event, ...r });
    return r;
  }

  /**
   * The player's quality preference, sent to the node at once:
   * - 'auto': the highest layer that fits the link and the video's size on screen;
   * - 'high': the highest layer the link carries, whatever the size;
   * - 'low': the lowest layer (to save data).
   * Throws a TypeError for anything else. The page keeps it (localStorage) if it likes.
   */
  setQuality(quality) {
    this._videoQuality = checkQuality(quality);
    this._view?.setQuality(quality);
  }

  /** How the page shows the video now, as told to the node: {width, height, hidden, quality}. */
  get view() {
    return this._view?.view ?? { width: 0, height: 0, hidden: false, quality: this._videoQuality };
  }

  /** Leave the table: end the WHEP session and the control connection. */
  async close() {
    this._closed = true;
    this._view?.stop();
    clearInterval(this._statsTimer);
    clearTimeout(this._iceTimer);
    this._stallWatch?.stop();
    globalThis.removeEventListener?.('online', this._onNetwork);
    globalThis.navigator?.connection?.removeEventListener?.('change', this._onNetwork);
    const t = this._transport;
    this._shutdown();
    t?.close();
    const player = this.player;
    this.player = null;
    this._setConnection('closed', null);
    await player?.stop().catch(() => {});
  }

  // -------------------------------------------------------------------------
  // Connecting
  // -------------------------------------------------------------------------

  /** Ask the node in use which nodes to use, best first; keep the list when it cannot say. */
  async _chooseNode() {
    const token = typeof this._tokenSource === 'function' ? await this._tokenSource() : this._tokenSource;
    const urls = await chooseNodes({ baseUrl: this.baseUrl, table: this.tableId, token, region: this.region });
    if (!urls) return;
    this.nodes.replace(urls);
    this.baseUrl = this.nodes.current;
  }

  /** One whole connection: WHEP session, then the control transport, then `welcome`/`resumed`. */
  async _connect() {
    const token = typeof this._tokenSource === 'function' ? await this._tokenSource() : this._tokenSource;
    this._setToken(token);
    const player = await play({
      table: this.tableId, camera: this.camera, token, control: this.useDataChannel,
      baseUrl: this.baseUrl, iceServers: this.iceServers, iceTransportPolicy: this.iceTransportPolicy,
      gatherTimeoutMs: this.gatherTimeoutMs,
    });
    if (this._closed) {
      await player.stop().catch(() => {});
      return;
    }
    this._adopt(player);
    try {
      if (player.channel) {
        try {
          await player.channelOpen(this.channelTimeoutMs);
          if (player !== this.player) return;
          this._attach(channelTransport(player.channel));
        } catch (err) {
          if (player !== this.player) return;
          this._fallBack(`the control channel did not open (${err.message})`);
          await this._attachSocket();
        }
      } else {
        if (player.channelError) this._fallBack(`the browser refused the data channel (${player.channelError.message})`);
        await this._attachSocket();
      }
      await this.ready(10_000);
    } catch (err) {
      if (this.player === player) {
        this.player = null;
        this._stallWatch?.stop();
      }
      const t = this._transport;
      this._detach();
      t?.close();
      await player.stop().catch(() => {});
      throw err;
    }
  }

  _fallBack(reason) {
    this.useDataChannel = false;
    this.fallbackReason = reason;
    this._emit('fallback', { reason });
  }

  async _attachSocket() {
    const transport = await openSocket(wsUrl(this.baseUrl, `/ws/${encodeURIComponent(this.tableId)}`));
    if (this._closed) {
      transport.close();
      return;
    }
    this._attach(transport);
  }

  /** Make `player` the current WHEP session and watch it for trouble. */
  _adopt(player) {
    this.player = player;
    this.frames.clear();
    this._presented.clear();
    const pc = player.pc;
    // Tracks arrive while the answer is applied, before play() returns, or later.
    if (player.stream.getTracks().length) this._showStream(player.stream);
    player.on('track', () => { if (this.player === player) this._showStream(player.stream); });
    this._stallWatch?.stop();
    this._stallWatch = new StallWatch(pc, () => this._checkNode(player, 'the video stalled'));
    pc.addEventListener('iceconnectionstatechange', () => {
      if (this.player !== player) return;
      const s = pc.iceConnectionState;
      if (s === 'connected' || s === 'completed') {
        clearTimeout(this._iceTimer);
        this._iceTimer = null;
      } else if (s === 'disconnected') {
        this._checkNode(player, 'ICE disconnected');
        if (!this._iceTimer) this._iceTimer = setTimeout(() => { this._iceTimer = null; this._recover('ICE disconnected'); }, ICE_GRACE_MS);
      } else if (s === 'failed') {
        this._recover('ICE failed');
      }
    });
    pc.addEventListener('connectionstatechange', () => {
      if (this.player === player && pc.connectionState === 'failed') this._recover('connection failed');
    });
    // The node closing the session shows first as DTLS close_notify (and the data channel closing).
    const dtls = pc.getTransceivers().find((t) => t.receiver.transport)?.receiver.transport;
    dtls?.addEventListener('statechange', () => {
      if (this.player === player && (dtls.state === 'closed' || dtls.state === 'failed')) this._reconnect(`DTLS ${dtls.state}`);
    });
  }

  _showStream(stream) {
    const v = this.video;
    if (!v) return;
    if (v.srcObject !== stream) v.srcObject = stream;
    this._presented.watch(v);
    if (v.paused) v.play().catch(() => { /* autoplay policy: the page offers tap-to-play */ });
  }

  // -------------------------------------------------------------------------
  // Recovering
  // -------------------------------------------------------------------------

  _transportClosed(transport) {
    if (this._closed) return;
    if (transport.kind === 'datachannel') {
      this._reconnect('the control channel closed');
      return;
    }
    // The WebSocket went away; when the media session is fine, only the socket comes back.
    const pc = this.player?.pc;
    if (pc && pc.connectionState === 'connected' && !this._recovering) this._reconnectSocket();
    else this._reconnect('the WebSocket closed');
  }

  /**
   * Ask the node holding `player`'s session whether it is alive; when it does not
   * answer, make a full reconnect to the next node at once. An ICE restart cannot
   * help with a node that is gone, and waiting for ICE to say so takes seconds. A
   * node that answers is left alone: its video may simply have paused.
   */
  async _checkNode(player, why) {
    if (this._closed || this._checkingNode || this.player !== player || !player.resourceUrl) return;
    // A hidden page gets no video by design: its video stopping says nothing about the node.
    if (why === 'the video stalled' && this.view.hidden) return;
    const origin = new URL(player.resourceUrl).origin;
    this._checkingNode = true;
    let alive;
    try {
      alive = await nodeAnswers(origin);
    } finally {
      this._checkingNode = false;
    }
    this.recovery.nodeChecks += 1;
    if (alive || this.player !== player || this._closed) return;
    this.recovery.nodesGone += 1;
    this._reconnect(`${why} and ${origin} does not answer`);
  }

  /** ICE restart first; a full reconnect when the node refuses it or it does not help. */
  async _recover(why) {
    if (this._closed || this._recovering) return;
    const player = this.player;
    if (!player) return;
    this._recovering = true;
    this._setConnection('reconnecting', this._transport?.kind ?? null, { reason: why });
    const started = performance.now();
    this.recovery.iceRestarts += 1;
    try {
      await player.restartIce(this.gatherTimeoutMs);
      await iceConnected(player.pc, ICE_RESTART_TIMEOUT_MS);
      if (this.player !== player || this._closed) return;
      this.recovery.iceRestartsOk += 1;
      this.recovery.lastMs = Math.round(performance.now() - started);
      this._recovering = false;
      if (!this.attached) await this._rejoinControl();
      this._setConnection('live', this._transport?.kind ?? null);
    } catch (err) {
      if (this.player !== player || this._closed) return;
      this._recovering = false;
      this._reconnect(`ICE restart: ${err.message}`, started);
    }
  }

  /** A new WHEP session (and control transport), resuming from the last seq; retried with backoff. */
  async _reconnect(why, started = performance.now()) {
    if (this._closed || this._recovering) return;
    this._recovering = true;
    this._setConnection('reconnecting', null, { reason: why });
    const old = this.player;
    this.player = null;
    this._stallWatch?.stop();
    this._stallWatch = null;
    const t = this._transport;
    this._detach();
    t?.close();
    clearTimeout(this._iceTimer);
    this._iceTimer = null;
    old?.stop().catch(() => {});
    for (let attempt = 1; !this._closed; attempt += 1) {
      await sleep(backoffMs(attempt));
      if (this._closed) break;
      // Each attempt on the next node: the one just lost may be stopping or gone.
      this.baseUrl = this.nodes.advance();
      try {
        await this._connect();
        this.recovery.reconnects += 1;
        this.recovery.lastMs = Math.round(performance.now() - started);
        this._recovering = false;
        this._setConnection('live', this._transport?.kind ?? null);
        return;
      } catch (err) {
        if (err.fatal && typeof this._tokenSource !== 'function') {
          this._recovering = false;
          this._setConnection('closed', null, { error: err.message, status: err.status });
          return;
        }
        this._setConnection('reconnecting', null, { reason: err.message, attempt, force: true });
      }
    }
    this._recovering = false;
  }

  /** The WebSocket alone, with the media session untouched. */
  async _reconnectSocket() {
    this._recovering = true;
    this._setConnection('reconnecting', 'websocket', { reason: 'the WebSocket closed' });
    const started = performance.now();
    for (let attempt = 1; !this._closed && this.player; attempt += 1) {
      await sleep(backoffMs(attempt));
      // The WHEP session stays where it is (on the table's owner); the socket moves on.
      this.baseUrl = this.nodes.advance();
      try {
        await this._rejoinControl();
        this.recovery.reconnects += 1;
        this.recovery.lastMs = Math.round(performance.now() - started);
        this._recovering = false;
        this._setConnection('live', 'websocket');
        return;
      } catch {
        if (this.player?.pc.connectionState !== 'connected') break;
      }
    }
    this._recovering = false;
    if (!this._closed) this._reconnect('the WebSocket did not come back');
  }

  async _rejoinControl() {
    const ch = this.player?.channel;
    if (ch && ch.readyState === 'open') this._attach(channelTransport(ch));
    else await this._attachSocket();
    await this.ready(10_000);
  }

  // -------------------------------------------------------------------------
  // Quality
  // -------------------------------------------------------------------------

  /** Tell the node how the page shows the current session's video (`video.view`). */
  _sendView(view) {
    const session = this.player?.sessionId;
    if (!session) return;
    // On the data channel the session is implied; a WebSocket must name it. Named always.
    if (this._send({ type: 'video.view', ...view, session })) this.viewsSent += 1;
  }

  async _sample() {
    const player = this.player;
    const reconnecting = this.connection.state === 'reconnecting';
    if (!player || reconnecting) {
      this._setQuality({ ...this.quality, level: reconnecting ? 'reconnecting' : this.connection.state === 'live' ? 'good' : 'connecting', bitrate: 0, fps: 0 });
      return;
    }
    const s = await player.stats();
    if (player !== this.player) return;
    const prevFrames = this.quality.framesDecoded ?? 0;
    const hidden = this.view.hidden;
    // A hidden page gets no video (video.view); it keeps what it last knew until shown again.
    const video = hidden ? this.quality.video : s.framesDecoded > 0 && s.framesDecoded !== prevFrames;
    const bad = (!hidden && video && s.fps > 0 && s.fps < 12) || s.loss > 0.03 || (s.rtt ?? 0) > 0.35 || (!hidden && this.quality.video && !video);
    // Two samples in a row before the level changes, so the indicator does not flicker.
    if (bad) { this._poorSamples += 1; this._goodSamples = 0; } else { this._goodSamples += 1; this._poorSamples = 0; }
    let level = this.quality.level;
    if (level !== 'good' && level !== 'poor') level = bad ? 'poor' : 'good';
    else if (bad && this._poorSamples >= 2) level = 'poor';
    else if (!bad && this._goodSamples >= 2) level = 'good';
    this._setQuality({
      level,
      video,
      bitrate: s.bitrate,
      loss: s.loss,
      rtt: s.rtt,
      fps: s.fps,
      frameWidth: s.frameWidth,
      frameHeight: s.frameHeight,
      layer: layerName(s.frameHeight),
      hidden,
      framesDecoded: s.framesDecoded,
      packetsLost: s.packetsLost,
      freezeCount: s.freezeCount,
      jitterBufferMs: s.jitterBufferMs,
      transport: this._transport?.kind ?? null,
      clockRtt: this.clock.rtt,
      reveal: this.reveal.mode,
      revealReason: this.reveal.reason,
    });
  }

  _setQuality(q) {
    this.quality = q;
    this._emit('quality', q);
  }
}

/** Resolves when the peer connection's ICE is connected again; rejects after `timeoutMs`. */
function iceConnected(pc, timeoutMs) {
  const ok = () => pc.iceConnectionState === 'connected' || pc.iceConnectionState === 'completed';
  if (ok()) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const check = () => {
      if (ok()) { cleanup(); resolve(); } else if (pc.iceConnectionState === 'failed' || pc.iceConnectionState === 'closed') { cleanup(); reject(new Error(`ICE ${pc.iceConnectionState}`)); }
    };
    const cleanup = () => { clearTimeout(timer); pc.removeEventListener('iceconnectionstatechange', check); };
    const timer = setTimeout(() => { cleanup(); reject(new Error('ICE did not reconnect')); }, timeoutMs);
    pc.addEventListener('iceconnectionstatechange', check);
  });
}
