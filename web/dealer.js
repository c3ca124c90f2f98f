// /dealer/{table}: the dealer's console. Pick a camera and microphone, preview,
// publish over WHIP (three simulcast layers when the camera gives at least
// 960x540), and run the rounds: open, close, result, void, sent as `dealer.*`
// messages over a WebSocket console connection with the dealer token. Live
// totals, the number watching (from /metrics, with an operator ?token= only) and
// the publishing stats.
//
// What tests can read: window.tablecastDealer (the WHIP session or null),
// window.tablecastDealerPage ({table, state, error}) and window.tablecastConsole.
import {
  publish, openConsole, pageToken, tableFromLocation, tokenClaims, outcomeList,
  parsePrometheus, sampleValue, SIMULCAST_MIN,
} from '/web/tablecast.js';
import { $, spotName, sortSpots, money as moneyFor, toast } from '/web/ui.js';

const table = tableFromLocation();
const camera = new URLSearchParams(location.search).get('camera') || 'main';
const preview = $('preview');

$('table-name').textContent = camera === 'main' ? table : `${table} · ${camera}`;
document.title = `Dealer · ${table} · tablecast`;

window.tablecastDealer = null;
window.tablecastDealerPage = { table, state: 'idle', error: null };
window.tablecastConsole = null;

let stream = null;
let timer = null;
let busy = false;
let desk = null;
let tokenPromise = null;
const picked = new Set();

/**
 * One dealer token for both the WHIP session and the console, renewed near its expiry (a renewed
 * demo token carries a new user name: the node picks them).
 */
async function dealerToken() {
  if (tokenPromise) {
    const claims = tokenClaims(await tokenPromise.catch(() => ''));
    if (claims && (!claims.exp || claims.exp * 1000 > Date.now() + 60_000)) return tokenPromise;
    tokenPromise = pageToken({ role: 'dealer', table });
  }
  tokenPromise ??= pageToken({ role: 'dealer', table });
  return tokenPromise.catch((err) => { tokenPromise = null; throw err; });
}

// ---------------------------------------------------------------------------
// Camera and publishing
// ---------------------------------------------------------------------------

function setStatus(state, text) {
  $('pub-status').dataset.state = state;
  $('pub-status').textContent = text;
  window.tablecastDealerPage.state = state;
  const live = state === 'onair' || state === 'connecting';
  $('preview-label').dataset.live = String(state === 'onair');
  $('preview-label').textContent = state === 'onair' ? 'On air' : 'Preview';
  $('go-live').disabled = busy || live || !stream;
  $('stop').disabled = busy || !window.tablecastDealer;
}

function showError(err) {
  window.tablecastDealerPage.error = err ? { message: err.message, status: err.status ?? null } : null;
  $('error').hidden = !err;
  $('error').textContent = err ? err.message : '';
}

function fmtRate(bps) {
  return bps >= 1e6 ? `${(bps / 1e6).toFixed(2)} Mb/s` : `${Math.round(bps / 1e3)} kb/s`;
}

function renderStats(s) {
  $('s-state').textContent = s ? s.connectionState : '—';
  $('s-size').textContent = s && s.frameWidth ? `${s.frameWidth}×${s.frameHeight}` : '—';
  $('s-fps').textContent = s ? `${Math.round(s.fps)}` : '—';
  $('s-bitrate').textContent = s ? fmtRate(s.bitrate) : '—';
  $('s-rtt').textContent = s && s.rtt !== null ? `${Math.round(s.rtt * 1000)} ms` : '—';
  $('s-layers').textContent = s ? s.layers.map((l) => (l.rid ? `${l.rid} ${l.frameHeight}p` : `${l.frameHeight}p`)).join(' · ') || '—' : '—';
  $('s-limit').textContent = s ? s.qualityLimitationReason : '—';
  $('s-dtls').textContent = s && s.dtlsVersion ? s.dtlsVersion : '—';
  $('out-summary').textContent = s && s.frameWidth ? `${s.frameHeight}p · ${fmtRate(s.bitrate)}` : '';
  if (!s) return;
  if (s.connectionState === 'connected') setStatus('onair', 'On air');
  else if (s.connectionState === 'disconnected') setStatus('poor', 'Reconnecting…');
  else if (s.connectionState === 'failed') {
    setStatus('error', 'Connection failed');
    showError(new Error('The connection to the node failed. Stop and go live again.'));
  }
}

