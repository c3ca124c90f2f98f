// The nodes a client may connect to. In a cluster every node serves every
// table's control connection (and redirects media to the table's owner), so a
// client whose node stops or drains reconnects to the next node in its list.
// `chooseNodes` asks a node which node a player should use
// (`GET /api/v1/tables/{table}/join`): the least-loaded node of the player's
// region first, then every other serving node in order.

import { getJson } from './http.js';

/**
 * Ask `baseUrl` which nodes to use for `table`, best first. Resolves to null
 * when the node cannot say (an older node, or a network failure): the caller
 * keeps the nodes it has. A refused token rejects (`err.fatal`).
 *
 * @param {{baseUrl: string, table: string, token: string, region?: string}} opts
 * @returns {Promise<string[]|null>} node origins; the answering node keeps `baseUrl`
 */
export async function chooseNodes({ baseUrl, table, token, region }) {
  const query = region ? `?region=${encodeURIComponent(region)}` : '';
  const url = `${baseUrl}/api/v1/tables/${encodeURIComponent(table)}/join${query}`;
  let answer;
  try {
    answer = await getJson(url, token, 'choosing a node');
  } catch (err) {
    if (err.status === 401 || err.status === 403) throw err;
    return null;
  }
  const nodes = Array.isArray(answer?.nodes) ? answer.nodes : [];
  // The node that answered is reached as the page reaches it, not by its public URL.
  const urls = nodes.map((n) => (n.self ? baseUrl : String(n.url ?? ''))).filter((u, i) => u || nodes[i].self);
  return urls.length ? urls : null;
}

/**
 * The node origins to try, in turn: `nodes` when given (e.g.
 * `['https://a:8443', 'https://b:8443']`), otherwise `[baseUrl]` ('' = this
 * page's origin).
 */
export class NodeRing {
  /**
   * @param {string[]|undefined} nodes
   * @param {string} [baseUrl='']
   */
  constructor(nodes, baseUrl = '') {
    const list = Array.isArray(nodes) && nodes.length ? nodes : [baseUrl];
    /** @type {string[]} origins without a trailing slash */
    this.urls = list.map((u) => String(u ?? '').replace(/\/+$/, ''));
    this.index = 0;
  }

  /** The node in use. */
  get current() {
    return this.urls[this.index];
  }

  /** How many nodes there are to try. */
  get size() {
    return this.urls.length;
  }

  /** Use `urls` from now on, starting with the first. */
  replace(urls) {
    this.urls = urls.map((u) => String(u ?? '').replace(/\/+$/, ''));
    this.index = 0;
  }

  /** Move on to the next node (the same one when there is only one) and return it. */
  advance() {
    this.index = (this.index + 1) % this.urls.length;
    return this.current;
  }
}
