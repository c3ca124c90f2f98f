// Waits between reconnect attempts: the first is at once, then 0.5, 1, 2, 4, 8 s,
// each with up to 30% jitter so that a node's players do not all return in step.

const STEPS_MS = [0, 500, 1000, 2000, 4000, 8000];

/** Milliseconds to wait before attempt `attempt` (1-based). */
export function backoffMs(attempt) {
  const base = STEPS_MS[Math.min(Math.max(attempt, 1), STEPS_MS.length) - 1];
  return Math.round(base * (1 + Math.random() * 0.3));
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
