// The dealer page and simulcast: with a camera of at least 960x540 (the fake
// camera is 1280x720) the page offers three encodings, q, h and f, at a quarter,
// half and full size. A node that refuses them gets one encoding, and the dealer
// is told.
//
// Needs `cargo build --release` first (or TABLECAST_BIN). Run: node --test tests/browser/
import assert from 'node:assert/strict';
import { createWriteStream } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { launchChromium } from './lib/chromium.mjs';
import { CLIP_HEIGHT, CLIP_WIDTH, ensureClip } from './lib/clip.mjs';
import { startNode } from './lib/node.mjs';
import { goLive, openPage } from './lib/pages.mjs';
import { FIXTURES_DIR, artifact } from './lib/paths.mjs';
import { waitUntil } from './lib/wait.mjs';

const TABLE = 'studio';

let node;
let browser;
let log;
let dealer;
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

test('a dealer page with a 1280x720 camera offers three simulcast encodings, and tells the dealer when the node takes only one', { timeout: 60_000 }, async (t) => {
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
  assert.ok(offers.length >= 1, 'the dealer page sent no WHIP offer');
  const video = videoSection(offers[0]);
  assert.ok(video.includes('a=simulcast:send q;h;f'), `no a=simulcast:send q;h;f in the offer's video section:\n${video.join('\n')}`);
  for (const rid of ['q', 'h', 'f']) assert.ok(video.includes(`a=rid:${rid} send`), `no a=rid:${rid} send in the offer`);
  assert.ok(video.some((l) => l.endsWith(' urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id')), 'the offer has no RID header extension');

  const sent = await onAir(dealer);
  if (sent.refused) {
    // One more offer, without simulcast, and the dealer is told.
    assert.equal(offers.length, 2, `offers: ${offers.length}`);
    assert.ok(!videoSection(offers[1]).some((l) => l.startsWith('a=simulcast')), 'the second offer still asks for simulcast');
    assert.equal(sent.simulcast, false);
    assert.equal(sent.layers.length, 1, `layers: ${JSON.stringify(sent.layers)}`);
    assert.equal(sent.checked, false, 'the simulcast box stays ticked after the node refused it');
    assert.ok(sent.toasts.includes('The node did not take simulcast; publishing one layer.'), `toasts: ${JSON.stringify(sent.toasts)}`);
    t.diagnostic(`offered q;h;f; the node refused simulcast (${sent.refused}), so one layer goes out`);
  } else {
    assert.equal(sent.simulcast, true);
    assert.deepEqual(sent.layers.map((l) => l.rid).sort(), ['f', 'h', 'q']);
    t.diagnostic(`offered q;h;f; the node took them: ${JSON.stringify(sent.layers)}`);
  }
  await dealer.screenshot({ path: artifact('simulcast-dealer.png') });
});

test('the node takes the three encodings and the dealer sends each at its size', {
  timeout: 60_000,
  todo: 'the node does not negotiate simulcast yet: its WHIP answer has no RID header extension',
}, async (t) => {
  assert.ok(dealer, 'the dealer page did not open');
  const last = await waitUntil(
    () => onAir(dealer),
    (s) => s.layers.length === 3 && s.layers.every((l) => l.bytesSent > 0 && l.width > 0),
    { timeoutMs: 20_000, intervalMs: 500, describe: (s) => `the dealer does not send three layers: ${JSON.stringify(s)}` },
  );
  const size = Object.fromEntries(last.layers.map((l) => [l.rid, `${l.width}x${l.height}`]));
  assert.deepEqual(size, {
    f: `${CLIP_WIDTH}x${CLIP_HEIGHT}`,
    h: `${CLIP_WIDTH / 2}x${CLIP_HEIGHT / 2}`,
    q: `${CLIP_WIDTH / 4}x${CLIP_HEIGHT / 4}`,
  });
  t.diagnostic(`layers: ${JSON.stringify(last.layers)}`);
});
