// A player page tells the node how it shows the video (`video.view`): the
// video element's size on screen in device pixels, whether the page is hidden,
// and the player's quality choice. The node records it on the player's WHEP
// session, and the operator's session listing shows it, so this test reads it
// there: a phone-sized page, the same page resized, hidden and shown again,
// Low chosen from the quality menu (and kept across a reload), and the
// keepalive that heals a lost view. The connection indicator shows the layer
// being received.
//
// Needs `cargo build --release` first (or TABLECAST_BIN). Run: node --test tests/browser/
import assert from 'node:assert/strict';
import { createWriteStream } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { launchChromium } from './lib/chromium.mjs';
import { ensureClip } from './lib/clip.mjs';
import { startNode } from './lib/node.mjs';
import { LAYOUTS, decoding, goLive, joined, openPage } from './lib/pages.mjs';
import { FIXTURES_DIR, artifact } from './lib/paths.mjs';
import { waitUntil } from './lib/wait.mjs';

const TABLE = 'studio';

let node;
let browser;
let log;
let operator;

before(async () => {
  const clip = await ensureClip();
  node = await startNode({ name: 'view', config: path.join(FIXTURES_DIR, 'tables.toml') });
  browser = await launchChromium({ clip });
  log = createWriteStream(artifact('view.pages.log'));
  operator = await node.token({ role: 'operator', table: TABLE, user: 'ops-1' });
});

after(async () => {
  await browser?.close();
  await node?.stop();
  await new Promise((resolve) => (log ? log.end(resolve) : resolve()));
});

const write = (line) => log.write(line);

/** A WHEP session as the operator's listing shows it (null when it is not listed). */
async function listed(session) {
  const res = await node.api('GET', `/api/v1/tables/${TABLE}/sessions`, { token: operator });
  assert.equal(res.status, 200, res.text);
  return res.json.find((s) => s.session === session) ?? null;
}

/** The page's current WHEP session id. */
function sessionOf(page) {
  return page.evaluate(() => window.tablecast.client.player.sessionId);
}

/** Waits until `session` shows a view for which `ok(view)` holds; returns the view. */
async function viewOf(session, ok, what) {
  const found = await waitUntil(() => listed(session), (s) => s !== null && ok(s.view), {
    timeoutMs: 15_000,
    intervalMs: 100,
    describe: (last) => `${what}: session ${session} shows ${JSON.stringify(last?.view ?? last)}`,
  });
  return found.view;
}

/** Makes the page's document say it is hidden (or visible again), as a background tab's does. */
function setHidden(page, hidden) {
  return page.evaluate((h) => {
    Object.defineProperty(document, 'visibilityState', { value: h ? 'hidden' : 'visible', configurable: true });
    Object.defineProperty(document, 'hidden', { value: h, configurable: true });
    document.dispatchEvent(new Event('visibilitychange'));
  }, hidden);
}

