// scenario.mjs — the interop scenario, run by each independent WebSocket
// client: the npm `ws` package under Node (ws_client.mjs) and a browser's
// own WebSocket (browser.html). Only the WebSocket implementation differs;
// this file is plain JavaScript for both.
//
// bob logs in and waits for his catch-up to end; alice logs in, sends bob a
// text (multi-byte UTF-8) and gets the SendAck; bob gets the message as a
// Push. Then each sends a wire Ping padded to 70,000 bytes (a frame with a
// 64-bit length) and gets the Pong, and both log out (Ok, then close 1000).
// Frames are tandem.v1.json: canonical JSON in text messages.

export const SUBPROTOCOL = 'tandem.v1.json';
const TIMEOUT_MS = 15000;

const b64 = (s) => btoa(String.fromCharCode(...new TextEncoder().encode(s)));
const unb64 = (b) => new TextDecoder().decode(Uint8Array.from(atob(b ?? ''), (c) => c.charCodeAt(0)));

// run returns a summary object; it throws on any failure.
// opts: {WebSocket, wsURL, tokens: {alice, bob}, text, log(line)}
export async function run(opts) {
  const { WebSocket, wsURL, tokens, text } = opts;
  const log = opts.log ?? (() => {});

  const bob = await Session.open(WebSocket, wsURL, 'bob', log);
  const bobOk = await bob.request({ login: { token: tokens.bob, deviceId: 'b1', platform: 'web' } });
  if (!bobOk.loginOk) throw new Error(`bob login: ${JSON.stringify(bobOk)}`);
  // Live pushes start after the catch-up; the conversation list closes it.
  await bob.waitFor('bob catch-up', (f) => f.conversationList !== undefined);

  const alice = await Session.open(WebSocket, wsURL, 'alice', log);
  const aliceOk = await alice.request({ login: { token: tokens.alice, deviceId: 'a1', platform: 'web' } });
  if (!aliceOk.loginOk) throw new Error(`alice login: ${JSON.stringify(aliceOk)}`);

  const cmid = `interop-${Date.now()}`;
  const pushed = bob.waitFor('the push at bob', (f) => (f.push?.entries ?? []).some((e) => e.message?.clientMessageId === cmid));
  const ack = await alice.request({
    send: { clientMessageId: cmid, conversation: { type: 'DIRECT', id: 'bob' }, type: 1, content: b64(text) },
  });
  if (!ack.sendAck) throw new Error(`send: ${JSON.stringify(ack)}`);
  const push = await pushed;
  const entry = push.push.entries.find((e) => e.message?.clientMessageId === cmid);

  const pongs = [];
  for (const s of [alice, bob]) {
    const head = `{"id":"${s.nextId}",`;
    const tail = '"ping":{}}';
    const big = head + ' '.repeat(70000 - head.length - tail.length) + tail;
    const pong = await s.requestRaw(big);
    if (!pong.pong) throw new Error(`${s.who} big ping: ${JSON.stringify(pong)}`);
    pongs.push(big.length);
  }

  const closes = {};
  for (const s of [alice, bob]) {
    const ok = await s.request({ logout: {} });
    if (!ok.ok) throw new Error(`${s.who} logout: ${JSON.stringify(ok)}`);
    closes[s.who] = (await s.closed).code;
  }

  return {
    ok: true,
    protocol: alice.ws.protocol,
    extensions: alice.ws.extensions,
    sendAck: { messageId: ack.sendAck.messageId, seq: Number(ack.sendAck.seq) },
    push: {
      messageId: entry.message.messageId,
      seq: Number(entry.seq),
      sender: entry.message.sender,
      conversation: entry.message.conversation?.id,
      text: unb64(entry.message.content),
    },
    pongs,
    closes,
  };
}

// Session is one WebSocket connection with request/reply matching by id.
class Session {
  static async open(WebSocket, url, who, log) {
    const ws = new WebSocket(url, SUBPROTOCOL);
    const s = new Session(ws, who, log);
    await withTimeout(`${who} connect`, new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error(`${who}: cannot connect to ${url}`));
    }));
    ws.onerror = () => {};
    return s;
  }

  constructor(ws, who, log) {
    this.ws = ws;
    this.who = who;
    this.log = log;
    this.nextId = 1;
    this.frames = [];     // every frame received, in order
    this.waiters = [];    // {cond, resolve}
    this.closed = new Promise((resolve) => {
      ws.onclose = (ev) => {
        log(`${who} closed ${ev.code}`);
        resolve({ code: ev.code, reason: ev.reason });
        for (const w of this.waiters) w.reject(new Error(`${who}: connection closed (${ev.code}) while waiting for ${w.what}`));
        this.waiters = [];
      };
    });
    ws.onmessage = (ev) => {
      if (typeof ev.data !== 'string') {
        log(`${who} got a binary message on ${SUBPROTOCOL}`);
        return;
      }
      const f = JSON.parse(ev.data);
      log(`${who} < ${ev.data.slice(0, 300)}`);
      this.frames.push(f);
      this.waiters = this.waiters.filter((w) => {
        if (!w.cond(f)) return true;
        w.resolve(f);
        return false;
      });
    };
  }

  // waitFor resolves with the first frame (received before or after the
  // call) for which cond is true.
  waitFor(what, cond) {
    const seen = this.frames.find(cond);
    if (seen) return Promise.resolve(seen);
    return withTimeout(`${this.who}: ${what}`, new Promise((resolve, reject) => {
      this.waiters.push({ what, cond, resolve, reject });
    }));
  }

  request(body) {
    return this.requestRaw(JSON.stringify({ id: String(this.nextId), ...body }));
  }

  // requestRaw sends text, a frame whose id is this.nextId, and resolves
  // with the reply carrying that id.
  requestRaw(text) {
    const id = String(this.nextId++);
    const reply = this.waitFor(`the reply to request ${id}`, (f) => f.id === id);
    this.log(`${this.who} > ${text.slice(0, 300)}`);
    this.ws.send(text);
    return reply;
  }
}

function withTimeout(what, p) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${TIMEOUT_MS} ms: ${what}`)), TIMEOUT_MS);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}
