// The binary subprotocol of /ws (SPEC §5, README "WebSocket encodings"):
// a client offering Sec-WebSocket-Protocol: sophia.v1.msgpack gets the
// same messages as a JSON client, as msgpack binary frames, and may send
// its own as msgpack; JSON stays the default (no offer, or
// sophia.v1.json). One round trip per message type, each compared with
// what a JSON client got for the same publish or request, against a real
// sophiad with auth on.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { encode, decode } from '@msgpack/msgpack';
import { jwt as signJwt } from './lib/jwt.mjs';
import {
  startDaemon, fetchJson, wsConnect, nextMessage, sendJson, wsClosed, timeoutScale,
} from './lib/daemon.mjs';

const SECRET = 'test-secret-for-ws-msgpack-0123456789abcdef';
const YAML = `
websocket:
  history: 4
  auth_timeout: 2s
  auth:
    secret_env: SOPHIA_TEST_WS_SECRET
plugins:
  path: ["@PLUGIN_DIR@"]
  instances:
    metrics:
      plugin: metrics
      options:
        thresholds: ["mp_rps>9000/8000@critical"]
streams:
  metrics:
    processor: metrics
    durable: false
`;

const now = () => Math.floor(Date.now() / 1000);
const token = (claims = {}) => signJwt({ sub: 'mp', exp: now() + 600, topics: ['dashboard:*', 'alerts', 'updates:*'], stats: true, ...claims }, SECRET);
const run = `mp${process.pid}`;

let d;
before(async () => { d = await startDaemon({ yaml: YAML, env: { SOPHIA_TEST_WS_SECRET: SECRET } }); });
after(async () => { if (d) await d.stop(); });

// A msgpack client: its own queue of decoded frames (lib/daemon.mjs
// queues JSON), with the frame kind kept to check it.
async function mpConnect(opts = {}) {
  const ws = await wsConnect(d.wsUrl, { protocols: ['sophia.v1.msgpack'], ...opts });
  ws.mq = [];
  ws.waiters = [];
  ws.on('message', (data, isBinary) => {
    const m = isBinary ? decode(data) : { type: '__text__', raw: data.toString() };
    const i = ws.waiters.findIndex((w) => w.test(m));
    if (i >= 0) ws.waiters.splice(i, 1)[0].resolve(m);
    else ws.mq.push(m);
  });
  return ws;
}

function mpNext(ws, pred, ms = 5000 * timeoutScale) {
  const test = typeof pred === 'string' ? (m) => m.type === pred : pred;
  const i = ws.mq.findIndex(test);
  if (i >= 0) return Promise.resolve(ws.mq.splice(i, 1)[0]);
  return new Promise((resolve, reject) => {
    const w = { test, resolve: (m) => { clearTimeout(t); resolve(m); } };
    const t = setTimeout(() => {
      ws.waiters.splice(ws.waiters.indexOf(w), 1);
      reject(new Error(`timeout: no matching msgpack message; queued: ${JSON.stringify(ws.mq).slice(0, 1000)}`));
    }, ms);
    ws.waiters.push(w);
  });
}

const mpSend = (ws, obj) => ws.send(encode(obj));

async function authed(opts) {
  const ws = await mpConnect(opts);
  mpSend(ws, { type: 'auth', token: token() });
  const ok = await mpNext(ws, 'authenticated');
  assert.equal(ok.sub, 'mp');
  return ws;
}

async function jsonClient() {
  const ws = await wsConnect(`${d.wsUrl}?token=${token()}`);
  return ws;
}

async function ingest(points) {
  const res = await fetchJson(`${d.url}/ingest/metrics`, { method: 'POST', body: points.map((p) => JSON.stringify(p)).join('\n') });
  assert.equal(res.status, 202, res.text);
}

// Ingest answers 202 before the batch is routed: waits for topic's seq.
async function topicAt(topic, seq) {
  const ws = await authed();
  for (let tries = 0; ; tries++) {
    mpSend(ws, { type: 'request', id: `s${tries}`, method: 'history', params: { topic } });
    const r = await mpNext(ws, (m) => m.type === 'response' && m.id === `s${tries}`);
    if (r.data.seq >= seq) break;
    assert.ok(tries < 200 * timeoutScale, `${topic} stays at seq ${r.data.seq}`);
    await new Promise((res) => setTimeout(res, 25));
  }
  ws.close();
}

const point = (dash, value, metric = 'm') => ({ metric, value, timestamp: '2024-01-20T10:30:00Z', dashboard_id: dash });

test('the subprotocol is negotiated by name and JSON stays the default', async () => {
  const mp = await authed();
  assert.equal(mp.protocol, 'sophia.v1.msgpack');
  const frames = (ws) => {
    const kinds = [];
    ws.on('message', (data, isBinary) => kinds.push(isBinary ? 'binary' : 'text'));
    return kinds;
  };
  const mpKinds = frames(mp);
  mpSend(mp, { type: 'ping' });
  await mpNext(mp, 'pong');
  assert.deepEqual(mpKinds, ['binary']);
  for (const protocols of [['sophia.v1.json'], undefined]) {
    const js = await wsConnect(`${d.wsUrl}?token=${token()}`, { protocols });
    assert.equal(js.protocol, protocols ? 'sophia.v1.json' : '');
    const kinds = frames(js);
    sendJson(js, { type: 'ping' });
    await nextMessage(js, 'pong');
    assert.deepEqual(kinds, ['text']);
    js.close();
  }
  const st = (await fetchJson(`${d.url}/api/stats`)).body.websocket;
  assert.equal(st.connections_msgpack, 1, JSON.stringify(st));
  mp.close();
});

