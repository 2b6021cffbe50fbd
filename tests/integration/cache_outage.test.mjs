// sophia-test: run-serial
// The cache while its servers go away: Redis stopped and restarted (L2 is
// skipped, nothing stalls, write-back falls back to writing through), and
// PostgreSQL stopped and restarted with writes acknowledged meanwhile -
// none of them may be lost.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon, fetchJson, until } from './lib/daemon.mjs';
import { redisCommand, pgQuery, stopRedis, startRedis, stopPostgres, startPostgres } from './lib/servers.mjs';

const run = `${process.pid}${Math.random().toString(36).slice(2, 6)}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const YAML = `
plugins:
  path: ["@PLUGIN_DIR@"]
  instances:
    wt:
      plugin: write_through
    wb:
      plugin: write_back
      options:
        flush_interval: 0.2
cache:
  write:
    default: wt
    prefixes:
      "wb:": wb
`;

const put = (d, key, value) =>
  fetchJson(`${d.url}/api/cache/${encodeURIComponent(key)}`, { method: 'PUT', body: JSON.stringify({ value, ttl: 300 }) });
const get = (d, key) => fetchJson(`${d.url}/api/cache/${encodeURIComponent(key)}`);

async function pgValue(key) {
  const rows = await pgQuery(
    `SELECT convert_from(value, 'UTF8') FROM sophia_cache WHERE key = '${key}' AND (expires_at IS NULL OR expires_at > now())`,
  );
  return rows.length ? rows[0][0] : null;
}

const eventually = (what, fn, ms = 15000) => until(fn, what, ms, 100);

const health = async (d) => (await fetchJson(`${d.url}/healthz`)).body;

test('Redis stopped and restarted: L2 skipped without a stall, then used again', async () => {
  const d = await startDaemon({ yaml: YAML });
  try {
    const k1 = `wt:${run}:r1`;
    assert.equal((await put(d, k1, 1)).status, 200);
    await stopRedis();
    await eventually('healthz degraded on l2', async () => (await health(d)).down?.includes('l2'));
    const t0 = Date.now();
    const k2 = `wt:${run}:r2`;
    assert.equal((await put(d, k2, 2)).status, 200);
    const k3 = `wb:${run}:r3`; // no journal without Redis: written through
    assert.equal((await put(d, k3, 3)).status, 200);
    assert.ok(Date.now() - t0 < 2000, 'puts do not wait for the dead tier');
    assert.equal(await pgValue(k2), '2');
    assert.equal(await pgValue(k3), '3');
    assert.equal((await get(d, k1)).body.value, 1);
    assert.equal((await get(d, `wt:${run}:missing`)).status, 404);
    await startRedis();
    await eventually('healthz ok again', async () => (await health(d)).status === 'ok');
    const k4 = `wt:${run}:r4`;
    assert.equal((await put(d, k4, 4)).status, 200);
    assert.notEqual(await redisCommand(['GET', `sophia:c:${k4}`]), null);
    const s = (await fetchJson(`${d.url}/api/stats`)).body.cache;
    assert.ok(s.l2.skipped_down >= 1);
  } finally {
    await startRedis().catch(() => {});
    await d.stop();
  }
});

test('PostgreSQL stopped and restarted: no acknowledged write is lost', async () => {
  const d = await startDaemon({ yaml: YAML });
  const want = new Map();
  try {
    for (let i = 0; i < 5; i++) {
      const k = `wb:${run}:before${i}`;
      assert.equal((await put(d, k, i)).status, 200);
      want.set(k, String(i));
    }
    await stopPostgres('fast');
    await eventually('healthz degraded on l3', async () => (await health(d)).down?.includes('l3'));
    // write-back: acknowledged from the journal while L3 is down.
    for (let i = 0; i < 20; i++) {
      const k = `wb:${run}:during${i}`;
      const r = await put(d, k, { i });
      assert.equal(r.status, 200);
      want.set(k, JSON.stringify({ i }));
    }
    // write-through: waits for L3, answered once it is back.
    const k = `wt:${run}:through`;
    const pending = put(d, k, 'late');
    want.set(k, '"late"');
    await sleep(500);
    assert.equal((await get(d, `wb:${run}:during3`)).body.value.i, 3, 'reads still served');
    await startPostgres();
    const r = await pending;
    assert.equal(r.status, 200);
    await eventually('every acknowledged write in L3', async () => {
      for (const [key, v] of want) if ((await pgValue(key)) !== v) return false;
      return true;
    });
    await eventually('healthz ok', async () => (await health(d)).status === 'ok');
  } finally {
    await startPostgres().catch(() => {});
    await d.stop();
  }
});
