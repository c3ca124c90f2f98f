// The player page's results: the banner over the video (shown in step with it),
// the payout line under it, and the road of recent winners.
import { outcomeList } from '/web/tablecast.js';
import { $, spotName, toast } from '/web/ui.js';

const SPOT_SHORT = { player: 'P', banker: 'B', tie: 'T' };
const ROAD_LENGTH = 24;
const BANNER_MS = 6000;

/** "Banker wins", "Tie", "Player & Tie wins". */
export function resultText(outcome) {
  const list = outcomeList(outcome);
  if (list.length === 0) return 'No result';
  if (list.length === 1 && list[0] === 'tie') return 'Tie';
  return `${list.map(spotName).join(' & ')} wins`;
}

export class ResultsView {
  /**
   * @param {{client: () => import('/web/tablecast.js').TableClient, money: (n: number) => string,
   *   changed: () => void, shown: object[]}} opts `shown` collects what was shown, for tests
   */
  constructor({ client, money, changed, shown }) {
    this.client = client;
    this.money = money;
    this.changed = changed;
    this.shown = shown;
    this.road = [];
    this.timer = null;
    /** Results waiting for their frame: the page shows nothing of them (winners, payouts) yet. */
    this.revealing = 0;
    // Results, voids and payouts show in the order they came, each after the one before.
    this.queue = Promise.resolve();
  }

  /**
   * A `round.result`: wait until the frame it names is on screen, then show it. Until then
   * `revealing` holds the page's table back (the winning spot, the payout), which would spoil
   * it, and whose drawing would delay the reveal itself.
   */
  result(ev) {
    const arrived = performance.now();
    this.revealing += 1;
    const wait = this.client().onFrame(ev).finally(() => { this.revealing -= 1; });
    this.queue = this.queue.then(() => wait).then(({ via, waitedMs, frames, rtp, mediaTs, previousFrames, unseenFrames, droppedFrames, atArrivalFrames, late }) => {
      const outcome = outcomeList(ev.outcome);
      this.banner(resultText(outcome), outcome[0] ?? 'none');
      this.push(ev.round, outcome);
      this.shown.push({
        round: ev.round, outcome, seq: ev.seq, mediaTs: ev.media_ts ?? null, mediaClock: ev.media_clock ?? null,
        via, framesLate: frames, rtp, shownMediaTs: mediaTs, previousFrames, unseenFrames, droppedFrames, atArrivalFrames, late, waitedMs,
        shownAfterMs: Math.round(performance.now() - arrived),
      });
      this.changed();
    });
  }

  voided(ev) {
    this.queue = this.queue.then(() => {
      this.banner('Round void', 'void', 'All bets are returned.');
      this.shown.push({ round: ev.round, outcome: [], voided: true, seq: ev.seq });
    });
  }

  payout(p) {
    this.queue = this.queue.then(() => {
      const money = this.money;
      const staked = p.bets.reduce((a, b) => a + b.amount, 0);
      const won = p.reason === 'settled' && p.total > staked;
      let line;
      if (p.reason === 'voided') line = `${money(p.total)} returned`;
      else if (won) line = `You win ${money(p.total - staked)}`;
      else if (p.total > 0) line = `${money(p.total)} returned`;
      else line = 'No win this round';
      $('result-payout').textContent = line;
      $('result').dataset.win = String(won);
      if (won) toast(`You win ${money(p.total - staked)} on round ${p.round}`, 'ok');
      this.changed();
    });
  }

  banner(title, kind, sub = '') {
    $('result-title').textContent = title;
    $('result-payout').textContent = sub;
    $('result').dataset.kind = kind;
    $('result').dataset.win = 'false';
    $('result').hidden = false;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.hide(), BANNER_MS);
  }

  hide() {
    clearTimeout(this.timer);
    $('result').hidden = true;
  }

  /** Add a round to the road (once). */
  push(round, outcome) {
    if (this.road.some((r) => r.round === round)) return;
    this.road.push({ round, outcome });
    this.road = this.road.slice(-ROAD_LENGTH);
    const ol = $('road');
    ol.textContent = '';
    for (const r of this.road) {
      const li = document.createElement('li');
      const main = r.outcome.includes('tie') ? 'tie' : (r.outcome[0] ?? 'none');
      li.dataset.spot = main;
      li.textContent = SPOT_SHORT[main] ?? (main[0] ?? '?').toUpperCase();
      li.title = `Round ${r.round}: ${resultText(r.outcome)}`;
      li.setAttribute('aria-label', li.title);
      ol.append(li);
    }
    const counts = { player: 0, banker: 0, tie: 0 };
    for (const r of this.road) for (const o of r.outcome) if (o in counts) counts[o] += 1;
    $('road-count').textContent = `P ${counts.player} · B ${counts.banker} · T ${counts.tie}`;
  }
}
