// WebSocket scopes (SPEC §5): with auth on, a token's claims bound what it
// may touch - `topics` (subscribe, history), `cache` (cache.get keys),
// `memory` (the context memory.search is filtered to), `stats` - and a
// token without a claim gets nothing of that kind (`forbidden`, naming
// the claim). Also websocket.jwt: issuer/audience checks and
// require_exp: false.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { jwt } from './lib/jwt.mjs';
import {
  startDaemon, fetchJson, wsConnect, nextMessage, sendJson, wsClosed,
} from './lib/daemon.mjs';

const SECRET = 'ws-scopes-test-secret-0123456789abcdef';
const uniq = `scopes_${process.pid}_${Date.now().toString(36)}`;
const YAML = `
websocket:
  auth:
    secret_env: WS_SCOPES_SECRET
  jwt:
    issuer: https://id.example.com
    audience: sophia
memory:
  table: ${uniq}
  index_path: @TMP_DIR@/memory.index
plugins:
  path: ["@PLUGIN_DIR@"]
  instances:
    metrics:
      plugin: metrics
streams:
  metrics:
    processor: metrics
`;

const now = () => Math.floor(Date.now() / 1000);
const token = (claims) => jwt({ sub: 'alice', exp: now() + 600, iss: 'https://id.example.com', aud: 'sophia', ...claims }, SECRET);

let d;
before(async () => {
  d = await startDaemon({ yaml: YAML, env: { WS_SCOPES_SECRET: SECRET } });
});
after(async () => { if (d) await d.stop(); });

let reqNo = 0;
async function request(ws, method, params) {
  const id = `r${++reqNo}`;
  sendJson(ws, { type: 'request', id, method, params });
  return nextMessage(ws, (m) => m.id === id);
}

async function open(claims) {
  return wsConnect(`${d.wsUrl}?token=${token(claims)}`);
}

test('iss and aud must match websocket.jwt when it names them', async () => {
  const bad = [
    { iss: undefined }, { iss: 'https://evil.example.com' }, { aud: undefined }, { aud: 'other' },
    { aud: ['other', 'another'] },
  ];
  for (const claims of bad) {
    await assert.rejects(open(claims), (e) => e.status === 401, JSON.stringify(claims));
  }
  const ws = await open({ aud: ['other', 'sophia'], topics: ['x'] });
  sendJson(ws, { type: 'subscribe', subscriptions: ['x'] });
  assert.deepEqual((await nextMessage(ws, 'subscribed')).subscriptions, ['x']);
  sendJson(ws, { type: 'auth', token: token({ aud: 'nope' }) });
  const c = await wsClosed(ws);
  assert.equal(c.code, 4001);
  assert.match(c.reason, /aud/);
});

test('cache.get reads only keys within the token\'s cache patterns', async () => {
  for (const k of [`dash:${uniq}:a`, `secret:${uniq}:b`]) {
    const res = await fetchJson(`${d.url}/api/cache/${encodeURIComponent(k)}`, { method: 'PUT', body: JSON.stringify({ value: { k } }) });
    assert.equal(res.status, 200, res.text);
  }
  const ws = await open({ cache: ['dash:*', `exact:${uniq}`] });
  const ok = await request(ws, 'cache.get', { key: `dash:${uniq}:a` });
  assert.equal(ok.type, 'response', JSON.stringify(ok));
  assert.deepEqual(ok.data.value, { k: `dash:${uniq}:a` });
  const no = await request(ws, 'cache.get', { key: `secret:${uniq}:b` });
  assert.equal(no.error.code, 'forbidden');
  assert.match(no.error.message, /"cache" scope/);
  // A pattern is a prefix only with its *; an exact entry is exact.
  assert.equal((await request(ws, 'cache.get', { key: `exact:${uniq}x` })).error.code, 'forbidden');
  assert.equal((await request(ws, 'cache.get', { key: `dash${uniq}` })).error.code, 'forbidden');
  ws.close();

  const none = await open({ topics: ['*'] });
  const e = await request(none, 'cache.get', { key: `dash:${uniq}:a` });
  assert.equal(e.error.code, 'forbidden');
  assert.match(e.error.message, /no "cache" scope claim/);
  none.close();
});

