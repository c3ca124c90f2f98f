// Chromium publishes its fake camera from the dealer page over WHIP; another
// page plays it over WHEP and must decode real frames.
//
// Needs `cargo build --release` first. Run: node --test tests/browser/
// Leaves logs and screenshots in tests/browser/.artifacts/.
import assert from 'node:assert/strict';
import { createWriteStream } from 'node:fs';
import { after, before, test } from 'node:test';
import { captureConsole, launchChromium } from './lib/chromium.mjs';
import { CLIP_HEIGHT, CLIP_WIDTH, ensureClip } from './lib/clip.mjs';
import { startNode } from './lib/node.mjs';
import { artifact } from './lib/paths.mjs';
import { waitUntil } from './lib/wait.mjs';

const TABLE = 'demo';
/** Frames the player must decode: two seconds of the 30 fps clip. */
const MIN_FRAMES = 60;
const MEDIA_TIMEOUT_MS = 30_000;

let node;
let browser;
let pageLog;

before(async () => {
  const clip = await ensureClip();
  node = await startNode({ name: 'whip_whep' });
  browser = await launchChromium({ clip });
  pageLog = createWriteStream(artifact('whip_whep.pages.log'));
});

after(async () => {
  await browser?.close();
  const how = await node?.stop();
  if (how) console.log(`# tablecast node stopped (${how.signal ?? `exit ${how.code}`}); log: ${node.logPath}`);
  await new Promise((resolve) => (pageLog ? pageLog.end(resolve) : resolve()));
});