test('a player page reports its size, visibility and quality choice, and shows the layer it gets', { timeout: 120_000 }, async (t) => {
  const base = node.baseUrl;
  const dealer = await openPage(browser, `${base}/dealer/${TABLE}`, { label: 'dealer', log: write });
  await goLive(dealer);

  const phone = await openPage(browser, `${base}/play/${TABLE}`, { label: 'phone', log: write, layout: LAYOUTS.phone });
  await joined(phone);
  const session = await sessionOf(phone);
  assert.ok(session, 'the page has a WHEP session');

  // On a 390 px wide phone at 1 device pixel per CSS pixel, the video is at most 390 wide.
  const first = await viewOf(session, (v) => v.width > 0, 'no view after joining');
  assert.ok(first.width >= 300 && first.width <= 390, `phone width ${first.width}`);
  assert.ok(first.height > 0 && first.height < first.width, `phone height ${first.height}`);
  assert.equal(first.hidden, false);
  assert.equal(first.quality, 'auto');
  const expected = await phone.evaluate(() => {
    const v = document.getElementById('video');
    return { width: Math.round(v.clientWidth * devicePixelRatio), height: Math.round(v.clientHeight * devicePixelRatio) };
  });
  assert.deepEqual({ width: first.width, height: first.height }, expected, 'the rendered size in device pixels');
  t.diagnostic(`phone view: ${JSON.stringify(first)}`);

  // The indicator shows the layer being received, from the frame height.
  const stats = await decoding(phone);
  const shown = await waitUntil(
    () => phone.evaluate(() => ({ badge: document.getElementById('conn-layer').textContent, hidden: document.getElementById('conn-layer').hidden, q: window.tablecast.client.quality })),
    (s) => !s.hidden && /^\d+p$/.test(s.badge) && s.q.layer === s.badge,
    { timeoutMs: 10_000, intervalMs: 200, describe: (l) => `no layer in the indicator: ${JSON.stringify(l)}` },
  );
  assert.equal(shown.badge, `${shown.q.frameHeight}p`);
  t.diagnostic(`indicator: ${shown.badge} at ${Math.round(shown.q.bitrate / 1000)} kbit/s (decoding ${stats.frameWidth}x${stats.frameHeight})`);

  // The node sends the phone the layer its size calls for, not 1280x720: 640x360 covers a
  // video 390 pixels wide.
  const small = await waitUntil(
    () => phone.evaluate(() => window.tablecast.client.quality),
    (q) => q.frameHeight > 0 && q.frameHeight <= 360,
    { timeoutMs: 15_000, intervalMs: 200, describe: (l) => `the phone still gets ${l?.frameWidth}x${l?.frameHeight}` },
  );
  const listedLayer = (await listed(session)).layer;
  assert.ok(listedLayer && listedLayer.height <= 360 && listedLayer.height > 0, `listed layer ${JSON.stringify(listedLayer)}`);
  t.diagnostic(`phone layer: decoding ${small.frameWidth}x${small.frameHeight}, listed ${JSON.stringify(listedLayer)}`);

  // A wider page is reported once it has settled.
  await phone.setViewportSize({ width: 820, height: 1180 });
  const wide = await viewOf(session, (v) => v.width > first.width, 'no wider view after the resize');
  assert.ok(wide.width <= 820, `tablet width ${wide.width}`);

  // A hidden page says so and gets no video; shown again, it decodes again.
  await setHidden(phone, true);
  await viewOf(session, (v) => v.hidden === true, 'the hidden page did not say so');
  await waitUntil(() => listed(session), (s) => s?.layer?.paused === true, {
    timeoutMs: 5000, intervalMs: 100, describe: (l) => `the node did not pause the hidden page: ${JSON.stringify(l?.layer)}`,
  });
  const framesHidden = await phone.evaluate(() => window.tablecast.client.quality.framesDecoded ?? 0);
  await setHidden(phone, false);
  await viewOf(session, (v) => v.hidden === false, 'the page shown again did not say so');
  await waitUntil(() => phone.evaluate(() => window.tablecast.client.quality.framesDecoded ?? 0), (n) => n > framesHidden + 10, {
    timeoutMs: 10_000, intervalMs: 200, describe: (n) => `no video after the page was shown again: ${framesHidden} then ${n} frames`,
  });

  // Low from the quality menu, in the connection panel.
  await phone.locator('#conn').click();
  await phone.getByRole('radio', { name: 'Low' }).click();
  await viewOf(session, (v) => v.quality === 'low', 'Low was not reported');
  assert.equal(await phone.evaluate(() => localStorage.getItem('tablecast:video-quality')), 'low');
  assert.equal(await phone.getByRole('radio', { name: 'Low' }).getAttribute('aria-checked'), 'true');
  const low = await waitUntil(
    () => phone.evaluate(() => window.tablecast.client.quality),
    (q) => q.frameHeight > 0 && q.frameHeight <= 180,
    { timeoutMs: 15_000, intervalMs: 200, describe: (l) => `Low still gets ${l?.frameWidth}x${l?.frameHeight}` },
  );
  t.diagnostic(`Low: decoding ${low.frameWidth}x${low.frameHeight}`);
  await phone.screenshot({ path: artifact('view.quality-menu.png') });

  // With nothing changing, the view is sent again every 5 s (a lost one is healed).
  const sent = await phone.evaluate(() => window.tablecast.client.viewsSent);
  await waitUntil(() => phone.evaluate(() => window.tablecast.client.viewsSent), (n) => n > sent, {
    timeoutMs: 8000, intervalMs: 250, describe: (n) => `no keepalive view: ${sent} then ${n}`,
  });

  // A reload keeps the choice: the new session is Low from the start.
  await phone.reload();
  await joined(phone);
  const again = await sessionOf(phone);
  assert.notEqual(again, session, 'a new session after the reload');
  const kept = await viewOf(again, (v) => v.width > 0, 'no view after the reload');
  assert.equal(kept.quality, 'low', JSON.stringify(kept));
  assert.equal(await phone.getByRole('radio', { name: 'Low', includeHidden: true }).getAttribute('aria-checked'), 'true');

  await phone.context().close();
  await dealer.context().close();
});

test('a page that cannot use the data channel tells the node its view over the WebSocket', { timeout: 60_000 }, async () => {
  const base = node.baseUrl;
  // No RTCDataChannel: the library falls back to the WebSocket, naming its WHEP session.
  const page = await openPage(browser, `${base}/play/${TABLE}`, {
    label: 'ws-phone', log: write, layout: LAYOUTS.phone,
    init: () => { RTCPeerConnection.prototype.createDataChannel = () => { throw new Error('no data channels here'); }; },
  });
  await joined(page);
  const transport = await page.evaluate(() => window.tablecast.client.connection.transport);
  assert.equal(transport, 'websocket');
  const session = await sessionOf(page);
  const view = await viewOf(session, (v) => v.width > 0, 'no view over the WebSocket');
  assert.ok(view.width <= 390, JSON.stringify(view));
  await setHidden(page, true);
  await viewOf(session, (v) => v.hidden === true, 'the hidden page did not say so over the WebSocket');
  await page.context().close();
});
