// The dealer page and simulcast: with a camera of at least 960x540 (the fake
// camera is 1280x720) the page offers three encodings, q, h and f, at a quarter,
// half and full size. The node takes all three and forwards the highest that is
// flowing to every player: when the dealer turns the top layer off the players
// go on at the next size down without a freeze longer than about a second, and
// go back up when it returns. A node that refuses simulcast gets one encoding,
// and the dealer is told.
//
// Needs `cargo build --release` first (or TABLECAST_BIN). Run: node --test tests/browser/
import assert from 'node:assert/strict';
import { createWriteStream } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { launchChromium } from './lib/chromium.mjs';
import { CLIP_HEIGHT, CLIP_WIDTH, ensureClip } from './lib/clip.mjs';
import { startNode } from './lib/node.mjs';
import { framesSince, recordFrames, setLayer } from './lib/frames.mjs';
import { goLive, joined, openPage } from './lib/pages.mjs';
import { FIXTURES_DIR, artifact } from './lib/paths.mjs';
import { waitUntil } from './lib/wait.mjs';

const TABLE = 'studio';

let node;
let browser;
let log;
let dealer;
let player;
/** The SDP offers the dealer page POSTed to /whip/, in order. */
const offers = [];

before(async () => {
  const clip = await ensureClip();
  node = await startNode({ name: 'simulcast', config: path.join(FIXTURES_DIR, 'tables.toml') });
  browser = await launchChromium({ clip });
  log = createWriteStream(artifact('simulcast.pages.log'));
});

after(async () => {
  await browser?.close();
  await node?.stop();
  await new Promise((resolve) => (log ? log.end(resolve) : resolve()));
});

/** The lines of the offer's video section. */
function videoSection(sdp) {
  const sections = sdp.split(/\r?\n(?=m=)/);
  return (sections.find((s) => s.startsWith('m=video')) ?? '').split(/\r?\n/);
}

/** In the page: remember every toast's text in `window.toastsShown` (they fade after a few seconds). */
function keepToasts() {
  window.toastsShown = [];
  new MutationObserver((changes) => {
    for (const c of changes) {
      for (const n of c.addedNodes) if (n.classList?.contains('toast')) window.toastsShown.push(n.textContent);
    }
  }).observe(document, { childList: true, subtree: true });
}

/** What the dealer page sends and shows once on air. */
function onAir(page) {
  return page.evaluate(async () => {
    const h = window.tablecastDealer;
    const s = await h.stats();
    return {
      simulcast: h.simulcast,
      refused: h.simulcastRefused,
      layers: s.layers.map((l) => ({ rid: l.rid, width: l.frameWidth, height: l.frameHeight, bytesSent: l.bytesSent })),
      checked: document.getElementById('simulcast').checked,
      toasts: window.toastsShown,
    };
  });
}


test('a dealer page with a 1280x720 camera offers three simulcast encodings and the node takes them', { timeout: 60_000 }, async (t) => {
  dealer = await openPage(browser, `${node.baseUrl}/dealer/${TABLE}`, { label: 'dealer', log: (l) => log.write(l), init: keepToasts });
  dealer.on('request', (req) => {
    if (req.method() === 'POST' && new URL(req.url()).pathname.startsWith('/whip/')) offers.push(req.postData());
  });
  await dealer.waitForFunction(() => document.getElementById('preview').videoWidth > 0, null, { timeout: 20_000 });
  const form = await dealer.evaluate(() => ({
    enabled: !document.getElementById('simulcast').disabled,
    checked: document.getElementById('simulcast').checked,
    note: document.getElementById('simulcast-note').textContent,
  }));
  assert.deepEqual(form, {
    enabled: true,
    checked: true,
    note: `Camera gives ${CLIP_WIDTH}×${CLIP_HEIGHT}: full, half and quarter size layers.`,
  });

  await goLive(dealer);
  assert.equal(offers.length, 1, `the dealer page offered ${offers.length} times (a second offer is the one-layer fallback)`);
  const video = videoSection(offers[0]);
  assert.ok(video.includes('a=simulcast:send q;h;f'), `no a=simulcast:send q;h;f in the offer's video section:\n${video.join('\n')}`);
  for (const rid of ['q', 'h', 'f']) assert.ok(video.includes(`a=rid:${rid} send`), `no a=rid:${rid} send in the offer`);
  assert.ok(video.some((l) => l.endsWith(' urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id')), 'the offer has no RID header extension');

  const sent = await onAir(dealer);
  assert.equal(sent.refused, null, `the node's answer was refused: ${sent.refused}`);
  assert.equal(sent.simulcast, true);
  assert.equal(sent.checked, true);
  assert.deepEqual(sent.layers.map((l) => l.rid).sort(), ['f', 'h', 'q']);
  assert.ok(!sent.toasts.includes('The node did not take simulcast; publishing one layer.'), `toasts: ${JSON.stringify(sent.toasts)}`);
  await dealer.screenshot({ path: artifact('simulcast-dealer.png') });
});

