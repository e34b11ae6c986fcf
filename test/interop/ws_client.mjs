// ws_client.mjs — the interop scenario (scenario.mjs) on the npm `ws`
// client, plus what only `ws` exposes: a WebSocket-level ping with a
// payload (answered with the same pong) and a client-initiated close with
// a code (echoed). Prints one JSON line: the summary, or {ok:false, error}.
//
//   TANDEM_WS_URL, TANDEM_TOKEN_ALICE, TANDEM_TOKEN_BOB, TANDEM_TEXT
import WebSocket from 'ws';
import { run, SUBPROTOCOL } from './scenario.mjs';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};

// wsLevel checks ping/pong and the close handshake below the tandem protocol.
async function wsLevel(url) {
  const ws = new WebSocket(url, SUBPROTOCOL);
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  const payload = Buffer.from('ws-level ping ✓');
  const pong = new Promise((resolve) => ws.once('pong', resolve));
  ws.ping(payload);
  const got = await pong;
  if (!got.equals(payload)) throw new Error(`pong payload ${got.toString('hex')}, want ${payload.toString('hex')}`);
  const closed = new Promise((resolve) => ws.once('close', (code) => resolve(code)));
  ws.close(4321, 'interop done');
  return { pong: got.toString(), closeEcho: await closed };
}

try {
  const url = env('TANDEM_WS_URL');
  const level = await wsLevel(url);
  const sum = await run({
    WebSocket,
    wsURL: url,
    tokens: { alice: env('TANDEM_TOKEN_ALICE'), bob: env('TANDEM_TOKEN_BOB') },
    text: env('TANDEM_TEXT'),
    log: (line) => console.error(line),
  });
  console.log(JSON.stringify({ ...sum, client: `ws ${WebSocket.name}`, wsLevel: level }));
  process.exit(0);
} catch (err) {
  console.log(JSON.stringify({ ok: false, error: String(err?.stack ?? err) }));
  process.exit(1);
}