function selectedSize() {
  const [w, h] = $('quality-select').value.split('x').map(Number);
  return { w, h };
}

async function openDevices() {
  const { w, h } = selectedSize();
  const camId = $('camera-select').value;
  const micId = $('mic-select').value;
  const video = {
    width: { ideal: w }, height: { ideal: h }, frameRate: { ideal: 30 },
    ...(camId ? { deviceId: { exact: camId } } : {}),
  };
  const audio = micId ? { deviceId: { exact: micId } } : true;
  let next;
  try {
    next = await navigator.mediaDevices.getUserMedia({ video, audio });
  } catch {
    // No microphone (or it is busy): publish video alone rather than nothing.
    next = await navigator.mediaDevices.getUserMedia({ video, audio: false });
  }
  const old = stream;
  stream = next;
  preview.srcObject = stream;
  const handle = window.tablecastDealer;
  if (handle) {
    for (const sender of handle.pc.getSenders()) {
      const track = sender.track && stream.getTracks().find((t) => t.kind === sender.track.kind);
      if (track) await sender.replaceTrack(track);
    }
  }
  old?.getTracks().forEach((t) => t.stop());
  await listDevices();
  updateSimulcast(true);
  $('overlay').hidden = true;
}

async function listDevices() {
  const devices = await navigator.mediaDevices.enumerateDevices();
  const fill = (select, kind, current) => {
    const list = devices.filter((d) => d.kind === kind);
    select.textContent = '';
    list.forEach((d, i) => select.add(new Option(d.label || `${kind === 'videoinput' ? 'Camera' : 'Microphone'} ${i + 1}`, d.deviceId)));
    if (list.length === 0) select.add(new Option('None found', ''));
    if (current) select.value = current;
  };
  fill($('camera-select'), 'videoinput', stream?.getVideoTracks()[0]?.getSettings().deviceId);
  fill($('mic-select'), 'audioinput', stream?.getAudioTracks()[0]?.getSettings().deviceId);
}

/** Simulcast needs 960x540; it is on by default whenever the camera gives that. */
function updateSimulcast(fresh = false) {
  const s = stream?.getVideoTracks()[0]?.getSettings() ?? {};
  const ok = (s.width ?? 0) >= SIMULCAST_MIN.width && (s.height ?? 0) >= SIMULCAST_MIN.height;
  const box = $('simulcast');
  box.disabled = !ok || !!window.tablecastDealer;
  if (!ok) box.checked = false;
  else if (fresh && !window.tablecastDealer) box.checked = true;
  $('simulcast-note').textContent = ok
    ? `Camera gives ${s.width}×${s.height}: full, half and quarter size layers.`
    : `Needs a camera of at least 960×540 (this one gives ${s.width ?? '?'}×${s.height ?? '?'}).`;
  $('golive-note').textContent = stream ? `${s.width ?? '?'}×${s.height ?? '?'}${ok && box.checked ? ' · 3 layers' : ''}` : '';
}

async function goLive() {
  if (!stream || window.tablecastDealer) return;
  busy = true;
  showError(null);
  setStatus('connecting', 'Connecting…');
  try {
    const token = await dealerToken();
    const handle = await publish({
      table, camera, token, stream,
      simulcast: $('simulcast').checked,
      videoCodec: $('codec-select').value || undefined,
    });
    window.tablecastDealer = handle;
    watchClosed(handle);
    if (handle.simulcastRefused) {
      toast('The node did not take simulcast; publishing one layer.', 'info');
      $('simulcast').checked = false;
    }
    handle.on('state', () => handle.stats().then(renderStats).catch(() => {}));
    timer = setInterval(() => handle.stats().then(renderStats).catch(() => {}), 1000);
    busy = false;
    setStatus('connecting', 'Connecting…');
    updateSimulcast();
  } catch (err) {
    busy = false;
    setStatus('error', err.status === 401 || err.status === 403 ? 'Not allowed' : 'Error');
    showError(err);
  }
}

/** The node closing the session (another console took the camera, an operator dropped it) shows as DTLS closing. */
function watchClosed(handle) {
  const dtls = handle.pc.getTransceivers().find((t) => t.sender.transport)?.sender.transport;
  dtls?.addEventListener('statechange', async () => {
    if (window.tablecastDealer !== handle || (dtls.state !== 'closed' && dtls.state !== 'failed')) return;
    await stop();
    showError(new Error('Off air: the node ended this session (another console went live on this camera, or an operator dropped it). Go live again to take over.'));
  });
}

