// tablecast.js: the browser client for a tablecast node.
//
// An ES module with no dependencies and no build step. Serve it from the node
// (`/web/tablecast.js`, which loads its parts from `/web/tc/`) or copy `web/tablecast.js`
// and `web/tc/` next to your own page. See docs/js-client.md.
//
//   import { joinTable, demoToken } from '/web/tablecast.js';
//
//   // A player: the dealer's video and the table's events, recovering by itself.
//   const token = await demoToken({ role: 'player', table: 'demo' });
//   const table = await joinTable({ table: 'demo', token, video: document.querySelector('video') });
//   table.on('round.opened', (ev) => console.log('bets open until', ev.closes_at_server_ms));
//   table.on('totals', (ev) => console.log(ev.spots));
//   setInterval(() => console.log(Math.ceil(table.timeLeft() / 1000), 's left'), 1000);
//   await table.placeBet({ spot: 'banker', amount: 500 }); // rejects with .code when refused
//
//   // A dealer: publish the camera over WHIP, deal over a WebSocket console.
//   const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
//   const dealer = await publish({ table: 'demo', token: dealerToken, stream, simulcast: true });
//   const desk = await openConsole({ table: 'demo', token: dealerToken });
//   await desk.openRound(); await desk.closeBetting(); await desk.result('banker');
//
// Signalling is WHIP (RFC 9725) for publishing and WHEP for playing; the control
// protocol is docs/protocol.md. Every failure from the node (a non-2xx reply) is
// thrown as a `TablecastError` whose `status` is the HTTP status and whose
// `serverMessage` is the node's one-line reason. A network failure has `status` 0.

export {
  TablecastError, demoToken, pageToken, tableFromLocation, tokenClaims, getJson, wsUrl, newId,
} from './tc/http.js';
export { publish, Publisher, SIMULCAST_ENCODINGS, SIMULCAST_MIN } from './tc/whip.js';
export { play, Player } from './tc/whep.js';
export { ServerClock, clientNow } from './tc/clock.js';
export { ControlSession, BetRejectedError, CommandError } from './tc/control.js';
export { outcomeList } from './tc/state.js';
export { joinTable, TableClient } from './tc/table.js';
export { FrameMap, waitForFrame } from './tc/frames.js';
export { openConsole, TableConsole } from './tc/console.js';
export { formatMoney, formatChip } from './tc/format.js';
export { parsePrometheus, sampleValue } from './tc/prometheus.js';
