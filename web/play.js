// /play/{table}: the player's table. Video from the dealer, a countdown by server
// time, bet spots with live totals, chips, the player's own bets (drawn at once,
// then confirmed or refused), results in step with the video, payouts and chat.
//
// What tests and embedding pages can read: `window.tablecast` (the client, its
// seqLog, countdownMs(), results) and `window.tablecastPage` ({table, state, error}).
//
// The connection indicator shows the video layer being received ('720p'); its
// panel has the quality menu (Auto, High, Low), kept in localStorage.
import { joinTable, pageToken, tableFromLocation, tokenClaims, formatChip, outcomeList } from '/web/tablecast.js';
import { $, spotName, sortSpots, money as moneyFor, oddsText, fmtRate, toast } from '/web/ui.js';
import { ResultsView, resultText } from '/web/play-results.js';
import { setupChat } from '/web/play-chat.js';

const params = new URLSearchParams(location.search);
const tableId = tableFromLocation();
const camera = params.get('camera') || 'main';
const video = $('video');

/** Chip faces in whole currency units; those outside the table's limits are left out. */
const CHIP_UNITS = [1, 5, 25, 100, 500];

const page = { table: tableId, state: 'connecting', error: null };
window.tablecastPage = page;
window.tablecast = {
  client: null,
  results: [],
  get seqLog() { return this.client?.seqLog ?? []; },
  countdownMs() { return this.client ? this.client.timeLeft() : null; },
};

let client = null;
let chipAmount = null;
let lastRoundBets = [];

$('table-name').textContent = tableId;
document.title = `${tableId} · tablecast`;

// ---------------------------------------------------------------------------
// Connecting
// ---------------------------------------------------------------------------

async function start() {
  $('error').hidden = true;
  page.error = null;
  setConnection({ state: 'connecting' });
  overlay('Connecting to the table…');
  try {
    client = await joinTable({
      table: tableId,
      camera,
      video,
      token: playerToken,
      videoQuality: savedQuality(),
    });
  } catch (err) {
    showError(err);
    return;
  }
  window.tablecast.client = client;
  client.on('connection', setConnection);
  client.on('quality', renderQuality);
  client.on('table', (t) => heldForReveal(() => renderTable(t)));
  client.on('snapshot', onSnapshot);
  client.on('bet', () => heldForReveal(renderBets));
  client.on('round.opened', onRoundOpened);
  client.on('round.result', (ev) => results.result(ev));
  client.on('round.voided', (ev) => results.voided(ev));
  client.on('payout', (p) => results.payout(p));
  client.on('chat', addChat);
  client.on('error', (e) => toast(e.message, 'error'));
  client.on('fallback', () => renderQuality(client.quality));
  onSnapshot();
  setConnection(client.connection);
  renderTable(client.table);
  requestAnimationFrame(tick);
}

/**
 * The player's token: `?token=`, or a demo token kept (in this tab's sessionStorage) for as long
 * as it is good, so a reconnect or a reload of this tab comes back as the same player with the
 * same bets. The node names demo players, so a new demo token is a new player.
 */
const tokenKey = `tablecast:player-token:${tableId}`;
let token = null;
function stillGood(t) {
  const claims = t ? tokenClaims(t) : null;
  return Boolean(claims) && (!claims.exp || claims.exp * 1000 > Date.now() + 60_000);
}
async function playerToken() {
  if (stillGood(token)) return token;
  const kept = sessionStorage.getItem(tokenKey);
  const fromUrl = new URLSearchParams(location.search).get('token');
  if (!fromUrl && stillGood(kept) && tokenClaims(kept)?.table === tableId) {
    token = kept;
    return token;
  }
  token = await pageToken({ role: 'player', table: tableId });
  if (!fromUrl) sessionStorage.setItem(tokenKey, token);
  return token;
}

