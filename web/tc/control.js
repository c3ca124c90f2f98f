// The control protocol (docs/protocol.md) as events and promises, whatever
// carries it: the `control` data channel of a WHEP session, or a WebSocket at
// /ws/{table}. A ControlSession outlives its connections: subclasses attach a
// transport, and after a reconnect the session says `hello` with
// `resume_after_seq`, so the page sees every public event once, in order.
//
// What the page gets:
// - every public event in seq order, with no gap and no duplicate: 'event'
//   (any type) and one event per type ('round.opened', 'totals', ...);
//   `seqLog` is the list of seqs delivered;
// - 'snapshot' when the table state is (re)built from a `welcome`;
// - 'table' whenever the derived table state (`table`) changes;
// - 'bet' whenever one of the player's own bets changes (pending, accepted,
//   rejected, cancelled, then its result); 'payout' once per round;
// - 'connection' ({state: 'connecting'|'live'|'reconnecting'|'closed', transport});
// - 'error' for `error` messages that answer no command of ours.
import { ServerClock } from './clock.js';
import { newId, tokenClaims } from './http.js';
import { applyEvent, tableFromSnapshot } from './state.js';

/** A bet the table refused; `code` is the protocol's (`betting_closed`, `below_min`, ...) or `timeout`. */
export class BetRejectedError extends Error {
  constructor(bet, code, message) {
    super(message || code);
    this.name = 'BetRejectedError';
    this.code = code;
    this.bet = bet;
  }
}

/** A command (dealer action, chat, cancel) the table refused, or that got no answer. */
export class CommandError extends Error {
  constructor(id, code, message) {
    super(message || code);
    this.name = 'CommandError';
    this.id = id;
    this.code = code;
  }
}

/** Pings: a quick burst to learn the clock, then a steady pace to follow drift. */
const PING_BURST = 5;
const PING_BURST_MS = 700;
const PING_STEADY_MS = 5000;
/** How long a resync `hello` may go unanswered before the next gap may send another. */
const RESYNC_RETRY_MS = 5000;
/** Bets remembered for the page (older ones are dropped). */
const MAX_BETS = 500;
const MAX_SEQ_LOG = 20_000;

export class ControlSession extends EventTarget {
  /**
   * @param {object} opts
   * @param {string} opts.table table id
   * @param {number} [opts.betTimeoutMs=15000] a bet with no answer by then rejects with code 'timeout'
   * @param {number} [opts.commandTimeoutMs=10000]
   */
  constructor({ table, betTimeoutMs = 15_000, commandTimeoutMs = 10_000 }) {
    super();
    if (!table) throw new TypeError('tablecast: table is required');
    this.tableId = table;
    this.betTimeoutMs = betTimeoutMs;
    this.commandTimeoutMs = commandTimeoutMs;
    /** Server time from ping/pong: `clock.now()`. */
    this.clock = new ServerClock();
    /** The seq of the last public event delivered (0: none yet). */
    this.lastSeq = 0;
    /** Every seq delivered to the page, in order (the newest 20000). */
    this.seqLog = [];
    /** Counters for diagnostics and tests. */
    this.counters = { duplicates: 0, gaps: 0, resyncs: 0, welcomes: 0, resumes: 0, badMessages: 0 };
    /** The last `welcome` snapshot, as sent. */
    this.snapshot = null;
    /** The live table state (camelCase), rebuilt from the snapshot and every event; null before `welcome`. */
    this.table = null;
    /** @type {Map<string, Bet>} this player's bets by id, oldest first */
    this.bets = new Map();
    /** The newest public chat messages (at most 100). */
    this.chatLog = [];
    /** Connection state and its history (the newest 100 changes). */
    this.connection = { state: 'connecting', transport: null, since: performance.now() };
    this.connectionLog = [];
    /** Who the token says we are (`sub`), when it is a JWT. */
    this.user = null;
    this.role = null;

    this._token = '';
    this._transport = null;
    this._welcomed = false;
    this._everWelcomed = false;
    this._resyncing = false;
    this._resyncTimer = null;
    this._pings = 0;
    this._pingTimer = null;
    this._pending = new Map();
    this._payouts = new Set();
    this._readyWaiters = [];
  }

