// A player whose network blocks UDP plays the table's video through TURN over TCP, and one
// whose network lets out nothing but TCP to port 443 plays it through TURN over TLS there.
//
// The player's Chromium runs in a network namespace whose nftables drop every UDP
// datagram and every TCP connection but two: the node's HTTP port (page, WHEP) and the
// TURN port of a real coturn, started here with a fresh shared secret on the host's end of
// the namespace's veth pair. The node has `[turn]` with that secret and lists the TURN
// server for UDP and for TCP; tablecast.js asks for the servers before it creates its peer
// connection (OPTIONS with the token), the UDP one goes nowhere, and the video must come
// in over a relay candidate whose protocol to the TURN server is TCP. coturn also listens for
// TLS on port 443 with a certificate made for the run (the test's Chromium ignores certificate
// errors), and the node lists it as `turns:`; the second player's namespace allows only port
// 443 (and the node's HTTP port for the page), so its video must come over TLS.
//
// The dealer's Chromium publishes the fake camera from a second namespace (no firewall), so
// that every packet of the test stays on the two veth pairs in 198.18.0.0/15 and loopback.
//
// Needs root, iproute2, nftables, coturn, openssl and `cargo build --release`. Logs in
// tests/browser/.artifacts/turn.*.
import assert from 'node:assert/strict';
import { createWriteStream } from 'node:fs';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { CHROMIUM_BINARY, captureConsole, launchChromium } from './lib/chromium.mjs';
import { ensureClip } from './lib/clip.mjs';
import { startCoturn } from './lib/coturn.mjs';
import { Netns } from './lib/netns.mjs';
import { freePort, startNode } from './lib/node.mjs';
import { artifact } from './lib/paths.mjs';
import { waitUntil } from './lib/wait.mjs';

const TABLE = 'demo';
/** Frames the player must decode: two seconds of the 30 fps clip. */
const MIN_FRAMES = 60;
const MEDIA_TIMEOUT_MS = 40_000;
/** TURN over TLS where networks that allow only HTTPS let it through. */
const TLS_PORT = 443;

let skipReason = null;
let playerNs;
let dealerNs;
let turn;
let node;
let dealerBrowser;
let playerBrowser;
let pageLog;
/** The dealer is on air (the first test); the second plays the same table. */
let onAir = false;

