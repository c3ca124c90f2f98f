// HTTP helpers shared by the rest of tablecast.js: the error type every failed
// request becomes, tokens, and where a page finds its table id.

/** A failed request to the node. `status` is the HTTP status (0 when the request never got a reply). */
export class TablecastError extends Error {
  /**
   * @param {string} message human-readable summary
   * @param {{status: number, serverMessage?: string, url?: string, retryAfter?: string|null, cause?: unknown}} details
   */
  constructor(message, { status, serverMessage = '', url = '', retryAfter = null, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'TablecastError';
    this.status = status;
    this.serverMessage = serverMessage;
    /** The URL that answered: after a redirect, the node it led to. */
    this.url = url;
    /** The reply's Retry-After header, when the browser lets the page read it. */
    this.retryAfter = retryAfter;
  }

  /** True when trying again with the same token cannot help (bad token, unknown table). */
  get fatal() {
    return this.status === 401 || this.status === 403 || this.status === 404;
  }
}

/** fetch() that turns every non-2xx reply or network failure into a TablecastError. */
export async function request(url, init, what) {
  let res;
  try {
    res = await fetch(url, init);
  } catch (cause) {
    throw new TablecastError(`${what}: ${url} is unreachable (${cause?.message ?? cause})`, { status: 0, url, cause });
  }
  if (!res.ok) {
    const text = await res.text().catch(() => '');
    const serverMessage = firstLine(text);
    const reason = serverMessage || res.statusText || 'no reason given';
    throw new TablecastError(`${what} failed: ${res.status} ${reason}`, {
      status: res.status, serverMessage, url: res.url || url, retryAfter: res.headers.get('Retry-After'),
    });
  }
  return res;
}

/** The first non-blank line of a reply body, at most 300 characters. */
export function firstLine(text) {
  const line = String(text).split(/\r?\n/).find((l) => l.trim() !== '') ?? '';
  return line.trim().slice(0, 300);
}

/** `GET url` with a bearer token, parsed as JSON. */
export async function getJson(url, token, what = `GET ${url}`) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const res = await request(url, { headers, cache: 'no-store' }, what);
  return res.json();
}

/**
 * Ask the node for a demo token (`POST /api/v1/demo/token`). The route only
 * exists when the node runs with `[auth] demo = true`, and only for its demo
 * tables (`[auth] demo_tables`). The node picks the user name; dealer tokens go
 * only to clients on its own machine (`[auth] demo_dealer_networks`), operator
 * tokens never: those get 403.
 *
 * @param {{role: 'dealer'|'player', table: string, baseUrl?: string}} opts
 * @returns {Promise<string>} the signed token
 */
export async function demoToken({ role, table, baseUrl = '' }) {
  const body = { role, table };
  const res = await request(`${baseUrl}/api/v1/demo/token`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  }, 'demo token');
  const json = await res.json();
  if (!json || typeof json.token !== 'string') {
    throw new TablecastError('demo token: the reply has no token', { status: res.status, url: res.url });
  }
  return json.token;
}

/**
 * The token a page should use: `?token=` from the page's URL if present,
 * otherwise a demo token from the node.
 *
 * @param {{role: 'dealer'|'player'|'operator', table: string, baseUrl?: string}} opts
 */
export async function pageToken(opts) {
  const fromUrl = new URLSearchParams(globalThis.location?.search ?? '').get('token');
  return fromUrl || demoToken(opts);
}

/**
 * The table id of a page served at `/play/{table}` or `/dealer/{table}`
 * (or `?table=`), `fallback` otherwise.
 */
export function tableFromLocation(fallback = 'demo') {
  const loc = globalThis.location;
  if (!loc) return fallback;
  const m = /^\/(?:play|dealer)\/([^/]+)\/?$/.exec(loc.pathname);
  if (m) return decodeURIComponent(m[1]);
  return new URLSearchParams(loc.search).get('table') || fallback;
}

/** The WebSocket URL of `path` on the node at `baseUrl` ('' = this page's origin). */
export function wsUrl(baseUrl, path) {
  const origin = baseUrl || globalThis.location?.origin || '';
  const url = new URL(path, origin);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.href;
}

/** A fresh id for bets, commands and chat: `prefix-` and 12 hex digits (protocol ids are [A-Za-z0-9-_.]{1,64}). */
export function newId(prefix) {
  const bytes = new Uint8Array(6);
  globalThis.crypto.getRandomValues(bytes);
  return `${prefix}-${[...bytes].map((b) => b.toString(16).padStart(2, '0')).join('')}`;
}

/**
 * The claims of a token (`sub` is the user, `role`, `table`, `exp`), read without
 * checking its signature: for display and for matching one's own chat, never for trust.
 * Returns null when the token is not a JWT.
 */
export function tokenClaims(token) {
  try {
    const part = String(token).split('.')[1];
    const json = atob(part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '='));
    const claims = JSON.parse(json);
    return claims && typeof claims === 'object' ? claims : null;
  } catch {
    return null;
  }
}
