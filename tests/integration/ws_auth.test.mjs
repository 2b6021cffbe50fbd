// WebSocket auth (SPEC §5): HS256 JWTs via ?token=, Authorization: Bearer
// or a first `auth` message; expired and badly signed tokens refused
// (401 on the upgrade, 4001 on the socket), and so are tokens without
// `exp`; subscriptions outside the token's `topics` (or without that
// claim) refused with `forbidden`; same-origin plus an Origin allow-list.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { jwt as signJwt } from './lib/jwt.mjs';
import {
  startDaemon, fetchJson, wsConnect, nextMessage, sendJson, wsClosed,
} from './lib/daemon.mjs';

const SECRET = 'test-secret-for-ws-auth-0123456789abcdef';
const YAML = `
websocket:
  auth_timeout: 1s
  origins: ["https://dash.example.com"]
  auth:
    secret_env: SOPHIA_TEST_WS_SECRET
plugins:
  path: ["@PLUGIN_DIR@"]
  instances:
    metrics:
      plugin: metrics
streams:
  metrics:
    processor: metrics
`;

const b64 = (o) => Buffer.from(typeof o === 'string' ? o : JSON.stringify(o)).toString('base64url');
const jwt = (claims, secret = SECRET, header) => signJwt(claims, secret, header);
const now = () => Math.floor(Date.now() / 1000);
const good = (topics) => jwt({ sub: 'alice', exp: now() + 600, ...(topics ? { topics } : {}) });
const ORIGIN = { headers: { origin: 'https://dash.example.com' } };

let d;
before(async () => {
  d = await startDaemon({ yaml: YAML, env: { SOPHIA_TEST_WS_SECRET: SECRET } });
});
after(async () => { if (d) await d.stop(); });

test('a valid token in ?token= lets the client subscribe within its topics', async () => {
  const ws = await wsConnect(`${d.wsUrl}?token=${good(['dashboard:*', 'alerts'])}`, ORIGIN);
  sendJson(ws, { type: 'subscribe', subscriptions: ['dashboard:sales', 'alerts', 'updates:metric', 'dash*'] });
  const e1 = await nextMessage(ws, 'error');
  const e2 = await nextMessage(ws, 'error');
  assert.equal(e1.error.code, 'forbidden');
  assert.match(e1.error.message, /updates:metric/);
  assert.equal(e2.error.code, 'forbidden');
  assert.deepEqual((await nextMessage(ws, 'subscribed')).subscriptions, ['dashboard:sales', 'alerts']);
  const point = { metric: 'm', value: 1, timestamp: '2024-01-20T10:30:00Z', dashboard_id: 'sales' };
  assert.equal((await fetchJson(`${d.url}/ingest/metrics`, { method: 'POST', body: point })).status, 202);
  assert.equal((await nextMessage(ws, 'metric')).topic, 'dashboard:sales');
  ws.close();
});

test('Authorization: Bearer on the upgrade works too', async () => {
  const ws = await wsConnect(d.wsUrl, { headers: { ...ORIGIN.headers, authorization: `Bearer ${good()}` } });
  sendJson(ws, { type: 'subscribe', subscriptions: ['anything'] });
  const e = await nextMessage(ws, 'error');
  assert.equal(e.error.code, 'forbidden');
  assert.match(e.error.message, /no "topics" scope claim/);
  assert.deepEqual((await nextMessage(ws, 'subscribed')).subscriptions, []);
  ws.close();
  const all = await wsConnect(d.wsUrl, { headers: { ...ORIGIN.headers, authorization: `Bearer ${good(['*'])}` } });
  sendJson(all, { type: 'subscribe', subscriptions: ['anything'] });
  assert.deepEqual((await nextMessage(all, 'subscribed')).subscriptions, ['anything']);
  all.close();
});