async function stop() {
  const handle = window.tablecastDealer;
  if (!handle) return;
  // First: the DTLS close that stopping causes is ours, and watchClosed must not take it for
  // the node ending the session.
  window.tablecastDealer = null;
  busy = true;
  clearInterval(timer);
  timer = null;
  try {
    await handle.stop();
  } catch (err) {
    showError(err);
  } finally {
    busy = false;
    renderStats(null);
    setStatus('idle', 'Off air');
    updateSimulcast();
  }
}

$('go-live').addEventListener('click', goLive);
$('stop').addEventListener('click', stop);
$('simulcast').addEventListener('change', () => updateSimulcast());
for (const id of ['camera-select', 'mic-select', 'quality-select']) {
  $(id).addEventListener('change', () => openDevices().catch(showError));
}
addEventListener('pagehide', () => {
  window.tablecastDealer?.stop().catch(() => {});
  desk?.close();
});

// ---------------------------------------------------------------------------
// Round controls over the console connection
// ---------------------------------------------------------------------------

function money(amount) {
  return moneyFor(amount, desk?.table);
}

async function connectConsole() {
  const status = $('console-status');
  try {
    desk = await openConsole({ table, token: dealerToken });
  } catch (err) {
    status.dataset.state = 'error';
    status.textContent = 'Console offline';
    status.title = err.message;
    toast(`Round controls unavailable: ${err.message}`, 'error');
    return;
  }
  window.tablecastConsole = desk;
  const renderConn = (c) => {
    status.dataset.state = c.state === 'live' ? 'live' : c.state;
    status.textContent = c.state === 'live' ? 'Console' : c.state === 'reconnecting' ? 'Console reconnecting…' : 'Console offline';
    renderRound();
  };
  desk.on('connection', renderConn);
  desk.on('table', renderRound);
  desk.on('snapshot', buildOutcomes);
  desk.on('round.result', (ev) => toast(`Round ${ev.round}: ${outcomeList(ev.outcome).map(spotName).join(' & ')} wins`, 'ok'));
  desk.on('round.voided', (ev) => toast(`Round ${ev.round} voided (${ev.reason})`));
  renderConn(desk.connection);
  buildOutcomes();
  renderRound();
  tick();
}

function buildOutcomes() {
  const box = $('outcomes');
  box.textContent = '';
  picked.clear();
  const spots = sortSpots(desk?.table?.spots ?? []);
  for (const s of spots) {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'outcome';
    b.dataset.spot = s.id;
    b.setAttribute('aria-pressed', 'false');
    b.textContent = spotName(s.id);
    b.addEventListener('click', () => {
      if (picked.has(s.id)) picked.delete(s.id); else picked.add(s.id);
      renderOutcomes();
    });
    box.append(b);
  }
  renderOutcomes();
}

function renderOutcomes() {
  for (const b of $('outcomes').children) b.setAttribute('aria-pressed', String(picked.has(b.dataset.spot)));
  $('confirm-result').disabled = picked.size === 0 || desk?.table?.state !== 'betting_closed';
  const list = [...picked].map(spotName).join(' & ');
  $('confirm-result').textContent = picked.size ? `Confirm: ${list} wins` : 'Confirm result';
}

function renderRound() {
  const t = desk?.table;
  const live = desk?.connection.state === 'live';
  const state = t?.state ?? 'idle';
  $('round-no').textContent = t?.round ? `#${t.round}` : (t?.lastRound ? `last #${t.lastRound.round}` : '—');
  $('round-state').dataset.state = state;
  $('round-phase').textContent = { idle: 'Idle', betting_open: 'Betting open', betting_closed: 'Betting closed' }[state] ?? state;
  $('open-round').disabled = !live || state !== 'idle';
  $('close-round').disabled = !live || state !== 'betting_open';
  $('result-entry').disabled = !live || state !== 'betting_closed';
  $('void-round').disabled = !live || state === 'idle';
  renderOutcomes();
  renderTotals(t);
}

