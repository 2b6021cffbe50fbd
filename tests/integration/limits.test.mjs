// Limits and hostile input (issue #10 item 4): each limit answers with a
// clear error or close code, and the daemon keeps serving afterwards.
//   body size 413 · JSON nesting depth (ingest 400, WS error too_deep) ·
//   YAML aliases ("billion laughs") refused · WS message size 1009 ·
//   WS connections 503 · subscriptions per connection · topic length ·
//   request rate per token / per address 429 + Retry-After.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import {
  fetchJson, nextMessage, runSophiad, sendJson, startDaemon, timeoutScale, wsClosed, wsConnect,
} from './lib/daemon.mjs';

// No Redis/PostgreSQL: these limits are the daemon's own.
const NO_TIERS = { SOPHIA_REDIS_URL: '', SOPHIA_PG_URL: '' };
const STREAM = `
plugins:
  path: ["@TEST_PLUGIN_DIR@"]
  instances:
    e:
      plugin: echo
      options: {topic: t}
streams:
  s:
    processor: e
`;

let d; // limits, no rate limit
const open = [];

before(async () => {
  d = await startDaemon({
    env: NO_TIERS,
    yaml: `
server:
  max_body: 4k
websocket:
  max_connections: 3
  max_subscriptions: 4
  max_message: 2k
${STREAM}`,
  });
});

after(async () => {
  for (const ws of open) ws.terminate();
  if (d) assert.deepEqual(await d.stop(), { code: 0, signal: null, killed: false });
});

async function connect() {
  const ws = await wsConnect(d.wsUrl);
  open.push(ws);
  return ws;
}

async function alive(ws) {
  sendJson(ws, { type: 'ping' });
  await nextMessage(ws, 'pong');
}

const nested = (n) => `${'{"a":'.repeat(n)}1${'}'.repeat(n)}`;

test('request body over server.max_body is 413 body_too_large', async () => {
  const big = JSON.stringify({ pad: 'x'.repeat(5000) });
  const r = await fetchJson(`${d.url}/ingest/s`, { method: 'POST', body: big });
  assert.equal(r.status, 413);
  assert.equal(r.body.error.code, 'body_too_large');
  assert.match(r.body.error.message, /server\.max_body \(4096 bytes\)/);
  assert.equal((await fetchJson(`${d.url}/ingest/s`, { method: 'POST', body: '{"ok":1}' })).status, 202);
});

test('ingest JSON nested deeper than 64 levels is 400 with its position; 64 is fine', async () => {
  assert.equal((await fetchJson(`${d.url}/ingest/s`, { method: 'POST', body: nested(64) })).status, 202);
  const r = await fetchJson(`${d.url}/ingest/s`, { method: 'POST', body: nested(65) });
  assert.equal(r.status, 400);
  assert.equal(r.body.error.code, 'bad_json');
  assert.match(r.body.error.message, /nested deeper than 64 levels/);
  assert.equal(r.body.error.offset, 64 * 5, 'points at the 65th opening brace');
  // NDJSON: the second line is the deep one; nothing of the body is taken.
  const before = (await fetchJson(`${d.url}/api/stats`)).body.streams.s.received;
  const nd = await fetchJson(`${d.url}/ingest/s`, { method: 'POST', body: `{"x":1}\n${'['.repeat(3000)}` });
  assert.equal(nd.status, 400);
  assert.equal(nd.body.error.line, 2);
  assert.equal((await fetchJson(`${d.url}/api/stats`)).body.streams.s.received, before);
  // Brackets inside strings are text, not nesting.
  const str = JSON.stringify({ s: '['.repeat(500), q: '\\"{{{{' });
  assert.equal((await fetchJson(`${d.url}/ingest/s`, { method: 'POST', body: str })).status, 202);
});

test('other JSON bodies (cache API, hooks) nested deeper than 64 levels are 400 too_deep', async () => {
  for (const url of ['/api/cache/invalidate', '/hooks/gong', '/api/memory']) {
    const r = await fetchJson(`${d.url}${url}`, { method: 'POST', body: nested(65) });
    assert.equal(r.status, 400, url);
    assert.equal(r.body.error.code, 'too_deep', url);
    assert.match(r.body.error.message, /deeper than 64 levels \(at byte 320\)/);
  }
  const ok = await fetchJson(`${d.url}/api/cache/invalidate`, { method: 'POST', body: { tags: ['x'] } });
  assert.notEqual(ok.status, 400);
});

test('a WebSocket message nested deeper than 64 levels gets error too_deep; the connection stays', async () => {
  const ws = await connect();
  ws.send(`{"type":"subscribe","subscriptions":${'['.repeat(100)}${']'.repeat(100)}}`);
  const e = await nextMessage(ws, 'error');
  assert.equal(e.error.code, 'too_deep');
  await alive(ws);
  ws.close();
});

test('a WebSocket message over websocket.max_message is closed with 1009', async () => {
  const ws = await connect();
  ws.send(JSON.stringify({ type: 'ping', pad: 'x'.repeat(3000) }));
  const c = await wsClosed(ws);
  assert.equal(c.code, 1009);
  assert.match(c.reason, /max_message/);
});