/** A fresh page (own context, so its own media permissions and storage) at `path`. */
async function openPage(path, label, viewport = { width: 1280, height: 800 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  captureConsole(page, label, (line) => pageLog.write(line));
  await page.goto(`${node.baseUrl}${path}`);
  return page;
}

function describeFailure(what, last, extra = {}) {
  return [
    what,
    `last stats: ${JSON.stringify(last ?? null)}`,
    ...Object.entries(extra).map(([k, v]) => `${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`),
    `node log (${node.logPath}), last lines:\n${node.logTail(25)}`,
  ].join('\n');
}

test('a dealer page publishes its fake camera over WHIP and a player page decodes it over WHEP', { timeout: 120_000 }, async (t) => {
  const dealer = await openPage(`/dealer/${TABLE}`, 'dealer');
  const goLive = dealer.getByRole('button', { name: /go live/i });
  await goLive.click({ timeout: 15_000 }); // enabled once the camera is open

  const dealerStats = await waitUntil(
    () => dealer.evaluate(async () => ({
      page: window.tablecastDealerPage,
      stats: window.tablecastDealer ? await window.tablecastDealer.stats() : null,
    })),
    (s) => s.page.error !== null || (s.stats?.connectionState === 'connected' && s.stats.bytesSent > 0),
    {
      timeoutMs: MEDIA_TIMEOUT_MS,
      describe: (last) => describeFailure('the dealer page did not get on air over WHIP', last?.stats, { page: last?.page }),
    },
  );
  assert.equal(dealerStats.page.error, null, `the dealer page reported an error: ${JSON.stringify(dealerStats.page.error)}`);
  t.diagnostic(`dealer publishing: ${dealerStats.stats.frameWidth}x${dealerStats.stats.frameHeight}, DTLS ${dealerStats.stats.tlsVersion} (${dealerStats.stats.dtlsVersion})`);

  const player = await openPage(`/play/${TABLE}`, 'player');
  const last = await waitUntil(
    () => player.evaluate(async () => ({
      page: { state: window.tablecastPage.state, error: window.tablecastPage.error },
      stats: window.tablecast.client?.player ? await window.tablecast.client.player.stats() : null,
    })),
    (s) => s.page.error !== null || (s.stats !== null && s.stats.framesDecoded > MIN_FRAMES && s.stats.frameWidth > 0),
    {
      timeoutMs: MEDIA_TIMEOUT_MS,
      describe: (l) => describeFailure(
        `the player page did not decode more than ${MIN_FRAMES} frames within ${MEDIA_TIMEOUT_MS / 1000} s`,
        l?.stats,
        { page: l?.page },
      ),
    },
  );
  assert.equal(last.page.error, null, `the player page reported an error: ${JSON.stringify(last.page.error)}`);
  const s = last.stats;
  assert.ok(s.framesDecoded > MIN_FRAMES, describeFailure(`framesDecoded ${s.framesDecoded} <= ${MIN_FRAMES}`, s));
  assert.ok(s.frameWidth > 0 && s.frameHeight > 0, describeFailure('no frame size', s));

  const msg = `DTLS negotiated with Chromium: tlsVersion=${s.tlsVersion} (${s.dtlsVersion}), cipher=${s.dtlsCipher}, srtp=${s.srtpCipher}`;
  t.diagnostic(msg);
  console.log(`# ${msg}`);
  t.diagnostic(`player: ${s.framesDecoded} frames decoded at ${s.frameWidth}x${s.frameHeight} (clip ${CLIP_WIDTH}x${CLIP_HEIGHT}), lost ${s.packetsLost}, freezes ${s.freezeCount}, rtt ${s.rtt}`);

  // The pictures show the dealer's stats with a measured bitrate, and the player's video.
  await dealer.waitForFunction(() => !['—', '0 kb/s'].includes(document.getElementById('s-bitrate').textContent), null, { timeout: 10_000 });
  await player.waitForFunction(() => {
    const v = document.getElementById('video');
    return v.readyState >= 2 && v.videoWidth > 0;
  }, null, { timeout: 10_000 });
  await dealer.screenshot({ path: artifact('whip_whep-dealer.png') });
  await player.screenshot({ path: artifact('whip_whep-player.png') });

  await player.evaluate(() => window.tablecast.client.close());
  await dealer.getByRole('button', { name: /stop/i }).click();
  await dealer.waitForFunction(() => window.tablecastDealer === null && window.tablecastDealerPage.error === null, null, { timeout: 10_000 });
  await player.context().close();
  await dealer.context().close();
});

test('the control data channel opens: hello gets the welcome snapshot, ping gets pong', { timeout: 60_000 }, async () => {
  const page = await openPage('/', 'control-channel');
  const result = await page.evaluate(async (table) => {
    const { play, demoToken } = await import('/web/tablecast.js');
    const token = await demoToken({ role: 'player', table });
    const p = await play({ table, token });
    await p.channelOpen(15_000);
    const next = (type) => new Promise((resolve, reject) => {
      const off = p.on('message', (m) => { if (m.type === type) { off(); resolve(m); } });
      setTimeout(() => reject(new Error(`no ${type} within 10 s`)), 10_000);
    });
    const welcome = next('welcome');
    p.send({ type: 'hello', token: '' });
    const w = await welcome;
    const pong = next('pong');
    const sent = Date.now();
    p.send({ type: 'ping', client_ms: sent });
    const got = await pong;
    await p.stop();
    return { welcome: w, pong: got, sent };
  }, TABLE);
  assert.equal(result.welcome.v, 1);
  assert.equal(result.welcome.snapshot.table.id, TABLE);
  assert.equal(result.welcome.seq, result.welcome.snapshot.last_seq);
  assert.equal(result.pong.client_ms, result.sent);
  assert.ok(Math.abs(result.pong.server_ms - result.sent) < 5000, `server clock far off: ${JSON.stringify(result.pong)}`);
  await page.context().close();
});

test('a WHEP POST with a bad token is refused with 401, surfaced by the library as an Error with status 401', { timeout: 60_000 }, async () => {
  const page = await openPage('/', 'bad-token');
  const err = await page.evaluate(async (table) => {
    const { play } = await import('/web/tablecast.js');
    try {
      const p = await play({ table, token: 'not-a-valid-token' });
      await p.stop();
      return null;
    } catch (e) {
      return { isError: e instanceof Error, name: e.name, status: e.status, message: e.message, serverMessage: e.serverMessage };
    }
  }, TABLE);
  assert.ok(err, 'play() with a bad token resolved instead of throwing');
  assert.equal(err.isError, true, `not an Error: ${JSON.stringify(err)}`);
  assert.equal(err.status, 401, `expected status 401: ${JSON.stringify(err)}`);
  assert.match(err.message, /401/);
  assert.ok(!err.serverMessage.includes('\n'), 'the server message is one line');

  // The player page shows the refusal instead of hanging on "Connecting…".
  const playPage = await openPage(`/play/${TABLE}?token=not-a-valid-token`, 'bad-token-page');
  await playPage.waitForFunction(() => window.tablecastPage.error !== null, null, { timeout: 15_000 });
  const shown = await playPage.evaluate(() => window.tablecastPage.error);
  assert.equal(shown.status, 401, JSON.stringify(shown));
  await playPage.screenshot({ path: artifact('whip_whep-player-bad-token.png') });
  await playPage.context().close();
  await page.context().close();
});
