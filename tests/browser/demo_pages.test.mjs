// The pages in demo mode, on the shipped config: they ask the node for demo
// tokens without naming a user (the node names demo players), a player page
// reloaded in its tab comes back as the same player, and /ops without an
// operator token says what it needs instead of charting nothing.
//
// Needs `cargo build --release` first (or TABLECAST_BIN). Run: node --test tests/browser/
import assert from 'node:assert/strict';
import { createWriteStream } from 'node:fs';
import { after, before, test } from 'node:test';
import { launchChromium } from './lib/chromium.mjs';
import { startNode } from './lib/node.mjs';
import { joined, openPage } from './lib/pages.mjs';
import { artifact } from './lib/paths.mjs';

const TABLE = 'demo';

let node;
let browser;
let log;

before(async () => {
  node = await startNode({ name: 'demo_pages' });
  browser = await launchChromium();
  log = createWriteStream(artifact('demo_pages.pages.log'));
});

after(async () => {
  await browser?.close();
  await node?.stop();
  await new Promise((resolve) => (log ? log.end(resolve) : resolve()));
});

/** The claims of a JWT, unchecked. */
function claims(token) {
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));
}

/** Every POST /api/v1/demo/token a page sends, with its parsed body and the reply. */
function demoRequests(page) {
  const seen = [];
  page.on('response', async (res) => {
    const req = res.request();
    if (req.method() !== 'POST' || !req.url().endsWith('/api/v1/demo/token')) return;
    seen.push({ body: JSON.parse(req.postData() ?? 'null'), status: res.status(), reply: await res.json().catch(() => null) });
  });
  return seen;
}

test('a player page names no user, and a reload comes back as the same player', { timeout: 60_000 }, async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const seen = demoRequests(page);
  page.on('console', (m) => log.write(`[player] ${m.type()}: ${m.text()}\n`));

  await page.goto(`${node.baseUrl}/play/${TABLE}`);
  await joined(page);
  const kept = () => page.evaluate((t) => sessionStorage.getItem(`tablecast:player-token:${t}`), TABLE);
  const first = await kept();
  assert.ok(first, 'the page keeps its demo token in the tab');
  assert.match(claims(first).sub, /^player-/, 'the node named the player');

  await page.reload();
  await joined(page);
  assert.equal(claims(await kept()).sub, claims(first).sub, 'the same player after a reload');

  assert.equal(seen.length, 1, `one demo token for both loads: ${JSON.stringify(seen)}`);
  assert.deepEqual(seen[0].body, { role: 'player', table: TABLE });
  assert.equal(seen[0].status, 200);
  await context.close();
});

test('a dealer page on this machine gets a demo dealer token without naming a user', { timeout: 60_000 }, async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const seen = demoRequests(page);
  page.on('console', (m) => log.write(`[dealer] ${m.type()}: ${m.text()}\n`));
  const answered = page.waitForResponse((r) => r.url().endsWith('/api/v1/demo/token'), { timeout: 20_000 });
  await page.goto(`${node.baseUrl}/dealer/${TABLE}`);
  await answered;
  await page.waitForFunction(() => document.getElementById('console-status')?.dataset.state === 'live', null, { timeout: 20_000 });
  assert.ok(seen.length >= 1);
  for (const s of seen) {
    assert.deepEqual(s.body, { role: 'dealer', table: TABLE });
    assert.equal(s.status, 200);
    assert.match(s.reply.user, /^dealer-/);
  }
  await context.close();
});

test('/ops without an operator token says the charts need one', { timeout: 30_000 }, async () => {
  const page = await openPage(browser, `${node.baseUrl}/ops`, { label: 'ops', log: (l) => log.write(l) });
  const note = page.locator('#auth-note');
  await note.waitFor({ state: 'visible', timeout: 15_000 });
  const text = await note.textContent();
  assert.match(text, /charts/);
  assert.match(text, /tablecast token --role operator/);
  await page.context().close();
});