test('auth, subscribe/subscribed, ping/pong and unsubscribe round trip in msgpack', async () => {
  const ws = await authed();
  mpSend(ws, { type: 'subscribe', subscriptions: [`dashboard:${run}a`, `dashboard:${run}b*`] });
  assert.deepEqual((await mpNext(ws, 'subscribed')).subscriptions, [`dashboard:${run}a`, `dashboard:${run}b*`]);
  mpSend(ws, { type: 'ping' });
  assert.deepEqual(await mpNext(ws, 'pong'), { type: 'pong' });
  mpSend(ws, { type: 'unsubscribe', subscriptions: [`dashboard:${run}b*`] });
  assert.deepEqual((await mpNext(ws, 'unsubscribed')).subscriptions, [`dashboard:${run}b*`]);
  // A text frame from a msgpack client is still read as JSON; the answer
  // comes in msgpack.
  ws.send(JSON.stringify({ type: 'ping' }));
  assert.deepEqual(await mpNext(ws, 'pong'), { type: 'pong' });
  assert.equal(ws.mq.filter((m) => m.type === '__text__').length, 0);
  ws.close();
});

test('a bad token in a msgpack auth message closes with 4001, and nothing goes before auth', async () => {
  const bad = await mpConnect();
  mpSend(bad, { type: 'auth', token: signJwt({ sub: 'x', exp: now() + 60 }, 'wrong-secret') });
  assert.equal((await wsClosed(bad)).code, 4001);
  const early = await mpConnect();
  mpSend(early, { type: 'subscribe', subscriptions: ['alerts'] });
  const c = await wsClosed(early);
  assert.equal(c.code, 4001);
  assert.match(c.reason, /authenticate first/);
});

test('metric updates and alerts are the same messages as the JSON ones, in order', async () => {
  const mp = await authed();
  const js = await jsonClient();
  const subs = [`dashboard:${run}m`, 'alerts'];
  mpSend(mp, { type: 'subscribe', subscriptions: subs });
  sendJson(js, { type: 'subscribe', subscriptions: subs });
  await mpNext(mp, 'subscribed');
  await nextMessage(js, 'subscribed');
  const N = 20;
  await ingest(Array.from({ length: N }, (_, i) => point(`${run}m`, i + 0.5)));
  for (let i = 0; i < N; i++) {
    const a = await mpNext(mp, 'metric');
    const b = await nextMessage(js, 'metric');
    assert.deepEqual(a, b);
    assert.equal(a.data.value, i + 0.5); // order and float64 values kept
    assert.equal(a.seq, i + 1);
  }
  await ingest([point(`${run}m`, 9500, 'mp_rps')]);
  const alert = await mpNext(mp, (m) => m.type === 'alert' && m.data.metric === 'mp_rps');
  assert.deepEqual(alert, await nextMessage(js, (m) => m.type === 'alert' && m.data.metric === 'mp_rps'));
  assert.equal(alert.data.severity, 'critical');
  assert.ok(['alerts', `dashboard:${run}m`].includes(alert.topic), alert.topic); // once, first matching topic
  mp.close();
  js.close();
});

test('since replays history in msgpack, and answers resync when it aged out', async () => {
  const topic = `dashboard:${run}h`;
  await ingest(Array.from({ length: 6 }, (_, i) => point(`${run}h`, i)));
  const mp = await authed();
  const js = await jsonClient();
  await topicAt(topic, 6); // history: 4, so 3..6 are kept
  mpSend(mp, { type: 'subscribe', subscriptions: [topic], since: { [topic]: 4 } });
  sendJson(js, { type: 'subscribe', subscriptions: [topic], since: { [topic]: 4 } });
  await mpNext(mp, 'subscribed');
  await nextMessage(js, 'subscribed');
  const got = [await mpNext(mp, 'metric'), await mpNext(mp, 'metric')];
  assert.deepEqual(got.map((m) => m.seq), [5, 6]);
  assert.deepEqual(got, [await nextMessage(js, 'metric'), await nextMessage(js, 'metric')]);
  // seq 1 aged out of a 4-entry history.
  mpSend(mp, { type: 'subscribe', subscriptions: [topic], since: { [topic]: 1 } });
  const rs = await mpNext(mp, 'resync');
  assert.deepEqual(rs, { type: 'resync', topic, seq: 6 });
  // the history request: the same response as the JSON client's.
  mpSend(mp, { type: 'request', id: 'h1', method: 'history', params: { topic, since: 3 } });
  sendJson(js, { type: 'request', id: 'h1', method: 'history', params: { topic, since: 3 } });
  const hm = await mpNext(mp, (m) => m.type === 'response' && m.id === 'h1');
  assert.deepEqual(hm, await nextMessage(js, (m) => m.type === 'response' && m.id === 'h1'));
  assert.deepEqual(hm.data.messages.map((m) => m.seq), [4, 5, 6]);
  assert.equal(hm.data.complete, true);
  // a registered method (stats) answers in msgpack too
  mpSend(mp, { type: 'request', id: 'st', method: 'stats' });
  const sr = await mpNext(mp, (m) => m.type === 'response' && m.id === 'st');
  assert.equal(typeof sr.data.websocket.connections_msgpack, 'number');
  mp.close();
  js.close();
});

