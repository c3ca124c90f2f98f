// Which frame of the dealer's camera is on screen: what `table.onFrame(event)` waits for.
//
//   round.result {media_ts: M, media_clock: C}   the frame the result belongs to (public, same bytes
//                                                for every player)
//   video.map {rtp: R, media_ts: A, media_clock: C}
//                                                private, at the start of each run of this player's
//                                                video: its frame R is the camera's frame A
//   presented frame (requestVideoFrameCallback, metadata.rtpTimestamp = r)
//        └─ the newest map with R <= r:  camera frame = A + (r - R), in clock C
//   reveal when that frame is M or later, in M's clock
//
// All timestamps are 32-bit RTP timestamps of the 90 kHz video clock, compared with wrap-around.

/** A frame at 30 frames a second, in 90 kHz ticks. */
export const FRAME_TICKS = 3000;
/**
 * How far before the named frame a frame may map and still be it: layers' clocks map to the
 * reference layer's to within a few ticks, not exactly. 5 ms, well under half a frame at any
 * frame rate a camera sends.
 */
const SAME_FRAME_TICKS = 450;
/** How long `onFrame` waits for the named frame at most, by default. */
export const FRAME_WAIT_MS = 2000;
/** Maps kept: a few runs back, for frames still in the jitter buffer across a switch. */
const MAPS_KEPT = 8;

/** `a - b` in RTP's 32-bit timestamp space, signed. */
export function rtpDiff(a, b) {
  return ((a - b) | 0);
}

/** Whether a `video.map` message is well formed. */
function isMap(msg) {
  return [msg?.rtp, msg?.media_ts, msg?.media_clock].every((v) => Number.isInteger(v) && v >= 0 && v <= 0xffffffff);
}

/** The maps of one WHEP session's video, newest last. */
export class FrameMap {
  constructor() {
    /** @type {{rtp: number, mediaTs: number, clock: number}[]} */
    this.maps = [];
  }

  /** A `video.map` from the node; ignored when malformed. */
  add(msg) {
    if (!isMap(msg)) return false;
    const map = { rtp: msg.rtp >>> 0, mediaTs: msg.media_ts >>> 0, clock: msg.media_clock >>> 0 };
    // A refined map of the same run replaces the guess.
    const last = this.maps[this.maps.length - 1];
    if (last && last.rtp === map.rtp) this.maps.pop();
    this.maps.push(map);
    if (this.maps.length > MAPS_KEPT) this.maps.shift();
    return true;
  }

  /** A new WHEP session: its timestamps are new, and so are its maps. */
  clear() {
    this.maps = [];
  }

  /** Whether any map names `clock`. */
  knows(clock) {
    return this.maps.some((m) => m.clock === clock);
  }

  /**
   * The camera frame of this session's frame `rtp`: {mediaTs, clock}, from the newest map at
   * or before it; null when no map is.
   */
  cameraFrame(rtp) {
    for (let i = this.maps.length - 1; i >= 0; i -= 1) {
      const m = this.maps[i];
      const since = rtpDiff(rtp, m.rtp);
      if (since >= 0) return { mediaTs: (m.mediaTs + since) >>> 0, clock: m.clock };
    }
    return null;
  }
}

/** The RTP timestamp of the frame a video element shows now, kept from its presented frames. */
export class Presented {
  constructor() {
    /** @type {number|null} */
    this.rtp = null;
    /** The video's presentedFrames then. */
    this.count = null;
    this._video = null;
  }

  /** Follow `video`'s presented frames (once per element). */
  watch(video) {
    if (this._video === video) return;
    this._video = video;
    this.rtp = null;
    if (!video || typeof video.requestVideoFrameCallback !== 'function') return;
    const step = (_now, meta) => {
      if (this._video !== video) return;
      this.rtp = typeof meta?.rtpTimestamp === 'number' ? meta.rtpTimestamp >>> 0 : null;
      this.count = meta?.presentedFrames ?? null;
      video.requestVideoFrameCallback(step);
    };
    video.requestVideoFrameCallback(step);
  }

  /** A new session: its timestamps are new. */
  clear() {
    this.rtp = null;
  }
}

/**
 * Resolves when the frame `event` names is on screen in `video`, or after `maxWaitMs`.
 * Resolves with {via, waitedMs, frames, rtp, mediaTs}, in the task that presented the frame:
 *  - via 'frame': that frame (or a later one, `frames` after it) was presented; `rtp` is its
 *    RTP timestamp, `mediaTs` the camera frame it is, `shownAt` when it was to be displayed
 *    (performance.now() clock), `heldMs` how long it waited on the page after it arrived, and `previousFrames` where the frame presented before it was (a browser
 *    that skips frames on screen may never present the named one);
 *    between the look before (the previous frame, or the event's arrival) and it, `unseenFrames`
 *    counts frames the browser presented while the page's main thread was busy (no callback)
 *    and `droppedFrames` those it never presented; `atArrivalFrames` is where the frame on
 *    screen was when the call came, from the named one (negative: the video was behind, as it
 *    should be; null when unknown). When the named frame
 *    was on screen already (the event came late), it resolves at once with `late` true;
 *  - via 'timeout': the frame did not come in time (video paused, layer gone, no map);
 *  - via 'arrival': the browser gives no `rtpTimestamp`, or the event or this player's
 *    video has no map: it resolved when the first frame received after the call was shown;
 *  - via 'no-video': nothing is playing.
 * @param {HTMLVideoElement|null} video
 * @param {FrameMap} maps
 * @param {{media_ts?: number, media_clock?: number}} event
 * @param {{maxWaitMs?: number, hasVideo?: boolean, jitterBufferMs?: number, presented?: Presented}} opts
 *   `hasVideo` false: the node sends no video now (a hidden page); `presented`: what the
 *   video shows now
 */
