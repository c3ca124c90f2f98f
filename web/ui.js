// Small helpers the pages share (not part of tablecast.js's public API).
import { formatMoney } from '/web/tablecast.js';

export const $ = (id) => document.getElementById(id);

const SPOT_NAMES = { player: 'Player', banker: 'Banker', tie: 'Tie' };

/** "Banker" for `banker`; other ids are shown as written, first letter up. */
export function spotName(id) {
  return SPOT_NAMES[id] ?? String(id).replace(/[-_.]/g, ' ').replace(/^\w/, (c) => c.toUpperCase());
}

/** Baccarat's classic order (player, tie, banker); other spots keep theirs, after. */
export function sortSpots(spots) {
  const order = ['player', 'tie', 'banker'];
  const rank = (id) => (order.indexOf(id) + 1) || 99;
  return [...spots].sort((a, b) => rank(a.id) - rank(b.id));
}

/** Money for a table: whole amounts without ".00" ("€15", "€9.75"). */
export function money(amount, table) {
  return formatMoney(amount, table?.currency ?? 'EUR', table?.exponent ?? 2).replace(/[.,]00(?!\d)/, '');
}

/** "1:1", "0.95:1", "8:1" from the protocol's "num:den". */
export function oddsText(odds) {
  const [num, den] = String(odds).split(':').map(Number);
  if (!num || !den) return String(odds);
  const r = num / den;
  return `${Number.isInteger(r) ? r : r.toFixed(2)}:1`;
}

export function fmtRate(bps) {
  return bps >= 1e6 ? `${(bps / 1e6).toFixed(1)} Mb/s` : `${Math.round(bps / 1e3)} kb/s`;
}

/** A short message at the bottom of the screen; kind 'info', 'ok' or 'error'. */
export function toast(text, kind = 'info') {
  const box = $('toasts');
  if (!box) return;
  const el = document.createElement('div');
  el.className = 'toast';
  el.dataset.kind = kind;
  el.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  el.textContent = text;
  box.append(el);
  while (box.children.length > 3) box.firstElementChild.remove();
  setTimeout(() => el.remove(), 4500);
}