test('errors come back in msgpack: forbidden, unknown method, bad msgpack', async () => {
  const ws = await authed();
  mpSend(ws, { type: 'subscribe', subscriptions: ['secret:topic'] });
  const f = await mpNext(ws, 'error');
  assert.equal(f.error.code, 'forbidden');
  assert.match(f.error.message, /secret:topic/);
  await mpNext(ws, 'subscribed');
  mpSend(ws, { type: 'request', id: 'r9', method: 'nope' });
  const u = await mpNext(ws, 'error');
  assert.deepEqual([u.id, u.error.code], ['r9', 'unknown_method']);
  const bad = [
    [Buffer.from([0xc1]), /not accepted/],
    [Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff, 0x01]), /truncated/], // array32 of 4G elements in 6 bytes
    [Buffer.from([0xc4, 0x01, 0x00]), /not accepted/], // bin
    [Buffer.concat([encode({ type: 'ping' }), encode(1)]), /more than one value/],
    [Buffer.alloc(40, 0x91), /deeper than 32/],
    [encode([1, 2]), /not a map/],
    [encode({ type: 'ping', x: 2n ** 64n - 1n }, { useBigInt64: true }), /64 signed bits/],
  ];
  for (const [bytes, why] of bad) {
    ws.send(bytes);
    const e = await mpNext(ws, 'error');
    assert.equal(e.error.code, 'bad_msgpack', bytes.toString('hex'));
    assert.match(e.error.message, why);
  }
  // still usable afterwards
  mpSend(ws, { type: 'ping' });
  await mpNext(ws, 'pong');
  ws.close();
});

test('an offer lists alternatives: the first one the server knows wins', async () => {
  const ws = await wsConnect(`${d.wsUrl}?token=${token()}`, { protocols: ['sophia.v1.cbor', 'sophia.v1.msgpack', 'sophia.v1.json'] });
  assert.equal(ws.protocol, 'sophia.v1.msgpack');
  ws.close();
  const unknown = await wsConnect(`${d.wsUrl}?token=${token()}`, { protocols: ['sophia.v9.nope'] }).then(
    (w) => { w.close(); return `accepted as '${w.protocol}'`; },
    (e) => `refused: ${e.message}`);
  assert.match(unknown, /refused/);
});

test('the SDK example client (sdk/examples/ws-msgpack) gets history and live updates', async () => {
  const { mkdtemp, copyFile, symlink, rm } = await import('node:fs/promises');
  const { spawn } = await import('node:child_process');
  const path = await import('node:path');
  const os = await import('node:os');
  // Run a copy beside this folder's node_modules (ws, @msgpack/msgpack).
  const dir = await mkdtemp(path.join(os.tmpdir(), 'sophia-mp-example-'));
  await copyFile(path.join(process.env.SOPHIA_SOURCE_DIR, 'sdk/examples/ws-msgpack/client.mjs'), path.join(dir, 'client.mjs'));
  await symlink(path.resolve('node_modules'), path.join(dir, 'node_modules'));
  const topic = `dashboard:${run}x`;
  await ingest([point(`${run}x`, 1)]);
  await topicAt(topic, 1);
  let out = '';
  const child = spawn(process.execPath, [path.join(dir, 'client.mjs'), d.wsUrl, topic], { env: { ...process.env, SOPHIA_TOKEN: token() } });
  child.stdout.on('data', (b) => { out += b; });
  const lines = () => out.split('\n').filter(Boolean).map((l) => JSON.parse(l));
  try {
    const waitFor = async (pred, what) => {
      for (let i = 0; i < 200 * timeoutScale; i++) {
        const hit = lines().find(pred);
        if (hit) return hit;
        await new Promise((r) => setTimeout(r, 25));
      }
      throw new Error(`example client: no ${what}; printed: ${out.slice(0, 2000)}`);
    };
    assert.equal((await waitFor((m) => m.connected, 'connect line')).protocol, 'sophia.v1.msgpack');
    await waitFor((m) => m.type === 'subscribed', 'subscribed');
    const h = await waitFor((m) => m.type === 'response' && m.id === 'h0', 'history response');
    assert.equal(h.data.messages.at(-1).data.value, 1);
    await ingest([point(`${run}x`, 2)]);
    const live = await waitFor((m) => m.type === 'metric' && m.data.value === 2, 'live metric');
    assert.equal(live.topic, topic);
    assert.equal(live.seq, h.data.seq + 1);
  } finally {
    child.kill();
    await rm(dir, { recursive: true, force: true });
  }
});
