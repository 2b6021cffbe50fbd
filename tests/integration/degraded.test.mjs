// Bearer tokens on ingest/API, and health when a tier is down: a missing
// Redis or PostgreSQL degrades the daemon, it does not stop it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon, fetchJson } from './lib/daemon.mjs';

const YAML = `
server:
  tokens:
    secret_env: SOPHIA_INGEST_TOKENS
plugins:
  path: ["@PLUGIN_DIR@"]
  instances:
    metrics:
      plugin: metrics
streams:
  metrics:
    processor: metrics
    # In memory: a durable stream (the default with Redis) answers 503
    # while Redis is down (durable.test.mjs); this file checks that the
    # memory queue keeps taking events then.
    durable: false
`;

test('ingest and /api need a configured bearer token; health does not', async () => {
  const d = await startDaemon({ yaml: YAML, env: { SOPHIA_INGEST_TOKENS: 'alpha,beta' } });
  try {
    const body = '{"metric":"m","value":1}';
    const none = await fetchJson(`${d.url}/ingest/metrics`, { method: 'POST', body });
    assert.equal(none.status, 401);
    assert.equal(none.body.error.code, 'unauthorized');
    const wrong = await fetchJson(`${d.url}/ingest/metrics`, {
      method: 'POST', body, headers: { authorization: 'Bearer alph' },
    });
    assert.equal(wrong.status, 401);
    for (const tok of ['alpha', 'beta']) {
      const ok = await fetchJson(`${d.url}/ingest/metrics`, {
        method: 'POST', body, headers: { authorization: `Bearer ${tok}` },
      });
      assert.equal(ok.status, 202, tok);
    }
    assert.equal((await fetchJson(`${d.url}/api/stats`)).status, 401);
    assert.equal((await fetchJson(`${d.url}/api/stats`, { headers: { authorization: 'Bearer beta' } })).status, 200);
    assert.notEqual((await fetchJson(`${d.url}/healthz`)).status, 401);
  } finally {
    await d.stop();
  }
});

test('Redis unreachable: healthz 503 names l2, ingest keeps working', async () => {
  // Port 1 on loopback: nothing listens, the connect is refused at once.
  const d = await startDaemon({ yaml: YAML, env: { SOPHIA_REDIS_URL: 'redis://127.0.0.1:1/0' } });
  try {
    let h;
    for (let i = 0; i < 50; i++) {
      h = await fetchJson(`${d.url}/healthz`);
      if (h.status === 503 && h.body.tiers.l3 === 'up') break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(h.status, 503);
    assert.equal(h.body.status, 'degraded');
    // The cluster runs on redis.url by default: down with it.
    assert.deepEqual(h.body.down, ['l2', 'cluster']);
    assert.equal(h.body.tiers.l3, 'up');
    const res = await fetchJson(`${d.url}/ingest/metrics`, { method: 'POST', body: '{"metric":"m","value":2}' });
    assert.equal(res.status, 202);
    const stats = (await fetchJson(`${d.url}/api/stats`)).body;
    assert.equal(stats.cache.l2.status, 'down');
    assert.match(stats.cache.l2.error, /refused|connect/i);
  } finally {
    await d.stop();
  }
});

test('tiers disabled by empty URLs: healthy, reported as disabled', async () => {
  const d = await startDaemon({ yaml: YAML, env: { SOPHIA_REDIS_URL: '', SOPHIA_PG_URL: '' } });
  try {
    const h = await fetchJson(`${d.url}/healthz`);
    assert.equal(h.status, 200);
    assert.deepEqual(h.body.tiers, { l1: 'up', l2: 'disabled', l3: 'disabled' });
  } finally {
    await d.stop();
  }
});
