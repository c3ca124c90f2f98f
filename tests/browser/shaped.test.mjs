// Each player gets the layer its own link carries. One dealer page publishes the fake camera's
// three simulcast layers (1280x720, 640x360, 320x180) to the demo table, and three players
// watch it, each Chromium in a network namespace of its own, so that each has a link of its own
// to shape:
//
// - on a clean link, a player keeps 1280x720 throughout and its link never backs off;
// - a player whose downlink a token bucket holds to 600 kbit/s (tbf on the host's end of its
//   veth pair) settles on the lowest layer (320x180) within 5 s of the shaping, freezes fewer
//   than 3 times in the 30 s after, and goes back up within 10 s once the shaping is lifted;
// - a player losing 5% of the datagrams sent to it, at random (nftables in its namespace), keeps
//   decoding above the lowest layer, and NACK/RTX repairs at least 99% of the video packets lost.
//
// The node listens on the dealer's pair (the dealer's page gets a `tablecast token` dealer token
// in its URL: demo dealer tokens are for loopback only); each player's namespace has a route to
// that one address through its own pair, so every packet of the test crosses the veth pairs in
// 198.18.0.0/15 made here, or loopback, and each player's video comes down its own pair.
//
// Two things measured with care. The freezes are the video's `freezeCount` over the 30 s, plus
// one when a freeze is still under way as the window closes (the browser counts a freeze only when
// a frame ends it, so a picture frozen to the end would count none), less those the clean player
// had at the same moments (the dealer's or the machine's, not the link's). The loss is counted by
// SSRC, and the browser's `packetsLost` is the loss before RTX repair: see the loss test.
//
// Every figure the test sees is printed (diagnostics) and written to .artifacts/shaped.*: the
// times to settle, back up and back to 1280x720, the freezes, a per-second table of the shaped
// player's layer and link as the node's session listing shows them, and the loss accounting.
//
// Needs root, iproute2 (ip, tc), nftables, Chromium, ffmpeg and `cargo build --release`.
// Run: cd tests/browser && node --test shaped.test.mjs
import assert from 'node:assert/strict';
import { createWriteStream, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { CHROMIUM_BINARY, launchChromium } from './lib/chromium.mjs';
import { CLIP_HEIGHT, CLIP_WIDTH, ensureClip } from './lib/clip.mjs';
import { recordFrames } from './lib/frames.mjs';
import { Netns, requireTools } from './lib/netns.mjs';
import { startNode } from './lib/node.mjs';
import { goLive, joined, openPage } from './lib/pages.mjs';
import { FIXTURES_DIR, artifact } from './lib/paths.mjs';
import { waitUntil } from './lib/wait.mjs';

const TABLE = 'demo';
const TOP = `${CLIP_WIDTH}x${CLIP_HEIGHT}`;
const LOWEST = `${CLIP_WIDTH / 4}x${CLIP_HEIGHT / 4}`;
/** The shaped player's downlink: `tc qdisc ... tbf rate 600kbit burst 6000 latency 100ms`. */
const SHAPE = { rate: '600kbit', burst: '6000', latency: '100ms' };
// The issue's bounds.
const SETTLE_MS = 5_000;
const FREEZE_WINDOW_MS = 30_000;
const MAX_FREEZES = 3;
const BACK_UP_MS = 10_000;
const LOSS_PERCENT = 5;
/** Looks (one a second) the clean player may take to return to 1280x720 after the dealer's encoder did. */
const DEALER_SLACK = 3;
const MIN_RECOVERED = 0.99;
// How long the test looks, beyond the bounds, to report what it saw (never asserted).
const TOP_REPORT_MS = 60_000;
const LOSS_WINDOW_MS = 45_000;
/** How long past a bound the shaped player is watched, so a failing run says when it got there. */
const REPORT_EXTRA_MS = 15_000;
/** After the loss is lifted, repairs still under way get this long to land. */
const REPAIR_SETTLE_MS = 5_000;

let skipReason = null;
/** dealer, clean, shaped, lossy: a namespace each. */
const ns = {};
/** Chromium for the dealer, and one for each player, each in its namespace. */
const browsers = {};
let node;
let log;
let operator;
/** /metrics covers every table: it takes an operator token for table `*`. */
let metricsToken;
let dealer;
/** The three player pages, by name. */
const players = {};
const sampler = { rows: [], stop: null };
/** Every figure the test saw, printed at the end and written to .artifacts/shaped.figures.json. */
const figures = {};

before(async () => {
  try {
    requireTools('tc', 'nft');
    for (const name of ['dealer', 'clean', 'shaped', 'lossy']) ns[name] = Netns.create(`tc-sh${name[0]}`);
  } catch (err) {
    if (!err.skip) throw err;
    skipReason = err.message;
    return;
  }
  log = createWriteStream(artifact('shaped.pages.log'));
  const clip = await ensureClip();
  node = await startNode({
    name: 'shaped',
    config: path.join(FIXTURES_DIR, 'tables.toml'),
    host: ns.dealer.hostIp,
    // Media candidates on every pair (and not on loopback: nobody plays from the host).
    env: { TABLECAST_MEDIA_ANNOUNCE_IPS: Object.values(ns).map((n) => n.hostIp).join(',') },
  });
  for (const name of ['clean', 'shaped', 'lossy']) ns[name].reach(ns.dealer.hostIp);
  operator = await node.token({ role: 'operator', table: TABLE, user: 'ops-shaped' });
  metricsToken = await node.token({ role: 'operator', table: '*', user: 'ops-shaped-metrics' });
  browsers.dealer = await launchChromium({
    clip,
    executablePath: ns.dealer.wrapper(CHROMIUM_BINARY),
    // getUserMedia needs a secure context; the page is plain HTTP on the pair's address.
    extraArgs: [`--unsafely-treat-insecure-origin-as-secure=${node.baseUrl}`],
  });
  for (const name of ['clean', 'shaped', 'lossy']) {
    browsers[name] = await launchChromium({ executablePath: ns[name].wrapper(CHROMIUM_BINARY) });
  }
});

after(async () => {
  sampler.stop?.();
  await sampler.done;
  for (const b of Object.values(browsers)) await b.close().catch(() => {});
  const how = await node?.stop();
  if (how) console.log(`# tablecast node stopped (${how.signal ?? `exit ${how.code}`}); log: ${node.logPath}`);
  // The namespaces take their veth pairs, the tbf qdisc and the nftables table along.
  for (const n of Object.values(ns)) n.deleteSync();
  if (Object.keys(figures).length > 0) {
    writeFileSync(artifact('shaped.figures.json'), `${JSON.stringify(figures, null, 2)}\n`);
    console.log(`# every figure: ${artifact('shaped.figures.json')}\n${JSON.stringify(figures)}`);
  }
  if (sampler.rows.length > 0) writeFileSync(artifact('shaped.samples.json'), `${JSON.stringify(sampler.rows)}\n`);
  await new Promise((resolve) => (log ? log.end(resolve) : resolve()));
});

const write = (line) => log.write(line);
const size = (s) => `${s?.width ?? 0}x${s?.height ?? 0}`;
const kbps = (bps) => (bps == null ? '-' : String(Math.round(bps / 1000)));

/** What a player page's video receiver says (inbound-rtp), with its WHEP session id. */
function videoIn(page) {
  return page.evaluate(async () => {
    const c = window.tablecast?.client;
    const p = c?.player;
    if (!p) return { session: null, error: window.tablecastPage?.error ?? null };
    let v = null;
    for (const r of (await p.pc.getStats()).values()) {
      if (r.type === 'inbound-rtp' && r.kind === 'video') v = r;
    }
    // The RTX SSRC from the answer too (a=ssrc-group:FID <media> <rtx>), should the stats lack it.
    const fid = /a=ssrc-group:FID (\d+) (\d+)/.exec(p.pc.remoteDescription?.sdp ?? '');
    return {
      session: p.sessionId,
      connection: c.connection.state,
      at: performance.timeOrigin + performance.now(),
      width: v?.frameWidth ?? 0,
      height: v?.frameHeight ?? 0,
      framesDecoded: v?.framesDecoded ?? 0,
      framesDropped: v?.framesDropped ?? 0,
      keyFramesDecoded: v?.keyFramesDecoded ?? 0,
      freezeCount: v?.freezeCount ?? 0,
      totalFreezesDuration: v?.totalFreezesDuration ?? 0,
      bytesReceived: v?.bytesReceived ?? 0,
      packetsReceived: v?.packetsReceived ?? 0,
      packetsLost: v?.packetsLost ?? 0,
      retransmittedPacketsReceived: v?.retransmittedPacketsReceived ?? null,
      retransmittedBytesReceived: v?.retransmittedBytesReceived ?? null,
      nackCount: v?.nackCount ?? 0,
      pliCount: v?.pliCount ?? 0,
      firCount: v?.firCount ?? 0,
      ssrc: v?.ssrc ?? null,
      rtxSsrc: v?.rtxSsrc ?? (fid && Number(fid[1]) === v?.ssrc ? Number(fid[2]) : null),
      codec: v?.codecId ?? null,
    };
  });
}

/** The table's sessions as the operator's listing shows them, by session id. */
async function listing() {
  const res = await node.api('GET', `/api/v1/tables/${TABLE}/sessions`, { token: operator });
  assert.equal(res.status, 200, res.text);
  return new Map(res.json.map((s) => [s.session, s]));
}

/** The table's counters in the node's /metrics that say what the node did for its players. */
async function counters() {
  const res = await node.api('GET', '/metrics', { token: metricsToken });
  assert.equal(res.status, 200, res.text);
  const out = {};
  for (const [, name, labels, value] of res.text.matchAll(/^(tablecast_(?:rtp_retransmitted_packets|rtx_packets|nack|pli|pacer_dropped_packets|player_link_probe_packets|player_link_congestion|simulcast_layer_switches|rtx_unasked_packets)_total)\{([^}]*)\} (\d+)$/gm)) {
    if (!labels.includes(`table="${TABLE}"`)) continue;
    const direction = /direction="([^"]+)"/.exec(labels)?.[1];
    const key = `${name.replace(/^tablecast_|_total$/g, '')}${direction ? `.${direction}` : ''}`;
    out[key] = (out[key] ?? 0) + Number(value);
  }
  return out;
}