export function waitForFrame(video, maps, event, { maxWaitMs = FRAME_WAIT_MS, hasVideo = true, jitterBufferMs = 80, presented = null } = {}) {
  const since = performance.now();
  const waited = () => Math.round(performance.now() - since);
  if (!video || video.paused || video.readyState < 2 || typeof video.requestVideoFrameCallback !== 'function' || !hasVideo) {
    return Promise.resolve({ via: 'no-video', waitedMs: 0, frames: null });
  }
  const target = Number.isInteger(event?.media_ts) ? event.media_ts >>> 0 : null;
  const clock = Number.isInteger(event?.media_clock) ? event.media_clock >>> 0 : null;
  // Where the video is as the event comes.
  const now = target !== null && presented?.rtp != null ? maps.cameraFrame(presented.rtp) : null;
  const atArrival = now && now.clock === clock ? rtpDiff(now.mediaTs, target) : null;
  if (atArrival !== null && atArrival >= -SAME_FRAME_TICKS) {
    return Promise.resolve({
      via: 'frame', waitedMs: 0, frames: Math.max(0, Math.round(atArrival / FRAME_TICKS)), rtp: presented.rtp,
      mediaTs: now.mediaTs, heldMs: null, previousFrames: null, atArrivalFrames: atArrival / FRAME_TICKS, late: true,
    });
  }
  return new Promise((resolve) => {
    let done = false;
    // The frame presented before the one revealed on, in frames from the target (negative).
    let previous = null;
    // The last look at the video (the event's arrival, then each callback): its frame and the
    // video's presentedFrames. Between two looks the video moved on `advanced` frames, of which
    // the browser presented some while this page's main thread was busy (no callback: unseen)
    // and never presented the others (dropped).
    let last = presented?.rtp != null ? { rtp: presented.rtp, count: presented.count } : null;
    let unseen = null;
    let dropped = null;
    const finish = (via, frames = null, rtp = null, mediaTs = null, meta = null) => {
      if (done) return;
      done = true;
      clearTimeout(cap);
      // How long the frame was held between its arrival and the screen, when the browser says.
      const heldMs = typeof meta?.receiveTime === 'number' ? Math.round(meta.presentationTime - meta.receiveTime) : null;
      resolve({
        // When the browser showed (or meant to show) the frame, on the performance clock.
        shownAt: typeof meta?.expectedDisplayTime === 'number' ? meta.expectedDisplayTime : null,
        via, waitedMs: waited(), frames, rtp, mediaTs, heldMs, previousFrames: previous, unseenFrames: unseen,
        droppedFrames: dropped, atArrivalFrames: atArrival === null ? null : atArrival / FRAME_TICKS, late: false,
      });
    };
    const cap = setTimeout(() => finish('timeout'), maxWaitMs);
    const step = (now, meta) => {
      if (done) return;
      const rtp = meta?.rtpTimestamp;
      const count = meta?.presentedFrames;
      if (typeof rtp === 'number' && typeof count === 'number') {
        if (last?.count != null) {
          const advanced = Math.max(0, Math.round(rtpDiff(rtp >>> 0, last.rtp) / FRAME_TICKS));
          const shownSince = count - last.count;
          unseen = Math.max(0, shownSince - 1);
          dropped = Math.max(0, advanced - shownSince);
        }
        last = { rtp: rtp >>> 0, count };
      }
      if (typeof rtp !== 'number' || target === null || clock === null || maps.maps.length === 0) {
        // Today's behaviour: the first frame received after the event came.
        if (typeof meta?.receiveTime === 'number') {
          if (meta.receiveTime >= since) finish('arrival');
          else video.requestVideoFrameCallback(step);
          return;
        }
        const wait = jitterBufferMs - (now - since);
        if (wait <= 0) finish('arrival'); else setTimeout(() => finish('arrival'), wait);
        return;
      }
      const shown = maps.cameraFrame(rtp >>> 0);
      if (shown && shown.clock === clock) {
        const after = rtpDiff(shown.mediaTs, target);
        if (after >= -SAME_FRAME_TICKS) {
          finish('frame', Math.max(0, Math.round(after / FRAME_TICKS)), rtp >>> 0, shown.mediaTs, meta);
          return;
        }
        previous = after / FRAME_TICKS;
      }
      video.requestVideoFrameCallback(step);
    };
    video.requestVideoFrameCallback(step);
  });
}
