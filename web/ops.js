// /ops: the operator's view of a node: nodes, tables and sessions, with live
// charts (players, bitrate, loss) from the node's own /metrics (Prometheus text,
// parsed here) and each table's snapshot from GET /api/v1/tables/{table}.
//
// The metrics, the snapshots and the session list need an operator token for
// every table: `?token=` (the demo route never hands out operator tokens). The
// session list comes from GET /api/v1/tables/{table}/sessions
// ([{session, role, user, connected_ms, addr}]); a node without it answers 404
// and the page says "session list unavailable".
//
// The cluster's nodes (id, region, state, load, tables, the cameras each pulls
// from an origin, heartbeat age) come from
// GET /api/v1/cluster/nodes, and each table's owner from its snapshot's `owner`.
import uPlot from '/web/vendor/uplot/uPlot.esm.js';
import { getJson, pageToken, parsePrometheus, TablecastError } from '/web/tablecast.js';
import { $, money, toast } from '/web/ui.js';

const POLL_MS = 2000;
const HISTORY = 180; // six minutes at one sample every two seconds
const COLORS = ['#e6bf5c', '#3ddc84', '#5b9cff', '#ff7a8a', '#c792ea', '#4dd0e1'];

const state = {
  token: null,
  tokenError: null,
  samples: [],
  prev: null,
  tables: [],
  snapshots: new Map(),
  sessions: { table: null, status: 'idle', list: [] },
  cluster: null,
  history: { t: [], players: new Map(), control: [], egress: [], ingress: [], loss: [] },
};
window.tablecastOps = state;

// ---------------------------------------------------------------------------
// Token
// ---------------------------------------------------------------------------

