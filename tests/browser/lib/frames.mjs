// What a player page presents, frame by frame, and the dealer page's simulcast layers turned
// on and off as a browser under a bandwidth limit would.

/** In the player page: record every frame the video element presents, as [epoch ms, width, height]. */
export function recordFrames(page) {
  return page.evaluate(() => {
    const v = document.getElementById('video');
    window.presented = [];
    const onFrame = (_now, meta) => {
      window.presented.push([performance.timeOrigin + performance.now(), meta.width, meta.height]);
      v.requestVideoFrameCallback(onFrame);
    };
    v.requestVideoFrameCallback(onFrame);
  });
}

/** Frames presented since `since` (epoch ms), and the longest wait between two of them. */
export async function framesSince(page, since) {
  const frames = await page.evaluate((t) => window.presented.filter((f) => f[0] >= t - 1000), since);
  let gap = 0;
  let around = '';
  for (let i = 1; i < frames.length; i += 1) {
    const d = frames[i][0] - frames[i - 1][0];
    if (frames[i][0] >= since && d > gap) {
      gap = d;
      // Where the longest pause was: its start after `since`, and the picture sizes either side.
      around = `from +${Math.round(frames[i - 1][0] - since)} ms, ${frames[i - 1][1]}x${frames[i - 1][2]} then ${frames[i][1]}x${frames[i][2]}`;
    }
  }
  const after = frames.filter((f) => f[0] >= since);
  return { count: after.length, last: after.at(-1) ?? null, gap: Math.round(gap), around, sizes: [...new Set(after.map((f) => `${f[1]}x${f[2]}`))] };
}

/** Turn one of the dealer's encodings on or off, as a browser under a bandwidth limit would. */
export function setLayer(page, rid, active) {
  return page.evaluate(async ({ rid: r, active: on }) => {
    const sender = window.tablecastDealer.pc.getSenders().find((s) => s.track?.kind === 'video');
    const params = sender.getParameters();
    params.encodings.find((e) => e.rid === r).active = on;
    await sender.setParameters(params);
    return performance.timeOrigin + performance.now();
  }, { rid, active });
}