function showError(err) {
  page.error = { message: err.message, status: err.status ?? null };
  setConnection({ state: 'closed', error: err.message });
  const refused = err.status === 401 || err.status === 403;
  $('error-text').textContent = refused
    ? `This table did not accept your pass (${err.serverMessage || err.message}). Ask for a new link.`
    : `Could not join the table: ${err.message}`;
  $('error').hidden = false;
  overlay(refused ? 'Not allowed at this table' : 'Could not join the table');
}

$('retry').addEventListener('click', async () => {
  const old = client;
  client = null;
  window.tablecast.client = null;
  if (old) await old.close().catch(() => {});
  start();
});

addEventListener('pagehide', () => { client?.close().catch(() => {}); });

// ---------------------------------------------------------------------------
// Connection indicator
// ---------------------------------------------------------------------------

const CONNECTION_TEXT = { connecting: 'Connecting…', reconnecting: 'Reconnecting…', closed: 'Disconnected' };

function setConnection(c) {
  page.state = c.state;
  const conn = $('conn');
  if (c.state === 'live') {
    renderQuality(client?.quality ?? { level: 'good' });
  } else {
    conn.dataset.level = c.state;
    $('conn-layer').hidden = true;
    $('conn-text').textContent = CONNECTION_TEXT[c.state] ?? c.state;
    conn.setAttribute('aria-label', `Connection: ${CONNECTION_TEXT[c.state] ?? c.state}`);
  }
  const chatOk = c.state === 'live';
  $('chat-input').disabled = !chatOk;
  $('chat-send').disabled = !chatOk;
  if (c.state === 'reconnecting') $('live-badge').hidden = true;
}

function renderQuality(q) {
  if (!client || client.connection.state !== 'live') return;
  const level = q.level === 'poor' ? 'poor' : 'good';
  const conn = $('conn');
  conn.dataset.level = level;
  const text = level === 'poor' ? 'Poor connection' : 'Good connection';
  $('conn-text').textContent = level === 'poor' ? 'Poor' : 'Live';
  conn.setAttribute('aria-label', `Connection: ${text}. Show details`);
  $('q-video').textContent = q.frameWidth ? `${q.frameWidth}×${q.frameHeight}` : 'waiting for the dealer';
  const layer = $('conn-layer');
  layer.hidden = !q.layer;
  layer.textContent = q.layer ?? '';
  layer.title = q.layer ? `Receiving ${q.frameWidth}×${q.frameHeight} at ${fmtRate(q.bitrate ?? 0)}` : '';
  if (q.layer) conn.setAttribute('aria-label', `Connection: ${text}, ${q.layer} video at ${fmtRate(q.bitrate ?? 0)}. Show details`);
  $('q-bitrate').textContent = fmtRate(q.bitrate ?? 0);
  $('q-fps').textContent = `${Math.round(q.fps ?? 0)} fps`;
  $('q-loss').textContent = `${((q.loss ?? 0) * 100).toFixed(1)} %`;
  $('q-rtt').textContent = q.rtt !== null && q.rtt !== undefined ? `${Math.round(q.rtt * 1000)} ms` : '—';
  $('q-transport').textContent = client.connection.transport === 'websocket' ? 'WebSocket (fallback)' : 'data channel';
  $('q-clock').textContent = client.clock.synced ? `${client.clock.offset.toFixed(1)} ms ± ${(client.clock.rtt / 2).toFixed(1)}` : '—';
  const playing = q.video && !video.paused;
  $('live-badge').hidden = !playing;
  if (playing) overlay(null);
  else if (!q.video) overlay('Waiting for the dealer to go live…');
  syncUnmute();
}

$('conn').addEventListener('click', () => {
  const panel = $('conn-panel');
  panel.hidden = !panel.hidden;
  $('conn').setAttribute('aria-expanded', String(!panel.hidden));
});

// ---------------------------------------------------------------------------
// Video quality: Auto (what the screen and the link need), High, Low
// ---------------------------------------------------------------------------

