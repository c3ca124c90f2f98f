// Debian's Chromium driven by playwright-core. Playwright's own browser download
// cannot work here, so we point it at /usr/bin/chromium and pass exactly the
// flags of DESIGN.md ("Browser tests") instead of Playwright's defaults.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

/** `CHROMIUM` overrides the browser binary. */
export const CHROMIUM_BINARY = process.env.CHROMIUM || '/usr/bin/chromium';

/** The flags of DESIGN.md: they work as root, offline, with fake media devices. */
export const CHROMIUM_FLAGS = Object.freeze([
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-dev-shm-usage',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--autoplay-policy=no-user-gesture-required',
  '--ignore-certificate-errors',
]);

/**
 * Launch Chromium with CHROMIUM_FLAGS, plus the fake camera clip when given.
 *
 * Playwright's default arguments are all dropped (`ignoreDefaultArgs: true`);
 * the only additions are what Playwright needs to talk to the browser at all:
 * a profile directory, the DevTools pipe and no startup window.
 *
 * `executablePath` replaces the binary, e.g. with a wrapper that runs Chromium in a network
 * namespace (`ip netns exec NS /usr/bin/chromium "$@"`; the DevTools pipe passes through).
 *
 * @param {{clip?: string, extraArgs?: string[], executablePath?: string}} [opts]
 * @returns {Promise<import('playwright-core').Browser>} closing it also removes the profile
 */
export async function launchChromium({ clip, extraArgs = [], executablePath = CHROMIUM_BINARY } = {}) {
  const profile = mkdtempSync(path.join(os.tmpdir(), 'tablecast-chromium-'));
  const args = [
    ...CHROMIUM_FLAGS,
    ...(clip ? [`--use-file-for-fake-video-capture=${clip}`] : []),
    ...extraArgs,
    `--user-data-dir=${profile}`,
    '--remote-debugging-pipe',
    '--no-startup-window',
  ];
  let browser;
  try {
    browser = await chromium.launch({
      executablePath,
      headless: true,
      ignoreDefaultArgs: true,
      args,
      timeout: 60_000,
    });
  } catch (err) {
    rmSync(profile, { recursive: true, force: true });
    throw new Error(`cannot launch ${executablePath} (install Debian's chromium): ${err.message}`);
  }
  // Chromium may still be writing its profile when the pipe closes; remove it
  // after close() has seen the process exit, and never fail a test over it.
  const removeProfile = () => {
    try {
      rmSync(profile, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
    } catch { /* a leftover temp dir is harmless */ }
  };
  const close = browser.close.bind(browser);
  browser.close = async (...args) => {
    try {
      await close(...args);
    } finally {
      removeProfile();
    }
  };
  return browser;
}

/**
 * Copy a page's console messages and errors to `sink(line)` (e.g. a log stream),
 * so a failing test leaves the page's side of the story behind.
 */
export function captureConsole(page, label, sink) {
  page.on('console', (msg) => sink(`[${label}] console.${msg.type()}: ${msg.text()}\n`));
  page.on('pageerror', (err) => sink(`[${label}] page error: ${err.message}\n`));
  page.on('requestfailed', (req) => sink(`[${label}] request failed: ${req.method()} ${req.url()} ${req.failure()?.errorText ?? ''}\n`));
}
