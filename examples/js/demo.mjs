// demo.mjs — the scenario of docs/client-guide.md against a running server:
//
//   node --experimental-websocket examples/js/demo.mjs [WS_URL API_URL ADMIN_KEY]
//
// or with TANDEM_WS_URL, TANDEM_API_URL, TANDEM_ADMIN_KEY. It prints one
// JSON summary line ({"ok":true,...}) and, with TANDEM_TRANSCRIPT=FILE,
// writes every frame sent (">") and received ("<") to FILE, one JSON line
// each. With TANDEM_DEMO_PLAIN_IDS=1 the users are "alice" and "bob" (for a
// fresh server, as the test runs it); otherwise a run suffix keeps reruns
// against the same server apart.
import { writeFileSync } from 'node:fs';
import { TandemClient, mintToken, decodeText } from './tandem-client.mjs';

const [wsArg, apiArg, keyArg] = process.argv.slice(2);
const wsURL = wsArg ?? process.env.TANDEM_WS_URL ?? 'ws://localhost:7400/ws';
const apiURL = apiArg ?? process.env.TANDEM_API_URL ?? 'http://localhost:7401';
const adminKey = keyArg ?? process.env.TANDEM_ADMIN_KEY;
const run = process.env.TANDEM_DEMO_PLAIN_IDS ? '' : `-${Date.now().toString(36)}`;
const ALICE = `alice${run}`, BOB = `bob${run}`;

const transcript = [];
const log = (who) => (dir, frame) => {
  let f = frame;
  if (f.login) f = { ...f, login: { ...f.login, token: f.login.token.slice(0, 10) + '...' } };
  transcript.push(JSON.stringify({ dir, who, frame: f }));
};

async function waitFor(what, cond, ms = 10000) {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const byCmid = (c, cmid) => c.messages().filter((e) => e.message.clientMessageId === cmid);

async function main() {
  if (!adminKey) throw new Error('no admin key: pass it as the third argument or TANDEM_ADMIN_KEY');
  const tokens = {};
  for (const user of [ALICE, BOB]) {
    tokens[user] = await mintToken(apiURL, adminKey, user);
    transcript.push(JSON.stringify({ dir: 'http', who: user, request: `POST /v1/tokens {"user_id":"${user}","ttl_seconds":3600}`, response: { token: tokens[user].slice(0, 10) + '...' } }));
  }
  const device = (user, deviceId) => new TandemClient({
    url: wsURL, token: tokens[user], deviceId, platform: 'web', log: log(`${user}/${deviceId}`),
  });
  const a1 = device(ALICE, 'a1'), a2 = device(ALICE, 'a2'), b1 = device(BOB, 'b1');
  // New devices: no cursor, so the server sends the compensation window.
  await a1.connect();
  await a2.connect();
  await b1.connect();

  // 1. a1 → bob, acked; a2 gets the carbon, bob the push; bob acks his cursor.
  const ack1 = await a1.send(BOB, 'hello bob', `m1${run}`);
  await waitFor('the carbon on a2', () => byCmid(a2, `m1${run}`).length === 1);
  await waitFor('the push to bob', () => byCmid(b1, `m1${run}`).length === 1);
  await b1.ackCursor();

  // 2. A lost push: bob sees the next seq after a hole and pulls it.
  b1.dropNextMessagePush = true;
  await a1.send(BOB, 'lost on the way', `m2${run}`);
  await a1.send(BOB, 'arrives', `m3${run}`);
  await waitFor('the gap pull', () => byCmid(b1, `m2${run}`).length === 1 && byCmid(b1, `m3${run}`).length === 1);
  const gapPulls = b1.gapPulls;
  await b1.ackCursor();

  // 3. bob goes away; alice sends 3; bob comes back with his cursor.
  b1.close();
  const bobBefore = b1.messages().length;
  const dupBefore = b1.duplicates;
  for (let i = 1; i <= 3; i++) await a1.send(BOB, `while you were away ${i}`, `m${3 + i}${run}`);
  await b1.connect({ reconnect: true });
  const caughtUp = b1.messages().slice(bobBefore);
  // Entries delivered twice (a catch-up page and a push may overlap) were
  // dropped by seq; informational.
  const duplicatesDroppedOnReconnect = b1.duplicates - dupBefore;
  await b1.ackCursor();

  // 4. A send whose connection drops before its ack: resent after the
  //    reconnect with the same clientMessageId, acked once (duplicate: true
  //    if the server had stored it already).
  const lost = a1.send(BOB, 'sent just before the drop', `m7${run}`);
  a1.close();
  await a1.connect({ reconnect: true });
  const ack7 = await lost;
  await waitFor('the resent message at bob', () => byCmid(b1, `m7${run}`).length === 1);
  await waitFor('a2 to have every message', () => a2.messages().length === 7);
  await b1.ackCursor();

  const bobMsgs = b1.messages();
  const ids = new Set(bobMsgs.map((e) => e.message.messageId));
  const summary = {
    ok: true,
    ack1Seq: Number(ack1.seq),
    carbon: byCmid(a2, `m1${run}`).length,
    bobMessages: bobMsgs.length,
    bobUniqueMessages: ids.size,
    aliceA2Messages: a2.messages().length,
    gapPulls,
    caughtUpAfterReconnect: caughtUp.length,
    caughtUpTexts: caughtUp.map((e) => decodeText(e.message.content)),
    duplicatesDroppedOnReconnect,
    resendDuplicate: Boolean(ack7.duplicate),
    resentAtBob: byCmid(b1, `m7${run}`).length,
    bobCursor: b1.cursor,
  };
  summary.ok = summary.carbon === 1 && summary.bobMessages === 7 && summary.bobUniqueMessages === 7 &&
    summary.caughtUpAfterReconnect === 3 && summary.gapPulls >= 1 && summary.resentAtBob === 1;
  for (const c of [a1, a2, b1]) c.close();
  return summary;
}

let code = 0;
try {
  const summary = await main();
  console.log(JSON.stringify(summary));
  if (!summary.ok) code = 1;
} catch (err) {
  console.log(JSON.stringify({ ok: false, error: String(err?.stack ?? err) }));
  code = 1;
}
if (process.env.TANDEM_TRANSCRIPT) writeFileSync(process.env.TANDEM_TRANSCRIPT, transcript.join('\n') + '\n');
process.exit(code);
