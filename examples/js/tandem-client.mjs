// tandem-client.mjs — a small tandem client for Node 20 (run with
// `node --experimental-websocket`) or a browser, on the JSON subprotocol
// `tandem.v1.json`. No npm packages. Written from docs/protocol.md and
// docs/errors.md; docs/client-guide.md explains each duty it performs:
//
//   - keep the cursor: the highest seq stored with no hole below it;
//   - drop entries already stored (de-dup by seq) and pull holes with
//     SyncRequest;
//   - ack the cursor (CursorAck) once entries are stored;
//   - Ping every heartbeatSeconds/2;
//   - after a reconnect, log in with the cursor and `reconnect: true`, then
//     resend every unacknowledged Send with its original clientMessageId.
//
// Canonical JSON carries 64-bit integers as strings; this client turns seqs
// into JavaScript numbers, which is exact below 2^53.

export const SUBPROTOCOL = 'tandem.v1.json';

// mintToken asks the server API for a login token (POST /v1/tokens with the
// admin key). A real app gets its token from its own backend instead.
export async function mintToken(apiURL, adminKey, userId, ttlSeconds = 3600) {
  const res = await fetch(`${apiURL}/v1/tokens`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${adminKey}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ user_id: userId, ttl_seconds: ttlSeconds }),
  });
  const body = await res.json();
  if (!res.ok) throw new Error(`mint token: HTTP ${res.status}: ${JSON.stringify(body)}`);
  return body.token;
}

// What a client does after the server closed the session (docs/errors.md).
export function closeAction(code) {
  switch (code) {
    case 1000: case 1005: return 'none';
    case 4010: case 4011: case 4012: return 'ask-user';  // kicked; 4011/4012 only if kick.mayReconnect
    case 4002: return 'by-error';                        // login failed: see the Error frame
    case 4015: return 'reconnect-elsewhere';             // node shutting down: another node
    case 1002: case 1007: case 4000: return 'give-up';   // client bug
    default: return 'reconnect';                          // 1001, 1006, 4001, 4013, 4014, 4016, 4017
  }
}

const num = (s) => (s === undefined ? 0 : Number(s));
// bytes fields are base64 in canonical JSON (btoa/atob exist in Node and browsers).
const b64 = (s) => btoa(String.fromCharCode(...new TextEncoder().encode(s)));
export const decodeText = (b) => new TextDecoder().decode(Uint8Array.from(atob(b ?? ''), (c) => c.charCodeAt(0)));

export class TandemClient {
  // opts: {url, token, deviceId, platform, cursor (number|undefined),
  //        log(dir, frame) for a transcript, onEntry(entry), onClose(code, reason)}
  constructor(opts) {
    this.opts = opts;
    this.nextId = 1;
    this.pending = new Map();   // frame id -> {resolve, reject}, per connection
    this.unacked = new Map();   // clientMessageId -> send body, until SendAck
    this.stored = new Map();    // seq -> entry (the app's local store)
    this.hasCursor = opts.cursor !== undefined;
    this.cursor = opts.cursor ?? 0;
    this.duplicates = 0;        // entries dropped because their seq was stored
    this.gapPulls = 0;          // SyncRequests sent for holes
    this.pulling = false;
    this.dropNextMessagePush = false; // demo hook: lose one pushed message, to show the gap pull
    this.ws = null;
  }