test('the dealer sends each encoding at its size, with room to spare', { timeout: 60_000 }, async (t) => {
  assert.ok(dealer, 'the dealer page did not open');
  const last = await waitUntil(
    () => onAir(dealer),
    (s) => s.layers.length === 3 && s.layers.every((l) => l.bytesSent > 0 && l.width > 0)
      && s.layers.find((l) => l.rid === 'f').width === CLIP_WIDTH,
    { timeoutMs: 20_000, intervalMs: 500, describe: (s) => `the dealer does not send three layers: ${JSON.stringify(s)}` },
  );
  const size = Object.fromEntries(last.layers.map((l) => [l.rid, `${l.width}x${l.height}`]));
  assert.deepEqual(size, {
    f: `${CLIP_WIDTH}x${CLIP_HEIGHT}`,
    h: `${CLIP_WIDTH / 2}x${CLIP_HEIGHT / 2}`,
    q: `${CLIP_WIDTH / 4}x${CLIP_HEIGHT / 4}`,
  });
  // The node sends transport-wide congestion feedback, so the browser's estimate ramps up and
  // the encoder is not held back for bandwidth. (The bitrate is over the second between looks.)
  const rates = () => dealer.evaluate(async () => {
    const h = window.tablecastDealer;
    const s = await h.stats();
    let estimate = null;
    for (const x of (await h.pc.getStats()).values()) {
      if (x.type === 'candidate-pair' && x.nominated && x.availableOutgoingBitrate) estimate = x.availableOutgoingBitrate;
    }
    return { bitrate: s.bitrate, estimate, limits: s.layers.map((l) => `${l.rid}:${l.qualityLimitationReason}`) };
  });
  const out = await waitUntil(rates, (o) => o.estimate !== null && o.estimate > 1_000_000 && o.bitrate > 600_000, {
    timeoutMs: 20_000, intervalMs: 1000, describe: (o) => `the dealer's bandwidth estimate stays under 1 Mb/s or it sends under 600 kb/s: ${JSON.stringify(o)}`,
  });
  t.diagnostic(`layers: ${JSON.stringify(last.layers)}; dealer video ${Math.round(out.bitrate / 1000)} kb/s, estimate ${Math.round(out.estimate / 1000)} kb/s, limits ${out.limits.join(' ')}`);
});

