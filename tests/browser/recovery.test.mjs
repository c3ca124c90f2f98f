// A player page keeps the table whatever happens to its connection:
// - the node drops its session (an operator's DELETE): the page shows
//   "reconnecting", comes back by itself, and the events it missed arrive once
//   each, in order, with the video playing again;
// - the browser refuses the data channel: the page plays the video and gets
//   the table's events (and places bets) over the WebSocket instead;
// - the dealer's video pauses: the page asks its node whether it is alive and,
//   as it is, keeps its session; the video comes back on it.
//
// Needs `cargo build --release` first (or TABLECAST_BIN). Run: node --test tests/browser/
import assert from 'node:assert/strict';
import { createWriteStream } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { launchChromium } from './lib/chromium.mjs';
import { ensureClip } from './lib/clip.mjs';
import { startNode } from './lib/node.mjs';
import {
  LAYOUTS, assertContiguous, dealHttp, decoding, demoToken, goLive, joined, openPage, playerView, snapshot, waitView,
} from './lib/pages.mjs';
import { FIXTURES_DIR, artifact } from './lib/paths.mjs';

const TABLE = 'studio';

let node;
let browser;
let log;
let dealer;
let dealerToken;
let operatorToken;

before(async () => {
  const clip = await ensureClip();
  node = await startNode({ name: 'recovery', config: path.join(FIXTURES_DIR, 'tables.toml') });
  browser = await launchChromium({ clip });
  log = createWriteStream(artifact('recovery.pages.log'));
  dealerToken = await demoToken(node, 'dealer', TABLE);
  operatorToken = await node.token({ role: 'operator', table: TABLE, user: 'ops-test' });
  dealer = await openPage(browser, `${node.baseUrl}/dealer/${TABLE}`, { label: 'dealer', log: (l) => log.write(l) });
  await goLive(dealer);
});

after(async () => {
  await browser?.close();
  await node?.stop();
  await new Promise((resolve) => (log ? log.end(resolve) : resolve()));
});

test('a player whose session the node drops shows "reconnecting", comes back by itself, and misses nothing', { timeout: 60_000 }, async (t) => {
  const player = await openPage(browser, `${node.baseUrl}/play/${TABLE}`, { label: 'dropped', log: (l) => log.write(l), layout: LAYOUTS.phone });
  await joined(player);
  await decoding(player);

  // A round with a bet on it, then the node drops the player's session.
  await dealHttp(node, TABLE, dealerToken, 'open');
  await waitView(player, (v) => v.state === 'betting_open', 'the round did not open on the page');
  await player.getByRole('button', { name: /on Player/ }).tap();
  await waitView(player, (v) => v.bets.some((b) => b.status === 'accepted'), 'the bet was not accepted');
  const before = await playerView(player);
  const session = await player.evaluate(() => window.tablecast.client.player.sessionId);
  const dropped = await node.api('DELETE', `/api/v1/tables/${TABLE}/sessions/${session}`, { token: operatorToken });
  assert.equal(dropped.status, 204, `DELETE session: ${dropped.status} ${dropped.text}`);

  // The table moves on while the player is away: these events must reach it after it is back.
  await dealHttp(node, TABLE, dealerToken, 'close');
  await dealHttp(node, TABLE, dealerToken, 'result', { outcome: 'player' });

  const back = await waitView(player, (v) => v.connectionLog.some((c) => c.state === 'reconnecting') && v.connection.state === 'live' && v.indicator.level !== 'reconnecting', 'the page did not come back by itself', 20_000);
  const log2 = back.connectionLog;
  const lost = log2.findIndex((c) => c.state === 'reconnecting');
  const regained = log2.findIndex((c, i) => i > lost && c.state === 'live');
  assert.ok(lost >= 0 && regained > lost, `connection log: ${JSON.stringify(log2)}`);
  const reconnectMs = Math.round(log2[regained].at - log2[lost].at);
  const newSession = await player.evaluate(() => window.tablecast.client.player.sessionId);
  assert.notEqual(newSession, session, 'the page kept its dropped session');

  // Every event since, once, in order: up to the table's last seq.
  const table = await snapshot(node, TABLE, dealerToken);
  const caught = await waitView(player, (v) => v.lastSeq === table.last_seq && v.results.length > 0, `the page did not catch up to seq ${table.last_seq}`);
  assertContiguous(caught.seqLog, 'the dropped player');
  assert.ok(caught.seqLog.includes(before.lastSeq + 1), 'the events missed while away were not delivered');
  assert.equal(caught.seqLog.at(-1), table.last_seq);
  assert.equal(caught.counters.duplicates + caught.counters.gaps, 0, `counters: ${JSON.stringify(caught.counters)}`);
  assert.deepEqual(caught.results.map((r) => r.outcome), [['player']]);
  await waitView(player, (v) => v.bets[0]?.result === 'won' && v.banner?.payout === 'You win €5', 'the payout did not arrive after the reconnect');

  // The indicator says so, and the video plays again on the new session.
  const video = await decoding(player, 10);
  assert.ok(video.frameWidth > 0);
  t.diagnostic(`dropped at seq ${before.lastSeq}; reconnected in ${reconnectMs} ms (${caught.recovery.reconnects} reconnect); caught up to seq ${table.last_seq}: ${caught.seqLog.join(',')}; video again at ${video.frameWidth}x${video.frameHeight}`);
  await player.screenshot({ path: artifact('recovery-dropped-after.png') });
  await player.context().close();
});