test('expired or badly signed tokens are refused at the upgrade with 401', async () => {
  const expired = jwt({ sub: 'bob', exp: now() - 5 });
  await assert.rejects(wsConnect(`${d.wsUrl}?token=${expired}`, ORIGIN), (e) => e.status === 401);
  const forged = good().slice(0, -2) + 'AA';
  await assert.rejects(wsConnect(`${d.wsUrl}?token=${forged}`, ORIGIN), (e) => e.status === 401);
  const other = jwt({ sub: 'eve' }, 'another-secret');
  await assert.rejects(wsConnect(d.wsUrl, { headers: { ...ORIGIN.headers, authorization: `Bearer ${other}` } }),
    (e) => e.status === 401);
  const none = `${b64({ alg: 'none' })}.${b64({ sub: 'x' })}.`;
  await assert.rejects(wsConnect(`${d.wsUrl}?token=${none}`, ORIGIN), (e) => e.status === 401);
  // websocket.jwt.require_exp defaults to true: a token that never expires
  // is refused, however well signed.
  const forever = jwt({ sub: 'bob', topics: ['*'] });
  await assert.rejects(wsConnect(`${d.wsUrl}?token=${forever}`, ORIGIN), (e) => e.status === 401);
  const ws = await wsConnect(d.wsUrl, ORIGIN);
  sendJson(ws, { type: 'auth', token: forever });
  const c = await wsClosed(ws);
  assert.equal(c.code, 4001);
  assert.match(c.reason, /no exp/);
});

test('a first auth message authenticates; a bad one closes with 4001', async () => {
  let ws = await wsConnect(d.wsUrl, ORIGIN);
  sendJson(ws, { type: 'auth', token: good(['x']) });
  assert.deepEqual(await nextMessage(ws, 'authenticated'), { type: 'authenticated', sub: 'alice' });
  sendJson(ws, { type: 'subscribe', subscriptions: ['x'] });
  assert.deepEqual((await nextMessage(ws, 'subscribed')).subscriptions, ['x']);
  ws.close();

  ws = await wsConnect(d.wsUrl, ORIGIN);
  sendJson(ws, { type: 'auth', token: jwt({ sub: 'bob', exp: now() - 1 }) });
  let c = await wsClosed(ws);
  assert.equal(c.code, 4001);
  assert.match(c.reason, /expired/);

  ws = await wsConnect(d.wsUrl, ORIGIN);
  sendJson(ws, { type: 'auth', token: jwt({ sub: 'eve' }, 'wrong') });
  c = await wsClosed(ws);
  assert.equal(c.code, 4001);
  assert.match(c.reason, /signature/);
});

test('nothing but auth is allowed first, and auth must come in time', async () => {
  let ws = await wsConnect(d.wsUrl, ORIGIN);
  sendJson(ws, { type: 'subscribe', subscriptions: ['x'] });
  assert.equal((await wsClosed(ws)).code, 4001);
  ws = await wsConnect(d.wsUrl, ORIGIN);
  const c = await wsClosed(ws); // auth_timeout is 1 s
  assert.equal(c.code, 4001);
  const s = (await fetchJson(`${d.url}/api/stats`)).body.websocket;
  assert.ok(s.auth_failures >= 6, JSON.stringify(s));
});

test('an Origin neither our own nor in websocket.origins is refused with 403', async () => {
  const refused = ['https://evil.example', 'null', `http://127.0.0.1:${d.port}.evil.com`,
    `http://localhost:${d.port}`, 'https://dash.example.com.evil.com', `http://127.0.0.1:${d.port + 1}`];
  for (const origin of refused) {
    await assert.rejects(wsConnect(`${d.wsUrl}?token=${good()}`, { headers: { origin } }),
      (e) => e.status === 403, origin);
  }
  // Allowed: listed, the page sophiad serves (same host:port as the
  // request's Host), and tools that send no Origin at all.
  for (const origin of ['https://dash.example.com', `http://127.0.0.1:${d.port}`, `HTTP://127.0.0.1:${d.port}`, undefined]) {
    const ws = await wsConnect(`${d.wsUrl}?token=${good(['x'])}`, origin ? { headers: { origin } } : {});
    sendJson(ws, { type: 'ping' });
    assert.equal((await nextMessage(ws, 'pong')).type, 'pong', String(origin));
    ws.close();
  }
  const s = (await fetchJson(`${d.url}/api/stats`)).body.websocket;
  assert.ok(s.refused >= refused.length, JSON.stringify(s));
});

test('with no websocket.origins, only the server\'s own page and "*" lists open /ws from a browser', async () => {
  const plain = await startDaemon({ yaml: 'websocket:\n  max_topics: 1000\n' });
  const any = await startDaemon({ yaml: 'websocket:\n  origins: ["*"]\n' });
  try {
    await assert.rejects(wsConnect(plain.wsUrl, { headers: { origin: 'https://dash.example.com' } }),
      (e) => e.status === 403);
    const own = await wsConnect(plain.wsUrl, { headers: { origin: `http://127.0.0.1:${plain.port}` } });
    own.close();
    const other = await wsConnect(any.wsUrl, { headers: { origin: 'https://dash.example.com' } });
    other.close();
  } finally {
    await plain.stop();
    await any.stop();
  }
});