test('a player watches the top layer, and keeps watching the next one down when the top layer stops', { timeout: 90_000 }, async (t) => {
  assert.ok(dealer, 'the dealer page did not open');
  player = await openPage(browser, `${node.baseUrl}/play/${TABLE}`, { label: 'player', log: (l) => log.write(l) });
  await joined(player);
  await recordFrames(player);
  const stats = () => player.evaluate(async () => window.tablecast.client.player.stats());
  const top = await waitUntil(stats, (s) => s.framesDecoded > 30 && s.frameWidth === CLIP_WIDTH, {
    timeoutMs: 20_000, describe: (s) => `the player does not decode the top layer: ${JSON.stringify(s)}`,
  });
  assert.equal(top.frameHeight, CLIP_HEIGHT);
  t.diagnostic(`player decodes ${top.frameWidth}x${top.frameHeight}, ${top.framesDecoded} frames so far`);

  // The dealer turns 'f' off: the player goes on at 'h' with at most a short pause.
  const off = await setLayer(dealer, 'f', false);
  const down = await waitUntil(() => framesSince(player, off), (f) => f.last && f.last[1] === CLIP_WIDTH / 2 && f.count > 60, {
    timeoutMs: 15_000, intervalMs: 250, describe: (f) => `the player did not go on at the half-size layer: ${JSON.stringify(f)}`,
  });
  const lower = await stats();
  assert.equal(`${lower.frameWidth}x${lower.frameHeight}`, `${CLIP_WIDTH / 2}x${CLIP_HEIGHT / 2}`);
  assert.ok(down.gap < 1100, `the picture froze for ${down.gap} ms when the top layer stopped`);
  t.diagnostic(`'f' off: ${down.count} frames since, sizes ${down.sizes.join(' then ')}, longest gap ${down.gap} ms`);

  // 'f' comes back: after its probation the player is back at full size, without a pause.
  const on = await setLayer(dealer, 'f', true);
  // What the dealer's encoder did meanwhile, at each look: frames sent and keyframes per layer.
  const encoder = [];
  const lookAtEncoder = () => dealer.evaluate(async () => {
    const out = [];
    (await window.tablecastDealer.pc.getStats()).forEach((r) => {
      if (r.type === 'outbound-rtp' && r.kind === 'video') out.push(`${r.rid}:${r.framesSent}/${r.keyFramesEncoded}`);
    });
    return `${Math.round(performance.timeOrigin + performance.now())} ${out.sort().join(' ')}`;
  });
  const up = await waitUntil(async () => {
    encoder.push(await lookAtEncoder());
    return framesSince(player, on);
  }, (f) => f.last && f.last[1] === CLIP_WIDTH && f.count > 30, {
    timeoutMs: 15_000, intervalMs: 250, describe: (f) => `the player did not go back to the top layer: ${JSON.stringify(f)}`,
  });
  assert.ok(up.gap < 500, `the picture paused for ${up.gap} ms when switching back up (${up.around}); player ${JSON.stringify(await stats())}; dealer since +0 (frames sent/keyframes): ${encoder.map((e) => e.replace(/^\d+/, (t) => `+${t - Math.round(on)}`)).join('; ')}`);
  const back = await stats();
  t.diagnostic(`'f' on: ${up.count} frames since, sizes ${up.sizes.join(' then ')}, longest gap ${up.gap} ms; freezes ${back.freezeCount}, frames decoded ${back.framesDecoded}`);

  const metrics = await node.api('GET', '/metrics', { token: await node.token({ role: 'operator', table: '*' }) });
  const switches = Number(/tablecast_simulcast_layer_switches_total\{table="studio"\} (\d+)/.exec(metrics.text)?.[1]);
  assert.ok(switches >= 2, `layer switches counted: ${switches}`);
  await player.screenshot({ path: artifact('simulcast-player.png') });
});

test('a node that refuses simulcast gets one encoding, and the dealer is told', { timeout: 60_000 }, async (t) => {
  // The node's answer with the mid/rid header extensions and the a=rid/a=simulcast lines taken
  // out, as a node without simulcast answers. Chromium accepts it, but would send only the
  // first (quarter-size) encoding; the page publishes one full-size encoding instead.
  const page = await openPage(browser, `${node.baseUrl}/dealer/${TABLE}?camera=side`, { label: 'dealer-side', log: (l) => log.write(l), init: keepToasts });
  const sideOffers = [];
  await page.route('**/whip/**', async (route) => {
    if (route.request().method() !== 'POST') return route.continue();
    sideOffers.push(route.request().postData());
    const response = await route.fetch();
    const body = (await response.text()).split(/\r\n/).filter((l) => !/^a=(rid:|simulcast:)|sdes:(mid|rtp-stream-id|repaired-rtp-stream-id)$/.test(l)).join('\r\n');
    return route.fulfill({ response, body });
  });
  await page.waitForFunction(() => document.getElementById('preview').videoWidth > 0, null, { timeout: 20_000 });
  await goLive(page);
  const sent = await onAir(page);
  assert.equal(sideOffers.length, 2, `offers: ${sideOffers.length}`);
  assert.ok(videoSection(sideOffers[0]).includes('a=simulcast:send q;h;f'));
  assert.ok(!videoSection(sideOffers[1]).some((l) => l.startsWith('a=simulcast')), 'the second offer still asks for simulcast');
  assert.ok(sent.refused, 'the page did not record why simulcast was refused');
  assert.equal(sent.simulcast, false);
  assert.equal(sent.layers.length, 1, `layers: ${JSON.stringify(sent.layers)}`);
  assert.equal(sent.checked, false, 'the simulcast box stays ticked after the node refused it');
  assert.ok(sent.toasts.includes('The node did not take simulcast; publishing one layer.'), `toasts: ${JSON.stringify(sent.toasts)}`);
  t.diagnostic(`refused (${sent.refused}); one layer goes out`);
  await page.context().close();
});