  // connect opens the socket, logs in (with the cursor if there is one),
  // waits for the catch-up to finish, then resends unacknowledged sends.
  async connect({ reconnect = false } = {}) {
    const ws = new WebSocket(this.opts.url, SUBPROTOCOL);
    this.ws = ws;
    const pending = new Map();
    this.pending = pending;
    this.caughtUp = deferred();
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error(`cannot connect to ${this.opts.url}`));
    });
    ws.onmessage = (ev) => this.#onFrame(JSON.parse(ev.data));
    ws.onclose = (ev) => this.#onClose(ws, pending, ev.code, ev.reason);
    ws.onerror = () => {};

    const login = {
      token: this.opts.token, deviceId: this.opts.deviceId,
      platform: this.opts.platform ?? 'web', appVersion: 'example-js/1',
    };
    if (this.hasCursor) Object.assign(login, { hasCursor: true, cursor: String(this.cursor) });
    if (reconnect) login.reconnect = true;
    const ok = (await this.request({ login })).loginOk;
    this.loginOk = ok;
    if (ok.cursorAhead) {
      // The server lost entries we have: drop what we stored above lastSeq.
      for (const seq of this.stored.keys()) if (seq > num(ok.lastSeq)) this.stored.delete(seq);
    }
    if (ok.compensationFromSeq) {
      // No cursor (or one the server cannot serve): the log starts here.
      this.cursor = num(ok.compensationFromSeq) - 1;
    }
    this.hasCursor = true;
    this.#startHeartbeat(ok.heartbeatSeconds || 30);
    await this.ping();            // one at once, so the transcript shows it
    await this.caughtUp.promise;  // SyncPages until hasMore is false
    for (const [cmid, send] of this.unacked) {
      // Same clientMessageId: acked with the original seq (duplicate: true)
      // if the server already had it; never stored twice.
      this.#sendRequest(cmid, send);
    }
    return ok;
  }

  // send writes a Send and resolves with its SendAck. The send stays in
  // `unacked` until acknowledged, so a reconnect resends it.
  send(peer, text, clientMessageId) {
    const send = {
      clientMessageId,
      conversation: { type: 'DIRECT', id: peer },
      type: 1, // TEXT
      content: b64(text),
    };
    const entry = { send, ack: deferred() };
    this.unacked.set(clientMessageId, entry);
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.#sendRequest(clientMessageId, entry);
    return entry.ack.promise;
  }

  #sendRequest(cmid, entry) {
    this.request({ send: entry.send }).then((reply) => {
      const ack = reply.sendAck;
      this.unacked.delete(cmid);
      // The sending device gets the ack, not the entry: store it at ack.seq.
      this.#store({ seq: ack.seq, message: { ...entry.send, messageId: ack.messageId } });
      entry.ack.resolve(ack);
    }, (err) => { if (!err.closed) entry.ack.reject(err); }); // closed: resent after reconnect
  }

  ping() { return this.request({ ping: {} }); }

  // ackCursor tells the server everything up to the cursor is stored.
  ackCursor() { return this.request({ cursorAck: { seq: String(this.cursor) } }); }

  async logout() {
    await this.request({ logout: {} });
    this.close();
  }

  // close ends the connection without a logout (as a network loss would).
  close() {
    clearInterval(this.heartbeat);
    if (this.ws) this.ws.close();
    this.ws = null;
  }

  request(body) {
    const id = this.nextId++;
    const frame = { id: String(id), ...body };
    const p = new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }));
    this.#write(frame);
    return p;
  }

  #write(frame) {
    this.opts.log?.('>', frame);
    this.ws.send(JSON.stringify(frame));
  }

  #onFrame(frame) {
    this.opts.log?.('<', frame);
    const id = num(frame.id);
    if (id !== 0) {
      const p = this.pending.get(id);
      this.pending.delete(id);
      if (frame.syncPage) this.#onSyncPage(frame.syncPage, true);
      if (!p) return;
      if (frame.error) p.reject(Object.assign(new Error(`${frame.error.name}: ${frame.error.message}`), frame.error));
      else p.resolve(frame);
      return;
    }
    if (frame.syncPage) this.#onSyncPage(frame.syncPage, false);
    else if (frame.push) this.#onPush(frame.push);
    else if (frame.kick) this.kick = frame.kick; // the close code follows
    // conversationList (after the catch-up) and transient pushes: for the UI.
  }

  #onSyncPage(page, pulled) {
    for (const e of page.entries ?? []) this.#store(e);
    if (pulled) {
      this.pulling = false;
      if (page.hasMore) this.#pullGap(true);
    } else if (!page.hasMore) {
      this.caughtUp.resolve();
    }
    this.#checkGap();
  }

  #onPush(push) {
    let entries = push.entries ?? [];
    if (this.dropNextMessagePush && entries.some((e) => e.message)) {
      this.dropNextMessagePush = false; // simulate a lost entry: forget the first message
      const lost = entries.find((e) => e.message);
      entries = entries.filter((e) => e !== lost);
    }
    for (const e of entries) this.#store(e);
    this.#checkGap();
  }

  // #store keeps an entry unless its seq is already stored, and moves the
  // cursor over every contiguous seq.
  #store(e) {
    const seq = num(e.seq);
    if (seq === 0) return; // transient: never stored
    if (seq <= this.cursor || this.stored.has(seq)) { this.duplicates++; return; }
    this.stored.set(seq, e);
    while (this.stored.has(this.cursor + 1)) this.cursor++;
    this.opts.onEntry?.(e);
  }

  // A stored seq above cursor+1 means a hole: pull it.
  #checkGap() {
    for (const seq of this.stored.keys()) {
      if (seq > this.cursor + 1) { this.#pullGap(false); return; }
    }
  }

  #pullGap(more) {
    if (this.pulling && !more) return;
    this.pulling = true;
    this.gapPulls++;
    this.request({ sync: { afterSeq: String(this.cursor), limit: 200 } }).catch((err) => {
      this.pulling = false;
      if (err.name === 'CURSOR_TOO_OLD') this.cursorTooOld = true; // log in again without a cursor
    });
  }

  #startHeartbeat(heartbeatSeconds) {
    clearInterval(this.heartbeat);
    this.heartbeat = setInterval(() => this.ping().catch(() => {}), (heartbeatSeconds * 1000) / 2);
  }

  #onClose(ws, pending, code, reason) {
    if (ws === this.ws) { clearInterval(this.heartbeat); this.ws = null; }
    // Requests of this connection fail; unacked sends stay for the resend.
    const err = Object.assign(new Error(`connection closed (${code})`), { closed: true });
    for (const p of pending.values()) p.reject(err);
    pending.clear();
    this.opts.onClose?.(code, reason, closeAction(code));
  }

  // messages: the stored message entries, in seq order.
  messages() {
    return [...this.stored.entries()].sort((a, b) => a[0] - b[0]).map(([, e]) => e).filter((e) => e.message);
  }
}

function deferred() {
  let resolve, reject;
  const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
  return { promise, resolve, reject };
}