  // -------------------------------------------------------------------------
  // Events
  // -------------------------------------------------------------------------

  /** Subscribe to an event; `fn(detail)`. Returns a function that unsubscribes. */
  on(type, fn) {
    const listener = (ev) => fn(ev.detail, ev);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  /** Like on(), once. */
  once(type, fn) {
    const off = this.on(type, (d, ev) => { off(); fn(d, ev); });
    return off;
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  // -------------------------------------------------------------------------
  // Time
  // -------------------------------------------------------------------------

  /** The server's time now (ms since the Unix epoch), from the measured clock offset. */
  serverNow() {
    return this.clock.now();
  }

  /** Milliseconds until betting closes by server time (0 when betting is not open). */
  timeLeft() {
    const t = this.table;
    if (!t || t.state !== 'betting_open' || !t.closesAt) return 0;
    return Math.max(0, t.closesAt - this.clock.now());
  }

  // -------------------------------------------------------------------------
  // Commands
  // -------------------------------------------------------------------------

  /**
   * Place a bet. Resolves with the bet once the table accepted it (it is then in
   * the durable log); rejects with a BetRejectedError otherwise. The bet shows up
   * at once in `bets` and in a 'bet' event with status 'pending', so a page can
   * draw it before the answer. A bet sent while the connection is down goes out
   * when it is back; a bet whose answer was lost is sent again with the same id,
   * which the table answers without counting it twice.
   *
   * @param {{spot: string, amount: number, round?: number, id?: string}} bet amount in minor units
   * @returns {Promise<Bet>}
   */
  placeBet({ spot, amount, round = this.table?.round, id = newId('b') }) {
    const bet = { id, round: round ?? null, spot, amount, status: 'pending', code: null, message: null, result: null, paid: null, placedAt: performance.now() };
    if (!Number.isInteger(round)) {
      // A bet names its round; with none known there is nothing the table could accept.
      Object.assign(bet, { status: 'rejected', code: 'round_not_open', message: 'no round is taking bets' });
      return Promise.reject(new BetRejectedError(bet, bet.code, bet.message));
    }
    this.bets.set(id, bet);
    this._trimBets();
    this._emit('bet', bet);
    const promise = this._expect(id, this.betTimeoutMs, 'bet', () => {
      if (bet.status === 'pending') this._setBet(bet, { status: 'unanswered', code: 'timeout', message: 'no answer from the table' });
      return new BetRejectedError(bet, 'timeout', 'no answer from the table');
    });
    this._sendBet(bet);
    return promise;
  }

  /** Withdraw one of your accepted bets while betting is open; resolves with the bet. */
  cancelBet(id) {
    const promise = this._expect(`cancel:${id}`, this.commandTimeoutMs, 'cancel');
    this._send({ type: 'bet.cancel', id });
    return promise;
  }

  /** Post a chat message; resolves when it comes back as the table's `chat` event. */
  chat(text) {
    const id = newId('m');
    const promise = this._expect(id, this.commandTimeoutMs, 'chat');
    if (!this._send({ type: 'chat', id, text })) {
      this._settle(id, new CommandError(id, 'not_connected', 'not connected to the table; try again in a moment'));
    }
    return promise;
  }

  /**
   * Send a dealer or operator command (`dealer.open`, `dealer.close`,
   * `dealer.result`, `dealer.void`, `operator.mute`); resolves with the `ok`
   * reply ({id, round}), rejects with a CommandError (e.g. code 'wrong_state').
   */
  command(type, fields = {}) {
    const id = newId('c');
    const promise = this._expect(id, this.commandTimeoutMs, 'command');
    if (!this._send({ ...fields, type, id })) {
      this._settle(id, new CommandError(id, 'not_connected', 'not connected to the table; try again in a moment'));
    }
    return promise;
  }

  // -------------------------------------------------------------------------
  // Transports (for subclasses)
  // -------------------------------------------------------------------------

  /** True when a transport is attached and the table has said welcome on it. */
  get attached() {
    return Boolean(this._transport?.open && this._welcomed);
  }

  /** Resolves at the next `welcome` or `resumed` (at once when attached). */
  ready(timeoutMs = 15_000) {
    if (this.attached) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      waiter.timer = setTimeout(() => {
        this._readyWaiters = this._readyWaiters.filter((w) => w !== waiter);
        reject(new Error('tablecast: no welcome from the table'));
      }, timeoutMs);
      this._readyWaiters.push(waiter);
    });
  }

