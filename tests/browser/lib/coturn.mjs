// A real coturn (Debian's `coturn` package, binary `turnserver`) for a test: the TURN REST
// API scheme with a fresh shared secret, listening on one address and port, relaying only to
// the peers the test names. Its log goes to tests/browser/.artifacts/<name>.coturn.log.
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { artifact } from './paths.mjs';
import { waitUntil } from './wait.mjs';

/** `TURNSERVER` overrides the binary. */
export const TURNSERVER = process.env.TURNSERVER || '/usr/bin/turnserver';

const running = new Set();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/**
 * Start coturn and wait until it accepts TCP on `ip:port`.
 *
 * @param {object} opts
 * @param {string} opts.ip listening and relay address
 * @param {number} opts.port TURN port (UDP and TCP)
 * @param {string[]} opts.peers the only addresses it may relay to (all others are denied)
 * @param {string} [opts.name='turn'] names the log file
 * @param {number} [opts.tlsPort] also TURN over TLS (`turns:`) on this TCP port, with a
 *   self-signed certificate for `ip` made here (Chromium in the tests ignores certificate
 *   errors; a real deployment has a certificate its players trust)
 */
export async function startCoturn({ ip, port, peers, name = 'turn', tlsPort = null }) {
  if (!existsSync(TURNSERVER)) {
    throw Object.assign(new Error(`no ${TURNSERVER}: install Debian's coturn (tests/run.sh does)`), { skip: true });
  }
  const secret = randomBytes(24).toString('hex');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tablecast-coturn-'));
  const logPath = artifact(`${name}.coturn.log`);
  let tls = ['--no-tls'];
  if (tlsPort) {
    const cert = path.join(dir, 'cert.pem');
    const key = path.join(dir, 'key.pem');
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-keyout', key, '-out', cert,
      '-subj', '/CN=tablecast-test-turn', '-addext', `subjectAltName=IP:${ip}`,
    ], { stdio: 'ignore', timeout: 30_000 });
    tls = [`--tls-listening-port=${tlsPort}`, `--cert=${cert}`, `--pkey=${key}`];
  }
  const args = [
    '-n', // no config file: everything is here
    `--listening-ip=${ip}`, `--relay-ip=${ip}`, `--listening-port=${port}`,
    '--use-auth-secret', `--static-auth-secret=${secret}`, '--realm=tablecast.test',
    '--fingerprint', ...tls, '--no-dtls', '--no-cli', '--no-multicast-peers',
    // Relay to the test's peers only: deny everything, then allow them.
    '--denied-peer-ip=0.0.0.0-255.255.255.255',
    ...peers.map((p) => `--allowed-peer-ip=${p}`),
    '--min-port=49152', '--max-port=65535',
    `--pidfile=${path.join(dir, 'turnserver.pid')}`, `--userdb=${path.join(dir, 'turndb')}`,
    '--log-file=stdout', '--simple-log', '--verbose',
  ];
  const log = createWriteStream(logPath);
  log.on('error', () => {});
  // The secret is the test's own, made above for this run; the log records the command line.
  log.write(`# ${TURNSERVER} ${args.map((a) => (a.startsWith('--static-auth-secret') ? '--static-auth-secret=(secret)' : a)).join(' ')}\n`);
  const child = spawn(TURNSERVER, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  child.stdout.pipe(log, { end: false });
  child.stderr.pipe(log, { end: false });
  const exited = new Promise((resolve) => child.on('close', (code, signal) => {
    running.delete(child);
    log.write(`\n# exited: ${signal ?? `code ${code}`}\n`);
    resolve({ code, signal });
  }));
  const turn = {
    secret, logPath, ip, port, tlsPort,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(killer);
      await new Promise((resolve) => log.end(resolve));
      rmSync(dir, { recursive: true, force: true });
    },
    logTail(lines = 30) {
      try {
        return readFileSync(logPath, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
      } catch {
        return '(no log)';
      }
    },
  };
  try {
    await waitUntil(
      () => new Promise((resolve) => {
        if (child.exitCode !== null) { resolve('exited'); return; }
        const ports = tlsPort ? [port, tlsPort] : [port];
        let open = 0;
        for (const p of ports) {
          const s = net.connect({ host: ip, port: p }, () => {
            s.destroy();
            open += 1;
            if (open === ports.length) resolve('up');
          });
          s.on('error', () => resolve('down'));
        }
      }),
      (state) => state !== 'down',
      { timeoutMs: 15_000, intervalMs: 100, describe: () => `coturn did not listen on ${ip}:${port}${tlsPort ? ` and TLS ${tlsPort}` : ''}:\n${turn.logTail()}` },
    ).then((state) => {
      if (state === 'exited') throw new Error(`coturn exited at start:\n${turn.logTail()}`);
    });
  } catch (err) {
    await turn.stop();
    throw err;
  }
  return turn;
}
