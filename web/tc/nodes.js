// The nodes a client may connect to. In a cluster every node serves every
// table's control connection (and redirects media to the table's owner), so a
// client whose node stops or drains reconnects to the next node in its list.

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

  /** Move on to the next node (the same one when there is only one) and return it. */
  advance() {
    this.index = (this.index + 1) % this.urls.length;
    return this.current;
  }
}