  _setToken(token) {
    this._token = token;
    const claims = tokenClaims(token);
    this.user = claims?.sub ?? this.user;
    this.role = claims?.role ?? this.role;
  }

  /**
   * Start speaking the protocol on `transport` ({kind, open, send(text), close()},
   * whose owner calls `transport.onmessage(text)` and `transport.onclose()`).
   */
  _attach(transport) {
    this._detach();
    this._transport = transport;
    this._welcomed = false;
    transport.onmessage = (text) => { if (this._transport === transport) this._onText(text); };
    transport.onclose = () => {
      if (this._transport !== transport) return;
      this._detach();
      this._transportClosed(transport);
    };
    this._hello();
  }

  /** Called when the attached transport closed by itself; subclasses reconnect. */
  _transportClosed(_transport) {}

  /** Stop using the current transport (the caller closes it). */
  _detach() {
    const had = this._transport;
    this._transport = null;
    this._welcomed = false;
    this._resyncing = false;
    clearTimeout(this._resyncTimer);
    clearTimeout(this._pingTimer);
    this._pingTimer = null;
    if (had) {
      const waiters = this._readyWaiters;
      this._readyWaiters = [];
      for (const w of waiters) { clearTimeout(w.timer); w.reject(new Error('tablecast: the connection closed before the welcome')); }
      // Commands are not idempotent: tell the caller rather than send them twice. Bets are, and wait.
      for (const [id, p] of this._pending) {
        if (p.kind === 'command' || p.kind === 'chat') this._settle(id, new CommandError(id, 'connection_lost', 'the connection to the table was lost; check the table and try again'));
      }
    }
  }

  _hello() {
    const msg = { type: 'hello', token: this._transport?.kind === 'datachannel' ? '' : this._token };
    if (this._everWelcomed) msg.resume_after_seq = this.lastSeq;
    this._send(msg, true);
  }

  /** Send a message if a transport is open (before `welcome` only `hello` and `ping` go). */
  _send(msg, early = false) {
    const t = this._transport;
    if (!t || !t.open || (!early && !this._welcomed)) return false;
    try {
      t.send(JSON.stringify(msg));
      return true;
    } catch {
      return false;
    }
  }

  _setConnection(state, transport = this.connection.transport, extra = {}) {
    if (this.connection.state === state && this.connection.transport === transport && !extra.force) return;
    this.connection = { state, transport, since: performance.now(), ...extra };
    delete this.connection.force;
    this.connectionLog.push({ state, transport, at: performance.now(), wall: Date.now() });
    if (this.connectionLog.length > 100) this.connectionLog.shift();
    this._emit('connection', this.connection);
  }

  // -------------------------------------------------------------------------
  // Incoming
  // -------------------------------------------------------------------------

