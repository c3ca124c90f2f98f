// A console's control connection: the protocol over a WebSocket at /ws/{table},
// with a dealer or operator token, for the dealer and operator pages. It
// reconnects by itself and resumes from its last seq, like a player.
import { backoffMs, sleep } from './backoff.js';
import { ControlSession } from './control.js';
import { openSocket } from './transport.js';
import { wsUrl } from './http.js';
import { NodeRing } from './nodes.js';

/**
 * Connect a console to a table. Resolves once the table said `welcome`.
 *
 * @param {object} opts
 * @param {string} opts.table
 * @param {string|(() => Promise<string>)} opts.token dealer or operator token, or a function that gets a fresh one
 * @param {string} [opts.baseUrl=''] node origin; '' means this page's origin
 * @param {string[]} [opts.nodes] node origins to use in turn when reconnecting (default: `[baseUrl]`)
 * @returns {Promise<TableConsole>}
 */
export async function openConsole(opts) {
  const c = new TableConsole(opts);
  await c.start();
  return c;
}

export class TableConsole extends ControlSession {
  constructor({ table, token, baseUrl = '', nodes, ...rest }) {
    super({ table, ...rest });
    /** The nodes to use in turn; `baseUrl` is the one in use. */
    this.nodes = new NodeRing(nodes, baseUrl);
    this.baseUrl = this.nodes.current;
    this._tokenSource = token;
    this._closed = false;
    this._reconnecting = false;
    /** How many times the console came back after losing its connection. */
    this.reconnects = 0;
  }

  async start() {
    this._setConnection('connecting', 'websocket');
    this._starting = true;
    try {
      await this._connectOnce();
    } catch (err) {
      this._setConnection('closed', null, { error: err.message });
      throw err;
    } finally {
      this._starting = false;
    }
    this._setConnection('live', 'websocket');
  }

  /** Open the betting of a new round. Resolves with {round}. */
  openRound() {
    return this.command('dealer.open');
  }

  /** Close betting before the deadline. */
  closeBetting() {
    return this.command('dealer.close');
  }

  /**
   * Enter the result: the winning spot, or a list of winning spots.
   * `mediaTs` is the RTP timestamp of the dealer's video at that moment, when known; without
   * it the node names the newest frame of the dealer's video it has received.
   */
  result(outcome, mediaTs) {
    const fields = { outcome };
    if (Number.isInteger(mediaTs)) fields.media_ts = mediaTs;
    return this.command('dealer.result', fields);
  }

  /** Void the round in progress; every bet is refunded. */
  voidRound(reason) {
    return this.command('dealer.void', reason ? { reason } : {});
  }

  /** Mute or unmute a player's chat (operator token). */
  mute(user, muted = true) {
    return this.command('operator.mute', { user, muted });
  }

  close() {
    this._closed = true;
    const t = this._transport;
    this._shutdown();
    t?.close();
    this._setConnection('closed', null);
  }

  async _connectOnce() {
    const token = typeof this._tokenSource === 'function' ? await this._tokenSource() : this._tokenSource;
    this._setToken(token);
    const transport = await openSocket(wsUrl(this.baseUrl, `/ws/${encodeURIComponent(this.tableId)}`));
    if (this._closed) {
      transport.close();
      return;
    }
    this._attach(transport);
    try {
      await this.ready(10_000);
    } catch (err) {
      transport.close();
      const why = transport.closeInfo?.reason;
      throw why ? new Error(why) : err;
    }
  }

  _transportClosed(transport) {
    if (this._closed || this._reconnecting || this._starting) return;
    const reason = transport.closeInfo?.reason ?? '';
    // A refused token does not get better by trying again, unless we can fetch a new one.
    if (/hello refused/.test(reason) && typeof this._tokenSource !== 'function') {
      this._setConnection('closed', null, { error: reason });
      return;
    }
    this._reconnect();
  }

  async _reconnect() {
    this._reconnecting = true;
    this._setConnection('reconnecting', 'websocket');
    for (let attempt = 1; !this._closed; attempt += 1) {
      await sleep(backoffMs(attempt));
      if (this._closed) break;
      // Each attempt on the next node: the one just lost may be stopping or gone.
      this.baseUrl = this.nodes.advance();
      try {
        await this._connectOnce();
        this.reconnects += 1;
        this._reconnecting = false;
        this._setConnection('live', 'websocket');
        return;
      } catch {
        this._setConnection('reconnecting', 'websocket', { attempt, force: true });
      }
    }
    this._reconnecting = false;
  }
}
