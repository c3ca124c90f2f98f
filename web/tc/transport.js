// What carries the control protocol: a transport is {kind, open, send(text),
// close()} whose owner calls `onmessage(text)` and `onclose()`. ControlSession
// speaks the protocol on whichever one it is given.

/**
 * A transport over an RTCDataChannel (the `control` channel of a WHEP session).
 * @param {RTCDataChannel} channel
 */
export function channelTransport(channel) {
  const t = {
    kind: 'datachannel',
    get open() { return channel.readyState === 'open'; },
    send(text) { channel.send(text); },
    close() { channel.close(); },
    onmessage: null,
    onclose: null,
  };
  channel.addEventListener('message', (ev) => { if (typeof ev.data === 'string') t.onmessage?.(ev.data); });
  channel.addEventListener('close', () => t.onclose?.());
  return t;
}

/**
 * Open a WebSocket and wrap it as a transport; rejects when it does not open in time.
 * @param {string} url ws:// or wss:// URL of /ws/{table}
 */
export function openSocket(url, timeoutMs = 8000) {
  return new Promise((resolve, reject) => {
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (err) {
      reject(err);
      return;
    }
    const t = {
      kind: 'websocket',
      socket: ws,
      closeInfo: null,
      get open() { return ws.readyState === WebSocket.OPEN; },
      send(text) { ws.send(text); },
      close() { try { ws.close(1000); } catch { /* already closed */ } },
      onmessage: null,
      onclose: null,
    };
    const timer = setTimeout(() => { t.close(); reject(new Error(`WebSocket ${url} did not open`)); }, timeoutMs);
    ws.addEventListener('open', () => { clearTimeout(timer); resolve(t); });
    ws.addEventListener('message', (ev) => { if (typeof ev.data === 'string') t.onmessage?.(ev.data); });
    ws.addEventListener('close', (ev) => {
      clearTimeout(timer);
      t.closeInfo = { code: ev.code, reason: ev.reason };
      reject(new Error(`WebSocket ${url} closed (${ev.code}${ev.reason ? `: ${ev.reason}` : ''})`));
      t.onclose?.();
    });
  });
}