const QUALITY_KEY = 'tablecast:video-quality';
const QUALITY_CHOICES = ['auto', 'high', 'low'];

function savedQuality() {
  let q = null;
  try { q = localStorage.getItem(QUALITY_KEY); } catch { /* storage refused: the default */ }
  return QUALITY_CHOICES.includes(q) ? q : 'auto';
}

function markQuality(quality, focus) {
  for (const b of $('quality').children) {
    const on = b.dataset.quality === quality;
    b.setAttribute('aria-checked', String(on));
    b.tabIndex = on ? 0 : -1;
    if (on && focus) b.focus();
  }
}

function selectQuality(quality, focus) {
  markQuality(quality, focus);
  try { localStorage.setItem(QUALITY_KEY, quality); } catch { /* kept for this page only */ }
  client?.setQuality(quality);
}

for (const b of $('quality').children) {
  b.addEventListener('click', () => selectQuality(b.dataset.quality, true));
  b.addEventListener('keydown', (ev) => {
    const i = QUALITY_CHOICES.indexOf(b.dataset.quality);
    const step = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 }[ev.key];
    if (step === undefined) return;
    ev.preventDefault();
    selectQuality(QUALITY_CHOICES[(i + step + QUALITY_CHOICES.length) % QUALITY_CHOICES.length], true);
  });
}
markQuality(savedQuality(), false);

function overlay(text) {
  $('overlay').hidden = !text;
  if (text) $('overlay-text').textContent = text;
}

// ---------------------------------------------------------------------------
// The table: spots, chips, phase
// ---------------------------------------------------------------------------

function money(amount) {
  return moneyFor(amount, client?.table);
}

function onSnapshot() {
  const t = client.table;
  $('table-name').textContent = t.name;
  document.title = `${t.name} · tablecast`;
  buildSpots(t);
  buildChips(t);
  if (t.lastRound?.status === 'settled' && results.road.length === 0) results.push(t.lastRound.round, outcomeList(t.lastRound.outcome));
  renderBets();
}

function buildSpots(t) {
  const box = $('spots');
  box.textContent = '';
  const spots = sortSpots(t.spots);
  box.style.setProperty('--spots', String(spots.length));
  for (const s of spots) {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'spot';
    b.dataset.spot = s.id;
    b.innerHTML = `
      <span class="spot-head"><span class="spot-name"></span><span class="spot-odds"></span></span>
      <span class="spot-total"><span class="amount">—</span><span class="bettors" title="players on this spot"><svg aria-hidden="true" width="12" height="12" viewBox="0 0 24 24" fill="currentColor"><circle cx="12" cy="8" r="4.5"/><path d="M3 22c0-5 4-8 9-8s9 3 9 8z"/></svg><span class="n">0</span></span></span>
      <span class="my-stack" hidden><span class="chip-mini" aria-hidden="true"></span><span class="my-amount"></span></span>`;
    b.querySelector('.spot-name').textContent = spotName(s.id);
    b.querySelector('.spot-odds').textContent = `pays ${oddsText(s.odds)}`;
    b.addEventListener('click', () => placeBet(s.id));
    box.append(b);
  }
}

function buildChips(t) {
  const box = $('chips');
  box.textContent = '';
  const unit = 10 ** t.exponent;
  const min = Math.min(...t.spots.map((s) => s.min_bet));
  const max = Math.max(...t.spots.map((s) => s.max_bet));
  let values = CHIP_UNITS.map((u) => u * unit).filter((v) => v >= min && v <= max);
  if (values.length === 0) values = [min];
  if (!values.includes(chipAmount)) chipAmount = values[Math.min(1, values.length - 1)];
  values.forEach((v, i) => {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'chip';
    b.dataset.value = String(v);
    b.dataset.tier = String(i);
    b.setAttribute('role', 'radio');
    b.setAttribute('aria-label', `${money(v)} chip`);
    b.innerHTML = '<span class="chip-face"></span>';
    b.querySelector('.chip-face').textContent = formatChip(v, t.exponent);
    b.addEventListener('click', () => selectChip(v, true));
    b.addEventListener('keydown', (ev) => chipKeys(ev, values));
    box.append(b);
  });
  selectChip(chipAmount, false);
}

