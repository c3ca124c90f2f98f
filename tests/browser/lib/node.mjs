// Start a real tablecast node for a test: the release binary on a free port,
// plain HTTP, ephemeral media ports announced on 127.0.0.1, a temporary data
// directory and a fresh auth secret. Its stderr goes to
// tests/browser/.artifacts/<name>.node.log.
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { REPO_ROOT, artifact } from './paths.mjs';

/** The binary `cargo build --release` makes; `TABLECAST_BIN` overrides it. */
export const NODE_BINARY = process.env.TABLECAST_BIN || path.join(REPO_ROOT, 'target', 'release', 'tablecast');
/** The shipped config; `TABLECAST_TEST_CONFIG` overrides it. */
export const NODE_CONFIG = process.env.TABLECAST_TEST_CONFIG || path.join(REPO_ROOT, 'config.toml');

const running = new Set();
// A test that crashes must not leave a node behind holding ports.
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** A TCP port that was free a moment ago on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Start a node and wait until `GET /readyz` answers 200.
 *
 * @param {object} [opts]
 * @param {string} [opts.name='node'] names the log file: .artifacts/<name>.node.log
 * @param {Record<string,string>} [opts.env] extra environment (wins over the defaults)
 * @param {boolean} [opts.tls=false] serve HTTPS with the node's self-signed certificate
 * @param {string} [opts.host='127.0.0.1'] the address the node listens on (and is reached at)
 * @param {number} [opts.readyTimeoutMs=30000]
 * @param {string} [opts.binary] defaults to NODE_BINARY
 * @param {string} [opts.config] defaults to NODE_CONFIG
 * @returns {Promise<RunningNode>}
 */
export async function startNode({
  name = 'node', env = {}, tls = false, host = '127.0.0.1', readyTimeoutMs = 30_000,
  binary = NODE_BINARY, config = NODE_CONFIG,
} = {}) {
  if (!existsSync(binary)) {
    throw new Error(`no tablecast binary at ${binary}: run \`cargo build --release\` first (or set TABLECAST_BIN)`);
  }
  if (!existsSync(config)) {
    throw new Error(`no config at ${config} (set TABLECAST_TEST_CONFIG)`);
  }
  // The port is free when we look and taken when the node binds; another process
  // can slip in between, so a node that dies before it is ready gets a second try.
  let lastError;
  for (let attempt = 1; attempt <= 3; attempt += 1) {
    try {
      return await startOnce({ name, env, tls, host, readyTimeoutMs, binary, config, attempt });
    } catch (err) {
      lastError = err;
      if (!err.exitedEarly) break;
    }
  }
  throw lastError;
}

