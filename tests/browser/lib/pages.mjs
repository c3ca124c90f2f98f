// Driving tablecast's own pages: open one at a layout, put the dealer on air,
// read what a player page shows. Shared by the table, recovery and screenshot tests.
import assert from 'node:assert/strict';
import { captureConsole } from './chromium.mjs';
import { waitUntil } from './wait.mjs';

/** The three layouts every page must work at. */
export const LAYOUTS = Object.freeze({
  phone: { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 1 },
  tablet: { viewport: { width: 820, height: 1180 }, isMobile: true, hasTouch: true, deviceScaleFactor: 1 },
  desktop: { viewport: { width: 1440, height: 900 }, deviceScaleFactor: 1 },
});

/**
 * A fresh page in its own context (its own storage and media permissions).
 * @param {import('playwright-core').Browser} browser
 * @param {string} url
 * @param {{layout?: object, label?: string, log?: (line: string) => void, init?: Function}} [opts]
 */
export async function openPage(browser, url, { layout = LAYOUTS.desktop, label = 'page', log, init } = {}) {
  const context = await browser.newContext(layout);
  if (init) await context.addInitScript(init);
  const page = await context.newPage();
  if (log) captureConsole(page, label, log);
  await page.goto(url);
  return page;
}

/**
 * Wait until a page's layout stops changing: the document the same size for ten animation
 * frames in a row. Throws if it is still changing after `timeoutMs`.
 */
export function settled(page, timeoutMs = 10_000) {
  return page.evaluate((ms) => new Promise((resolve, reject) => {
    const deadline = performance.now() + ms;
    let last = '';
    let same = 0;
    const look = () => {
      const d = document.documentElement;
      const size = `${d.scrollWidth}x${d.scrollHeight}`;
      same = size === last ? same + 1 : 0;
      last = size;
      if (same >= 10) resolve();
      else if (performance.now() > deadline) reject(new Error(`the layout was still changing after ${ms} ms (${size})`));
      else requestAnimationFrame(look);
    };
    requestAnimationFrame(look);
  }), timeoutMs);
}

/** Click "Go live" on a dealer page and wait until it publishes. Returns the WHIP stats. */
export async function goLive(dealer, timeoutMs = 30_000) {
  await dealer.getByRole('button', { name: /go live/i }).click({ timeout: 20_000 });
  const last = await waitUntil(
    () => dealer.evaluate(async () => ({
      page: window.tablecastDealerPage,
      stats: window.tablecastDealer ? await window.tablecastDealer.stats() : null,
    })),
    (s) => s.page.error !== null || (s.stats?.connectionState === 'connected' && s.stats.bytesSent > 0),
    { timeoutMs, intervalMs: 250, describe: (l) => `the dealer page did not get on air: ${JSON.stringify(l)}` },
  );
  assert.equal(last.page.error, null, `the dealer page reported an error: ${JSON.stringify(last.page.error)}`);
  return last.stats;
}

/** Wait until a player page has joined its table (welcome received, indicator live). */
export async function joined(player, timeoutMs = 20_000) {
  await player.waitForFunction(
    () => window.tablecastPage.error !== null || (window.tablecast.client && window.tablecast.client.connection.state === 'live'),
    null,
    { timeout: timeoutMs },
  );
  const error = await player.evaluate(() => window.tablecastPage.error);
  assert.equal(error, null, `the player page reported an error: ${JSON.stringify(error)}`);
}

