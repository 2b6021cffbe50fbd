// GET /api/dashboards (the page's picker) and the WebSocket `latest`
// request (a dashboard's current values on opening): both come from the
// router's table of each dashboard topic's latest metric update, which
// outlives the topic history. history_age is 1 s here so the test can
// watch the history age out and the latest values stay.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startDaemon, fetchJson, wsConnect, nextMessage, sendJson, until,
} from './lib/daemon.mjs';

const YAML = `
websocket:
  history_age: 1s
plugins:
  path: ["@PLUGIN_DIR@"]
  instances:
    metrics:
      plugin: metrics
streams:
  metrics:
    processor: metrics
`;

let d;
before(async () => {
  d = await startDaemon({ yaml: YAML, env: { SOPHIA_REDIS_URL: '' } });
});
after(async () => { if (d) await d.stop(); });

const ingest = async (body) => {
  const r = await fetchJson(`${d.url}/ingest/metrics`, { method: 'POST', body });
  assert.equal(r.status, 202, r.text);
};
let reqId = 0;
async function request(ws, method, params) {
  const id = `r${++reqId}`;
  sendJson(ws, { type: 'request', id, method, params });
  return nextMessage(ws, (m) => m.id === id);
}

test('no data, no dashboards', async () => {
  const r = await fetchJson(`${d.url}/api/dashboards`);
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /^application\/json/);
  assert.deepEqual(r.body, { dashboards: [] });
});

test('dashboards with metric data, by id, with their metric count and last update', async () => {
  const t0 = Date.now();
  await ingest([
    { metric: 'revenue', value: 100, dashboard_id: 'executive' },
    { metric: 'revenue', value: 125000, dashboard_id: 'executive' },
    { metric: 'active_users', value: 42, dashboard_id: 'executive' },
    { metric: 'queue', value: 7, dashboard_id: 'ops' },
    { metric: 'nowhere', value: 1 }, // no dashboard: not one
  ]);
  const r = await until(async () => {
    const x = await fetchJson(`${d.url}/api/dashboards`);
    return x.body.dashboards.length === 2 && x.body.dashboards[0].metrics === 2 ? x : null;
  }, 'two dashboards');
  const [exec, ops] = r.body.dashboards;
  assert.deepEqual([exec.id, exec.metrics, ops.id, ops.metrics], ['executive', 2, 'ops', 1]);
  for (const x of [exec, ops]) {
    assert.match(x.updated_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    const at = Date.parse(x.updated_at);
    assert.ok(at >= t0 - 1000 && at <= Date.now() + 1000, `${x.updated_at} is now`);
  }
});

test('latest: each metric\'s last update, also after the history aged out', async () => {
  const ws = await wsConnect(d.wsUrl);
  const fresh = await request(ws, 'latest', { topic: 'dashboard:executive' });
  assert.equal(fresh.type, 'response');
  const values = (res) => res.data.messages.map((m) => [m.type, m.topic, m.data.metric, m.data.value]);
  assert.deepEqual(values(fresh), [
    ['metric', 'dashboard:executive', 'revenue', 125000],
    ['metric', 'dashboard:executive', 'active_users', 42],
  ], 'oldest update first, one per metric');
  assert.ok(fresh.data.seq >= 3 && fresh.data.messages[1].seq === fresh.data.seq, JSON.stringify(fresh.data));

  // The history forgets after history_age (1 s)...
  await until(async () => (await request(ws, 'history', { topic: 'dashboard:executive' })).data.messages.length === 0,
    'the history to age out');
  // ...the latest values stay, and so does the dashboard in the list.
  assert.deepEqual(values(await request(ws, 'latest', { topic: 'dashboard:executive' })), values(fresh));
  assert.deepEqual((await fetchJson(`${d.url}/api/dashboards`)).body.dashboards.map((x) => x.id), ['executive', 'ops']);

  // A new value replaces the old one and moves to the end.
  await ingest({ metric: 'revenue', value: 130000, dashboard_id: 'executive' });
  await until(async () => {
    const v = values(await request(ws, 'latest', { topic: 'dashboard:executive' }));
    return v.length === 2 && v[1][2] === 'revenue' && v[1][3] === 130000;
  }, 'revenue 130000 last');
  assert.deepEqual((await request(ws, 'latest', { topic: 'dashboard:nobody' })).data,
    { topic: 'dashboard:nobody', seq: 0, messages: [] });
  ws.close();
});

test('latest refuses a pattern or a missing topic', async () => {
  const ws = await wsConnect(d.wsUrl);
  for (const params of [{ topic: 'dashboard:*' }, {}, { topic: 5 }]) {
    const r = await request(ws, 'latest', params);
    assert.equal(r.type, 'error');
    assert.equal(r.error.code, 'bad_request');
    assert.match(r.error.message, /latest needs params/);
  }
  ws.close();
});

test('with API tokens, /api/dashboards wants one like the rest of /api', async () => {
  const t = await startDaemon({
    yaml: `${YAML}server:\n  tokens:\n    secret_env: DASHBOARDS_TEST_TOKENS\n`,
    env: { SOPHIA_REDIS_URL: '', DASHBOARDS_TEST_TOKENS: 'tok-1' },
  });
  try {
    assert.equal((await fetchJson(`${t.url}/api/dashboards`)).status, 401);
    const ok = await fetchJson(`${t.url}/api/dashboards`, { headers: { authorization: 'Bearer tok-1' } });
    assert.equal(ok.status, 200);
    assert.deepEqual(ok.body, { dashboards: [] });
  } finally {
    await t.stop();
  }
});