function selectChip(value, focus) {
  chipAmount = value;
  for (const b of $('chips').children) {
    const on = Number(b.dataset.value) === value;
    b.setAttribute('aria-checked', String(on));
    b.tabIndex = on ? 0 : -1;
    if (on && focus) b.focus();
  }
  renderSpots();
}

function chipKeys(ev, values) {
  const i = values.indexOf(chipAmount);
  let next = null;
  if (ev.key === 'ArrowRight' || ev.key === 'ArrowDown') next = values[(i + 1) % values.length];
  if (ev.key === 'ArrowLeft' || ev.key === 'ArrowUp') next = values[(i - 1 + values.length) % values.length];
  if (ev.key === 'Home') next = values[0];
  if (ev.key === 'End') next = values[values.length - 1];
  if (next !== null) {
    ev.preventDefault();
    selectChip(next, true);
  }
}

// Digits pick chips from anywhere but a text field.
addEventListener('keydown', (ev) => {
  if (ev.target instanceof HTMLInputElement || ev.altKey || ev.ctrlKey || ev.metaKey) return;
  const n = Number(ev.key);
  const chips = [...$('chips').children];
  if (n >= 1 && n <= chips.length) selectChip(Number(chips[n - 1].dataset.value), false);
});

function renderTable(t) {
  if (!t) return;
  $('round-no').textContent = t.round ? `Round ${t.round}` : (t.lastRound ? `Round ${t.lastRound.round}` : '');
  renderSpots();
  renderBets();
  const open = t.state === 'betting_open';
  $('countdown').hidden = !open;
  $('stage').dataset.state = t.state;
  renderPhase();
}

function myStakes(round) {
  const by = {};
  for (const b of client.bets.values()) {
    if (b.round !== round || !(b.status === 'pending' || b.status === 'accepted')) continue;
    const e = by[b.spot] ?? (by[b.spot] = { amount: 0, pending: false });
    e.amount += b.amount;
    e.pending ||= b.status === 'pending';
  }
  return by;
}

function renderSpots() {
  const t = client?.table;
  if (!t) return;
  const open = t.state === 'betting_open';
  const mine = myStakes(t.round);
  const totals = t.totals?.spots ?? {};
  const winners = t.result && t.result.round === t.round ? t.result.outcome : (t.state === 'idle' && t.lastRound?.status === 'settled' ? outcomeList(t.lastRound.outcome) : []);
  for (const b of $('spots').children) {
    const id = b.dataset.spot;
    const total = totals[id] ?? { amount: 0, bettors: 0 };
    const my = mine[id];
    b.disabled = !open || client.connection.state === 'closed';
    b.dataset.win = String(winners.includes(id) && !open);
    b.querySelector('.amount').textContent = t.totals ? money(total.amount) : '—';
    b.querySelector('.n').textContent = String(total.bettors);
    const stack = b.querySelector('.my-stack');
    stack.hidden = !my;
    if (my) {
      stack.dataset.pending = String(my.pending);
      b.querySelector('.my-amount').textContent = money(my.amount);
    }
    b.setAttribute('aria-label', [
      open ? `Bet ${money(chipAmount ?? 0)} on ${spotName(id)}` : spotName(id),
      `pays ${oddsText(t.spots.find((s) => s.id === id)?.odds ?? '')}`,
      t.totals ? `table total ${money(total.amount)} from ${total.bettors} ${total.bettors === 1 ? 'player' : 'players'}` : '',
      my ? `your bet ${money(my.amount)}${my.pending ? ', waiting for the table' : ''}` : '',
    ].filter(Boolean).join('. '));
  }
}