/** A TCP port free on `ip` a moment ago. */
function freePortOn(ip) {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, ip, () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

before(async () => {
  try {
    playerNs = Netns.create('tc-turnp');
    dealerNs = Netns.create('tc-turnd');
  } catch (err) {
    if (!err.skip) throw err;
    skipReason = err.message;
    return;
  }
  pageLog = createWriteStream(artifact('turn.pages.log'));
  const clip = await ensureClip();
  const turnPort = await freePortOn(playerNs.hostIp);
  try {
    turn = await startCoturn({ ip: playerNs.hostIp, port: turnPort, peers: [playerNs.hostIp], name: 'turn', tlsPort: TLS_PORT });
  } catch (err) {
    if (!err.skip) throw err;
    skipReason = err.message;
    return;
  }
  const dealerPort = await freePort();
  node = await startNode({
    name: 'turn',
    host: playerNs.hostIp,
    env: {
      // The dealer's namespace reaches the node on its own pair, through the extra listener.
      TABLECAST_HTTP_PLAIN_LISTEN: `${dealerNs.hostIp}:${dealerPort}`,
      TABLECAST_MEDIA_ANNOUNCE_IPS: `${playerNs.hostIp},${dealerNs.hostIp}`,
      TABLECAST_TURN_URLS: [
        `turn:${turn.ip}:${turn.port}?transport=udp`,
        `turn:${turn.ip}:${turn.port}?transport=tcp`,
        `turns:${turn.ip}:${turn.tlsPort}?transport=tcp`,
      ].join(','),
      TABLECAST_TURN_SECRET: turn.secret,
      TABLECAST_TURN_TTL_SECS: '600',
    },
  });
  node.dealerUrl = `http://${dealerNs.hostIp}:${dealerPort}`;
  // Nothing leaves the player's namespace but TCP to the node's HTTP port and to coturn.
  playerNs.firewall([node.port, turn.port]);
  dealerBrowser = await launchChromium({
    clip,
    executablePath: dealerNs.wrapper(CHROMIUM_BINARY),
    // getUserMedia needs a secure context; the dealer's page is plain HTTP on the pair's address.
    extraArgs: [`--unsafely-treat-insecure-origin-as-secure=${node.dealerUrl}`],
  });
  playerBrowser = await launchChromium({ executablePath: playerNs.wrapper(CHROMIUM_BINARY) });
});

after(async () => {
  await dealerBrowser?.close().catch(() => {});
  await playerBrowser?.close().catch(() => {});
  const how = await node?.stop();
  if (how) console.log(`# tablecast node stopped (${how.signal ?? `exit ${how.code}`}); log: ${node.logPath}`);
  await turn?.stop();
  playerNs?.deleteSync();
  dealerNs?.deleteSync();
  await new Promise((resolve) => (pageLog ? pageLog.end(resolve) : resolve()));
});

async function openPage(browser, baseUrl, label) {
  const context = await browser.newContext();
  const page = await context.newPage();
  captureConsole(page, label, (line) => pageLog.write(line));
  await page.goto(`${baseUrl}/`);
  return page;
}

/** The selected candidate pair of a page's `window.session`, and its video counters. */
function sessionStats(page) {
  return page.evaluate(async () => {
    const s = window.session;
    if (!s) return { error: window.sessionError ?? null };
    const report = await s.pc.getStats();
    let transport = null;
    let video = null;
    let outVideo = null;
    for (const r of report.values()) {
      if (r.type === 'transport') transport = r;
      if (r.type === 'inbound-rtp' && r.kind === 'video') video = r;
      if (r.type === 'outbound-rtp' && r.kind === 'video') outVideo = r;
    }
    const pair = transport?.selectedCandidatePairId ? report.get(transport.selectedCandidatePairId) : null;
    const local = pair ? report.get(pair.localCandidateId) : null;
    const remote = pair ? report.get(pair.remoteCandidateId) : null;
    return {
      error: window.sessionError ?? null,
      connectionState: s.pc.connectionState,
      iceTransportPolicy: s.pc.getConfiguration().iceTransportPolicy,
      iceServers: s.pc.getConfiguration().iceServers.map((x) => x.urls),
      framesDecoded: video?.framesDecoded ?? 0,
      frameWidth: video?.frameWidth ?? 0,
      frameHeight: video?.frameHeight ?? 0,
      bytesSent: outVideo?.bytesSent ?? 0,
      firstFrameMs: window.firstFrameMs ?? null,
      connectedMs: window.connectedMs ?? null,
      local: local && {
        type: local.candidateType, protocol: local.protocol, relayProtocol: local.relayProtocol ?? null,
        address: local.address, port: local.port, url: local.url ?? null,
      },
      remote: remote && { type: remote.candidateType, address: remote.address, port: remote.port },
      rttMs: pair?.currentRoundTripTime != null ? Math.round(pair.currentRoundTripTime * 1000) : null,
      tlsVersion: transport?.tlsVersion ?? null,
    };
  });
}

function describe(what, last) {
  return [
    what,
    `last stats: ${JSON.stringify(last ?? null)}`,
    `dropped in the player's namespace: ${JSON.stringify(playerNs.dropped())}`,
    `node log (${node.logPath}):\n${node.logTail(20)}`,
    `coturn log (${turn.logPath}):\n${turn.logTail(20)}`,
  ].join('\n');
}

/** Plays the table in a new page of the player's browser until it has decoded MIN_FRAMES. */
async function playUntilDecoding(label, token) {
  const player = await openPage(playerBrowser, node.baseUrl, label);
  const playedAt = Date.now();
  await player.evaluate(async ({ table, token }) => {
    const video = document.createElement('video');
    video.muted = true;
    video.autoplay = true;
    document.body.append(video);
    const t0 = performance.now();
    video.requestVideoFrameCallback(() => { window.firstFrameMs = Math.round(performance.now() - t0); });
    try {
      const tc = await import('/web/tablecast.js');
      const session = await tc.play({ table, token, video, control: false });
      session.pc.addEventListener('connectionstatechange', () => {
        if (session.pc.connectionState === 'connected') window.connectedMs ??= Math.round(performance.now() - t0);
      });
      if (session.pc.connectionState === 'connected') window.connectedMs ??= Math.round(performance.now() - t0);
      window.session = session;
    } catch (err) {
      window.sessionError = String(err?.message ?? err);
    }
  }, { table: TABLE, token });

  const first = await waitUntil(() => sessionStats(player), (s) => s.error !== null || s.framesDecoded > 0, {
    timeoutMs: MEDIA_TIMEOUT_MS,
    describe: (last) => describe(`the ${label} player decoded no frame`, last),
  });
  assert.equal(first.error, null, `the ${label} player failed: ${first.error}`);
  const firstFrameWallMs = Date.now() - playedAt;
  const playing = await waitUntil(() => sessionStats(player), (s) => s.framesDecoded >= first.framesDecoded + MIN_FRAMES, {
    timeoutMs: MEDIA_TIMEOUT_MS,
    describe: (last) => describe(`the ${label} player's framesDecoded did not rise by ${MIN_FRAMES}`, last),
  });
  return { first, playing, firstFrameWallMs };
}

test('a player whose network blocks UDP plays the video through coturn over TCP', { timeout: 180_000 }, async (t) => {
  if (skipReason) {
    t.skip(skipReason);
    return;
  }
  const dealerToken = await node.token({ role: 'dealer', table: TABLE, user: 'dealer-turn' });

  const dealer = await openPage(dealerBrowser, node.dealerUrl, 'dealer');
  await dealer.evaluate(async ({ table, token }) => {
    try {
      const tc = await import('/web/tablecast.js');
      const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 1280, height: 720 }, audio: false });
      window.session = await tc.publish({ table, token, stream });
    } catch (err) {
      window.sessionError = String(err?.message ?? err);
    }
  }, { table: TABLE, token: dealerToken });
  const published = await waitUntil(() => sessionStats(dealer), (s) => s.error !== null || s.bytesSent > 0, {
    timeoutMs: MEDIA_TIMEOUT_MS,
    describe: (last) => describe('the dealer did not get on air', last),
  });
  assert.equal(published.error, null, `the dealer failed: ${published.error}`);
  t.diagnostic(`dealer on air over ${published.local?.protocol} ${published.local?.type} (no relay needed in its namespace)`);
  onAir = true;

  const playerToken = await node.token({ role: 'player', table: TABLE, user: 'player-turn' });
  const { first, playing, firstFrameWallMs } = await playUntilDecoding('player', playerToken);
  const dropped = playerNs.dropped();

  t.diagnostic(`player ICE servers from the node: ${JSON.stringify(playing.iceServers)}`);
  t.diagnostic(`selected pair: local ${JSON.stringify(playing.local)} -> remote ${JSON.stringify(playing.remote)}, RTT ${playing.rttMs} ms, DTLS ${playing.tlsVersion}`);
  t.diagnostic(`time to connected ${playing.connectedMs} ms, to first frame ${playing.firstFrameMs ?? firstFrameWallMs} ms (page), ${firstFrameWallMs} ms (test, polled)`);
  t.diagnostic(`frames decoded ${first.framesDecoded} -> ${playing.framesDecoded}, ${playing.frameWidth}x${playing.frameHeight}`);
  t.diagnostic(`dropped in the player's namespace: ${dropped.udp} UDP datagrams, ${dropped.other} other packets`);

  assert.equal(playing.connectionState, 'connected');
  assert.equal(playing.local?.type, 'relay', `the selected local candidate is a relay: ${JSON.stringify(playing.local)}`);
  assert.equal(playing.local?.relayProtocol, 'tcp', `the relay is reached over TCP: ${JSON.stringify(playing.local)}`);
  assert.ok(playing.frameWidth > 0 && playing.frameHeight > 0, 'frames have a size');
  assert.ok(dropped.udp > 0, 'the browser tried UDP (to the node, or to TURN over UDP) and the firewall dropped it');
  assert.ok(playing.iceServers.flat().some((u) => u.includes('transport=tcp')), 'the node listed TURN over TCP');
});

