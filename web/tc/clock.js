// Server time from ping/pong. No client clock is trusted (docs/protocol.md): the
// client measures its offset from the node's clock and shows countdowns by
// server time.
//
// Each pong gives one sample: rtt = now - client_ms and
// offset = server_ms - (client_ms + now) / 2, good to within rtt / 2. The
// estimate is the sample with the smallest rtt among the recent ones (the one
// least skewed by queueing), as NTP does.

/** A monotonic clock near the wall clock, in fractional milliseconds since the Unix epoch. */
export function clientNow() {
  return performance.timeOrigin + performance.now();
}

/** How many recent samples the estimate picks from. */
const WINDOW = 12;

export class ServerClock {
  constructor() {
    /** @type {{offset: number, rtt: number, at: number}[]} */
    this.samples = [];
    /** Server time minus client time, ms (0 until the first pong). */
    this.offset = 0;
    /** Round trip of the chosen sample, ms (null until the first pong). */
    this.rtt = null;
  }

  /** True once at least one pong arrived. */
  get synced() {
    return this.samples.length > 0;
  }

  /** A `ping` to send now. */
  ping() {
    return { type: 'ping', client_ms: Math.round(clientNow()) };
  }

  /** Take a `pong`; returns false when it is implausible and was ignored. */
  pong({ client_ms: sent, server_ms: server }) {
    const now = clientNow();
    const rtt = now - sent;
    if (!Number.isFinite(rtt) || !Number.isFinite(server) || rtt < 0 || rtt > 30_000) return false;
    this.samples.push({ offset: server - (sent + now) / 2, rtt, at: now });
    if (this.samples.length > WINDOW) this.samples.shift();
    const best = this.samples.reduce((a, b) => (b.rtt < a.rtt ? b : a));
    this.offset = best.offset;
    this.rtt = best.rtt;
    return true;
  }

  /** The server's time now, ms since the Unix epoch (fractional). */
  now() {
    return clientNow() + this.offset;
  }
}
