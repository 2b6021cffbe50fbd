// L1 coherence across nodes: a write on node A drops the key from node B's
// L1 (through the cluster's Redis channel), so B never serves a stale value.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon, fetchJson } from './lib/daemon.mjs';

const yaml = (node) => `
cluster:
  redis: "${process.env.SOPHIA_REDIS_URL}"
  node_id: ${node}
plugins:
  path: ["@PLUGIN_DIR@"]
`;

let a;
let b;
before(async () => {
  [a, b] = await Promise.all([startDaemon({ yaml: yaml('cache-a') }), startDaemon({ yaml: yaml('cache-b') })]);
  for (const n of [a, b]) {
    for (let i = 0; i < 100; i++) {
      const s = (await fetchJson(`${n.url}/api/stats`)).body.websocket;
      if (s.cluster && s.cluster.up && !s.cluster.alone) break; // the other node heard
      await new Promise((r) => setTimeout(r, 50));
    }
  }
});
after(async () => { await Promise.all([a, b].filter(Boolean).map((n) => n.stop())); });

const put = (n, key, value, extra = {}) => fetchJson(`${n.url}/api/cache/${key}`, {
  method: 'PUT', body: JSON.stringify({ value, ttl: 60, ...extra }),
});
const get = (n, key) => fetchJson(`${n.url}/api/cache/${key}`);

async function eventually(fn, what) {
  let last;
  for (let i = 0; i < 100; i++) {
    last = await fn();
    if (last.ok) return last;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.fail(`${what}: ${JSON.stringify(last)}`);
}

test('a put on node A invalidates the key in node B\'s L1', async () => {
  const key = `coh-${process.pid}-${Date.now()}`;
  assert.equal((await put(b, key, 1)).status < 300, true);
  const first = await get(b, key);
  assert.equal(first.status, 200);
  assert.equal(first.body.value, 1);
  const hitsBefore = (await fetchJson(`${b.url}/api/stats`)).body.cache.l1.hits;
  assert.equal((await get(b, key)).body.value, 1);
  assert.ok((await fetchJson(`${b.url}/api/stats`)).body.cache.l1.hits > hitsBefore, 'B serves it from L1');

  assert.equal((await put(a, key, 2)).status < 300, true);
  await eventually(async () => {
    const r = await get(b, key);
    return { ok: r.status === 200 && r.body.value === 2, r: r.body };
  }, 'node B sees the new value');
});

test('a tag invalidation on node A reaches node B\'s L1', async () => {
  const key = `cohtag-${process.pid}-${Date.now()}`;
  const tag = `t-${process.pid}-${Date.now()}`;
  await put(b, key, 'x', { tags: [tag] });
  assert.equal((await get(b, key)).status, 200);
  const r = await fetchJson(`${a.url}/api/cache/invalidate`, { method: 'POST', body: JSON.stringify({ tags: [tag] }) });
  assert.ok(r.status < 300, JSON.stringify(r.body));
  await eventually(async () => {
    const g = await get(b, key);
    return { ok: g.status === 404, r: g.status };
  }, 'node B forgets the tagged key');
});