function renderTotals(t) {
  const body = $('totals-body');
  body.textContent = '';
  const spots = t?.spots ?? [];
  const totals = t?.totals?.spots ?? {};
  let sum = 0;
  for (const s of spots) {
    const v = totals[s.id] ?? { amount: 0, bettors: 0 };
    sum += v.amount;
    const tr = document.createElement('tr');
    tr.dataset.spot = s.id;
    tr.innerHTML = '<th scope="row"><span class="dot" aria-hidden="true"></span><span class="n"></span></th><td class="amt"></td><td class="who"></td>';
    tr.querySelector('.n').textContent = spotName(s.id);
    tr.querySelector('.amt').textContent = t?.totals ? money(v.amount) : '—';
    tr.querySelector('.who').textContent = t?.totals ? String(v.bettors) : '—';
    body.append(tr);
  }
  $('totals-sum').textContent = t?.totals ? money(sum) : '—';
  $('totals-bettors').textContent = t?.totals ? String(t.totals.bettors) : '—';
}

function tick() {
  const t = desk?.table;
  let clock = '—';
  if (t?.state === 'betting_open') {
    const left = desk.timeLeft();
    clock = `${Math.ceil(left / 1000)} s`;
    $('round-state').dataset.urgent = String(left < 5000);
  } else if (t?.state === 'betting_closed') {
    clock = t.result ? outcomeList(t.result.outcome).map(spotName).join(' & ') : 'enter the result';
  } else if (t?.nextRoundAt) {
    clock = `next in ${Math.max(0, Math.ceil((t.nextRoundAt - desk.serverNow()) / 1000))} s`;
  } else if (t?.lastRound) {
    clock = t.lastRound.status === 'voided' ? `#${t.lastRound.round} voided` : `#${t.lastRound.round}: ${outcomeList(t.lastRound.outcome).map(spotName).join(' & ')}`;
  }
  $('round-clock').textContent = clock;
  const sc = $('stage-countdown');
  sc.hidden = t?.state !== 'betting_open';
  if (!sc.hidden) sc.textContent = clock;
  setTimeout(tick, 200);
}

async function act(button, what, fn) {
  button.disabled = true;
  try {
    const ok = await fn();
    return ok;
  } catch (err) {
    toast(`${what}: ${err.message}`, 'error');
    return null;
  } finally {
    renderRound();
  }
}

$('open-round').addEventListener('click', () => act($('open-round'), 'Open betting', () => desk.openRound()));
$('close-round').addEventListener('click', () => act($('close-round'), 'Close betting', () => desk.closeBetting()));
$('confirm-result').addEventListener('click', async () => {
  const outcome = [...picked];
  const ok = await act($('confirm-result'), 'Result', () => desk.result(outcome.length === 1 ? outcome[0] : outcome));
  if (ok) { picked.clear(); renderOutcomes(); }
});
$('void-round').addEventListener('click', async () => {
  const reason = $('void-reason').value.trim();
  const ok = await act($('void-round'), 'Void', () => desk.voidRound(reason || undefined));
  if (ok) { $('void-reason').value = ''; $('void-box').open = false; }
});

// ---------------------------------------------------------------------------
// Who is watching: the node's own gauge. /metrics answers only an operator token
// for every table, so the count shows when the page was opened with one
// (/dealer/{table}?token=…); a dealer token cannot read it.
// ---------------------------------------------------------------------------

const metricsToken = new URLSearchParams(location.search).get('token');
async function pollViewers() {
  try {
    const res = await fetch('/metrics', { cache: 'no-store', headers: { Authorization: `Bearer ${metricsToken}` } });
    if (!res.ok) throw new Error(`GET /metrics: ${res.status}`);
    const samples = parsePrometheus(await res.text());
    const n = sampleValue(samples, 'tablecast_subscribers', { table });
    $('viewers').textContent = n === undefined ? '' : `${n} watching`;
  } catch {
    $('viewers').textContent = '';
  }
}
if (tokenClaims(metricsToken)?.role === 'operator') {
  setInterval(pollViewers, 3000);
  pollViewers();
} else {
  $('viewers').textContent = '';
}


connectConsole();

openDevices()
  .then(() => setStatus('idle', 'Off air'))
  .catch((err) => {
    $('overlay-text').textContent = 'No camera';
    showError(new Error(`Could not open the camera: ${err.message}`));
    setStatus('error', 'No camera');
  });