// ---------------------------------------------------------------------------
// Countdown and phase, by server time
// ---------------------------------------------------------------------------

function tick() {
  if (!client) return;
  renderPhase();
  setTimeout(() => requestAnimationFrame(tick), 100);
}

function renderPhase() {
  const t = client?.table;
  if (t) {
    const phase = $('phase');
    phase.dataset.state = t.state;
    let text = '';
    let time = '';
    let fill = 0;
    if (t.state === 'betting_open') {
      const left = client.timeLeft();
      const total = t.bettingWindowSecs ? t.bettingWindowSecs * 1000 : (t.closesAt - (t.openedAt ?? t.closesAt - 15_000));
      const secs = Math.ceil(left / 1000);
      fill = total > 0 ? Math.min(1, left / total) : 0;
      text = 'Place your bets';
      time = `${secs}s`;
      $('countdown-num').textContent = String(secs);
      $('countdown-ring').style.strokeDashoffset = String(100 - fill * 100);
      $('countdown').dataset.urgent = String(left < 5000);
      $('countdown').setAttribute('aria-label', `Betting closes in ${secs} seconds`);
      phase.dataset.urgent = String(left < 5000);
    } else if (t.state === 'betting_closed') {
      text = 'No more bets';
      time = t.result ? resultText(t.result.outcome) : 'Dealing…';
    } else if (t.nextRoundAt) {
      const secs = Math.max(0, Math.ceil((t.nextRoundAt - client.serverNow()) / 1000));
      text = 'Next round';
      time = secs > 0 ? `in ${secs}s` : 'starting…';
    } else {
      text = t.lastRound ? 'Waiting for the next round' : 'Waiting for the dealer to open betting';
    }
    $('phase-text').textContent = text;
    $('phase-time').textContent = time;
    $('phase-fill').style.transform = `scaleX(${fill})`;
  }
}

// ---------------------------------------------------------------------------
// Bets
// ---------------------------------------------------------------------------

const REJECTIONS = {
  round_not_open: 'No round is taking bets right now.',
  betting_closed: 'Too late: betting had closed.',
  wrong_round: 'That round has moved on.',
  below_min: 'Below the table minimum for that spot.',
  above_max: 'Above the table maximum for that spot.',
  player_limit: 'That would pass your limit on this spot.',
  rate_limited: 'Too many bets at once; slow down a little.',
  timeout: 'No answer from the table yet.',
};

function placeBet(spot) {
  const t = client?.table;
  if (!t || t.state !== 'betting_open' || !chipAmount) return;
  client.placeBet({ spot, amount: chipAmount }).catch((err) => {
    toast(`${spotName(err.bet?.spot ?? spot)} ${money(err.bet?.amount ?? chipAmount)}: ${REJECTIONS[err.code] ?? err.message}`, 'error');
    const el = $('spots').querySelector(`[data-spot="${CSS.escape(spot)}"]`);
    el?.classList.remove('shake');
    void el?.offsetWidth;
    el?.classList.add('shake');
  });
}

