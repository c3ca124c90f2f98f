// The browser-test harness proves itself before the real tests lean on it:
// the clip, starting and stopping a node process, Chromium with the fake
// camera, the pages at each layout, and the library's error surface. It uses
// fixtures/fake-node.mjs in place of the release binary, so a failure here is
// the harness's (or the pages'), never the server's.
import assert from 'node:assert/strict';
import { createWriteStream, existsSync, openSync, readFileSync, readSync, closeSync, statSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { captureConsole, launchChromium } from './lib/chromium.mjs';
import { CLIP_FPS, CLIP_HEIGHT, CLIP_WIDTH, ensureClip } from './lib/clip.mjs';
import { startNode } from './lib/node.mjs';
import { LAYOUTS, settled } from './lib/pages.mjs';
import { BROWSER_TESTS_DIR, REPO_ROOT, artifact } from './lib/paths.mjs';

const FAKE_NODE = path.join(BROWSER_TESTS_DIR, 'fixtures', 'fake-node.mjs');
/** Any existing file will do: the fake node only checks that --config is given. */
const FAKE_CONFIG = path.join(BROWSER_TESTS_DIR, 'package.json');


function isAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('the fake camera clip is a 1280x720 30 fps y4m, made once and cached', { timeout: 120_000 }, async () => {
  const clip = await ensureClip();
  const fd = openSync(clip, 'r');
  const head = Buffer.alloc(64);
  readSync(fd, head, 0, 64, 0);
  closeSync(fd);
  const header = head.toString('latin1').split('\n')[0];
  assert.match(header, new RegExp(`^YUV4MPEG2 W${CLIP_WIDTH} H${CLIP_HEIGHT} F${CLIP_FPS}:1 `), `unexpected y4m header: ${header}`);
  const mtime = statSync(clip).mtimeMs;
  assert.equal(await ensureClip(), clip);
  assert.equal(statSync(clip).mtimeMs, mtime, 'the clip was made again instead of reused');
});

test('startNode runs the binary on a free port, waits for /readyz, and stops it', { timeout: 30_000 }, async () => {
  const node = await startNode({ name: 'harness-fake', binary: FAKE_NODE, config: FAKE_CONFIG });
  try {
    assert.match(node.baseUrl, /^http:\/\/127\.0\.0\.1:\d+$/);
    const res = await fetch(`${node.baseUrl}/readyz`);
    assert.equal(res.status, 200);
    assert.ok(isAlive(node.pid), 'the node is not running');
    assert.ok(existsSync(node.dataDir), 'the data directory was not made');
  } finally {
    const how = await node.stop();
    assert.equal(how.code, 0, `the fake node did not exit cleanly on SIGTERM: ${JSON.stringify(how)}`);
  }
  assert.ok(!isAlive(node.pid), 'the node is still running after stop()');
  assert.ok(!existsSync(node.dataDir), 'the data directory was left behind');
  assert.match(node.logTail(), /listening on 127\.0\.0\.1:\d+/, 'stderr did not reach the log file');
  assert.match(node.logTail(), /SIGTERM/);
});

test('startNode reports a node that dies before it is ready, with its log', { timeout: 30_000 }, async () => {
  await assert.rejects(
    startNode({ name: 'harness-dies', binary: '/bin/false', config: FAKE_CONFIG }),
    /exited before it was ready/,
  );
  await assert.rejects(
    startNode({ name: 'harness-missing', binary: '/nonexistent/tablecast', config: FAKE_CONFIG }),
    /cargo build --release/,
  );
});

test('the vendored chart library is the npm package\'s build, with its license beside it', () => {
  const vendored = path.join(REPO_ROOT, 'web', 'vendor', 'uplot');
  const pkg = JSON.parse(readFileSync(path.join(BROWSER_TESTS_DIR, 'package.json'), 'utf8'));
  assert.match(pkg.devDependencies?.uplot ?? '', /^\d+\.\d+\.\d+$/, 'uplot is pinned in package.json devDependencies');
  assert.match(readFileSync(path.join(vendored, 'LICENSE'), 'utf8'), /MIT License/);
  const npm = path.join(BROWSER_TESTS_DIR, 'node_modules', 'uplot');
  const installed = JSON.parse(readFileSync(path.join(npm, 'package.json'), 'utf8'));
  assert.equal(installed.version, pkg.devDependencies.uplot, 'run npm ci in tests/browser');
  for (const file of ['uPlot.esm.js', 'uPlot.min.css']) {
    assert.ok(readFileSync(path.join(vendored, file)).equals(readFileSync(path.join(npm, 'dist', file))),
      `web/vendor/uplot/${file} differs from uplot ${installed.version}'s dist/${file}: copy it again`);
  }
});

describe('pages and library against the fake node', () => {
  let node;
  let browser;
  let log;

  before(async () => {
    const clip = await ensureClip();
    node = await startNode({ name: 'harness-pages', binary: FAKE_NODE, config: FAKE_CONFIG });
    browser = await launchChromium({ clip });
    log = createWriteStream(artifact('harness.pages.log'));
  });

  after(async () => {
    await browser?.close();
    await node?.stop();
    await new Promise((resolve) => (log ? log.end(resolve) : resolve()));
  });

  async function open(urlPath, label, layout = LAYOUTS.desktop) {
    const context = await browser.newContext(layout);
    const page = await context.newPage();
    captureConsole(page, label, (line) => log.write(line));
    await page.goto(`${node.baseUrl}${urlPath}`);
    return page;
  }

  test('Chromium gets the clip as its camera on the dealer page', { timeout: 60_000 }, async () => {
    const page = await open('/dealer/demo', 'dealer');
    await page.waitForFunction(() => {
      const v = document.getElementById('preview');
      return v.videoWidth > 0 && v.currentTime > 0.3;
    }, null, { timeout: 20_000 });
    const got = await page.evaluate(() => {
      const v = document.getElementById('preview');
      return { w: v.videoWidth, h: v.videoHeight, goLive: !document.getElementById('go-live').disabled };
    });
    assert.deepEqual(got, { w: CLIP_WIDTH, h: CLIP_HEIGHT, goLive: true });
    // 1280x720 is enough for the three simulcast layers.
    assert.equal(await page.isDisabled('#simulcast'), false);
    await page.context().close();
  });

  test('the pages render at phone, tablet and desktop sizes with labelled controls', { timeout: 90_000 }, async () => {
    for (const [name, layout] of Object.entries(LAYOUTS)) {
      const { viewport } = layout;
      for (const [pageName, urlPath] of [['index', '/'], ['play', '/play/demo'], ['dealer', '/dealer/demo'], ['ops', '/ops']]) {
        const page = await open(urlPath, `${pageName}-${name}`, layout);
        if (pageName === 'dealer') {
          await page.waitForFunction(() => document.getElementById('preview').videoWidth > 0, null, { timeout: 20_000 });
        }
        if (pageName === 'play') {
          await page.waitForFunction(() => window.tablecastPage.error !== null, null, { timeout: 20_000 });
        }
        if (pageName === 'ops') {
          await page.waitForFunction(() => document.getElementById('node-status').dataset.state !== 'connecting', null, { timeout: 20_000 });
        }
        await settled(page);
        const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
        assert.ok(overflow <= 0, `${pageName} at ${name} (${viewport.width}px) scrolls sideways by ${overflow}px`);
        const unlabelled = await page.evaluate(() => [...document.querySelectorAll('button, select, input, video')]
          .filter((el) => !(el.labels?.length || el.getAttribute('aria-label') || el.textContent.trim()))
          .map((el) => el.outerHTML.slice(0, 80)));
        assert.deepEqual(unlabelled, [], `${pageName} has unlabelled controls`);
        // Phones and tablets overlay their scrollbars; a classic one would crop the full-page picture.
        await page.addStyleTag({ content: 'html { scrollbar-width: none; }' });
        await page.screenshot({ path: artifact(`layout-${pageName}-${name}.png`), fullPage: true });
        await page.context().close();
      }
    }
  });

  test('the index page works from the keyboard alone', { timeout: 30_000 }, async () => {
    const page = await open('/', 'keyboard');
    const validity = await page.evaluate(() => {
      const input = document.getElementById('play-table');
      const check = (v) => { input.value = v; return input.validity.patternMismatch; };
      const out = { good: check('demo.table-1'), bad: check('no/slashes') };
      input.value = 'demo';
      return out;
    });
    assert.deepEqual(validity, { good: false, bad: true }, 'the table id pattern does not match the node\'s rule');
    await page.keyboard.press('Tab'); // skip link
    await page.keyboard.press('Tab'); // brand
    await page.keyboard.press('Tab'); // watch: table field
    assert.equal(await page.evaluate(() => document.activeElement.id), 'play-table');
    await page.keyboard.press('Enter');
    await page.waitForURL('**/play/demo', { timeout: 10_000 });
    await page.context().close();
  });

  test('the library surfaces the node\'s 401 as an Error with status 401 and its one-line reason', { timeout: 30_000 }, async () => {
    const page = await open('/', 'library');
    const err = await page.evaluate(async () => {
      const { play, publish } = await import('/web/tablecast.js');
      const out = {};
      try {
        await play({ table: 'demo', token: 'bad' });
      } catch (e) {
        out.play = { isError: e instanceof Error, name: e.name, status: e.status, message: e.message, serverMessage: e.serverMessage };
      }
      try {
        const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
        await publish({ table: 'demo', token: 'bad', stream });
      } catch (e) {
        out.publish = { isError: e instanceof Error, status: e.status, serverMessage: e.serverMessage };
      }
      return out;
    });
    assert.deepEqual(err.play, {
      isError: true,
      name: 'TablecastError',
      status: 401,
      message: 'WHEP POST failed: 401 invalid token: the fake node accepts none',
      serverMessage: 'invalid token: the fake node accepts none',
    });
    assert.deepEqual(err.publish, { isError: true, status: 401, serverMessage: 'invalid token: the fake node accepts none' });
    await page.context().close();
  });
});
