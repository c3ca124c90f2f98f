// Polling with a deadline and a failure message that says what was last seen.

/**
 * Call `probe()` every `intervalMs` until `done(value)` is true; returns that value.
 * On timeout, throws an Error built by `describe(lastValue, lastError)`.
 *
 * @template T
 * @param {() => Promise<T>} probe
 * @param {(value: T) => boolean} done
 * @param {{timeoutMs?: number, intervalMs?: number, describe?: (last: T|undefined, err: unknown) => string}} [opts]
 * @returns {Promise<T>}
 */
export async function waitUntil(probe, done, { timeoutMs = 30_000, intervalMs = 500, describe } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  let lastErr = null;
  for (;;) {
    try {
      last = await probe();
      lastErr = null;
      if (done(last)) return last;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() >= deadline) break;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  const what = describe
    ? describe(last, lastErr)
    : `condition not met within ${timeoutMs} ms; last value: ${JSON.stringify(last)}`;
  throw new Error(lastErr ? `${what}\nlast probe error: ${lastErr.message}` : what);
}
