// How the page shows the dealer's video, told to the node (`video.view`,
// docs/protocol.md) so it sends the simulcast layer the player needs:
//
//   the video element's rendered size ─┐  (ResizeObserver, × devicePixelRatio)
//   the page's visibility ─────────────┼─▶ debounced 200 ms ─▶ video.view ─▶ the node
//   the player's quality preference ───┘        ▲
//                                               └── and again every 5 s, and after every
//                                                   welcome/resumed (a lost one is healed)
//
// A hidden page gets no video from the node until it is shown again; the
// element keeps its last frame meanwhile, and the node starts again from a
// keyframe.

/** The quality preferences a player may choose. */
export const QUALITIES = ['auto', 'high', 'low'];
/** How long the view must stay still before it is sent. */
export const VIEW_DEBOUNCE_MS = 200;
/** How often the view is sent again when nothing changed. */
export const VIEW_KEEPALIVE_MS = 5000;

/**
 * Watches a video element and the page, and calls `send(view)` with
 * `{width, height, hidden, quality}` when they change (debounced), every
 * `keepaliveMs`, and on `flush()`.
 */
export class ViewReporter {
  /**
   * @param {(view: {width: number, height: number, hidden: boolean, quality: string}) => void} send
   * @param {{quality?: string, debounceMs?: number, keepaliveMs?: number}} [opts]
   */
  constructor(send, { quality = 'auto', debounceMs = VIEW_DEBOUNCE_MS, keepaliveMs = VIEW_KEEPALIVE_MS } = {}) {
    this._sendView = send;
    this.quality = checkQuality(quality);
    this.debounceMs = debounceMs;
    this.keepaliveMs = keepaliveMs;
    this._video = null;
    this._debounce = null;
    this._keepalive = null;
    this._stopped = false;
    this._observer = typeof ResizeObserver === 'function' ? new ResizeObserver(() => this.changed()) : null;
    this._onChange = () => this.changed();
    globalThis.document?.addEventListener?.('visibilitychange', this._onChange);
    // devicePixelRatio changes with the page zoom and when the window moves to another screen.
    globalThis.addEventListener?.('resize', this._onChange);
    this._schedule();
  }

  /** Watch another video element (or none). */
  watch(video) {
    if (this._video) this._observer?.unobserve(this._video);
    this._video = video ?? null;
    if (this._video) this._observer?.observe(this._video);
    this.changed();
  }

  /** The view as of now. */
  get view() {
    const v = this._video;
    const ratio = globalThis.devicePixelRatio || 1;
    return {
      width: v ? Math.round((v.clientWidth || 0) * ratio) : 0,
      height: v ? Math.round((v.clientHeight || 0) * ratio) : 0,
      hidden: globalThis.document?.visibilityState === 'hidden',
      quality: this.quality,
    };
  }

  /** Set the player's preference; sent at once. */
  setQuality(quality) {
    this.quality = checkQuality(quality);
    this.flush();
  }

  /** Something may have changed: send once it has been still for `debounceMs`. */
  changed() {
    if (this._stopped) return;
    clearTimeout(this._debounce);
    this._debounce = setTimeout(() => this.flush(), this.debounceMs);
  }

  /** Send the view now (and the next keepalive `keepaliveMs` from now). */
  flush() {
    if (this._stopped) return;
    clearTimeout(this._debounce);
    this._debounce = null;
    this._sendView(this.view);
    this._schedule();
  }

  stop() {
    this._stopped = true;
    clearTimeout(this._debounce);
    clearTimeout(this._keepalive);
    this._observer?.disconnect();
    globalThis.document?.removeEventListener?.('visibilitychange', this._onChange);
    globalThis.removeEventListener?.('resize', this._onChange);
  }

  _schedule() {
    clearTimeout(this._keepalive);
    this._keepalive = setTimeout(() => this.flush(), this.keepaliveMs);
  }
}

/** `quality` when it is one of QUALITIES; throws a TypeError otherwise. */
export function checkQuality(quality) {
  if (!QUALITIES.includes(quality)) {
    throw new TypeError(`tablecast: quality must be one of ${QUALITIES.join(', ')}, not ${JSON.stringify(quality)}`);
  }
  return quality;
}

/** A layer's name from its frame height: '720p', '360p', '180p'; null before any frame. */
export function layerName(frameHeight) {
  return frameHeight > 0 ? `${frameHeight}p` : null;
}
