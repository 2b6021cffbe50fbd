// WebSocket settings follow SIGHUP (SPEC §9): limits, history size,
// origins and the auth secret are re-read by the running router. A client
// connected before the reload stays connected and works under the new
// limits; a new secret makes every connection authenticate again (4001).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { jwt as signJwt } from './lib/jwt.mjs';
import {
  startDaemon, fetchJson, wsConnect, nextMessage, sendJson, wsClosed, timeoutScale, until,
} from './lib/daemon.mjs';

const SECRET = 'ws-reload-test-secret-0123456789';
const ORIGIN = 'https://dash.example.com';

const config = (ws) => `
websocket:
${ws}
plugins:
  path: ["@PLUGIN_DIR@"]
  instances:
    metrics:
      plugin: metrics
streams:
  metrics:
    processor: metrics
`;

const jwt = (claims) => signJwt(claims, SECRET);

let d;
before(async () => {
  d = await startDaemon({
    yaml: config('  max_subscriptions: 2\n  history: 8'),
    env: { WS_RELOAD_SECRET: SECRET, WS_RELOAD_SHORT: 'too-short' },
  });
});
after(async () => { if (d) await d.stop(); });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function reload(ws) {
  const before = (await fetchJson(`${d.url}/api/stats`)).body.reload.reloads;
  await d.writeConfig(config(ws));
  d.signal('SIGHUP');
  const deadline = Date.now() + 10000 * timeoutScale;
  while ((await fetchJson(`${d.url}/api/stats`)).body.reload.reloads <= before) {
    if (Date.now() > deadline) throw new Error('the reload did not happen');
    await sleep(20);
  }
}

async function ingest(dashboard, n) {
  const body = Array.from({ length: n }, (_, i) => JSON.stringify({
    metric: `m${i}`, value: i, timestamp: '2024-01-20T10:30:00Z', dashboard_id: dashboard,
  })).join('\n');
  assert.equal((await fetchJson(`${d.url}/ingest/metrics`, { method: 'POST', body })).status, 202);
}

async function history(ws, topic) {
  sendJson(ws, { type: 'request', id: `h-${topic}`, method: 'history', params: { topic } });
  return (await nextMessage(ws, (m) => m.type === 'response' && m.id === `h-${topic}`)).data;
}

test('limits, history size and origins change on SIGHUP; connected clients stay', async () => {
  const ws = await wsConnect(d.wsUrl);
  sendJson(ws, { type: 'subscribe', subscriptions: ['dashboard:r1', 'dashboard:r2', 'dashboard:r3'] });
  assert.equal((await nextMessage(ws, 'error')).error.code, 'too_many_subscriptions');
  assert.deepEqual((await nextMessage(ws, 'subscribed')).subscriptions, ['dashboard:r1', 'dashboard:r2']);
  await ingest('r1', 6);
  // 202 means appended (the stream is durable): wait for the processing.
  await nextMessage(ws, (m) => m.type === 'metric' && m.topic === 'dashboard:r1' && m.seq === 6);
  assert.equal((await history(ws, 'dashboard:r1')).messages.length, 6);

  await reload(`  max_subscriptions: 3\n  history: 3\n  origins: ["${ORIGIN}"]`);

  // The same connection: one more subscription fits now, and it still
  // receives what is published.
  sendJson(ws, { type: 'subscribe', subscriptions: ['dashboard:r3'] });
  assert.deepEqual((await nextMessage(ws, 'subscribed')).subscriptions, ['dashboard:r3']);
  sendJson(ws, { type: 'subscribe', subscriptions: ['dashboard:r4'] });
  assert.equal((await nextMessage(ws, 'error')).error.code, 'too_many_subscriptions');
  await ingest('r3', 1);
  assert.equal((await nextMessage(ws, (m) => m.type === 'metric' && m.topic === 'dashboard:r3')).seq, 1);
  // The existing ring shrank to the newest 3; new rings are 3 long.
  const h = await history(ws, 'dashboard:r1');
  assert.deepEqual(h.messages.map((m) => m.seq), [4, 5, 6]);
  assert.equal(h.complete, false);
  // Origins: the list is re-read; a page it does not name is refused
  // (before the reload the list was empty: same-origin only).
  await assert.rejects(wsConnect(d.wsUrl, { headers: { origin: 'https://other.example' } }),
    (e) => e.status === 403);
  (await wsConnect(d.wsUrl, { headers: { origin: ORIGIN } })).close();
  ws.close();
});

test('a secret added on SIGHUP makes connected clients authenticate again', async () => {
  await reload('  history: 8');
  const ws = await wsConnect(d.wsUrl);
  sendJson(ws, { type: 'subscribe', subscriptions: ['dashboard:a1'] });
  await nextMessage(ws, 'subscribed');

  await reload('  auth:\n    secret_env: WS_RELOAD_SECRET');
  const closed = await wsClosed(ws);
  assert.equal(closed.code, 4001);
  assert.match(String(closed.reason), /authenticate again/);

  // Without a token: refused at the first message; with one: served.
  const anon = await wsConnect(d.wsUrl);
  sendJson(anon, { type: 'subscribe', subscriptions: ['dashboard:a1'] });
  assert.equal((await wsClosed(anon)).code, 4001);
  const token = jwt({ sub: 'ops', exp: Math.floor(Date.now() / 1000) + 600, topics: ['dashboard:*'] });
  const authed = await wsConnect(`${d.wsUrl}?token=${token}`);
  sendJson(authed, { type: 'subscribe', subscriptions: ['dashboard:a1'] });
  await nextMessage(authed, 'subscribed');
  await ingest('a1', 1);
  assert.equal((await nextMessage(authed, 'metric')).topic, 'dashboard:a1');
  authed.close();

  // And off again: anonymous clients are welcome once more.
  await reload('  history: 8');
  const again = await wsConnect(d.wsUrl);
  sendJson(again, { type: 'subscribe', subscriptions: ['dashboard:a1'] });
  await nextMessage(again, 'subscribed');
  again.close();
});

test('a tightened websocket.jwt on SIGHUP re-checks connected tokens; a short secret keeps the running config', async () => {
  const auth = '  auth:\n    secret_env: WS_RELOAD_SECRET';
  await reload(auth);
  const token = jwt({ sub: 'ops', exp: Math.floor(Date.now() / 1000) + 600, topics: ['*'] });
  const ws = await wsConnect(`${d.wsUrl}?token=${token}`);
  sendJson(ws, { type: 'ping' });
  await nextMessage(ws, 'pong');
  await reload(`${auth}\n  jwt:\n    audience: sophia`);
  const closed = await wsClosed(ws);
  assert.equal(closed.code, 4001);
  // The old token no longer passes; one naming the audience does.
  await assert.rejects(wsConnect(`${d.wsUrl}?token=${token}`), (e) => e.status === 401);
  const aud = jwt({ sub: 'ops', exp: Math.floor(Date.now() / 1000) + 600, aud: 'sophia' });
  (await wsConnect(`${d.wsUrl}?token=${aud}`)).close();
  // A reload that would bring a guessable secret is refused as a whole.
  const failures = (await fetchJson(`${d.url}/api/stats`)).body.reload;
  await d.writeConfig(config('  auth:\n    secret_env: WS_RELOAD_SHORT'));
  d.signal('SIGHUP');
  await until(async () => (await fetchJson(`${d.url}/api/stats`)).body.reload.failures > (failures.failures ?? 0), 'reload refused');
  const st = (await fetchJson(`${d.url}/api/stats`)).body.reload;
  assert.match(String(st.last_error), /at least 32/);
  await reload('  history: 8');
});
