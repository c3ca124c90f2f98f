// Pictures of every page at every layout (phone 390x844, tablet 820x1180,
// desktop 1440x900), written to docs/screenshots/ so they stay current:
// <page>-<layout>.png, and play-result-<layout>.png for a result on the table.
//
// The scene is a real one: a dealer on air with the studio camera clip, a few
// rounds already dealt, players betting and chatting (bots on WebSocket
// consoles), the screenshot pages placing their own bets from their boards.
//
// Needs `cargo build --release` first (or TABLECAST_BIN). Run: node --test tests/browser/
import assert from 'node:assert/strict';
import { createWriteStream } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { launchChromium } from './lib/chromium.mjs';
import { ensureStudioClip } from './lib/clip.mjs';
import { startNode } from './lib/node.mjs';
import { LAYOUTS, dealHttp, demoToken, goLive, joined, openPage, waitView } from './lib/pages.mjs';
import { FIXTURES_DIR, SCREENSHOTS_DIR, artifact, ensureDir } from './lib/paths.mjs';

const TABLE = 'vip';
/** Rounds dealt before the pictures, so the results road has something on it. */
const HISTORY = ['banker', 'player', 'player', 'banker', 'tie', 'banker', 'banker', 'player', 'banker'];
const BOTS = ['lena_k', 'marco.b', 'high-roller-7', 'ana'];