async function getToken() {
  try {
    state.token = await pageToken({ role: 'operator', table: '*' });
    $('auth-status').dataset.state = 'live';
    $('auth-status').textContent = 'Operator';
  } catch (err) {
    state.tokenError = err;
    $('auth-status').dataset.state = 'poor';
    $('auth-status').textContent = 'No token';
    const note = $('auth-note');
    note.hidden = false;
    const why = err instanceof TablecastError && err.status === 404
      ? 'this node has no demo token route'
      : `the node gave no operator token (${err.serverMessage || err.message})`;
    note.textContent = `The charts, round state and sessions need an operator token, and ${why}. Open this page as /ops?token=… with a token from \`tablecast token --role operator --table '*'\`.`;
  }
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

function byTable(samples, name, extra = {}) {
  const out = new Map();
  for (const s of samples) {
    if (s.name !== name || s.labels.table === undefined) continue;
    if (!Object.entries(extra).every(([k, v]) => s.labels[k] === v)) continue;
    out.set(s.labels.table, (out.get(s.labels.table) ?? 0) + s.value);
  }
  return out;
}

function node(samples, name) {
  return samples.find((s) => s.name === name)?.value ?? 0;
}

function read(samples) {
  const tables = [...byTable(samples, 'tablecast_subscribers').keys()].sort();
  const m = {
    at: performance.now(),
    tables,
    subscribers: byTable(samples, 'tablecast_subscribers'),
    publishers: byTable(samples, 'tablecast_publishers'),
    control: byTable(samples, 'tablecast_control_connections'),
    events: byTable(samples, 'tablecast_control_events_total'),
    bytesOut: byTable(samples, 'tablecast_rtp_bytes_forwarded_total'),
    bytesIn: byTable(samples, 'tablecast_rtp_bytes_received_total'),
    packetsOut: byTable(samples, 'tablecast_rtp_packets_forwarded_total'),
    nacks: byTable(samples, 'tablecast_nack_total', { direction: 'from_subscriber' }),
    retx: byTable(samples, 'tablecast_rtp_retransmitted_packets_total'),
    unroutable: node(samples, 'tablecast_media_datagrams_unroutable_total'),
    reaped: node(samples, 'tablecast_sessions_reaped_total'),
  };
  return m;
}

/** Per-second rate of a per-table counter between two reads. */
function rate(now, prev, key, table) {
  if (!prev) return 0;
  const dt = (now.at - prev.at) / 1000;
  if (dt <= 0) return 0;
  const d = (now[key].get(table) ?? 0) - (prev[key].get(table) ?? 0);
  return d > 0 ? d / dt : 0;
}

function sum(map) {
  let s = 0;
  for (const v of map.values()) s += v;
  return s;
}

async function pollMetrics() {
  // /metrics answers operator tokens only; without one there is nothing to chart.
  if (!state.token) return;
  let m;
  try {
    const res = await fetch('/metrics', { cache: 'no-store', headers: { Authorization: `Bearer ${state.token}` } });
    if (res.status === 401 || res.status === 403) {
      const note = $('auth-note');
      note.hidden = false;
      note.textContent = `GET /metrics refused this token (${res.status}): the charts need an operator token for every table, from \`tablecast token --role operator --table '*'\`.`;
      return;
    }
    if (!res.ok) throw new Error(`GET /metrics: ${res.status}`);
    m = read(parsePrometheus(await res.text()));
  } catch (err) {
    $('node-status').dataset.state = 'error';
    $('node-status').textContent = 'Node unreachable';
    return;
  }
  const prev = state.prev;
  state.prev = m;
  state.tables = m.tables;
  const per = {};
  let egress = 0;
  let ingress = 0;
  let packets = 0;
  let nacks = 0;
  let retx = 0;
  for (const t of m.tables) {
    per[t] = {
      egress: rate(m, prev, 'bytesOut', t) * 8,
      ingress: rate(m, prev, 'bytesIn', t) * 8,
      packets: rate(m, prev, 'packetsOut', t),
      nacks: rate(m, prev, 'nacks', t),
      retx: rate(m, prev, 'retx', t),
    };
    egress += per[t].egress;
    ingress += per[t].ingress;
    packets += per[t].packets;
    nacks += per[t].nacks;
    retx += per[t].retx;
  }
  const loss = packets > 0 ? (nacks / packets) * 100 : 0;
  m.per = per;

  const h = state.history;
  h.t.push(Date.now() / 1000);
  for (const t of m.tables) {
    if (!h.players.has(t)) h.players.set(t, h.t.slice(0, -1).map(() => null));
    h.players.get(t).push(m.subscribers.get(t) ?? 0);
  }
  h.control.push(sum(m.control));
  h.egress.push(egress / 1e6);
  h.ingress.push(ingress / 1e6);
  h.loss.push(loss);
  if (h.t.length > HISTORY) {
    h.t.shift();
    for (const arr of h.players.values()) arr.shift();
    h.control.shift();
    h.egress.shift();
    h.ingress.shift();
    h.loss.shift();
  }

  const players = sum(m.subscribers);
  $('k-players').textContent = String(players);
  $('k-players-sub').textContent = `${sum(m.control)} control connections`;
  $('k-publishers').textContent = String(sum(m.publishers));
  $('k-publishers-sub').textContent = `${m.tables.length} ${m.tables.length === 1 ? 'table' : 'tables'}`;
  $('k-egress').textContent = fmtMbps(egress);
  $('k-ingress').textContent = `${fmtMbps(ingress)} in`;
  $('k-loss').textContent = `${loss.toFixed(2)} %`;
  $('k-retx').textContent = `${Math.round(retx)} resent/s`;

  renderNodes(m, prev);
  renderTables(m);
  renderCharts();
  syncSessionTables(m.tables);
}

function fmtMbps(bps) {
  return bps >= 1e6 ? `${(bps / 1e6).toFixed(2)} Mb/s` : `${Math.round(bps / 1e3)} kb/s`;
}

async function pollReady() {
  try {
    const res = await fetch('/readyz', { cache: 'no-store' });
    const body = await res.json().catch(() => ({}));
    state.ready = { ok: res.ok, ...body };
  } catch {
    state.ready = { ok: false, status: 'unreachable' };
  }
  const s = $('node-status');
  s.dataset.state = state.ready.ok ? 'live' : 'poor';
  s.textContent = state.ready.ok ? 'Node ready' : `Node ${state.ready.status ?? 'not ready'}`;
}

// ---------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------

function renderNodes(m, prev) {
  const body = $('nodes-body');
  const unroutable = prev ? Math.max(0, (m.unroutable - prev.unroutable) / ((m.at - prev.at) / 1000)) : 0;
  const row = [
    location.host,
    state.ready ? (state.ready.ok ? 'ready' : state.ready.status) : '…',
    String(m.tables.length),
    String(sum(m.subscribers) + sum(m.publishers)),
    unroutable.toFixed(1),
    String(m.reaped),
  ];
  body.textContent = '';
  const tr = document.createElement('tr');
  row.forEach((v, i) => {
    const cell = document.createElement(i === 0 ? 'th' : 'td');
    if (i === 0) cell.scope = 'row';
    if (i === 1) {
      const pill = document.createElement('span');
      pill.className = 'status';
      pill.dataset.state = state.ready?.ok ? 'live' : 'poor';
      pill.textContent = v;
      cell.append(pill);
    } else {
      cell.textContent = v;
    }
    tr.append(cell);
  });
  body.append(tr);
}

function renderTables(m) {
  const body = $('tables-body');
  body.textContent = '';
  for (const t of m.tables) {
    const snap = state.snapshots.get(t);
    const tr = document.createElement('tr');
    const cells = [
      snap?.table?.name ? `${snap.table.name}` : t,
      ownerText(t, snap),
      roundText(snap),
      snap?.totals ? money(Object.values(snap.totals.spots).reduce((a, s) => a + s.amount, 0), { currency: snap.table.currency, exponent: snap.table.currency_exponent }) + ` · ${snap.totals.bettors}` : '—',
      (m.publishers.get(t) ?? 0) > 0 ? 'live' : 'off air',
      String(m.subscribers.get(t) ?? 0),
      String(m.control.get(t) ?? 0),
      fmtMbps(m.per[t].egress),
      String(m.events.get(t) ?? 0),
    ];
    cells.forEach((v, i) => {
      const cell = document.createElement(i === 0 ? 'th' : 'td');
      if (i === 0) {
        cell.scope = 'row';
        const a = document.createElement('a');
        a.href = `/play/${encodeURIComponent(t)}`;
        a.textContent = v;
        cell.append(a);
        if (v !== t) {
          const id = document.createElement('span');
          id.className = 'sub';
          id.textContent = t;
          cell.append(id);
        }
      } else if (i === 4) {
        const pill = document.createElement('span');
        pill.className = 'status';
        pill.dataset.state = v === 'live' ? 'onair' : 'idle';
        pill.textContent = v === 'live' ? 'On air' : 'Off air';
        cell.append(pill);
      } else {
        cell.textContent = v;
      }
      tr.append(cell);
    });
    body.append(tr);
  }
}

/** The table's owner: from its snapshot, else from the node list (the node that lists it). */
function ownerText(table, snap) {
  const fromList = state.cluster?.nodes?.find((n) => (n.tables ?? []).includes(table))?.id;
  const owner = snap?.owner ?? fromList;
  if (!owner) return state.cluster?.clustered ? 'none (moving)' : '—';
  const self = state.cluster?.nodes?.find((n) => n.self)?.id;
  return owner === self ? `${owner} (this node)` : owner;
}

function roundText(snap) {
  if (!snap) return state.token ? '…' : '—';
  const phase = { idle: 'idle', betting_open: 'betting open', betting_closed: 'betting closed' }[snap.state] ?? snap.state;
  return snap.round ? `#${snap.round} · ${phase}` : phase;
}

async function pollSnapshots() {
  if (!state.token) return;
  await Promise.all(state.tables.map(async (t) => {
    try {
      state.snapshots.set(t, await getJson(`/api/v1/tables/${encodeURIComponent(t)}`, state.token));
    } catch {
      state.snapshots.delete(t);
    }
  }));
  if (state.prev) renderTables(state.prev);
}

// ---------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------

async function pollCluster() {
  const note = $('cluster-note');
  if (!state.token) {
    note.textContent = 'The node list needs an operator token for every table (/ops?token=…).';
    return;
  }
  try {
    state.cluster = await getJson('/api/v1/cluster/nodes', state.token);
    note.textContent = state.cluster.degraded ? `Coordination degraded: ${state.cluster.degraded}` : '';
  } catch (err) {
    state.cluster = null;
    note.textContent = err instanceof TablecastError && err.status === 404
      ? 'This node has no cluster API.'
      : `Node list unavailable (${err.serverMessage || err.message}).`;
  }
  renderCluster();
}

function renderCluster() {
  const body = $('cluster-body');
  body.textContent = '';
  const c = state.cluster;
  $('cluster-aside').textContent = c ? (c.clustered ? `${c.nodes.length} node${c.nodes.length === 1 ? '' : 's'}` : 'one node, no Redis') : '';
  if (!c) return;
  for (const n of c.nodes ?? []) {
    const tr = document.createElement('tr');
    tr.dataset.node = n.id;
    const load = n.load ?? {};
    const cells = [
      n.self ? `${n.id} (this node)` : n.id,
      n.region ?? '—',
      n.state ?? '—',
      String(load.players ?? 0),
      typeof load.cpu === 'number' ? `${load.cpu.toFixed(2)} cores` : '—',
      fmtMbps(load.bitrate_bps ?? 0),
      (n.tables ?? []).join(', ') || '—',
      [
        ...(n.relays ?? []).map((r) => `${r.table}/${r.camera} ← ${r.from ?? '…'}${r.layers > 1 ? ` (${r.layers} layers)` : ''}`),
        ...(n.unreachable_origins ?? []).map((u) => `${u.table}: cannot reach origin ${u.origin ?? '?'} (${u.error})`),
      ].join(', ') || '—',
      typeof n.heartbeat_age_ms === 'number' ? `${(n.heartbeat_age_ms / 1000).toFixed(1)} s ago` : '—',
    ];
    cells.forEach((v, i) => {
      const cell = document.createElement(i === 0 ? 'th' : 'td');
      if (i === 0) {
        cell.scope = 'row';
        if (n.public_url && !n.self) {
          const a = document.createElement('a');
          a.href = `${n.public_url.replace(/\/+$/, '')}/ops`;
          a.textContent = v;
          cell.append(a);
        } else {
          cell.textContent = v;
        }
      } else if (i === 2) {
        const pill = document.createElement('span');
        pill.className = 'status';
        pill.dataset.state = v === 'serving' ? 'live' : 'poor';
        pill.textContent = v;
        cell.append(pill);
      } else {
        cell.textContent = v;
      }
      tr.append(cell);
    });
    body.append(tr);
  }
}

// ---------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------

function syncSessionTables(tables) {
  const select = $('sessions-table');
  const have = [...select.options].map((o) => o.value);
  // Keep the operator's choice; until there is one, follow the busiest table.
  const busiest = [...tables].sort((a, b) => (state.prev?.subscribers.get(b) ?? 0) - (state.prev?.subscribers.get(a) ?? 0))[0];
  const want = state.sessions.picked && tables.includes(select.value) ? select.value : busiest;
  if (have.join() === tables.join() && select.value === want) return;
  select.textContent = '';
  for (const t of tables) select.add(new Option(t, t));
  select.value = want;
  pollSessions();
}

async function pollSessions() {
  const table = $('sessions-table').value;
  const s = state.sessions;
  s.table = table;
  if (!table) return;
  if (!state.token) {
    s.status = 'no-token';
    renderSessions('Session list needs an operator token (/ops?token=…).');
    return;
  }
  try {
    s.list = await getJson(`/api/v1/tables/${encodeURIComponent(table)}/sessions`, state.token);
    s.status = 'ok';
    renderSessions(s.list.length ? '' : 'No sessions at this table.');
  } catch (err) {
    s.list = [];
    s.status = err.status === 404 ? 'unavailable' : 'error';
    renderSessions(err.status === 404
      ? 'Session list unavailable: this node does not list sessions yet (GET /api/v1/tables/{table}/sessions).'
      : `Session list unavailable: ${err.message}`);
  }
}

function renderSessions(note) {
  $('sessions-note').textContent = note;
  $('sessions-note').hidden = !note;
  const body = $('sessions-body');
  body.textContent = '';
  $('sessions-grid').hidden = state.sessions.list.length === 0;
  for (const x of state.sessions.list) {
    const tr = document.createElement('tr');
    const role = x.role === 'publisher' ? `dealer${x.camera && x.camera !== 'main' ? ` · ${x.camera}` : ''}` : x.role === 'subscriber' ? 'player' : x.role;
    const connected = typeof x.connected_ms === 'number' ? fmtAge(x.connected_ms) : 'connecting…';
    const control = x.control === undefined ? '—' : x.control ? 'data channel' : (x.role === 'subscriber' ? 'WebSocket / none' : '—');
    const cells = [x.session, role, x.user, connected, x.addr ?? '—', control];
    cells.forEach((v, i) => {
      const cell = document.createElement(i === 0 ? 'th' : 'td');
      if (i === 0) { cell.scope = 'row'; cell.className = 'mono'; }
      cell.textContent = String(v ?? '—');
      tr.append(cell);
    });
    const td = document.createElement('td');
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'compact danger';
    b.textContent = 'Drop';
    b.setAttribute('aria-label', `Drop session ${x.session} (${x.user})`);
    b.addEventListener('click', () => dropSession(state.sessions.table, x.session));
    td.append(b);
    tr.append(td);
    body.append(tr);
  }
}

async function dropSession(table, session) {
  try {
    const res = await fetch(`/api/v1/tables/${encodeURIComponent(table)}/sessions/${encodeURIComponent(session)}`, {
      method: 'DELETE',
      headers: { Authorization: `Bearer ${state.token}` },
    });
    if (!res.ok) throw new Error(`${res.status} ${(await res.text()).split('\n')[0]}`);
    toast(`Dropped ${session}; the player reconnects by itself.`, 'ok');
  } catch (err) {
    toast(`Could not drop ${session}: ${err.message}`, 'error');
  }
  pollSessions();
}

function fmtAge(ms) {
  if (typeof ms !== 'number') return '—';
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

$('sessions-table').addEventListener('change', () => {
  state.sessions.picked = true;
  pollSessions();
});

// ---------------------------------------------------------------------------
// Charts
// ---------------------------------------------------------------------------

const charts = {};

function axes(unit) {
  const base = {
    stroke: '#a9bbb1',
    grid: { stroke: 'rgba(255, 255, 255, 0.06)', width: 1 },
    ticks: { stroke: 'rgba(255, 255, 255, 0.12)', width: 1 },
    font: '12px system-ui, sans-serif',
  };
  const clock = (u, splits) => splits.map((ts) => new Date(ts * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false }));
  return [{ ...base, space: 70, values: clock }, { ...base, size: 46, values: (u, v) => v.map((x) => `${+x.toFixed(2)}${unit}`) }];
}

function makeChart(key, el, series, unit) {
  charts[key]?.destroy();
  const width = Math.max(200, el.clientWidth);
  const opts = {
    width,
    height: 190,
    cursor: { drag: { x: false, y: false } },
    legend: { live: false },
    scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max * 1.15, unit === '%' ? 1 : 1)] } },
    axes: axes(unit),
    series: [{}, ...series.map((s, i) => ({
      label: s.label,
      stroke: s.color ?? COLORS[i % COLORS.length],
      width: 2,
      fill: `${s.color ?? COLORS[i % COLORS.length]}22`,
      points: { show: false },
      value: (u, v) => (v === null || v === undefined ? '—' : `${+v.toFixed(2)}${unit}`),
    }))],
  };
  charts[key] = new uPlot(opts, [[], ...series.map(() => [])], el);
  charts[key]._keys = series.map((s) => s.key).join();
}

