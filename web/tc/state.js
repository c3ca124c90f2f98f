// The table as the page sees it: built from a `welcome` snapshot, then moved on
// by each public event. Plain data in camelCase, no I/O:
//
//   idle ──round.opened──▶ betting_open ──betting.closed──▶ betting_closed
//     ▲                        │                               │ round.result
//     └──── round.voided ──────┴──────── round.settled ◀───────┘

/**
 * @typedef {object} TableState
 * @property {string} id
 * @property {string} name
 * @property {string} currency ISO 4217
 * @property {number} exponent digits of the minor unit
 * @property {Array<object>} spots the snapshot's spots (id, odds, min_bet, max_bet, ...)
 * @property {'idle'|'betting_open'|'betting_closed'} state
 * @property {number|null} round the round in progress
 * @property {number|null} openedAt server ms
 * @property {number|null} closesAt server ms betting closes (or closed)
 * @property {object|null} totals the latest `totals` of the round
 * @property {{round: number, outcome: string[], at: number}|null} result
 * @property {object|null} lastRound how the previous round ended
 * @property {number|null} nextRoundAt server ms auto-open opens the next round
 */

/** The state of a `welcome` snapshot. */
export function tableFromSnapshot(s, fallbackId) {
  const t = s.table ?? {};
  const table = {
    id: t.id ?? fallbackId,
    name: t.name || t.id || fallbackId,
    currency: t.currency ?? 'EUR',
    exponent: t.currency_exponent ?? 2,
    spots: t.spots ?? [],
    bettingWindowSecs: t.betting_window_secs ?? null,
    autoOpenPauseSecs: t.auto_open_pause_secs ?? null,
    state: s.state,
    round: s.round ?? null,
    openedAt: null,
    closesAt: s.closes_at_server_ms ?? null,
    totals: s.totals ?? null,
    result: null,
    lastRound: s.last_round ?? null,
    nextRoundAt: s.next_round_at_server_ms ?? null,
  };
  if (table.state === 'betting_open' && table.closesAt && table.bettingWindowSecs) {
    table.openedAt = table.closesAt - table.bettingWindowSecs * 1000;
  }
  return table;
}

/** Move `t` on by one public event (in place). */
export function applyEvent(t, ev) {
  switch (ev.type) {
    case 'round.opened':
      Object.assign(t, {
        state: 'betting_open', round: ev.round, openedAt: ev.server_ms, closesAt: ev.closes_at_server_ms,
        totals: emptyTotals(ev.round, t.spots), result: null, nextRoundAt: null,
      });
      break;
    case 'totals':
      if (ev.round === t.round) t.totals = ev;
      break;
    case 'betting.closed':
      if (ev.round === t.round) Object.assign(t, { state: 'betting_closed', closesAt: ev.server_ms });
      break;
    case 'round.result':
      t.result = { round: ev.round, outcome: outcomeList(ev.outcome), at: ev.server_ms };
      break;
    case 'round.settled':
      Object.assign(t, {
        state: 'idle', round: null, closesAt: null,
        lastRound: { status: 'settled', round: ev.round, outcome: t.result?.round === ev.round ? t.result.outcome : [] },
        nextRoundAt: t.autoOpenPauseSecs ? ev.server_ms + t.autoOpenPauseSecs * 1000 : null,
      });
      break;
    case 'round.voided':
      Object.assign(t, {
        state: 'idle', round: null, closesAt: null, result: null,
        lastRound: { status: 'voided', round: ev.round, reason: ev.reason },
        nextRoundAt: t.autoOpenPauseSecs ? ev.server_ms + t.autoOpenPauseSecs * 1000 : null,
      });
      break;
    default:
      break;
  }
}

/** A `totals` with every spot at zero, for a round that just opened. */
function emptyTotals(round, spots) {
  const out = { round, spots: {}, bettors: 0, final: false };
  for (const s of spots) out.spots[s.id] = { amount: 0, bettors: 0 };
  return out;
}

/** `round.result.outcome` is one spot or a list of them; always a list here. */
export function outcomeList(outcome) {
  if (Array.isArray(outcome)) return outcome;
  return outcome === undefined || outcome === null ? [] : [outcome];
}
