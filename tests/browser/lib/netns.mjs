// A network namespace joined to the host by a veth pair in 198.18.0.0/15 (set aside for
// network tests, RFC 2544), for a browser that must see a network other than the host's:
// the JS counterpart of tests/common/netns.rs. Traffic stays on the pair: the host side has
// `hostIp`, the namespace `peerIp`, and the namespace has no other route (but the host addresses
// reach() adds, through the same pair).
//
// Both ends of the pair send real packets: no UDP GSO batches (unbatch()), so a qdisc on the
// host's end (shape()) and nftables in the namespace (firewall(), loss()) see and count each
// datagram the node sends.
//
// Needs root, iproute2's `ip` (with `tc` for shape()) and (for firewall() and loss()) `nft`.
// `Netns.create()` throws an Error with `.skip` set when the machine cannot do it, so a test can
// say why it is skipped.
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

function have(cmd, flag = '-V') {
  try {
    execFileSync(cmd, [flag], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const noNft = () => Object.assign(new Error('`nft` (nftables) is not installed'), { skip: true });

/** Throws an Error with `.skip` set naming the first of `cmds` (e.g. 'nft', 'tc') not installed. */
export function requireTools(...cmds) {
  for (const cmd of cmds) {
    if (!have(cmd)) throw Object.assign(new Error(`\`${cmd}\` is not installed`), { skip: true });
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
      ns.unbatch();
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
   * No UDP GSO/GRO batches on the pair. A sender using UDP segmentation offload hands the
   * kernel one buffer of many datagrams; on a veth it can cross as one packet, so a tbf on the
   * host's end and nftables in the namespace would see (shape, count, drop) a batch as one
   * packet. One segment at most on the host's end (what matters: the node sends from the
   * host) makes the kernel split batches before the pair; the namespace's end gets the same for
   * the uplink. With `ethtool` installed the offloads are also switched off on both ends;
   * without it the segment limit alone does the job.
   */
  unbatch() {
    run('ip', ['link', 'set', 'dev', this.hostVeth, 'gso_max_segs', '1']);
    run('ip', ['-n', this.name, 'link', 'set', 'dev', this.peerVeth, 'gso_max_segs', '1']);
    if (have('ethtool', '--version')) {
      const off = ['gro', 'off', 'gso', 'off', 'tx-udp-segmentation', 'off'];
      // Best effort: a driver may not know one of these features; the limit above stands.
      try { run('ethtool', ['-K', this.hostVeth, ...off]); } catch { /* gso_max_segs 1 suffices */ }
      try { run('ip', ['netns', 'exec', this.name, 'ethtool', '-K', this.peerVeth, ...off]); } catch { /* idem */ }
    }
  }

  /**
   * A route from the namespace to one more host address, `ip` (e.g. another pair's `hostIp`
   * where the node listens), through this pair. The host answers for its own addresses on any
   * pair, so nothing is forwarded and the namespace still reaches nothing else.
   */
  reach(ip) {
    run('ip', ['-n', this.name, 'route', 'replace', `${ip}/32`, 'via', this.hostIp, 'dev', this.peerVeth]);
  }

  /**
   * Limits the namespace's downlink (what the host sends it) with a token bucket on the host's
   * end of the pair: `tc qdisc replace dev <hostVeth> root tbf rate <rate> burst <burst>
   * latency <latency>`. Packets that would wait longer than `latency` are dropped.
   */
  shape({ rate = '600kbit', burst = '6000', latency = '100ms' } = {}) {
    if (!have('tc')) throw Object.assign(new Error("iproute2's `tc` is not installed"), { skip: true });
    run('tc', ['qdisc', 'replace', 'dev', this.hostVeth, 'root', 'tbf', 'rate', rate, 'burst', burst, 'latency', latency]);
  }

  /** Lifts shape(): the host's end gets its default qdisc back. Does nothing when not shaped. */
  unshape() {
    if (this.shaped()) run('tc', ['qdisc', 'del', 'dev', this.hostVeth, 'root']);
  }

  /** What the shaping qdisc on the host's end has sent and dropped (null when not shaped). */
  shaped() {
    const out = JSON.parse(run('tc', ['-s', '-j', 'qdisc', 'show', 'dev', this.hostVeth]));
    const tbf = out.find((q) => q.kind === 'tbf');
    return tbf ? { sent: tbf.packets, dropped: tbf.drops, overlimits: tbf.overlimits, backlog: tbf.backlog } : null;
  }

  /**
   * Random loss on the namespace's downlink: nftables in the namespace drop `percent` % of the
   * UDP datagrams arriving on the pair (`numgen random mod 100 < percent`), independently of
   * each other, and count what they drop and what they let through, by kind:
   *
   * - `video`: RTP (version 2) on the SSRC `ssrcs.video`, the player's video as first sent;
   * - `rtx`: RTP on `ssrcs.rtx`, its retransmissions (RFC 4588), and whatever else the node
   *   sends on that SSRC;
   * - `other`: every other datagram (audio, RTCP, STUN, DTLS and the data channel).
   *
   * The SSRC is the 32 bits at bytes 8 to 11 of the RTP header, which SRTP leaves in clear.
   * The table is the namespace's own and goes with it; stopLoss() lifts the loss and keeps the
   * counters.
   */
  loss(percent, ssrcs = {}) {
    if (!have('nft')) throw noNft();
    const rtp = (ssrc) => `@th,64,2 2 @th,128,32 ${ssrc >>> 0}`;
    const classify = (verdict) => [
      ssrcs.video != null ? `    ${rtp(ssrcs.video)} counter name video_${verdict}` : null,
      ssrcs.rtx != null ? `    ${rtp(ssrcs.rtx)} counter name rtx_${verdict}` : null,
      `    counter name other_${verdict}`,
    ].filter(Boolean).map((rule) => `${rule} ${verdict === 'dropped' ? 'drop' : 'accept'}`).join('\n');
    const counters = ['video', 'rtx', 'other'].flatMap((k) => [`  counter ${k}_dropped { }`, `  counter ${k}_passed { }`]).join('\n');
    const rules = `
table inet tcloss {
${counters}
  chain input {
    type filter hook input priority 0; policy accept;
    iifname "${this.peerVeth}" meta l4proto udp jump maybe
    iifname "${this.peerVeth}" meta l4proto udp jump passed
  }
  chain maybe {
    numgen random mod 100 < ${Number(percent)} jump dropped
  }
  chain dropped {
${classify('dropped')}
  }
  chain passed {
${classify('passed')}
  }
}
`;
    run('ip', ['netns', 'exec', this.name, 'nft', '-f', '-'], rules);
  }

  /** Lifts loss() at once; its counters stay, and go on counting what passes. */
  stopLoss() {
    run('ip', ['netns', 'exec', this.name, 'nft', 'flush', 'chain', 'inet', 'tcloss', 'maybe']);
  }

  /** loss()'s counters: packets `{video, rtx, other}` `_dropped` and `_passed`. */
  lossCounters() {
    const out = run('ip', ['netns', 'exec', this.name, 'nft', '-j', 'list', 'counters', 'table', 'inet', 'tcloss']);
    const counts = {};
    for (const item of JSON.parse(out).nftables ?? []) {
      if (item.counter) counts[item.counter.name] = item.counter.packets;
    }
    return counts;
  }

  /**
   * nftables inside the namespace: nothing leaves it but TCP to `hostIp` on `tcpPorts` (and
   * the replies to it); every UDP datagram is dropped and counted. Rules in the namespace
   * touch no other traffic on the machine.
   */
  firewall(tcpPorts) {
    if (!have('nft')) throw noNft();
    // Replaces the namespace's firewall if it had one (the add makes the delete safe).
    const rules = `
add table inet tcblock
delete table inet tcblock
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

  /**
   * Deletes the namespace (with its end of the pair, which takes the host's end and its qdisc
   * along, and with its nftables tables).
   */
  deleteSync() {
    if (!made.has(this)) return;
    made.delete(this);
    try { execFileSync('ip', ['netns', 'del', this.name], { stdio: 'ignore' }); } catch { /* gone already */ }
    try { execFileSync('ip', ['link', 'del', this.hostVeth], { stdio: 'ignore' }); } catch { /* gone with the namespace */ }
    if (this._dir) rmSync(this._dir, { recursive: true, force: true });
  }
}