test('a player whose data channel is refused plays and gets the table over the WebSocket', { timeout: 60_000 }, async (t) => {
  const player = await openPage(browser, `${node.baseUrl}/play/${TABLE}`, {
    label: 'no-datachannel',
    log: (l) => log.write(l),
    init: () => {
      RTCPeerConnection.prototype.createDataChannel = function refuse() {
        throw new DOMException('data channels are blocked here', 'NotSupportedError');
      };
    },
  });
  await joined(player);
  const first = await playerView(player);
  assert.equal(first.transport, 'websocket', `transport: ${first.transport}`);
  assert.match(first.fallbackReason, /refused the data channel/);
  const video = await decoding(player);

  await dealHttp(node, TABLE, dealerToken, 'open');
  await waitView(player, (v) => v.state === 'betting_open' && v.countdownShown, 'the round did not open over the WebSocket');
  await player.getByRole('button', { name: /on Banker/ }).click();
  await waitView(player, (v) => v.bets.some((b) => b.spot === 'banker' && b.status === 'accepted') && v.spots.banker.total === '€5', 'the bet or its total did not come back over the WebSocket');
  await dealHttp(node, TABLE, dealerToken, 'close');
  await dealHttp(node, TABLE, dealerToken, 'result', { outcome: 'banker' });
  const end = await waitView(player, (v) => v.results.length === 1 && v.banner?.payout === 'You win €4.75', 'the result did not come over the WebSocket');
  assertContiguous(end.seqLog, 'the WebSocket player');
  assert.equal(end.transport, 'websocket');
  t.diagnostic(`over the WebSocket: ${end.seqLog.length} events (seq ${end.seqLog[0]}..${end.seqLog.at(-1)}), video ${video.framesDecoded} frames at ${video.frameWidth}x${video.frameHeight}`);
  await player.context().close();
});

