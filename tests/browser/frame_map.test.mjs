// tablecast.js's FrameMap (web/tc/frames.js), in node: a player's video.map messages turn the
// RTP timestamp of a frame on screen into the camera frame a round.result names, across runs
// (a layer switch, a dealer who reconnects) and the 32-bit wrap.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FrameMap, rtpDiff } from '../../web/tc/frames.js';

test('a frame maps through the newest map at or before it', () => {
  const m = new FrameMap();
  assert.equal(m.cameraFrame(5), null, 'no map, no frame');
  // Run 1 starts at rtp 4294960000 (near the wrap), camera frame 1000 in clock 7.
  assert.ok(m.add({ type: 'video.map', rtp: 4294960000, media_ts: 1000, media_clock: 7 }));
  assert.deepEqual(m.cameraFrame(4294960000 + 3000), { mediaTs: 4000, clock: 7 });
  // Past the wrap.
  assert.deepEqual(m.cameraFrame(2704), { mediaTs: 1000 + 7296 + 2704, clock: 7 });
  // Run 2 (a layer switch) from rtp 90000: frames after it use it, frames before it the first.
  m.add({ type: 'video.map', rtp: 90000, media_ts: 500000, media_clock: 7 });
  assert.deepEqual(m.cameraFrame(93000), { mediaTs: 503000, clock: 7 });
  assert.deepEqual(m.cameraFrame(80000), { mediaTs: 1000 + 7296 + 80000, clock: 7 });
  // A dealer who reconnected: a new clock.
  m.add({ type: 'video.map', rtp: 120000, media_ts: 0, media_clock: 9 });
  assert.deepEqual(m.cameraFrame(123000), { mediaTs: 3000, clock: 9 });
  assert.ok(m.knows(7) && m.knows(9) && !m.knows(8));
  // A refined map of the same run replaces the guess.
  m.add({ type: 'video.map', rtp: 120000, media_ts: 30, media_clock: 9 });
  assert.equal(m.maps.length, 3);
  assert.deepEqual(m.cameraFrame(123000), { mediaTs: 3030, clock: 9 });
  // Malformed maps are ignored.
  for (const bad of [{ rtp: -1, media_ts: 0, media_clock: 1 }, { rtp: 1, media_ts: 2 ** 32, media_clock: 1 }, { rtp: 1, media_ts: 1 }, null]) {
    assert.equal(m.add(bad), false);
  }
  m.clear();
  assert.equal(m.cameraFrame(123000), null, 'a new session forgets the old maps');
});

test('timestamps compare across the wrap', () => {
  assert.equal(rtpDiff(10, 4294967290), 16);
  assert.equal(rtpDiff(4294967290, 10), -16);
  assert.equal(rtpDiff(3000, 0), 3000);
});