test('memory.search is filtered to the token\'s memory scope; another user_id is forbidden', async () => {
  const store = async (content, context) => {
    const res = await fetchJson(`${d.url}/api/memory`, { body: { content, memory_type: 'fact', context } });
    assert.equal(res.status, 201, res.text);
  };
  await store('Ursula prefers green tea with lemon', { user_id: 'u1', agent_id: 'a1' });
  await store('Ursula green tea order for the other agent', { user_id: 'u1', agent_id: 'a2' });
  await store('Victor prefers green tea with milk', { user_id: 'u2', agent_id: 'a1' });

  const ws = await open({ memory: { user_id: 'u1' } });
  // No context in the request: the scope is the filter.
  const r = await request(ws, 'memory.search', { q: 'green tea', k: 10 });
  assert.equal(r.type, 'response', JSON.stringify(r));
  const users = r.data.results.map((m) => m.context.user_id);
  assert.equal(users.length, 2, JSON.stringify(r.data.results));
  assert.ok(users.every((u) => u === 'u1'), JSON.stringify(users));
  // Narrower than the scope is fine.
  const a1 = await request(ws, 'memory.search', { q: 'green tea', k: 10, context: { agent_id: 'a1' } });
  assert.deepEqual(a1.data.results.map((m) => [m.context.user_id, m.context.agent_id]), [['u1', 'a1']]);
  // Another user is not a filter, it is a refusal.
  const other = await request(ws, 'memory.search', { q: 'green tea', context: { user_id: 'u2' } });
  assert.equal(other.error.code, 'forbidden');
  assert.match(other.error.message, /"memory" scope/);
  ws.close();

  // Several scopes: the first the request's context fits.
  const multi = await open({ memory: [{ user_id: 'u2', agent_id: 'a1' }, { user_id: 'u1', agent_id: 'a2' }] });
  const v = await request(multi, 'memory.search', { q: 'green tea', k: 10, context: { user_id: 'u1' } });
  assert.deepEqual(v.data.results.map((m) => [m.context.user_id, m.context.agent_id]), [['u1', 'a2']]);
  const w = await request(multi, 'memory.search', { q: 'green tea', k: 10, context: { agent_id: 'a1' } });
  assert.deepEqual(w.data.results.map((m) => m.context.user_id), ['u2']);
  assert.equal((await request(multi, 'memory.search', { q: 'tea', context: { user_id: 'u3' } })).error.code, 'forbidden');
  multi.close();

  const none = await open({ topics: ['*'] });
  const e = await request(none, 'memory.search', { q: 'green tea' });
  assert.equal(e.error.code, 'forbidden');
  assert.match(e.error.message, /no "memory" scope claim/);
  none.close();
});

test('stats needs "stats": true; history obeys topics', async () => {
  const before = (await fetchJson(`${d.url}/api/stats`)).body.websocket.forbidden;
  const ws = await open({ topics: ['dashboard:*'] });
  const s = await request(ws, 'stats');
  assert.equal(s.error.code, 'forbidden');
  assert.match(s.error.message, /"stats"/);
  const point = { metric: 'm', value: 1, timestamp: '2024-01-20T10:30:00Z', dashboard_id: uniq };
  assert.equal((await fetchJson(`${d.url}/ingest/metrics`, { method: 'POST', body: point })).status, 202);
  const h = await request(ws, 'history', { topic: 'updates:metric' });
  assert.equal(h.error.code, 'forbidden');
  assert.match(h.error.message, /updates:metric/);
  // Inside the scope, history answers (the metric lands asynchronously).
  let mine;
  for (let i = 0; i < 100; i++) {
    mine = await request(ws, 'history', { topic: `dashboard:${uniq}` });
    if (mine.data?.messages.length) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal(mine.data.messages.length, 1, JSON.stringify(mine));
  ws.close();

  const ok = await open({ stats: true });
  const st = await request(ok, 'stats');
  assert.equal(st.type, 'response');
  assert.equal(st.data.websocket.forbidden, before + 2);
  ok.close();
});

test('websocket.jwt.require_exp: false accepts tokens without exp', async () => {
  const secret = 'another-ws-scopes-secret-0123456789abcdef';
  const d2 = await startDaemon({
    yaml: 'websocket:\n  auth:\n    secret_env: WS_SCOPES_SECRET2\n  jwt:\n    require_exp: false\n',
    env: { WS_SCOPES_SECRET2: secret },
  });
  try {
    const ws = await wsConnect(`${d2.wsUrl}?token=${jwt({ sub: 'svc', topics: ['x'] }, secret)}`);
    sendJson(ws, { type: 'subscribe', subscriptions: ['x'] });
    assert.deepEqual((await nextMessage(ws, 'subscribed')).subscriptions, ['x']);
    ws.close();
    // An exp, when present, still counts.
    await assert.rejects(wsConnect(`${d2.wsUrl}?token=${jwt({ sub: 'svc', exp: now() - 5 }, secret)}`),
      (e) => e.status === 401);
  } finally {
    await d2.stop();
  }
});
