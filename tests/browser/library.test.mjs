// The protocol half of tablecast.js, in Chromium against scripted transports:
// what the page sees when the node repeats, skips or replays events, answers
// bets twice, or pays twice; the clock; the Prometheus reader. No real node:
// the fake node only serves web/.
import assert from 'node:assert/strict';
import { createWriteStream } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { captureConsole, launchChromium } from './lib/chromium.mjs';
import { startNode } from './lib/node.mjs';
import { BROWSER_TESTS_DIR, artifact } from './lib/paths.mjs';

const FAKE_NODE = path.join(BROWSER_TESTS_DIR, 'fixtures', 'fake-node.mjs');
const FAKE_CONFIG = path.join(BROWSER_TESTS_DIR, 'package.json');

/**
 * In the page: a ControlSession on a scripted transport. `t.sent` holds what the client sent,
 * `t.deliver(msg)` plays a message from the node.
 */
const SETUP = `
  const { ControlSession } = await import('/web/tc/control.js');
  const session = new ControlSession({ table: 'demo', betTimeoutMs: 2000 });
  const transport = (kind = 'datachannel') => {
    const t = { kind, open: true, sent: [], send(text) { t.sent.push(JSON.parse(text)); }, close() { t.open = false; }, onmessage: null, onclose: null };
    t.deliver = (msg) => t.onmessage(JSON.stringify(msg));
    return t;
  };
  const snapshot = (lastSeq) => ({
    table: { id: 'demo', name: 'Demo', currency: 'EUR', currency_exponent: 2, betting_window_secs: 15, spots: [{ id: 'banker', odds: '19:20', min_bet: 100, max_bet: 100000, max_per_player_round: 200000 }] },
    state: 'idle', round: null, closes_at_server_ms: null, totals: null, last_round: null, next_round_at_server_ms: null, last_seq: lastSeq,
  });
  const ev = (seq, type, fields = {}) => ({ seq, server_ms: 1700000000000 + seq, type, ...fields });
  const seen = [];
  session.on('event', (e) => seen.push(e.seq));
`;