/** What a player page knows and shows, in one round trip. */
export function playerView(player) {
  return player.evaluate(async () => {
    const c = window.tablecast.client;
    const stats = c?.player ? await c.player.stats() : null;
    const spots = {};
    for (const el of document.querySelectorAll('#spots .spot')) {
      spots[el.dataset.spot] = {
        total: el.querySelector('.amount').textContent,
        bettors: el.querySelector('.n').textContent,
        mine: el.querySelector('.my-stack').hidden ? null : el.querySelector('.my-amount').textContent,
      };
    }
    return {
      connection: c?.connection ?? null,
      indicator: { level: document.getElementById('conn').dataset.level, text: document.getElementById('conn-text').textContent },
      transport: c?.connection.transport ?? null,
      fallbackReason: c?.fallbackReason ?? null,
      state: c?.table?.state ?? null,
      round: c?.table?.round ?? null,
      lastSeq: c?.lastSeq ?? 0,
      seqLog: c ? [...c.seqLog] : [],
      counters: c?.counters ?? null,
      countdownShown: !document.getElementById('countdown').hidden,
      countdownText: document.getElementById('countdown-num').textContent,
      spots,
      bets: c ? [...c.bets.values()].map((b) => ({ id: b.id, spot: b.spot, amount: b.amount, status: b.status, result: b.result, paid: b.paid })) : [],
      myBets: [...document.querySelectorAll('#my-bets li[data-status]')].map((li) => ({ status: li.dataset.status, text: li.textContent })),
      results: window.tablecast.results,
      banner: document.getElementById('result').hidden ? null : {
        title: document.getElementById('result-title').textContent,
        payout: document.getElementById('result-payout').textContent,
      },
      stats: stats && {
        framesDecoded: stats.framesDecoded, frameWidth: stats.frameWidth, frameHeight: stats.frameHeight,
        fps: stats.fps, packetsLost: stats.packetsLost, freezeCount: stats.freezeCount, rtt: stats.rtt,
        dtlsVersion: stats.dtlsVersion,
      },
      connectionLog: c?.connectionLog ?? [],
      recovery: c?.recovery ?? null,
      clock: c ? { offset: c.clock.offset, rtt: c.clock.rtt, samples: c.clock.samples.length } : null,
    };
  });
}

/** Wait until `done(view)` holds for a player page; fails with the last view. */
export function waitView(player, done, what, timeoutMs = 20_000) {
  return waitUntil(() => playerView(player), done, {
    timeoutMs,
    intervalMs: 200,
    describe: (last) => `${what}; last view: ${JSON.stringify(last, (k, v) => (k === 'connectionLog' ? undefined : v))}`,
  });
}

/** Wait until a player decodes video: framesDecoded rising between two looks, with a real frame size. */
export async function decoding(player, minFrames = 30, timeoutMs = 30_000) {
  const first = await waitView(player, (v) => v.stats && v.stats.framesDecoded >= minFrames && v.stats.frameWidth > 0, `no ${minFrames} frames decoded`, timeoutMs);
  const second = await waitView(player, (v) => v.stats && v.stats.framesDecoded > first.stats.framesDecoded + 10, 'framesDecoded stopped rising', 10_000);
  return second.stats;
}

/** Every seq once, each one more than the one before. */
export function assertContiguous(seqLog, what) {
  assert.ok(seqLog.length > 0, `${what}: the page recorded no events`);
  for (let i = 1; i < seqLog.length; i += 1) {
    assert.equal(seqLog[i], seqLog[i - 1] + 1, `${what}: seq ${seqLog[i - 1]} is followed by ${seqLog[i]} (a ${seqLog[i] <= seqLog[i - 1] ? 'duplicate' : 'gap'}) in ${JSON.stringify(seqLog)}`);
  }
}

/** The server's table snapshot (needs any token for the table). */
export async function snapshot(node, table, token) {
  const res = await node.api('GET', `/api/v1/tables/${table}`, { token });
  assert.equal(res.status, 200, `GET snapshot: ${res.status} ${res.text}`);
  return res.json;
}

/** A dealer action over HTTP: open, close, result ({outcome}), void. */
export async function dealHttp(node, table, token, action, body) {
  const res = await node.api('POST', `/api/v1/tables/${table}/round/${action}`, { token, body });
  assert.equal(res.status, 200, `POST round/${action}: ${res.status} ${res.text}`);
  return res.json;
}

/** A demo token from the node's demo route (the node picks the user name). */
export async function demoToken(node, role, table) {
  const res = await node.api('POST', '/api/v1/demo/token', { body: { role, table } });
  assert.equal(res.status, 200, `demo token: ${res.status} ${res.text}`);
  return res.json.token;
}