test('a player whose network lets out only TCP to port 443 plays the video through coturn over TLS', { timeout: 120_000 }, async (t) => {
  if (skipReason) {
    t.skip(skipReason);
    return;
  }
  assert.ok(onAir, 'the dealer did not get on air (the first test)');
  // The page and WHEP come from the node's HTTP port; media may leave only for port 443.
  playerNs.firewall([node.port, TLS_PORT]);
  const token = await node.token({ role: 'player', table: TABLE, user: 'player-turns' });
  const { first, playing } = await playUntilDecoding('tls', token);
  const dropped = playerNs.dropped();
  t.diagnostic(`selected pair: local ${JSON.stringify(playing.local)} -> remote ${JSON.stringify(playing.remote)}, RTT ${playing.rttMs} ms`);
  t.diagnostic(`time to connected ${playing.connectedMs} ms; frames decoded ${first.framesDecoded} -> ${playing.framesDecoded}, ${playing.frameWidth}x${playing.frameHeight}`);
  t.diagnostic(`dropped in the player's namespace: ${dropped.udp} UDP datagrams, ${dropped.other} other packets (TCP to coturn's plain port among them)`);

  assert.equal(playing.connectionState, 'connected');
  assert.equal(playing.local?.type, 'relay', `the selected local candidate is a relay: ${JSON.stringify(playing.local)}`);
  assert.equal(playing.local?.relayProtocol, 'tls', `the relay is reached over TLS: ${JSON.stringify(playing.local)}`);
  assert.ok(playing.iceServers.flat().some((u) => u.startsWith(`turns:`) && u.includes(`:${TLS_PORT}`)), `the node listed TURN over TLS on ${TLS_PORT}: ${JSON.stringify(playing.iceServers)}`);
  assert.ok(dropped.udp > 0, 'the browser tried UDP and the firewall dropped it');
  assert.ok(dropped.other > 0, `the browser tried TURN over plain TCP on ${turn.port} and the firewall dropped it`);
});