describe('tablecast.js protocol handling', () => {
  let node;
  let browser;
  let page;
  let log;

  before(async () => {
    node = await startNode({ name: 'library-fake', binary: FAKE_NODE, config: FAKE_CONFIG });
    browser = await launchChromium();
    log = createWriteStream(artifact('library.pages.log'));
    const context = await browser.newContext();
    page = await context.newPage();
    captureConsole(page, 'library', (line) => log.write(line));
    await page.goto(`${node.baseUrl}/`);
  });

  after(async () => {
    await browser?.close();
    await node?.stop();
    await new Promise((resolve) => (log ? log.end(resolve) : resolve()));
  });

  const run = (body) => page.evaluate(`(async () => { ${SETUP} ${body} })()`);

  test('events reach the page once each and in order; a gap asks again on the same connection', async () => {
    const out = await run(`
      const t = transport();
      session._attach(t);
      const hello = t.sent[0];
      t.deliver({ type: 'welcome', v: 1, seq: 10, snapshot: snapshot(10) });
      t.deliver(ev(11, 'chat', { id: 'm-1', user: 'u', text: 'hi' }));
      t.deliver(ev(11, 'chat', { id: 'm-1', user: 'u', text: 'hi' }));     // a repeat
      t.deliver(ev(10, 'round.voided', { round: 1, reason: 'x' }));        // old news
      t.deliver(ev(13, 'chat', { id: 'm-3', user: 'u', text: 'gap' }));    // 12 went missing
      const resync = t.sent.filter((m) => m.type === 'hello');
      t.deliver(ev(14, 'chat', { id: 'm-4', user: 'u', text: 'later' }));  // still missing 12: dropped
      t.deliver({ type: 'resumed', after_seq: 11, last_seq: 14 });
      for (const s of [12, 13, 14]) t.deliver(ev(s, 'chat', { id: 'm-' + s, user: 'u', text: 'replay' }));
      t.deliver(ev(14, 'chat', { id: 'm-14', user: 'u', text: 'live copy' }));
      t.deliver(ev(15, 'round.opened', { round: 2, closes_at_server_ms: 1700000015000 }));
      return { hello, resync, seen, seqLog: session.seqLog, counters: session.counters, state: session.table.state, round: session.table.round };
    `);
    assert.deepEqual(out.hello, { type: 'hello', token: '' });
    assert.deepEqual(out.resync, [{ type: 'hello', token: '' }, { type: 'hello', token: '', resume_after_seq: 11 }]);
    assert.deepEqual(out.seen, [11, 12, 13, 14, 15]);
    assert.deepEqual(out.seqLog, [11, 12, 13, 14, 15]);
    assert.equal(out.counters.gaps, 2);
    assert.equal(out.counters.duplicates, 3);
    assert.equal(out.state, 'betting_open');
    assert.equal(out.round, 2);
  });

  test('a new connection says hello with resume_after_seq; a WebSocket hello carries the token', async () => {
    const out = await run(`
      session._setToken('tok');
      const a = transport();
      session._attach(a);
      a.deliver({ type: 'welcome', v: 1, seq: 3, snapshot: snapshot(3) });
      a.deliver(ev(4, 'chat', { id: 'm', user: 'u', text: 't' }));
      session._detach();
      const b = transport('websocket');
      session._attach(b);
      return { hello: b.sent[0] };
    `);
    assert.deepEqual(out.hello, { type: 'hello', token: 'tok', resume_after_seq: 4 });
  });

  test('a bet is pending at once, then accepted or refused; repeats and resends change nothing', async () => {
    const out = await run(`
      const t = transport();
      session._attach(t);
      t.deliver({ type: 'welcome', v: 1, seq: 1, snapshot: snapshot(1) });
      t.deliver(ev(2, 'round.opened', { round: 7, closes_at_server_ms: Date.now() + 15000 }));
      const states = [];
      session.on('bet', (b) => states.push(b.id + ':' + b.status));
      const good = session.placeBet({ spot: 'banker', amount: 500, id: 'b-good' });
      const bad = session.placeBet({ spot: 'banker', amount: 5, id: 'b-bad' });
      const sent = t.sent.filter((m) => m.type === 'bet.place');
      t.deliver({ type: 'bet.accepted', id: 'b-good', round: 7, spot: 'banker', amount: 500 });
      t.deliver({ type: 'bet.rejected', id: 'b-bad', code: 'below_min', message: 'the minimum bet on banker is 100' });
      t.deliver({ type: 'bet.accepted', id: 'b-good', round: 7, spot: 'banker', amount: 500 }); // re-sent on resume
      const accepted = await good;
      const refused = await bad.catch((e) => ({ name: e.name, code: e.code, message: e.message }));
      // A bet placed while the connection is down goes out, once, when it is back.
      session._detach();
      const later = session.placeBet({ spot: 'banker', amount: 100, id: 'b-later' });
      const u = transport();
      session._attach(u);
      u.deliver({ type: 'resumed', after_seq: 2, last_seq: 2 });
      const resent = u.sent.filter((m) => m.type === 'bet.place');
      u.deliver({ type: 'bet.accepted', id: 'b-later', round: 7, spot: 'banker', amount: 100 });
      await later;
      const payout = { type: 'payout', round: 7, reason: 'settled', total: 975, bets: [{ id: 'b-good', spot: 'banker', amount: 500, result: 'won', paid: 975 }] };
      const payouts = [];
      session.on('payout', (p) => payouts.push(p.round));
      u.deliver(payout);
      u.deliver(payout); // re-sent on resume
      const noRound = await new ControlSession({ table: 'demo' }).placeBet({ spot: 'banker', amount: 100 }).catch((e) => e.code);
      return { sent, accepted: accepted.status, refused, states, resent, payouts, won: session.bets.get('b-good'), noRound };
    `);
    assert.deepEqual(out.sent.map((m) => [m.id, m.round, m.amount]), [['b-good', 7, 500], ['b-bad', 7, 5]]);
    assert.equal(out.accepted, 'accepted');
    assert.deepEqual(out.refused, { name: 'BetRejectedError', code: 'below_min', message: 'the minimum bet on banker is 100' });
    assert.deepEqual(out.states.slice(0, 4), ['b-good:pending', 'b-bad:pending', 'b-good:accepted', 'b-bad:rejected']);
    assert.deepEqual(out.resent.map((m) => m.id), ['b-later']);
    assert.deepEqual(out.payouts, [7]);
    assert.equal(out.won.result, 'won');
    assert.equal(out.won.paid, 975);
    assert.equal(out.noRound, 'round_not_open');
  });

  test('commands resolve on ok and reject with the code of their error; a lost connection rejects them', async () => {
    const out = await run(`
      const t = transport('websocket');
      session._attach(t);
      t.deliver({ type: 'welcome', v: 1, seq: 0, snapshot: snapshot(0) });
      const open = session.command('dealer.open');
      const result = session.command('dealer.result', { outcome: 'banker' });
      const [o, r] = t.sent.slice(-2);
      t.deliver({ type: 'ok', id: o.id, round: 1 });
      t.deliver({ type: 'error', id: r.id, code: 'wrong_state', message: 'close betting first' });
      const opened = await open;
      const refused = await result.catch((e) => ({ name: e.name, code: e.code }));
      const pending = session.command('dealer.close');
      session._detach();
      const lost = await pending.catch((e) => e.code);
      return { o, r, opened, refused, lost };
    `);
    assert.equal(out.o.type, 'dealer.open');
    assert.deepEqual(out.r.outcome, 'banker');
    assert.equal(out.opened.round, 1);
    assert.deepEqual(out.refused, { name: 'CommandError', code: 'wrong_state' });
    assert.equal(out.lost, 'connection_lost');
  });

  test('the clock takes the offset of the fastest ping', async () => {
    const out = await page.evaluate(async () => {
      const { ServerClock, clientNow } = await import('/web/tc/clock.js');
      const c = new ServerClock();
      const now = clientNow();
      // A slow sample (rtt 400, says +1000) and a fast one (rtt ~0, says +250).
      c.pong({ client_ms: now - 400, server_ms: now - 200 + 1000 });
      c.pong({ client_ms: now, server_ms: now + 250 });
      return { offset: c.offset, rtt: c.rtt, ahead: c.now() - clientNow() };
    });
    assert.ok(Math.abs(out.offset - 250) < 20, `offset ${out.offset}`);
    assert.ok(out.rtt < 20, `rtt ${out.rtt}`);
    assert.ok(Math.abs(out.ahead - out.offset) < 5);
  });

  test('the Prometheus reader takes labels, escapes and odd values', async () => {
    const out = await page.evaluate(async () => {
      const { parsePrometheus, sampleValue } = await import('/web/tablecast.js');
      const text = [
        '# HELP tablecast_subscribers WHEP sessions watching the table.',
        '# TYPE tablecast_subscribers gauge',
        'tablecast_subscribers{table="demo"} 20',
        'tablecast_subscribers{table="we\\"ird\\\\one"} 1',
        'tablecast_nack_total{table="demo",direction="to_publisher"} 7',
        'tablecast_sessions_reaped_total 3',
        'broken{table="x} 1',
        '',
      ].join('\n');
      const s = parsePrometheus(text);
      return {
        count: s.length,
        demo: sampleValue(s, 'tablecast_subscribers', { table: 'demo' }),
        weird: s[1].labels.table,
        nack: sampleValue(s, 'tablecast_nack_total', { direction: 'to_publisher' }),
        reaped: sampleValue(s, 'tablecast_sessions_reaped_total'),
      };
    });
    assert.deepEqual(out, { count: 4, demo: 20, weird: 'we"ird\\one', nack: 7, reaped: 3 });
  });
});