  _onText(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      msg = null;
    }
    if (!msg || typeof msg !== 'object' || typeof msg.type !== 'string') {
      this.counters.badMessages += 1;
      return;
    }
    this._emit('message', msg);
    switch (msg.type) {
      case 'welcome': this._onWelcome(msg); break;
      case 'resumed': this._onResumed(msg); break;
      case 'pong': this.clock.pong(msg); this._emit('clock', this.clock); break;
      case 'bet.accepted': this._onBetReply(msg, 'accepted'); break;
      case 'bet.rejected': this._onBetReply(msg, 'rejected'); break;
      case 'bet.cancelled': this._onBetCancelled(msg); break;
      case 'payout': this._onPayout(msg); break;
      case 'ok': this._settle(msg.id, null, msg); break;
      case 'error': this._onError(msg); break;
      case 'video.map': this._emit('video.map', msg); break;
      default:
        // Public table events carry seq (`welcome` does too, so it is matched first).
        if (typeof msg.seq === 'number') this._onEvent(msg);
        break;
    }
  }

  _onWelcome(msg) {
    const reset = this._everWelcomed;
    this.counters.welcomes += 1;
    this.snapshot = msg.snapshot;
    this.lastSeq = msg.seq;
    this.table = tableFromSnapshot(msg.snapshot, this.tableId);
    this._emit('snapshot', { snapshot: msg.snapshot, reset });
    this._emit('table', this.table);
    this._joined();
  }

  _onResumed(msg) {
    this.counters.resumes += 1;
    this._joined();
    this._emit('resumed', msg);
  }

  /** After `welcome` or `resumed`: the transport is usable. */
  _joined() {
    this._welcomed = true;
    this._everWelcomed = true;
    this._resyncing = false;
    clearTimeout(this._resyncTimer);
    if (!this._pingTimer) {
      this._pings = 0;
      this._ping();
    }
    for (const bet of this.bets.values()) {
      if (bet.status === 'pending') this._sendBet(bet);
    }
    const waiters = this._readyWaiters;
    this._readyWaiters = [];
    for (const w of waiters) {
      clearTimeout(w.timer);
      w.resolve();
    }
    this._emit('joined', { transport: this._transport?.kind ?? null });
  }

  _ping() {
    this._send(this.clock.ping(), true);
    this._pings += 1;
    this._pingTimer = setTimeout(() => this._ping(), this._pings < PING_BURST ? PING_BURST_MS : PING_STEADY_MS);
  }

  _onEvent(ev) {
    if (!this._welcomed && !this._resyncing) return;
    if (ev.seq <= this.lastSeq) {
      this.counters.duplicates += 1;
      return;
    }
    if (ev.seq !== this.lastSeq + 1) {
      // A message the node had to drop: ask again from our last seq on this connection.
      this.counters.gaps += 1;
      this._resync();
      return;
    }
    this.lastSeq = ev.seq;
    this.seqLog.push(ev.seq);
    if (this.seqLog.length > MAX_SEQ_LOG) this.seqLog.splice(0, this.seqLog.length - MAX_SEQ_LOG);
    if (this.table) applyEvent(this.table, ev);
    if (ev.type === 'chat') {
      this.chatLog.push(ev);
      if (this.chatLog.length > 100) this.chatLog.shift();
      this._settle(ev.id, null, ev);
    }
    this._emit('event', ev);
    this._emit(ev.type, ev);
    this._emit('table', this.table);
  }

  _resync() {
    if (this._resyncing) return;
    this._resyncing = true;
    this.counters.resyncs += 1;
    this._hello();
    this._resyncTimer = setTimeout(() => { this._resyncing = false; }, RESYNC_RETRY_MS);
  }

  _onBetReply(msg, status) {
    let bet = this.bets.get(msg.id);
    if (!bet) {
      // An answer remembered by the table for a bet this page no longer knows (re-sent on resume).
      if (status !== 'accepted') return;
      bet = { id: msg.id, round: msg.round, spot: msg.spot, amount: msg.amount, status: 'pending', code: null, message: null, result: null, paid: null, placedAt: performance.now() };
      this.bets.set(msg.id, bet);
    }
    if (bet.status === status || bet.status === 'cancelled') {
      this._settle(msg.id, null, bet); // a repeat: nothing changes
      return;
    }
    if (status === 'accepted') {
      this._setBet(bet, { status, round: msg.round ?? bet.round, spot: msg.spot ?? bet.spot, amount: msg.amount ?? bet.amount, code: null, message: null });
      this._settle(msg.id, null, bet);
    } else {
      this._setBet(bet, { status, code: msg.code, message: msg.message });
      this._settle(msg.id, new BetRejectedError(bet, msg.code, msg.message));
    }
  }

  _onBetCancelled(msg) {
    const bet = this.bets.get(msg.id);
    if (bet && bet.status !== 'cancelled') this._setBet(bet, { status: 'cancelled' });
    this._settle(`cancel:${msg.id}`, null, bet ?? msg);
    // A bet.place repeated after its cancellation is answered with bet.cancelled too.
    this._settle(msg.id, bet ? new BetRejectedError(bet, 'cancelled', 'the bet was cancelled') : null, msg);
  }

  _onPayout(msg) {
    const key = `${msg.round}:${msg.reason}`;
    if (this._payouts.has(key)) return;
    this._payouts.add(key);
    for (const line of msg.bets ?? []) {
      const bet = this.bets.get(line.id);
      if (bet) this._setBet(bet, { result: line.result, paid: line.paid });
    }
    this._emit('payout', msg);
  }

  _onError(msg) {
    const id = msg.id;
    if (id && this.bets.get(id)?.status === 'pending') {
      const bet = this.bets.get(id);
      this._setBet(bet, { status: 'rejected', code: msg.code, message: msg.message });
      this._settle(id, new BetRejectedError(bet, msg.code, msg.message));
      return;
    }
    if (id && this._pending.has(`cancel:${id}`)) {
      this._settle(`cancel:${id}`, new CommandError(id, msg.code, msg.message));
      return;
    }
    if (id && this._pending.has(id)) {
      this._settle(id, new CommandError(id, msg.code, msg.message));
      return;
    }
    this._emit('error', msg);
  }

  // -------------------------------------------------------------------------
  // Pending answers
  // -------------------------------------------------------------------------

  _expect(key, timeoutMs, kind, onTimeout) {
    const old = this._pending.get(key);
    if (old) return old.promise;
    let entry;
    const promise = new Promise((resolve, reject) => {
      entry = { resolve, reject, kind };
      entry.timer = setTimeout(() => {
        const err = onTimeout ? onTimeout() : new CommandError(key, 'timeout', 'no answer from the table');
        this._settle(key, err);
      }, timeoutMs);
    });
    entry.promise = promise;
    this._pending.set(key, entry);
    return promise;
  }

  _settle(key, err, value) {
    const p = key !== undefined && key !== null ? this._pending.get(key) : null;
    if (!p) return;
    this._pending.delete(key);
    clearTimeout(p.timer);
    if (err) p.reject(err); else p.resolve(value);
  }

  _sendBet(bet) {
    this._send({ type: 'bet.place', id: bet.id, round: bet.round, spot: bet.spot, amount: bet.amount });
  }

  _setBet(bet, fields) {
    Object.assign(bet, fields);
    this._emit('bet', bet);
  }

  _trimBets() {
    while (this.bets.size > MAX_BETS) this.bets.delete(this.bets.keys().next().value);
  }

  /** Stop pings and timers; subclasses close their transports. */
  _shutdown() {
    this._detach();
    for (const [id] of this._pending) this._settle(id, new CommandError(id, 'closed', 'the table client was closed'));
    for (const w of this._readyWaiters) { clearTimeout(w.timer); w.reject(new Error('tablecast: closed')); }
    this._readyWaiters = [];
  }
}

/**
 * @typedef {object} Bet
 * @property {string} id the idempotency key
 * @property {number|null} round
 * @property {string} spot
 * @property {number} amount minor units
 * @property {'pending'|'accepted'|'rejected'|'cancelled'|'unanswered'} status
 * @property {string|null} code why it was rejected
 * @property {string|null} message
 * @property {'won'|'lost'|'push'|'refunded'|null} result once the round is settled or voided
 * @property {number|null} paid what came back, stake included
 */