function renderBets() {
  if (!client?.table) return;
  const t = client.table;
  const round = t.round ?? t.lastRound?.round ?? null;
  const bets = [...client.bets.values()].filter((b) => b.round === round);
  const list = $('my-bets');
  list.textContent = '';
  $('mybets-round').textContent = round ? `round ${round}` : '';
  if (bets.length === 0) {
    const li = document.createElement('li');
    li.className = 'empty';
    li.textContent = t.state === 'betting_open' ? 'Pick a chip, then tap a spot.' : 'No bets this round.';
    list.append(li);
  }
  for (const b of bets.slice(-8).reverse()) {
    const li = document.createElement('li');
    li.dataset.status = b.result ?? b.status;
    li.dataset.spot = b.spot;
    const status = b.result ? resultLabel(b) : STATUS_LABEL[b.status] ?? b.status;
    li.innerHTML = '<span class="dot" aria-hidden="true"></span><span class="what"></span><span class="amt"></span><span class="st"></span>';
    li.querySelector('.what').textContent = spotName(b.spot);
    li.querySelector('.amt').textContent = money(b.amount);
    li.querySelector('.st').textContent = status;
    list.append(li);
  }
  const stakes = myStakes(t.round);
  const stake = Object.values(stakes).reduce((a, e) => a + e.amount, 0);
  $('stake').textContent = t.round ? money(stake) : '—';
  const pending = bets.filter((b) => b.status === 'pending').length;
  $('stake-note').textContent = pending ? ` · ${pending} waiting for the table` : '';
  const open = t.state === 'betting_open';
  $('undo').disabled = !open || !bets.some((b) => b.status === 'accepted');
  $('rebet').disabled = !open || lastRoundBets.length === 0 || bets.length > 0;
  renderSpots();
}

const STATUS_LABEL = { pending: 'placing…', accepted: 'accepted', rejected: 'refused', cancelled: 'cancelled', unanswered: 'no answer' };

function resultLabel(b) {
  if (b.result === 'won') return `won ${money(b.paid)}`;
  if (b.result === 'push') return 'push · returned';
  if (b.result === 'refunded') return 'refunded';
  return 'lost';
}

$('undo').addEventListener('click', () => {
  const t = client.table;
  const last = [...client.bets.values()].reverse().find((b) => b.round === t.round && b.status === 'accepted');
  if (last) client.cancelBet(last.id).catch((err) => toast(`Could not undo: ${err.message}`, 'error'));
});

$('rebet').addEventListener('click', () => {
  for (const b of lastRoundBets) client.placeBet({ spot: b.spot, amount: b.amount }).catch((err) => toast(`${spotName(b.spot)}: ${REJECTIONS[err.code] ?? err.message}`, 'error'));
});

function onRoundOpened(ev) {
  const previous = [...client.bets.values()].filter((b) => b.round === ev.round - 1 && b.status === 'accepted');
  if (previous.length) lastRoundBets = previous.map((b) => ({ spot: b.spot, amount: b.amount }));
  results.hide();
  renderBets();
}

// ---------------------------------------------------------------------------
// Results (play-results.js) and chat (play-chat.js)
// ---------------------------------------------------------------------------

const results = new ResultsView({ client: () => client, money, changed: () => renderHeld(), shown: window.tablecast.results });

/** Table changes that came while a result waited for its frame, drawn once it is revealed. */
let heldRender = false;
function heldForReveal(render) {
  if (results.revealing > 0) heldRender = true;
  else render();
}
function renderHeld() {
  if (results.revealing > 0) return;
  if (heldRender) {
    heldRender = false;
    renderTable(client?.table);
  } else {
    renderBets();
  }
}
const addChat = setupChat(() => client);

// ---------------------------------------------------------------------------
// Sound: video starts muted; one tap to unmute
// ---------------------------------------------------------------------------

const unmute = $('unmute');
function syncUnmute() {
  unmute.hidden = !video.srcObject;
  const muted = video.muted || video.paused;
  $('unmute-text').textContent = video.paused ? 'Tap to play' : (video.muted ? 'Tap to unmute' : 'Sound on');
  $('unmute-waves').style.display = muted ? 'none' : '';
  $('unmute-x').style.display = muted ? '' : 'none';
  unmute.setAttribute('aria-pressed', String(!muted));
  unmute.dataset.muted = String(muted);
}
unmute.addEventListener('click', () => {
  if (video.paused) {
    video.muted = false;
    video.play().catch(() => {});
  } else {
    video.muted = !video.muted;
  }
  syncUnmute();
});
for (const ev of ['loadedmetadata', 'play', 'pause', 'volumechange', 'emptied']) video.addEventListener(ev, syncUnmute);
syncUnmute();

start();