test('a network change makes the page restart ICE (or reconnect where the node refuses) and carry on', { timeout: 60_000 }, async (t) => {
  const player = await openPage(browser, `${node.baseUrl}/play/${TABLE}`, { label: 'network-change', log: (l) => log.write(l), layout: LAYOUTS.tablet });
  await joined(player);
  const before = await decoding(player);
  const session = await player.evaluate(() => window.tablecast.client.player.sessionId);

  // What the browser fires when the device changes networks.
  await player.evaluate(() => window.dispatchEvent(new Event('online')));
  const back = await waitView(player, (v) => v.connectionLog.some((c) => c.state === 'reconnecting') && v.connection.state === 'live', 'the page did not recover from the network change');
  const { recovery } = back;
  assert.ok(recovery.iceRestarts === 1, `recovery: ${JSON.stringify(recovery)}`);
  const how = recovery.iceRestartsOk === 1 ? 'ICE restart (PATCH If-Match: *)' : `a new session after the node refused the ICE restart (${recovery.reconnects} reconnect)`;
  const sameSession = (await player.evaluate(() => window.tablecast.client.player.sessionId)) === session;
  assert.equal(sameSession, recovery.iceRestartsOk === 1, 'an ICE restart keeps the session, a reconnect makes a new one');

  // Video and table events carry on.
  const after = await decoding(player, sameSession ? before.framesDecoded + 30 : 10);
  await dealHttp(node, TABLE, dealerToken, 'open');
  await dealHttp(node, TABLE, dealerToken, 'close');
  await dealHttp(node, TABLE, dealerToken, 'result', { outcome: 'tie' });
  const end = await waitView(player, (v) => v.results.length === 1 && v.state === 'idle', 'the round after the network change did not arrive');
  assertContiguous(end.seqLog, 'the player after a network change');
  t.diagnostic(`network change: recovered by ${how} in ${recovery.lastMs} ms; video ${after.framesDecoded} frames at ${after.frameWidth}x${after.frameHeight}`);
  await player.context().close();
});

test('a player whose video pauses on a healthy node keeps its session, and the video comes back on it', { timeout: 60_000 }, async (t) => {
  const player = await openPage(browser, `${node.baseUrl}/play/${TABLE}`, { label: 'paused', log: (l) => log.write(l) });
  await joined(player);
  await decoding(player);
  const before = await player.evaluate(() => ({ session: window.tablecast.client.player.sessionId, recovery: { ...window.tablecast.client.recovery } }));

  // The dealer's camera stops sending (the dealer pauses); the node stays up.
  const paused = await dealer.evaluate(async () => {
    window.pausedVideo = window.tablecastDealer.pc.getSenders().filter((s) => s.track?.kind === 'video').map((sender) => ({ sender, track: sender.track }));
    await Promise.all(window.pausedVideo.map(({ sender }) => sender.replaceTrack(null)));
    return window.pausedVideo.length;
  });
  assert.ok(paused > 0, 'the dealer page has a video sender to pause');
  try {
    // The page notices the stall and asks the node, which answers: nothing more happens.
    const stalled = await waitView(player, (v) => v.recovery.nodeChecks > before.recovery.nodeChecks, 'the page did not check its node when the video stalled', 15_000);
    assert.equal(stalled.recovery.nodesGone, before.recovery.nodesGone, `recovery: ${JSON.stringify(stalled.recovery)}`);
    assert.equal(stalled.recovery.reconnects, before.recovery.reconnects, `a paused dealer made the page reconnect: ${JSON.stringify(stalled.recovery)}`);
    assert.equal(stalled.recovery.iceRestarts, before.recovery.iceRestarts, `a paused dealer made the page restart ICE: ${JSON.stringify(stalled.recovery)}`);
    assert.equal(stalled.connection.state, 'live');
  } finally {
    await dealer.evaluate(() => Promise.all(window.pausedVideo.map(({ sender, track }) => sender.replaceTrack(track))));
  }

  // The video resumes on the same session.
  const frames = (await playerView(player)).stats.framesDecoded;
  const again = await waitView(player, (v) => v.stats && v.stats.framesDecoded > frames + 10, 'the video did not come back after the pause', 20_000);
  const after = await player.evaluate(() => ({ session: window.tablecast.client.player.sessionId, recovery: { ...window.tablecast.client.recovery } }));
  assert.equal(after.session, before.session, 'the page kept its session through the pause');
  assert.equal(after.recovery.reconnects, before.recovery.reconnects, `recovery: ${JSON.stringify(after.recovery)}`);
  t.diagnostic(`paused dealer: ${after.recovery.nodeChecks - before.recovery.nodeChecks} node check(s), no reconnect; video again at ${again.stats.frameWidth}x${again.stats.frameHeight}`);
  await player.context().close();
});