function renderCharts() {
  const h = state.history;
  const tables = [...h.players.keys()];
  const playerSeries = [
    ...tables.map((t, i) => ({ key: `p:${t}`, label: `${t} players`, color: COLORS[i % COLORS.length] })),
    { key: 'control', label: 'control conns', color: '#6f8a7d' },
  ];
  if (charts.players?._keys !== playerSeries.map((s) => s.key).join()) makeChart('players', $('c-players'), playerSeries, '');
  if (!charts.bitrate) makeChart('bitrate', $('c-bitrate'), [{ key: 'out', label: 'to players', color: '#3ddc84' }, { key: 'in', label: 'from dealers', color: '#5b9cff' }], '');
  if (!charts.loss) makeChart('loss', $('c-loss'), [{ key: 'loss', label: 'NACKed', color: '#ff7a8a' }], '%');
  charts.players.setData([h.t, ...tables.map((t) => h.players.get(t)), h.control]);
  charts.bitrate.setData([h.t, h.egress, h.ingress]);
  charts.loss.setData([h.t, h.loss]);
}

const resize = new ResizeObserver(() => {
  for (const [key, chart] of Object.entries(charts)) {
    const el = $(`c-${key}`);
    if (el && chart.width !== el.clientWidth) chart.setSize({ width: Math.max(200, el.clientWidth), height: 190 });
  }
});
for (const id of ['c-players', 'c-bitrate', 'c-loss']) resize.observe($(id));

// ---------------------------------------------------------------------------

async function main() {
  await Promise.all([getToken(), pollReady()]);
  await pollMetrics();
  await Promise.all([pollSnapshots(), pollCluster()]);
  setInterval(async () => {
    await pollReady();
    await pollMetrics();
    await Promise.all([pollSnapshots(), pollCluster()]);
  }, POLL_MS);
  setInterval(pollSessions, 3000);
}

main();
