// A network namespace joined to the host by a veth pair in 198.18.0.0/15 (set aside for
// network tests, RFC 2544), for a browser that must see a network other than the host's:
// the JS counterpart of tests/common/netns.rs. Traffic stays on the pair: the host side has
// `hostIp`, the namespace `peerIp`, and the namespace has no other route.
//
// Needs root, iproute2's `ip` and (for firewall()) `nft`. `Netns.create()` throws an Error
// with `.skip` set when the machine cannot do it, so a test can say why it is skipped.
import { execFileSync } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const made = new Set();
// A test that crashes must not leave a namespace behind.
process.on('exit', () => {
  for (const ns of made) ns.deleteSync();
});

function run(cmd, args, input) {
  try {
    return execFileSync(cmd, args, { input, stdio: ['pipe', 'pipe', 'pipe'], timeout: 15_000 }).toString();
  } catch (err) {
    throw new Error(`\`${cmd} ${args.join(' ')}\` failed: ${err.stderr?.toString().trim() || err.message}`);
  }
}

function have(cmd) {
  try {
    execFileSync(cmd, ['-V'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export class Netns {
  /** Creates the namespace and the pair (a random /30), or throws why not (`.skip` true). */
  static create(label = 'tc') {
    const skip = (why) => Object.assign(new Error(why), { skip: true });
    if (process.getuid?.() !== 0) throw skip('not root: creating a network namespace needs root');
    if (!have('ip')) throw skip("iproute2's `ip` is not installed");
    const tag = `${(process.pid % 0x10000).toString(16)}${randomInt(0x1000).toString(16)}`;
    const block = randomInt(1 << 15);
    const base = (198 << 24) + (18 << 16) + block * 4;
    const dotted = (n) => [24, 16, 8, 0].map((s) => (n >>> s) & 255).join('.');
    const ns = new Netns(`${label}-${tag}`, `tch${tag}`, `tcp${tag}`, dotted(base + 1), dotted(base + 2));
    made.add(ns);
    try {
      run('ip', ['netns', 'add', ns.name]);
      run('ip', ['link', 'add', ns.hostVeth, 'type', 'veth', 'peer', 'name', ns.peerVeth, 'netns', ns.name]);
      run('ip', ['addr', 'add', `${ns.hostIp}/30`, 'dev', ns.hostVeth]);
      run('ip', ['link', 'set', ns.hostVeth, 'up']);
      run('ip', ['-n', ns.name, 'addr', 'add', `${ns.peerIp}/30`, 'dev', ns.peerVeth]);
      run('ip', ['-n', ns.name, 'link', 'set', ns.peerVeth, 'up']);
      run('ip', ['-n', ns.name, 'link', 'set', 'lo', 'up']);
    } catch (err) {
      ns.deleteSync();
      throw err;
    }
    return ns;
  }

  constructor(name, hostVeth, peerVeth, hostIp, peerIp) {
    this.name = name;
    this.hostVeth = hostVeth;
    this.peerVeth = peerVeth;
    /** The host's end: where the namespace's client reaches servers. */
    this.hostIp = hostIp;
    /** The namespace's end: the client's source address. */
    this.peerIp = peerIp;
    this._dir = null;
  }

  /**
   * nftables inside the namespace: nothing leaves it but TCP to `hostIp` on `tcpPorts` (and
   * the replies to it); every UDP datagram is dropped and counted. Rules in the namespace
   * touch no other traffic on the machine.
   */
  firewall(tcpPorts) {
    if (!have('nft')) throw Object.assign(new Error('`nft` (nftables) is not installed'), { skip: true });
    const rules = `
table inet tcblock {
  counter udp_dropped { }
  counter other_dropped { }
  chain output {
    type filter hook output priority 0; policy drop;
    oif "lo" accept
    meta l4proto udp counter name udp_dropped drop
    ip daddr ${this.hostIp} tcp dport { ${tcpPorts.join(', ')} } accept
    ct state established,related accept
    counter name other_dropped drop
  }
  chain input {
    type filter hook input priority 0; policy drop;
    iif "lo" accept
    ct state established,related accept
  }
}
`;
    run('ip', ['netns', 'exec', this.name, 'nft', '-f', '-'], rules);
  }

  /** Packets the firewall dropped: `{udp, other}`. */
  dropped() {
    const out = run('ip', ['netns', 'exec', this.name, 'nft', '-j', 'list', 'counters', 'table', 'inet', 'tcblock']);
    const counts = { udp: 0, other: 0 };
    for (const item of JSON.parse(out).nftables ?? []) {
      if (item.counter?.name === 'udp_dropped') counts.udp = item.counter.packets;
      if (item.counter?.name === 'other_dropped') counts.other = item.counter.packets;
    }
    return counts;
  }

  /** An executable that runs `binary` with its arguments inside the namespace. */
  wrapper(binary) {
    this._dir ??= mkdtempSync(path.join(os.tmpdir(), 'tablecast-netns-'));
    const file = path.join(this._dir, `${path.basename(binary)}-in-${this.name}`);
    writeFileSync(file, `#!/bin/sh\nexec ip netns exec ${this.name} ${binary} "$@"\n`);
    chmodSync(file, 0o755);
    return file;
  }

  /** Deletes the namespace (with its end of the pair, which takes the host's end along). */
  deleteSync() {
    if (!made.has(this)) return;
    made.delete(this);
    try { execFileSync('ip', ['netns', 'del', this.name], { stdio: 'ignore' }); } catch { /* gone already */ }
    try { execFileSync('ip', ['link', 'del', this.hostVeth], { stdio: 'ignore' }); } catch { /* gone with the namespace */ }
    if (this._dir) rmSync(this._dir, { recursive: true, force: true });
  }
}