/** The table's player link gauges in /metrics: players by feedback and limit, and quantiles. */
async function linkMetrics() {
  const res = await node.api('GET', '/metrics', { token: metricsToken });
  assert.equal(res.status, 200, res.text);
  const out = {};
  for (const [, name, labels, value] of res.text.matchAll(/^tablecast_(player_links?[a-z_]*)\{([^}]*)\} ([0-9.e+-]+)$/gm)) {
    if (!labels.includes(`table="${TABLE}"`)) continue;
    const rest = labels.split(',').filter((l) => !l.startsWith('table=')).map((l) => l.replace(/"/g, '')).join(',');
    out[`${name}{${rest}}`] = Number(value);
  }
  return out;
}

/** `b - a`, counter by counter. */
const delta = (a, b) => Object.fromEntries(Object.keys(b).map((k) => [k, b[k] - (a[k] ?? 0)]));

/**
 * Freezes of the frames a page presented (lib/frames.mjs) between `from` and `to` (epoch ms),
 * by the rule of the stats' `freezeCount`: a frame later than max(3 x, 1 x + 150 ms) the mean
 * duration of the 30 frames before it. A freeze still going on at `to` is `ongoing`: the
 * browser counts it only once a frame ends it, so a window that ends inside one would miss it.
 */
async function presentedFreezes(page, from, to) {
  const frames = await page.evaluate(({ a, b }) => window.presented.filter((f) => f[0] >= a - 2000 && f[0] <= b).map((f) => f[0]), { a: from, b: to });
  let freezes = 0;
  let frozenMs = 0;
  let longestMs = 0;
  const gaps = [];
  const limit = (i) => {
    const durations = [];
    for (let j = Math.max(1, i - 30); j < i; j += 1) durations.push(frames[j] - frames[j - 1]);
    const mean = durations.length > 0 ? durations.reduce((x, y) => x + y, 0) / durations.length : 33;
    return Math.max(3 * mean, mean + 150);
  };
  for (let i = 1; i < frames.length; i += 1) {
    const gap = frames[i] - frames[i - 1];
    if (frames[i] < from) continue;
    longestMs = Math.max(longestMs, gap);
    if (gap >= limit(i)) {
      freezes += 1;
      frozenMs += gap;
      gaps.push([frames[i - 1], frames[i]]);
    }
  }
  const tail = frames.length > 0 ? to - frames.at(-1) : to - from;
  const ongoing = tail >= limit(frames.length);
  if (ongoing) {
    frozenMs += Math.min(tail, to - from);
    gaps.push([to - Math.min(tail, to - from), to]);
  }
  longestMs = Math.max(longestMs, Math.min(tail, to - from));
  return { presented: frames.filter((t) => t >= from).length, freezes, ongoing, frozenMs: Math.round(frozenMs), longestMs: Math.round(longestMs), gaps };
}

/** The dealer's encodings: rid, size, fps, kbit/s so far and why the encoder holds back. */
function dealerOut() {
  return dealer.evaluate(async () => {
    const out = {};
    for (const r of (await window.tablecastDealer.pc.getStats()).values()) {
      if (r.type === 'outbound-rtp' && r.kind === 'video') {
        out[r.rid ?? '-'] = {
          width: r.frameWidth ?? 0, height: r.frameHeight ?? 0, fps: r.framesPerSecond ?? 0,
          framesSent: r.framesSent ?? 0, limit: r.qualityLimitationReason ?? null, active: r.active ?? null,
        };
      }
    }
    return out;
  });
}

/** One look at everything: each player's receiver and listing entry, the dealer, the shaper. */
async function look() {
  const names = Object.keys(players);
  const [sessions, dealerLayers, ...seen] = await Promise.all([
    listing(), dealerOut().catch(() => null), ...names.map((n) => videoIn(players[n]).catch((err) => ({ error: err.message }))),
  ]);
  const row = { at: Date.now(), dealer: dealerLayers, tbf: ns.shaped.shaped(), players: {} };
  names.forEach((n, i) => {
    const entry = sessions.get(seen[i].session);
    row.players[n] = { ...seen[i], layer: entry?.layer ?? null, link: entry?.link ?? null, view: entry?.view ?? null };
  });
  return row;
}

/** Looks once a second until stopped, into sampler.rows (measurement, not synchronisation). */
function startSampler() {
  let stopped = false;
  let wake = null;
  sampler.stop = () => {
    stopped = true;
    wake?.();
  };
  sampler.done = (async () => {
    while (!stopped) {
      const started = Date.now();
      try {
        sampler.rows.push(await look());
      } catch (err) {
        if (!stopped) write(`[sampler] ${err.message}\n`);
      }
      await new Promise((resolve) => {
        wake = resolve;
        setTimeout(resolve, Math.max(0, 1000 - (Date.now() - started)));
      });
    }
  })();
}

/** The rows sampled between `from` and `to` (epoch ms). */
const rowsBetween = (from, to = Infinity) => sampler.rows.filter((r) => r.at >= from && r.at <= to);

/** The per-second table of one player from `from` (epoch ms), with its phases, as text lines. */
function table(name, from, marks) {
  const lines = [
    '    t | phase     | decoded   fps  kb/s  rtx frz lost nack pli | listed layer              pend | estimate delivered  loss queue  rtt backoffs probing | tbf drops | dealer f',
  ];
  let prev = null;
  for (const r of rowsBetween(from)) {
    const p = r.players[name];
    if (!p) continue;
    const t = (r.at - from) / 1000;
    const phase = [...marks].reverse().find((m) => m.at <= r.at)?.name ?? '';
    const dt = prev ? (p.at - prev.at) / 1000 : 0;
    const fps = prev && dt > 0 ? ((p.framesDecoded - prev.framesDecoded) / dt).toFixed(0) : '-';
    const rate = prev && dt > 0 ? kbps(((p.bytesReceived - prev.bytesReceived) * 8) / dt) : '-';
    const step = (key) => String(prev ? p[key] - prev[key] : '-').padStart(4);
    // bytesReceived counts what came on the RTX SSRC too (repairs and probes); this is that part.
    const rtx = prev && dt > 0 && p.retransmittedBytesReceived != null ? kbps(((p.retransmittedBytesReceived - prev.retransmittedBytesReceived) * 8) / dt) : '-';
    const l = p.layer;
    const layer = l ? `#${l.index ?? '-'} ${l.width}x${l.height} @${kbps(l.bitrate_bps)}k${l.paused ? ' paused' : ''}` : '-';
    const k = p.link;
    const link = k
      ? `${kbps(k.estimate_bps).padStart(8)} ${kbps(k.delivered_bps).padStart(9)} ${(k.loss * 100).toFixed(1).padStart(5)}% ${k.queue_ms.toFixed(0).padStart(5)} ${(k.rtt_ms ?? 0).toFixed(0).padStart(4)} ${String(k.backoffs).padStart(8)} ${kbps(k.probing_bps).padStart(7)}`
      : '-';
    const freezes = p.freezeCount - (rowsBetween(from)[0]?.players[name]?.freezeCount ?? 0);
    lines.push(`${t.toFixed(1).padStart(5)} | ${phase.padEnd(9)} | ${size(p).padEnd(9)} ${String(fps).padStart(3)} ${String(rate).padStart(5)} ${String(rtx).padStart(4)} ${String(freezes).padStart(3)} ${step('packetsLost')} ${step('nackCount')} ${step('pliCount')} | ${layer.padEnd(25)} ${String(l?.pending ?? '-').padStart(4)} | ${link} | ${String(r.tbf ? r.tbf.dropped : '-').padStart(9)} | ${r.dealer?.f ? `${size(r.dealer.f)} ${r.dealer.f.limit}` : '-'}`);
    prev = p;
  }
  return lines;
}

/** Waits until `page` decodes frames of `ok(size)`; returns when, and the stats then. */
async function decodes(page, ok, what, timeoutMs, intervalMs = 100) {
  const s = await waitUntil(() => videoIn(page), (v) => v.framesDecoded > 0 && ok(size(v), v), {
    timeoutMs, intervalMs, describe: (last, err) => `${what}: last ${JSON.stringify(last ?? err?.message)}`,
  });
  return { at: Date.now(), stats: s };
}

/**
 * Polls `page` until `ok(videoIn)` holds; returns when (epoch ms) and the stats then, or null
 * after `timeoutMs`.
 */
async function when(page, ok, timeoutMs, intervalMs = 100) {
  try {
    const stats = await waitUntil(() => videoIn(page), (v) => v.framesDecoded > 0 && ok(v), { timeoutMs, intervalMs });
    return { at: Date.now(), stats };
  } catch {
    return null;
  }
}

test('the dealer goes live with three layers, and a player in each of three namespaces decodes 1280x720', { timeout: 120_000 }, async (t) => {
  if (skipReason) {
    t.skip(skipReason);
    return;
  }
  const dealerToken = await node.token({ role: 'dealer', table: TABLE, user: 'dealer-shaped' });
  dealer = await openPage(browsers.dealer, `${node.baseUrl}/dealer/${TABLE}?token=${encodeURIComponent(dealerToken)}`, { label: 'dealer', log: write });
  await dealer.waitForFunction(() => document.getElementById('preview').videoWidth > 0, null, { timeout: 20_000 });
  await goLive(dealer);
  // Two cores run the node, four browsers and the dealer's three encoders: the encoder, short of
  // CPU, would scale every layer down (1280x720 to 960x540 ...), and no player could keep
  // 1280x720 whatever the node does. It is told to keep the resolution and drop frames instead;
  // the looks record whether it was short of CPU all the same (`dealerLimited`).
  figures.dealerDegradation = await dealer.evaluate(async () => {
    const sender = window.tablecastDealer.pc.getSenders().find((x) => x.track?.kind === 'video');
    const params = sender.getParameters();
    params.degradationPreference = 'maintain-resolution';
    try {
      await sender.setParameters(params);
    } catch (err) {
      return `refused: ${err.message}`;
    }
    return sender.getParameters().degradationPreference ?? 'not reported';
  });
  const layers = await waitUntil(dealerOut, (o) => ['q', 'h', 'f'].every((rid) => o[rid]?.framesSent > 0) && o.f.width === CLIP_WIDTH, {
    // The dealer's own bandwidth estimate ramps up before it sends the top layer; on a busy
    // machine that can take a while.
    timeoutMs: 45_000, describe: (o) => `the dealer does not send its three layers: ${JSON.stringify(o)}`,
  });
  t.diagnostic(`dealer: ${Object.entries(layers).map(([rid, l]) => `${rid} ${size(l)} (${l.limit})`).join(', ')}; degradation preference ${figures.dealerDegradation}`);

  for (const name of ['clean', 'shaped', 'lossy']) {
    players[name] = await openPage(browsers[name], `${node.baseUrl}/play/${TABLE}`, { label: name, log: write });
  }
  for (const name of Object.keys(players)) {
    await joined(players[name], 30_000);
    const top = await decodes(players[name], (s) => s === TOP, `the ${name} player does not decode ${TOP}`, 30_000, 250);
    await recordFrames(players[name]);
    figures[name] = { session: top.stats.session, ssrc: top.stats.ssrc, rtxSsrc: top.stats.rtxSsrc };
    t.diagnostic(`${name} player (namespace ${ns[name].name}, ${ns[name].peerIp}): session ${top.stats.session}, decoding ${size(top.stats)}`);
  }
  figures.start = Date.now();
  startSampler();
});

test('a player on a 600 kbit/s link settles on the lowest layer and goes back up when the link is freed', {
  timeout: 240_000,
}, async (t) => {
  if (skipReason) {
    t.skip(skipReason);
    return;
  }
  const page = players.shaped;
  assert.ok(page && figures.start, 'the players did not start');
  const f = (figures.shapedRun = { shape: SHAPE });
  const marks = [];
  const mark = (name) => {
    const at = Date.now();
    marks.push({ name, at });
    return at;
  };
  const base = await videoIn(page);
  // Each step waits past its bound when it has to, so that a failing run still reports when it
  // got there (or that it did not); the bounds are asserted at the end.
  ns.shaped.shape(SHAPE);
  const shapedAt = mark('shaped');
  try {
    // Settled: the decoder's frames are the lowest layer's size.
    const settled = await when(page, (v) => size(v) === LOWEST, SETTLE_MS + REPORT_EXTRA_MS);
    const settledAt = settled ? mark('settled') : mark('unsettled');
    f.settleMs = settled ? settled.at - shapedAt : null;
    const atSettle = settled?.stats ?? await videoIn(page);
    f.freezesWhileSettling = atSettle.freezeCount - base.freezeCount;
    t.diagnostic(`shaped to ${SHAPE.rate} at +0: ${settled ? `decoding ${LOWEST} after ${f.settleMs} ms` : `not decoding ${LOWEST} after ${SETTLE_MS + REPORT_EXTRA_MS} ms (${size(atSettle)})`}, ${f.freezesWhileSettling} freezes on the way`);

    // The window after settling: a fixed 30 s of measurement.
    await new Promise((resolve) => setTimeout(resolve, FREEZE_WINDOW_MS));
    const end = await videoIn(page);
    f.tbf = ns.shaped.shaped();
    // What an operator's dashboard shows of the table's links while one player is held back.
    f.linkMetrics = await linkMetrics();
    ns.shaped.unshape();
    const liftedAt = mark('lifted');
    const window = rowsBetween(settledAt, liftedAt).map((r) => r.players.shaped);
    f.freezesInWindow = end.freezeCount - atSettle.freezeCount;
    f.freezeSecondsInWindow = +(end.totalFreezesDuration - atSettle.totalFreezesDuration).toFixed(3);
    f.sizesInWindow = [...new Set(window.map(size))];
    f.framesInWindow = end.framesDecoded - atSettle.framesDecoded;
    f.sessionKept = end.session === atSettle.session;
    // What came on the media SSRC, without the RTX SSRC's repairs and probes (bytesReceived
    // counts both), kbit/s over the window: the video the node actually forwarded.
    const rtxBytes = (end.retransmittedBytesReceived ?? 0) - (atSettle.retransmittedBytesReceived ?? 0);
    f.mediaKbpsInWindow = Math.round(((end.bytesReceived - atSettle.bytesReceived - rtxBytes) * 8) / (liftedAt - settledAt));
    f.rtxKbpsInWindow = Math.round((rtxBytes * 8) / (liftedAt - settledAt));
    f.presented = await presentedFreezes(page, settledAt, liftedAt);
    // The clean player over the same window: a freeze it had at the same moment came from the
    // dealer or from the machine, not from the shaped player's link.
    f.cleanPresented = await presentedFreezes(players.clean, settledAt, liftedAt);
    f.sharedFreezes = f.presented.gaps.filter(([a, b]) => f.cleanPresented.gaps.some(([c, d]) => a < d && c < b)).length;
    // A freeze under way when the window closes is one the stats will count only when it ends.
    f.freezesCounted = f.freezesInWindow + (f.presented.ongoing ? 1 : 0);
    t.diagnostic(`${FREEZE_WINDOW_MS / 1000} s after settling: freezeCount +${f.freezesInWindow} (${f.freezeSecondsInWindow} s frozen)${f.presented.ongoing ? ' and one under way at the end' : ''}, ${f.framesInWindow} frames decoded, video ${f.mediaKbpsInWindow} kbit/s and RTX ${f.rtxKbpsInWindow} kbit/s received, sizes ${f.sizesInWindow.join(' ')}, same session ${f.sessionKept}; presented ${f.presented.presented} frames, ${f.presented.freezes} freezes, ${f.presented.frozenMs} ms frozen, longest gap ${f.presented.longestMs} ms; tbf ${JSON.stringify(f.tbf)}`);

    // Lifted: back up (a larger picture) within 10 s; then, for the report, back to 1280x720.
    const up = await when(page, (v) => v.height > CLIP_HEIGHT / 4, BACK_UP_MS + REPORT_EXTRA_MS);
    f.backUpMs = up ? up.at - liftedAt : null;
    f.backUpTo = up ? size(up.stats) : null;
    if (up) mark('up');
    t.diagnostic(`lifted at +${((liftedAt - shapedAt) / 1000).toFixed(1)} s: ${up ? `decoding ${f.backUpTo} after ${f.backUpMs} ms` : `still ${LOWEST} after ${BACK_UP_MS + REPORT_EXTRA_MS} ms`}`);
    const top = await when(page, (v) => size(v) === TOP, TOP_REPORT_MS - (Date.now() - liftedAt), 250);
    f.topMs = top ? top.at - liftedAt : null;
    if (top) mark('top');
    const last = await videoIn(page);
    t.diagnostic(top ? `back to ${TOP} ${f.topMs} ms after the lifting` : `not back to ${TOP} within ${TOP_REPORT_MS / 1000} s of the lifting (now ${size(last)})`);
    f.freezesAfterLift = last.freezeCount - end.freezeCount;
    f.backoffs = sampler.rows.at(-1)?.players.shaped?.link?.backoffs ?? null;

    assert.ok(f.settleMs !== null && f.settleMs <= SETTLE_MS, `the shaped player did not decode ${LOWEST} within ${SETTLE_MS} ms of the shaping: ${f.settleMs === null ? 'not at all' : `after ${f.settleMs} ms`}`);
    assert.ok(f.sessionKept, `the page changed its WHEP session during the window (${atSettle.session} then ${end.session}): its freeze count started again`);
    t.diagnostic(`/metrics while shaped: ${JSON.stringify(f.linkMetrics)}`);
    const limited = f.linkMetrics['player_links{feedback=transport-cc,limited=true}'];
    const lowest = f.linkMetrics['player_link_estimate_bps{quantile=0}'];
    assert.ok(limited >= 1 && lowest <= 1_000_000, `/metrics does not show the shaped player's limited link: ${limited} limited, lowest estimate ${lowest}`);
    assert.ok(f.linkMetrics['player_link_rtt_seconds{quantile=1}'] > 0, 'no round trip time in /metrics');
    assert.ok(f.backUpMs !== null && f.backUpMs <= BACK_UP_MS, `the player did not go above ${LOWEST} within ${BACK_UP_MS} ms of the lifting: ${f.backUpMs === null ? 'not at all' : `after ${f.backUpMs} ms`}`);
  } finally {
    ns.shaped.unshape();
    // The sampler's looks from the shaping on, as a table, into the report and a file.
    const lines = table('shaped', shapedAt, marks);
    writeFileSync(artifact('shaped.table.txt'), `${lines.join('\n')}\n`);
    for (const line of lines) t.diagnostic(line);
  }
});

// Fewer than 3 freezes in the 30 s after settling, measured in the scenario above. A freeze that
// the clean player had at the same moment (their frozen spans overlap) is the dealer's or the
// machine's, not the shaped link's: a shared machine that stalls for 300 ms freezes every page on
// it. Those are printed, and not held against the link; every other freeze is.
test('the 600 kbit/s player hardly freezes in the 30 s after settling', (t) => {
  if (skipReason) {
    t.skip(skipReason);
    return;
  }
  const f = figures.shapedRun;
  assert.ok(f?.presented, 'the 600 kbit/s scenario did not measure its window');
  const ofLink = Math.max(0, f.freezesCounted - f.sharedFreezes);
  const spans = (gaps) => gaps.map(([a, b]) => `+${((a - figures.start) / 1000).toFixed(1)} s ${Math.round(b - a)} ms`).join(', ') || 'none';
  t.diagnostic(`${f.freezesCounted} freezes counted (freezeCount +${f.freezesInWindow}, ${f.freezeSecondsInWindow} s frozen; presented ${f.presented.freezes}: ${spans(f.presented.gaps)}; longest gap ${f.presented.longestMs} ms); the clean player froze ${f.cleanPresented.freezes} times (${spans(f.cleanPresented.gaps)}), ${f.sharedFreezes} at the same moments; ${ofLink} held against the link`);
  assert.ok(ofLink < MAX_FREEZES, `${ofLink} freezes of the 600 kbit/s link in the ${FREEZE_WINDOW_MS / 1000} s after settling (freezeCount +${f.freezesInWindow}${f.presented.ongoing ? ', one under way at the end' : ''}, less ${f.sharedFreezes} the clean player had at the same moments; fewer than ${MAX_FREEZES} allowed); ${f.framesInWindow} frames decoded, ${f.presented.frozenMs} ms frozen`);
});

test('a player losing 5% of its packets keeps decoding, and NACK/RTX repairs at least 99% of the lost video', {
  timeout: 120_000,
}, async (t) => {
  if (skipReason) {
    t.skip(skipReason);
    return;
  }
  const page = players.lossy;
  assert.ok(page && figures.start, 'the players did not start');
  const base = await videoIn(page);
  assert.ok(base.ssrc != null, `no video SSRC in the lossy player's stats: ${JSON.stringify(base)}`);
  assert.ok(base.rtxSsrc != null, `no RTX SSRC for the lossy player's video (stats and answer): ${JSON.stringify(base)}`);
  const f = (figures.lossRun = { percent: LOSS_PERCENT, ssrc: base.ssrc, rtxSsrc: base.rtxSsrc });

  // What is counted. The drop rule takes 5% of every datagram towards the player, whatever it
  // is, and counts the drops by SSRC: the video as first sent (its media SSRC), its RTX stream,
  // and the rest (audio, RTCP, ICE, DTLS, the data channel). Only the first are the loss NACK/RTX
  // must repair, so only they are the denominator. A dropped retransmission is not a video
  // packet lost: the packet it carried is asked for again and counts as lost only if no later
  // repair arrives; counting it as well would add repairs' own losses to the denominator and
  // flatter the ratio.
  //
  // The numerator cannot be the browser's packetsLost alone. libwebrtc counts a packet that
  // arrives as an RTX repair on the RTX SSRC's statistics, not the media SSRC's
  // (RtpVideoStreamReceiver2 skips `recovered()` packets; RtxReceiveStream sets it), so the
  // video inbound-rtp `packetsLost` is the loss before repair: it should equal the media drops
  // counted here (both are reported, a sign that the namespace's rule and the browser see the
  // same packets).  So the issue's `1 - packetsLost / media drops` is about 0 whatever the node
  // does; it is reported, not asserted. What was never repaired is that loss less the repairs received
  // (`retransmittedPacketsReceived`, the packets on the RTX SSRC):
  //   unrepaired = packetsLost - retransmittedPacketsReceived,
  //   recovered  = 1 - unrepaired / media drops.
  // A repair that came twice, or RTX the node sends for another reason (a bandwidth probe
  // duplicates recent packets on RTX), would be counted as a repair: they are reported
  // (`rtxExcess`, RTX received beyond the loss), and the player's keyframe requests (PLI/FIR),
  // which a loss left unrepaired forces, are reported beside them.
  const nodeBefore = await counters();
  ns.lossy.loss(LOSS_PERCENT, { video: base.ssrc, rtx: base.rtxSsrc });
  const lossAt = Date.now();
  let stopped = false;
  try {
    // A fixed window of measurement, watching that the picture goes on.
    await new Promise((resolve) => setTimeout(resolve, LOSS_WINDOW_MS));
    ns.lossy.stopLoss();
    stopped = true;
    const stopAt = Date.now();
    const atStop = ns.lossy.lossCounters();
    // Repairs under way land: wait until what arrives on the RTX SSRC stops changing (or give up
    // after REPAIR_SETTLE_MS and take what came).
    const repairs = [];
    await waitUntil(async () => {
      repairs.push(ns.lossy.lossCounters().rtx_passed ?? 0);
      return repairs;
    }, (r) => Date.now() - stopAt >= 1000 && r.length >= 5 && r.at(-1) === r.at(-5), {
      timeoutMs: REPAIR_SETTLE_MS, intervalMs: 250,
    }).catch(() => {});
    const final = await videoIn(page);
    const nft = ns.lossy.lossCounters();
    // The node's counters are the table's (all three players), and the others lose nothing now.
    f.node = delta(nodeBefore, await counters());
    const rows = rowsBetween(lossAt, stopAt).map((r) => r.players.lossy).filter((r) => r && !r.error);

    f.windowMs = stopAt - lossAt;
    f.dropped = { video: nft.video_dropped ?? 0, rtx: nft.rtx_dropped ?? 0, other: nft.other_dropped ?? 0 };
    // What passed while the loss was on; RTX on, until the repairs under way had landed.
    f.passed = { video: atStop.video_passed ?? 0, rtx: atStop.rtx_passed ?? 0, other: atStop.other_passed ?? 0 };
    f.rtxPassedInAll = nft.rtx_passed ?? 0;
    // RTX the player got on the same link before the loss (while the other players were tested):
    // with nothing lost there is nothing to repair, so this is RTX sent for another reason.
    const first = rowsBetween(figures.start)[0]?.players.lossy;
    f.rtxBeforeLoss = first?.retransmittedPacketsReceived == null || base.retransmittedPacketsReceived == null
      ? null : base.retransmittedPacketsReceived - first.retransmittedPacketsReceived;
    const total = Object.values(f.dropped).reduce((a, b) => a + b, 0) + Object.values(f.passed).reduce((a, b) => a + b, 0);
    f.droppedShare = total > 0 ? +(Object.values(f.dropped).reduce((a, b) => a + b, 0) / total).toFixed(4) : null;
    f.packetsLost = final.packetsLost - base.packetsLost;
    f.packetsReceived = final.packetsReceived - base.packetsReceived;
    f.repairsReceived = final.retransmittedPacketsReceived == null ? null : final.retransmittedPacketsReceived - base.retransmittedPacketsReceived;
    f.unrepaired = f.repairsReceived == null ? null : Math.max(0, f.packetsLost - f.repairsReceived);
    f.rtxExcess = f.repairsReceived == null ? null : Math.max(0, f.repairsReceived - f.packetsLost);
    f.recovered = f.dropped.video > 0 && f.unrepaired != null ? +(1 - f.unrepaired / f.dropped.video).toFixed(5) : null;
    // The issue's formula, with the browser's packetsLost as it is (loss before repair).
    f.issueFormula = f.dropped.video > 0 ? +(1 - f.packetsLost / f.dropped.video).toFixed(5) : null;
    f.nacks = final.nackCount - base.nackCount;
    f.keyframeRequests = final.pliCount - base.pliCount + final.firCount - base.firCount;
    f.freezes = final.freezeCount - base.freezeCount;
    f.framesDecoded = final.framesDecoded - base.framesDecoded;
    f.sizes = [...new Set(rows.map(size))];
    f.sessionKept = final.session === base.session && final.ssrc === base.ssrc;
    const last = sampler.rows.at(-1)?.players.lossy;
    f.link = last?.link ?? null;
    f.layer = last?.layer ?? null;
    // Frames decoded in each 5 s of the window, from the sampler.
    f.framesPer5s = [];
    for (let from = lossAt; from + 5000 <= stopAt; from += 5000) {
      const slice = rowsBetween(from, from + 5000);
      f.framesPer5s.push(slice.length >= 2 ? slice.at(-1).players.lossy.framesDecoded - slice[0].players.lossy.framesDecoded : null);
    }

    t.diagnostic(`${LOSS_PERCENT}% loss for ${(f.windowMs / 1000).toFixed(1)} s: nft dropped ${f.dropped.video} video, ${f.dropped.rtx} RTX, ${f.dropped.other} other (${(f.droppedShare * 100).toFixed(2)}% of ${total}); passed ${f.passed.video} video, ${f.passed.rtx} RTX, ${f.passed.other} other`);
    t.diagnostic(`browser: packetsLost +${f.packetsLost} (before repair; nft's video drops ${f.dropped.video}), packetsReceived +${f.packetsReceived}, retransmittedPacketsReceived +${f.repairsReceived} (nft passed ${f.rtxPassedInAll} on RTX; ${f.rtxBeforeLoss} RTX received in the ${((base.at - figures.start) / 1000).toFixed(0)} s before the loss), NACKs ${f.nacks}, keyframe requests ${f.keyframeRequests}, freezes ${f.freezes}`);
    t.diagnostic(`recovered ${f.recovered == null ? '-' : (f.recovered * 100).toFixed(2)}% (unrepaired ${f.unrepaired} of ${f.dropped.video}; RTX beyond the loss ${f.rtxExcess}); the issue's 1 - packetsLost/drops gives ${f.issueFormula == null ? '-' : (f.issueFormula * 100).toFixed(2)}%`);
    t.diagnostic(`node, table-wide over the window: ${JSON.stringify(f.node)}`);
    t.diagnostic(`decoded ${f.framesDecoded} frames (${f.framesPer5s.join(', ')} per 5 s), sizes ${f.sizes.join(' ')}; listed ${JSON.stringify(f.layer)} link ${JSON.stringify(f.link)}`);

    assert.ok(f.sessionKept, `the page changed its WHEP session or video SSRC during the loss: ${base.session}/${base.ssrc} then ${final.session}/${final.ssrc}`);
    assert.ok(f.dropped.video > 0, 'nftables dropped no video packet: the loss rule saw none');
    assert.ok(f.framesPer5s.length > 0 && f.framesPer5s.every((n) => n > 0), `decoding stopped during the loss (frames per 5 s: ${f.framesPer5s.join(', ')})`);
    assert.ok(rows.length > 0 && rows.every((r) => r.height > CLIP_HEIGHT / 4), `the lossy player went down to the lowest layer: sizes ${f.sizes.join(' ')}`);
    assert.ok(f.repairsReceived != null, 'the browser does not report retransmittedPacketsReceived: repairs cannot be counted');
    assert.ok(f.recovered >= MIN_RECOVERED, `NACK/RTX repaired ${(f.recovered * 100).toFixed(2)}% of ${f.dropped.video} video packets dropped (at least ${MIN_RECOVERED * 100}%): ${JSON.stringify(f)}`);
  } finally {
    if (!stopped) ns.lossy.stopLoss();
  }
});

test('a player on a clean link keeps 1280x720 throughout, and its link never backs off', { timeout: 30_000 }, async (t) => {
  if (skipReason) {
    t.skip(skipReason);
    return;
  }
  assert.ok(players.clean && figures.start, 'the players did not start');
  const final = await look();
  sampler.rows.push(final);
  const looks = rowsBetween(figures.start);
  const rows = looks.map((r) => r.players.clean);
  // The dealer's encoder, short of CPU on this shared machine, may stop sending 1280x720 for a
  // while: then no node could forward it. A look below 1280x720 within DEALER_SLACK looks after
  // one where the dealer sent less than 1280x720 is the dealer's; any other is the node's.
  const dealerShort = looks.map((r) => Boolean(r.dealer?.f && (r.dealer.f.limit !== 'none' || size(r.dealer.f) !== TOP)));
  const explained = (i) => dealerShort.slice(Math.max(0, i - DEALER_SLACK), i + 1).some(Boolean);
  const f = (figures.cleanRun = {
    seconds: +((final.at - figures.start) / 1000).toFixed(1),
    samples: rows.length,
    sizes: [...new Set(rows.map(size))],
    notTop: rows.filter((r) => size(r) !== TOP).length,
    notTopOfNode: rows.filter((r, i) => size(r) !== TOP && !explained(i)).length,
    freezes: final.players.clean.freezeCount - rows[0].freezeCount,
    layers: [...new Set(rows.map((r) => (r.layer ? `${r.layer.width}x${r.layer.height}` : '-')))],
    backoffs: final.players.clean.link?.backoffs ?? null,
    link: final.players.clean.link,
    // Looks in which the dealer's encoder was short of CPU or sent its top layer below 1280x720.
    dealerLimited: dealerShort.filter(Boolean).length,
  });
  t.diagnostic(`clean player over ${f.seconds} s (${f.samples} looks): decoded ${f.sizes.join(' ')}, listed layers ${f.layers.join(' ')}, below ${TOP} in ${f.notTop} looks (${f.notTopOfNode} with the dealer sending it), ${f.freezes} freezes, link ${JSON.stringify(f.link)}; the dealer short of CPU or below ${TOP} in ${f.dealerLimited} looks`);
  assert.equal(f.notTopOfNode, 0, `the clean player left ${TOP} in ${f.notTop} of ${f.samples} looks, ${f.notTopOfNode} of them with the dealer sending ${TOP}: ${f.sizes.join(' ')} (the dealer was short of CPU or below ${TOP} in ${f.dealerLimited} looks)`);
  assert.ok(size(final.players.clean) === TOP || explained(looks.length - 1), `the clean player ends on ${size(final.players.clean)}`);
  assert.equal(f.backoffs, 0, `the clean player's link backed off ${f.backoffs} times: ${JSON.stringify(f.link)}`);
});