describe('screenshots of the pages at each layout', () => {
  let node;
  let browser;
  let log;
  let dealerToken;
  let operatorToken;
  let dealer;
  let bots;
  const players = {};
  const ops = {};

  async function shot(page, name) {
    await page.addStyleTag({ content: 'html { scrollbar-width: none; } .toasts { display: none; }' });
    await page.evaluate(() => document.activeElement?.blur());
    await page.mouse.move(0, 0);
    // A full-page picture of a scrolled page draws the sticky header where the viewport was.
    await page.evaluate(() => window.scrollTo(0, 0));
    const file = path.join(ensureDir(SCREENSHOTS_DIR), `${name}.png`);
    await page.screenshot({ path: file, fullPage: true });
    return file;
  }

  /** Bets and chat from the bots, over their WebSocket consoles. */
  function botsBet(bets) {
    return bots.evaluate(async (list) => {
      // Each bot bets once its own console has seen the round open.
      const open = (b) => b.table?.state === 'betting_open';
      for (let i = 0; i < 100 && !window.bots.every(open); i += 1) await new Promise((r) => setTimeout(r, 20));
      await Promise.all(list.map(([i, spot, amount]) => window.bots[i].placeBet({ spot, amount })));
    }, bets);
  }

  /** Close betting, unless its deadline already did. */
  async function closeBetting() {
    const res = await node.api('POST', `/api/v1/tables/${TABLE}/round/close`, { token: dealerToken });
    assert.ok(res.status === 200 || (res.status === 409 && /betting_closed/.test(res.text)), `POST round/close: ${res.status} ${res.text}`);
  }

  before(async () => {
    const clip = await ensureStudioClip();
    node = await startNode({ name: 'screenshots', config: path.join(FIXTURES_DIR, 'tables.toml') });
    browser = await launchChromium({ clip });
    log = createWriteStream(artifact('screenshots.pages.log'));
    const write = (line) => log.write(line);
    dealerToken = await demoToken(node, 'dealer', TABLE);
    operatorToken = await node.token({ role: 'operator', table: '*', user: 'ops-screens' });

    dealer = await openPage(browser, `${node.baseUrl}/dealer/${TABLE}`, { label: 'dealer-desktop', log: write, layout: LAYOUTS.desktop });
    await goLive(dealer);
    for (const [name, layout] of Object.entries(LAYOUTS)) {
      ops[name] = await openPage(browser, `${node.baseUrl}/ops?token=${operatorToken}`, { label: `ops-${name}`, log: write, layout });
      players[name] = await openPage(browser, `${node.baseUrl}/play/${TABLE}`, { label: `play-${name}`, log: write, layout });
    }
    await Promise.all(Object.values(players).map((p) => joined(p)));

    bots = await openPage(browser, `${node.baseUrl}/`, { label: 'bots', log: write, layout: { viewport: { width: 400, height: 300 } } });
    // Named players for the pictures: the demo route names its players itself, so these
    // tokens come from `tablecast token --user`.
    const botTokens = await Promise.all(BOTS.map((user) => node.token({ role: 'player', table: TABLE, user })));
    await bots.evaluate(async ({ table, tokens }) => {
      const tc = await import('/web/tablecast.js');
      window.bots = await Promise.all(tokens.map((token) => tc.openConsole({ table, token })));
    }, { table: TABLE, tokens: botTokens });

    // Rounds already played: the road and the charts fill up.
    for (const [i, outcome] of HISTORY.entries()) {
      await dealHttp(node, TABLE, dealerToken, 'open');
      await botsBet([[i % BOTS.length, outcome === 'tie' ? 'player' : outcome, 2500], [(i + 1) % BOTS.length, 'banker', 1000]]);
      await dealHttp(node, TABLE, dealerToken, 'close');
      await dealHttp(node, TABLE, dealerToken, 'result', { outcome });
      // Every bot has seen the round end before the next one opens.
      await bots.waitForFunction(() => window.bots.every((b) => b.table?.state === 'idle'), null, { timeout: 10_000 });
    }
  });

  after(async () => {
    await browser?.close();
    await node?.stop();
    await new Promise((resolve) => (log ? log.end(resolve) : resolve()));
  });

  test('the player page, mid-round and with a result', { timeout: 60_000 }, async (t) => {
    await dealHttp(node, TABLE, dealerToken, 'open');
    await botsBet([[0, 'banker', 5000], [1, 'player', 2500], [2, 'banker', 10000], [3, 'tie', 500], [2, 'player', 2500]]);
    await bots.evaluate(async () => {
      await window.bots[0].chat('Banker again, I can feel it');
      await window.bots[2].chat('gl everyone');
      await window.bots[1].chat('player is due');
    });
    for (const [name, p] of Object.entries(players)) {
      await waitView(p, (v) => v.state === 'betting_open' && v.stats?.framesDecoded > 60, `${name}: no open round with video`);
    }
    const tap = (p, layout) => (layout === 'desktop' ? (l) => l.click() : (l) => l.tap());
    const bet = async (p, layout, chip, spot) => {
      await tap(p, layout)(p.getByRole('radio', { name: new RegExp(`^${chip} chip`) }));
      await tap(p, layout)(p.getByRole('button', { name: new RegExp(`on ${spot}`) }));
    };
    await bet(players.desktop, 'desktop', '€100', 'Banker');
    await bet(players.desktop, 'desktop', '€5', 'Tie');
    await bet(players.tablet, 'tablet', '€25', 'Player');
    await bet(players.phone, 'phone', '€25', 'Banker');
    await bet(players.phone, 'phone', '€5', 'Banker');
    await players.desktop.getByLabel('Message to the table').fill('Good luck all!');
    await players.desktop.getByLabel('Message to the table').press('Enter');
    for (const [name, p] of Object.entries(players)) {
      await waitView(p, (v) => v.myBets.length > 0 && v.myBets.every((b) => b.status === 'accepted') && v.spots.banker.total !== '€0', `${name}: bets not accepted`);
    }
    for (const p of Object.values(players)) {
      await p.waitForFunction(() => [...document.querySelectorAll('#chat-log li')].some((li) => li.dataset.mine === 'true' || li.textContent.includes('Good luck all!')), null, { timeout: 10_000 });
    }
    // Not a wait: the pictures show a countdown that has run for a couple of seconds.
    await players.desktop.waitForTimeout(2500);
    const files = [];
    for (const [name, p] of Object.entries(players)) files.push(await shot(p, `play-${name}`));

    await closeBetting();
    await dealHttp(node, TABLE, dealerToken, 'result', { outcome: 'player' });
    for (const [name, p] of Object.entries(players)) {
      await waitView(p, (v) => v.banner?.title === 'Player wins' && v.banner.payout !== '', `${name}: no result banner with a payout line`);
    }
    for (const p of Object.values(players)) {
      await p.waitForFunction(() => document.getElementById('result').getAnimations().every((a) => a.playState === 'finished'), null, { timeout: 10_000 });
    }
    for (const [name, p] of Object.entries(players)) files.push(await shot(p, `play-result-${name}`));
    t.diagnostic(`wrote ${files.map((f) => path.basename(f)).join(', ')}`);
  });

  test('the operator page with live charts', { timeout: 60_000 }, async (t) => {
    const files = [];
    for (const [name, page] of Object.entries(ops)) {
      await page.waitForFunction(() => window.tablecastOps.history.t.length >= 8 && window.tablecastOps.sessions.status !== 'idle', null, { timeout: 30_000 });
      const status = await page.evaluate(() => window.tablecastOps.sessions.status);
      assert.ok(['ok', 'unavailable'].includes(status), `sessions: ${status}`);
      files.push(await shot(page, `ops-${name}`));
    }
    t.diagnostic(`wrote ${files.map((f) => path.basename(f)).join(', ')}`);
  });

  test('the dealer console, on air with a round open', { timeout: 60_000 }, async (t) => {
    await dealHttp(node, TABLE, dealerToken, 'open');
    await botsBet([[0, 'player', 5000], [1, 'banker', 2500], [2, 'banker', 10000], [3, 'tie', 1000]]);
    const files = [];
    const consoles = { desktop: dealer };
    // The phone and then the tablet take over the camera: a new WHIP session replaces the last.
    for (const name of ['phone', 'tablet']) {
      consoles[name] = await openPage(browser, `${node.baseUrl}/dealer/${TABLE}`, { label: `dealer-${name}`, layout: LAYOUTS[name], log: (l) => log.write(l) });
    }
    for (const name of ['desktop', 'phone', 'tablet']) {
      const page = consoles[name];
      if (name !== 'desktop') {
        await page.waitForFunction(() => !document.getElementById('go-live').disabled, null, { timeout: 15_000 });
        await goLive(page);
      }
      await page.waitForFunction(() => document.getElementById('totals-bettors').textContent === '4' && document.getElementById('s-size').textContent !== '—', null, { timeout: 15_000 });
      // The stats line shows a measured bitrate: the page has looked at least twice.
      await page.waitForFunction(() => !['—', '0 kb/s'].includes(document.getElementById('s-bitrate').textContent), null, { timeout: 10_000 });
      files.push(await shot(page, `dealer-${name}`));
    }
    await dealHttp(node, TABLE, dealerToken, 'void', { reason: 'screenshots done' });
    t.diagnostic(`wrote ${files.map((f) => path.basename(f)).join(', ')}`);
    for (const name of ['phone', 'tablet']) await consoles[name].context().close();
    for (const p of Object.values(players)) await p.context().close(); // their video decoding is done with
  });

  test('the index page', { timeout: 60_000 }, async (t) => {
    const files = [];
    for (const [name, layout] of Object.entries(LAYOUTS)) {
      const page = await openPage(browser, `${node.baseUrl}/`, { label: `index-${name}`, layout, log: (l) => log.write(l) });
      await page.waitForFunction(() => document.getElementById('node-status').dataset.state !== 'connecting', null, { timeout: 10_000 });
      files.push(await shot(page, `index-${name}`));
      await page.context().close();
    }
    t.diagnostic(`wrote ${files.map((f) => path.basename(f)).join(', ')}`);
  });
});