test('subscriptions per connection and topic length are bounded', async () => {
  const ws = await connect();
  sendJson(ws, { type: 'subscribe', subscriptions: ['a', 'b', 'c', 'd', 'e'] });
  const e = await nextMessage(ws, 'error');
  assert.equal(e.error.code, 'too_many_subscriptions');
  const ws2 = await connect();
  sendJson(ws2, { type: 'subscribe', subscriptions: ['t'.repeat(201)] });
  const bad = await nextMessage(ws2, 'error');
  assert.equal(bad.error.code, 'bad_topic');
  sendJson(ws2, { type: 'subscribe', subscriptions: ['t'.repeat(200)] });
  const ok = await nextMessage(ws2, (m) => m.type === 'subscribed' && m.subscriptions.length > 0);
  assert.deepEqual(ok.subscriptions, ['t'.repeat(200)]);
  ws.close();
  ws2.close();
  await Promise.all([wsClosed(ws), wsClosed(ws2)]);
});

test('WebSocket connections over websocket.max_connections are refused with 503', async () => {
  // Earlier sockets of this file are closed; wait until the server agrees.
  const deadline = Date.now() + 5000 * timeoutScale;
  while ((await fetchJson(`${d.url}/api/stats`)).body.websocket.connections > 0) {
    if (Date.now() > deadline) throw new Error(`connections did not drain: ${JSON.stringify((await fetchJson(`${d.url}/api/stats`)).body.websocket)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  const socks = [await connect(), await connect(), await connect()];
  await assert.rejects(wsConnect(d.wsUrl), (err) => err.status === 503);
  socks[0].close();
  await wsClosed(socks[0]);
  const again = await connect(); // a freed slot can be used again
  await alive(again);
  for (const ws of [...socks, again]) ws.close();
});

test('YAML anchors and aliases ("billion laughs") are refused before anything expands', async () => {
  const dir = await mkdtemp(path.join(process.env.SOPHIA_TEST_TMP || os.tmpdir(), 'sophia-lim-'));
  try {
    const levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
    for (let i = 1; i < 9; i++) {
      const prev = String.fromCharCode(96 + i);
      const me = String.fromCharCode(97 + i);
      levels.push(`${me}: &${me} [${Array(9).fill(`*${prev}`).join(',')}]`);
    }
    const file = path.join(dir, 'laughs.yaml');
    await writeFile(file, `${levels.join('\n')}\n`);
    const t0 = Date.now();
    const r = await runSophiad(['--check', '-c', file]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /laughs\.yaml:1:4: anchor '&a' refused: aliases are not allowed/);
    assert.match(r.stderr, /laughs\.yaml:2:8: alias '\*a' refused: aliases are not allowed/);
    assert.ok(Date.now() - t0 < 5000 * timeoutScale, 'refused quickly');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('server.rate_limit: per-token buckets answer 429 with Retry-After and count it', async () => {
  const r = await startDaemon({
    env: { ...NO_TIERS, LIMITS_TOKENS: 'tok-a,tok-b' },
    yaml: `
server:
  tokens: {secret_env: LIMITS_TOKENS}
  rate_limit: {rate: 4, burst: 6}
${STREAM}`,
  });
  try {
    const post = (token) => fetchJson(`${r.url}/ingest/s`, { method: 'POST', token, body: '{"n":1}' });
    const codes = [];
    for (let i = 0; i < 7; i++) codes.push((await post('tok-a')).status);
    assert.deepEqual(codes.slice(0, 6), [202, 202, 202, 202, 202, 202], 'the burst goes through');
    assert.equal(codes[6], 429);
    const limited = await post('tok-a');
    assert.equal(limited.status, 429);
    assert.equal(limited.body.error.code, 'rate_limited');
    assert.match(limited.body.error.message, /server\.rate_limit \(4 requests\/s, burst 6\) for this token/);
    assert.equal(limited.headers.get('retry-after'), '1');
    // Another token has its own bucket; /api counts too; /healthz does not.
    assert.equal((await post('tok-b')).status, 202);
    assert.equal((await fetchJson(`${r.url}/api/stats`, { token: 'tok-a' })).status, 429);
    assert.equal((await fetchJson(`${r.url}/healthz`)).status, 200);
    // A wrong token is 401 before any bucket is touched.
    assert.equal((await post('nope')).status, 401);
    const m = await (await fetch(`${r.url}/metrics`)).text();
    const n = Number(/^sophia_rate_limited_total (\d+)$/m.exec(m)?.[1]);
    assert.ok(n >= 3, `sophia_rate_limited_total ${n}`);
    // Refills at 4/s: a request's worth after 250 ms.
    await new Promise((res) => setTimeout(res, 400));
    assert.equal((await post('tok-a')).status, 202);
  } finally {
    assert.deepEqual(await r.stop(), { code: 0, signal: null, killed: false });
  }
});

test('server.rate_limit without tokens limits per client address', async () => {
  const r = await startDaemon({
    env: NO_TIERS,
    yaml: `
server:
  rate_limit: {rate: 2}
${STREAM}`,
  });
  try {
    const codes = [];
    for (let i = 0; i < 3; i++) {
      codes.push((await fetchJson(`${r.url}/ingest/s`, { method: 'POST', body: '{"n":1}' })).status);
    }
    assert.deepEqual(codes, [202, 202, 429], 'burst defaults to the rate');
    const l = await fetchJson(`${r.url}/ingest/s`, { method: 'POST', body: '{}' });
    assert.match(l.body.error.message, /for this address/);
  } finally {
    assert.deepEqual(await r.stop(), { code: 0, signal: null, killed: false });
  }
});