async function startOnce({ name, env, tls, host, readyTimeoutMs, binary, config, attempt }) {
  const port = await freePort();
  const dataDir = mkdtempSync(path.join(os.tmpdir(), `tablecast-${name}-`));
  const logPath = artifact(`${name}.node.log`);
  const log = createWriteStream(logPath, { flags: attempt === 1 ? 'w' : 'a' });
  log.on('error', () => { /* a full disk must not take the test run down with it */ });
  const childEnv = {
    ...process.env,
    RUST_LOG: process.env.RUST_LOG || 'info',
    TABLECAST_HTTP_LISTEN: `${host}:${port}`,
    TABLECAST_HTTP_TLS: tls ? 'true' : 'false',
    TABLECAST_MEDIA_UDP_PORT: '0',
    TABLECAST_MEDIA_ANNOUNCE_IPS: '127.0.0.1',
    TABLECAST_DATA_DIR: dataDir,
    TABLECAST_AUTH_SECRET: randomBytes(32).toString('hex'),
    // No metrics listener on its fixed default port (several nodes run at once); the tests
    // read /metrics on the main listener with an operator token.
    TABLECAST_METRICS_LISTEN: '',
    ...env,
  };
  const args = ['serve', '--config', config];
  log.write(`# ${new Date().toISOString()} attempt ${attempt}: ${binary} ${args.join(' ')} (port ${port}, data ${dataDir})\n`);

  const child = spawn(binary, args, { cwd: REPO_ROOT, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  child.stdout.pipe(log, { end: false });
  child.stderr.pipe(log, { end: false });
  const exited = new Promise((resolve) => {
    // 'close' rather than 'exit': it comes after stdout and stderr are drained into the log.
    child.on('close', (code, signal) => {
      running.delete(child);
      log.write(`\n# exited: ${signal ?? `code ${code}`}\n`);
      resolve({ code, signal });
    });
    child.on('error', (err) => {
      running.delete(child);
      log.write(`\n# spawn error: ${err.message}\n`);
      resolve({ code: null, signal: null, error: err });
    });
  });

  const baseUrl = `${tls ? 'https' : 'http'}://${host}:${port}`;
  const node = new RunningNode({ child, exited, baseUrl, port, dataDir, logPath, log, secret: childEnv.TABLECAST_AUTH_SECRET, binary, config });

  const ready = await Promise.race([
    waitReady(baseUrl, readyTimeoutMs).then(() => 'ready', (err) => err),
    exited.then(() => 'exited'),
  ]);
  if (ready === 'ready') return node;

  await node.stop();
  const tail = tailOf(logPath);
  const err = new Error(ready === 'exited'
    ? `tablecast exited before it was ready; last lines of ${logPath}:\n${tail}`
    : `tablecast was not ready within ${readyTimeoutMs} ms (${ready.message}); last lines of ${logPath}:\n${tail}`);
  err.exitedEarly = ready === 'exited';
  throw err;
}

/** A node started by startNode(). */
export class RunningNode {
  constructor({ child, exited, baseUrl, port, dataDir, logPath, log, secret, binary, config }) {
    this.child = child;
    this.exited = exited;
    /** e.g. http://127.0.0.1:41234 */
    this.baseUrl = baseUrl;
    this.port = port;
    this.dataDir = dataDir;
    /** The node's stderr and stdout. */
    this.logPath = logPath;
    this.secret = secret;
    this.binary = binary;
    this.config = config;
    this._log = log;
    this._stopped = null;
  }

  get pid() {
    return this.child.pid;
  }

  /**
   * SIGTERM, then SIGKILL after `graceMs`; removes the data directory.
   * Resolves to how the process ended. Safe to call twice.
   */
  stop({ graceMs = 5000 } = {}) {
    this._stopped ??= this._end('SIGTERM', graceMs);
    return this._stopped;
  }

  /**
   * SIGKILL at once, as a crash: the node closes nothing, releases no lease and
   * stays in the cluster's node list until it times out. Removes the data
   * directory. Resolves to how the process ended. The node counts as stopped
   * (a later stop() does nothing more).
   */
  kill() {
    this._stopped ??= this._end('SIGKILL', 0);
    return this._stopped;
  }

  async _end(signal, graceMs) {
    let timer;
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill(signal);
      if (signal !== 'SIGKILL') timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    }
    const how = await this.exited;
    clearTimeout(timer);
    await new Promise((resolve) => this._log.end(resolve));
    rmSync(this.dataDir, { recursive: true, force: true });
    return how;
  }

  /**
   * A token signed with this node's secret, made by the node's own `tablecast token`
   * (operators cannot get one from the demo route).
   * @param {{role: 'dealer'|'player'|'operator', table: string, user?: string, ttl?: string}} opts
   * @returns {Promise<string>}
   */
  token({ role, table, user, ttl = '1h' }) {
    const args = ['token', '--config', this.config, '--role', role, '--table', table, '--ttl', ttl];
    if (user) args.push('--user', user);
    const env = { ...process.env, TABLECAST_AUTH_SECRET: this.secret, RUST_LOG: 'error', TABLECAST_LOG_FILTER: 'error' };
    return new Promise((resolve, reject) => {
      execFile(this.binary, args, { cwd: REPO_ROOT, env, timeout: 15_000 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`${this.binary} ${args.join(' ')} failed: ${err.message}\n${stderr}`));
        else resolve(stdout.trim().split('\n').pop());
      });
    });
  }

  /** `fetch()` against this node, with a bearer token when given; JSON bodies are sent as JSON. */
  async api(method, path, { token, body } = {}) {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(`${this.baseUrl}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
    return { status: res.status, json, text };
  }

  /** The last `lines` lines of the node's log, for failure messages. */
  logTail(lines = 40) {
    return tailOf(this.logPath, lines);
  }
}

/** Poll `GET /readyz` until it answers 200. */
async function waitReady(baseUrl, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer yet';
  while (Date.now() < deadline) {
    try {
      const status = await getStatus(`${baseUrl}/readyz`);
      if (status === 200) return;
      last = `GET /readyz answered ${status}`;
    } catch (err) {
      last = err.message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(last);
}

/** Status of a GET; accepts the node's self-signed certificate. */
function getStatus(url) {
  const mod = url.startsWith('https:') ? https : http;
  return new Promise((resolve, reject) => {
    const req = mod.get(url, { rejectUnauthorized: false, timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('timeout', () => req.destroy(new Error('GET /readyz timed out')));
    req.on('error', reject);
  });
}

function tailOf(file, lines = 40) {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}
