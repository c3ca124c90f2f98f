// Results on the frame: a Chromium dealer page publishes a camera whose frames carry their
// number (large for the eye, in binary boxes for the test), the dealer submits a result, and
// three Chromium players (desktop, tablet, phone: different layers) reveal it. At each reveal
// the page draws the frame on screen: its RTP timestamp, mapped through the player's
// `video.map`, must be the frame the result names or the next one, and the three players'
// frames must carry the same number within one. Then the same after the dealer reconnects
// (a new stream, clock and offset) and after a player switches layer.
//
// Each reveal's frame is saved as a PNG in tests/browser/.artifacts/reveal-*.png.
// REVEAL_ROUNDS=50 plays fifty rounds in the first phase and prints the reveal error's
// median and 99th percentile (BENCHMARKS.md), beside what revealing on arrival would show.
//
// Needs `cargo build --release` first (or TABLECAST_BIN). Run: node --test tests/browser/
import assert from 'node:assert/strict';
import { createWriteStream, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { launchChromium } from './lib/chromium.mjs';
import { COUNTER_BITS, CLIP_FPS, CLIP_SECONDS, counterBitAt, ensureCounterClip } from './lib/clip.mjs';
import { startNode } from './lib/node.mjs';
import { LAYOUTS, dealHttp, decoding, demoToken, goLive, joined, openPage } from './lib/pages.mjs';
import { FIXTURES_DIR, artifact } from './lib/paths.mjs';
import { waitUntil } from './lib/wait.mjs';

const TABLE = 'studio';
/** One frame at 30 frames a second, in 90 kHz ticks. */
const FRAME_TICKS = 3000;
/** The clip loops: its frame numbers repeat after this many. */
const CLIP_FRAMES = CLIP_FPS * CLIP_SECONDS;
const ROUNDS = Math.max(1, Number(process.env.REVEAL_ROUNDS ?? 1));

let node;
let browser;
let log;

before(async () => {
  const clip = await ensureCounterClip();
  node = await startNode({ name: 'reveal', config: path.join(FIXTURES_DIR, 'tables.toml') });
  browser = await launchChromium({ clip });
  log = createWriteStream(artifact('reveal.pages.log'));
});

after(async () => {
  await browser?.close();
  await node?.stop();
  await new Promise((resolve) => (log ? log.end(resolve) : resolve()));
});

/**
 * In a player page: at each reveal, draw the frame on screen and read its number from the
 * boxes; and note when a frame was last presented, and the page's long tasks.
 */
function watchReveals(page, bits) {
  return page.evaluate((at) => {
    const c = window.tablecast.client;
    const v = document.getElementById('video');
    const canvas = document.createElement('canvas');
    window.reveals = [];
    const onPresented = () => {
      window.presentedAt = performance.now();
      v.requestVideoFrameCallback(onPresented);
    };
    v.requestVideoFrameCallback(onPresented);
    window.longTasks = [];
    new PerformanceObserver((l) => { for (const e of l.getEntries()) window.longTasks.push([Math.round(e.startTime), Math.round(e.duration)]); }).observe({ type: 'longtask' });
    c.on('round.result', () => { window.resultAt = performance.now(); });
    // On request: the camera frame (through the video.maps) and the number drawn in it, of each
    // of the next `n` presented frames.
    const readCounter = (ctx, w, h) => {
      let counter = 0;
      for (const [b, p] of at.entries()) {
        const px = ctx.getImageData(Math.round(p.x * w), Math.round(p.y * h), 1, 1).data;
        if (px[0] + px[1] + px[2] > 3 * 128) counter |= 1 << b;
      }
      return counter;
    };
    window.readCounter = readCounter;
    window.sampleFrames = (n) => new Promise((resolve) => {
      const out = [];
      const sample = (_now, meta) => {
        const lagMs = Math.round(performance.now() - meta.expectedDisplayTime);
        canvas.width = v.videoWidth;
        canvas.height = v.videoHeight;
        const ctx = canvas.getContext('2d', { willReadFrequently: true });
        ctx.drawImage(v, 0, 0);
        const shown = c.frames.cameraFrame(meta.rtpTimestamp >>> 0);
        if (shown) out.push([shown.mediaTs, readCounter(ctx, canvas.width, canvas.height), lagMs, canvas.height]);
        if (out.length >= n) resolve(out);
        else v.requestVideoFrameCallback(sample);
      };
      v.requestVideoFrameCallback(sample);
    });
    c.on('revealed', (r) => {
      // A callback that runs late (a busy page) may draw a newer frame than the one it names.
      const lagMs = r.shownAt === null ? null : Math.round(performance.now() - r.shownAt);
      canvas.width = v.videoWidth;
      canvas.height = v.videoHeight;
      const ctx = canvas.getContext('2d', { willReadFrequently: true });
      ctx.drawImage(v, 0, 0);
      const counter = readCounter(ctx, canvas.width, canvas.height);
      window.reveals.push({
        round: r.event.round, via: r.via, rtp: r.rtp, mediaTs: r.mediaTs, waitedMs: r.waitedMs, heldMs: r.heldMs, previous: r.previousFrames, unseen: r.unseenFrames, dropped: r.droppedFrames, late: r.late, atArrivalFrames: r.atArrivalFrames, lagMs,
        target: r.event.media_ts ?? null, clock: r.event.media_clock ?? null, counter,
        width: canvas.width, height: canvas.height, png: canvas.toDataURL('image/png'),
      });
    });
  }, bits);
}

/** Signed distance in RTP's 32-bit timestamp space, in frames. */
function framesApart(a, b) {
  return ((a - b) | 0) / FRAME_TICKS;
}

/** The shortest distance between two of the clip's frame numbers, which wrap. */
function counterApart(a, b) {
  const d = Math.abs(a - b) % CLIP_FRAMES;
  return Math.min(d, CLIP_FRAMES - d);
}

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

test('every player reveals a result on the frame it names, through a dealer reconnect and a layer switch', { timeout: 120_000 + ROUNDS * 6_000 }, async (t) => {
  const base = node.baseUrl;
  const write = (line) => log.write(line);
  const dealer = await openPage(browser, `${base}/dealer/${TABLE}`, { label: 'dealer', log: write });
  const published = await goLive(dealer);
  t.diagnostic(`dealer on air: ${published.frameWidth}x${published.frameHeight}, ${published.layers.length} layer(s)`);
  const names = ['alice', 'bob', 'carol-phone'];
  const players = await Promise.all([
    openPage(browser, `${base}/play/${TABLE}`, { label: names[0], log: write, layout: { viewport: { width: 1280, height: 800 } } }),
    openPage(browser, `${base}/play/${TABLE}`, { label: names[1], log: write, layout: LAYOUTS.tablet }),
    openPage(browser, `${base}/play/${TABLE}`, { label: names[2], log: write, layout: LAYOUTS.phone }),
  ]);
  await Promise.all(players.map((p) => joined(p)));
  await Promise.all(players.map((p) => decoding(p)));
  const bits = Array.from({ length: COUNTER_BITS }, (_, b) => counterBitAt(b));
  await Promise.all(players.map((p) => watchReveals(p, bits)));
  const token = await demoToken(node, 'dealer', TABLE);

  const maps = (p) => p.evaluate(() => window.tablecast.client.frames.maps);
  const errors = [];
  const arrivalErrors = [];
  let busy = 0;
  // The errors of reveals whose page saw every frame just before (none presented while it was
  // busy, none never presented).
  const clean = [];

  /**
   * The maps agree with the pictures: a camera frame that two players' maps name carries the
   * same number on both, whatever their layers. A callback's drawImage may catch a frame after
   * the one it reports (the compositor runs on, and a starved page's callback runs late), so
   * numbers may differ by one, and now and then by more; a map that is a frame or more off
   * differs on most of the frames it names.
   */
  const mapsMatchPictures = async (phase) => {
    const samples = await Promise.all(players.map((p) => p.evaluate(() => window.sampleFrames(45))));
    const all = samples.flatMap((list, n) => list
      .filter(([, , lagMs]) => lagMs <= 10) // drawn well after its display time: maybe a later frame
      .map(([mediaTs, counter]) => ({ who: names[n], mediaTs, counter })));
    // The same camera frame: mapped within 5 ms (layers map to the reference within ticks).
    const first = all[0]?.mediaTs ?? 0;
    all.sort((x, y) => framesApart(x.mediaTs, first) - framesApart(y.mediaTs, first));
    const groups = [];
    for (const x of all) {
      const g = groups.at(-1);
      if (g && Math.abs((x.mediaTs - g[0].mediaTs) | 0) <= 450) g.push(x);
      else groups.push([x]);
    }
    const shared = groups.filter((g) => new Set(g.map((x) => x.who)).size > 1);
    const apart = (g) => Math.max(...g.flatMap((x) => g.map((y) => counterApart(x.counter, y.counter))));
    const off = shared.filter((g) => apart(g) > 1);
    const exact = shared.filter((g) => apart(g) === 0).length;
    t.diagnostic(`${phase}: maps against pictures: ${shared.length} camera frames seen by two players or more, ${exact} with one number, ${off.length} more than a frame apart`);
    assert.ok(shared.length >= 5, `${phase}: too few frames seen by two players to compare: ${shared.length}`);
    assert.ok(off.length <= Math.max(1, shared.length / 10), `${phase}: the same camera frame carries numbers more than a frame apart on different players, ${off.length} times in ${shared.length}: ${JSON.stringify(off.slice(0, 5))}`);
    assert.ok(exact >= shared.length * 0.75, `${phase}: only ${exact} of ${shared.length} camera frames carry one number on every player`);
  };

  /** Plays a round to its result and checks every player's reveal; returns the result's clock. */
  const round = async (phase, i) => {
    await dealHttp(node, TABLE, token, 'open', {});
    await Promise.all(players.map((p) => p.waitForFunction(() => window.tablecast.client.table?.state === 'betting_open', null, { timeout: 30_000 })));
    await dealHttp(node, TABLE, token, 'close', {});
    // As a dealer turns the cards over: every page has shown betting closed and is presenting
    // video again (a busy page presents no frames while it lays itself out).
    await Promise.all(players.map((p) => p.waitForFunction(() => window.tablecast.client.table?.state === 'betting_closed' && performance.now() - window.presentedAt < 150, null, { timeout: 30_000, polling: 'raf' })));
    const answer = await dealHttp(node, TABLE, token, 'result', { outcome: 'banker' });
    assert.ok(Number.isInteger(answer.media_ts) && Number.isInteger(answer.media_clock), `${phase}: the result names no frame: ${JSON.stringify(answer)}`);
    const reveals = await Promise.all(players.map((p, n) => waitUntil(
      () => p.evaluate((r) => window.reveals.find((x) => x.round === r) ?? null, answer.round),
      (x) => x !== null,
      { timeoutMs: 15_000, intervalMs: 100, describe: () => `${phase}: ${names[n]} did not reveal round ${answer.round}` },
    )));
    const lines = reveals.map((r, n) => {
      const late = Math.round(framesApart(r.mediaTs, answer.media_ts) * 100) / 100;
      return `${names[n]} ${r.width}x${r.height}: frame #${r.counter} by '${r.via}', ${late} frame(s) after the named one, waited ${r.waitedMs} ms, held ${r.heldMs} ms, the frame before at ${r.previous?.toFixed(2)}, ${r.unseen} presented unseen, ${r.dropped} never presented, drawn ${r.lagMs} ms after its display time${r.atArrivalFrames === null ? '' : `; on arrival the video was ${r.atArrivalFrames.toFixed(2)} frame(s) from it`}`;
    });
    if (i === 0) {
      const tasks = await Promise.all(players.map((p) => p.evaluate(() => window.longTasks.filter((x) => x[0] > window.resultAt - 2000).map((x) => `${Math.round(x[0] - window.resultAt)}+${x[1]}`).join(' '))));
      t.diagnostic(`${phase}: the pages' long tasks around the result (ms from it + length): ${tasks.join(' | ')}`);
      t.diagnostic(`${phase}: named ${answer.media_ts} in clock ${answer.media_clock}; ${lines.join('; ')}`);
      const m = await Promise.all(players.map(maps));
      write(`${phase}: maps ${JSON.stringify(m)}\n`);
    }
    for (const [n, r] of reveals.entries()) {
      writeFileSync(artifact(`reveal-${phase.replace(/\W+/g, '-')}-${i}-${names[n]}.png`), Buffer.from(r.png.split(',')[1], 'base64'));
      assert.equal(r.target, answer.media_ts, `${phase}: ${names[n]} got another frame in its round.result`);
      assert.equal(r.clock, answer.media_clock, `${phase}: ${names[n]} got another clock in its round.result`);
      assert.equal(r.via, 'frame', `${phase}: ${names[n]} revealed by '${r.via}', not on the frame (after ${r.waitedMs} ms)`);
      const late = framesApart(r.mediaTs, answer.media_ts);
      errors.push(Math.max(0, Math.round(late)));
      if ((r.unseen ?? 0) + (r.dropped ?? 0) > 0) busy += 1;
      else clean.push(Math.max(0, Math.round(late)));
      if (r.atArrivalFrames !== null) arrivalErrors.push(r.atArrivalFrames);
      // On that frame or the next, or as soon after as the page could: frames the browser
      // presented while the page's main thread was busy, or never presented, are past before it
      // can draw anything. An event that came after its frame was on screen (late) has neither
      // excuse.
      assert.ok(late >= -0.15 && Math.round(late) <= 1 + (r.unseen ?? 0) + (r.dropped ?? 0), `${phase}: ${names[n]} revealed ${late.toFixed(2)} frames after the named frame (${r.unseen} presented while its page was busy, ${r.dropped} never presented)`);
    }
    return answer.media_clock;
  };

  // 1. A plain round (or REVEAL_ROUNDS of them).
  await mapsMatchPictures('first');
  let clock;
  for (let i = 0; i < ROUNDS; i += 1) clock = await round('first', i);

  // 2. The dealer reconnects: a new WHIP session, so new SSRCs, clocks and offsets.
  await dealer.locator('#stop').click();
  await dealer.waitForFunction(() => window.tablecastDealer === null && window.tablecastDealerPage.state === 'idle', null, { timeout: 10_000 });
  await goLive(dealer);
  await Promise.all(players.map((p, n) => waitUntil(
    () => maps(p),
    (m) => m.some((x) => x.clock !== clock),
    { timeoutMs: 20_000, intervalMs: 200, describe: (m) => `${names[n]} got no video.map for the dealer's new stream: ${JSON.stringify(m)}` },
  )));
  await mapsMatchPictures('after the dealer reconnected');
  const newClock = await round('after the dealer reconnected', 0);
  assert.notEqual(newClock, clock, 'the reconnected dealer\'s stream is a new clock');

  // 3. Alice switches to the lowest layer, Carol (a phone) asks for the highest.
  const height = (p) => p.evaluate(() => window.tablecast.client.quality.frameHeight ?? 0);
  const before = await Promise.all([players[0], players[2]].map(height));
  const lastMap = (await maps(players[0])).at(-1);
  await players[0].evaluate(() => window.tablecast.client.setQuality('low'));
  await players[2].evaluate(() => window.tablecast.client.setQuality('high'));
  const [aliceAfter] = await Promise.all([
    waitUntil(() => height(players[0]), (h) => h > 0 && h < before[0], { timeoutMs: 20_000, intervalMs: 200, describe: (h) => `alice stayed at ${h} lines (was ${before[0]})` }),
  ]);
  await waitUntil(() => maps(players[0]), (m) => m.at(-1).rtp !== lastMap.rtp, { timeoutMs: 5_000, intervalMs: 200, describe: (m) => `alice got no video.map for her new layer: ${JSON.stringify(m)}` });
  t.diagnostic(`layer switch: alice ${before[0]} → ${aliceAfter} lines; carol from ${before[1]}`);
  await mapsMatchPictures('after a layer switch');
  await round('after a layer switch', 0);

  const sorted = [...errors].sort((a, b) => a - b);
  const arrivals = [...arrivalErrors].sort((a, b) => a - b);
  const within = sorted.filter((e) => e <= 1).length;
  t.diagnostic(`reveal error over ${sorted.length} reveals (frames after the named one): p50 ${percentile(sorted, 50)}, p99 ${percentile(sorted, 99)}, max ${sorted.at(-1)}; ${within} (${Math.round((100 * within) / sorted.length)}%) on the frame or the next; ${busy} with frames the page could not see just before (busy or never presented)`);
  if (clean.length > 0) {
    const c = [...clean].sort((a, b) => a - b);
    t.diagnostic(`reveals whose page saw every frame before them: ${c.length}, error p50 ${percentile(c, 50)}, p99 ${percentile(c, 99)}, max ${c.at(-1)} frames`);
  }
  if (arrivals.length > 0) {
    const f = (x) => x.toFixed(1);
    t.diagnostic(`on the event's arrival the video was p50 ${f(percentile(arrivals, 50))} frames from the named one, p1 ${f(arrivals[0])}, p99 ${f(percentile(arrivals, 99))}, max ${f(arrivals.at(-1))} (negative: revealing on arrival would have spoiled it)`);
  }
});
