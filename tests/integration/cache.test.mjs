// The tiered cache over HTTP, against the real Redis and PostgreSQL: each
// write strategy's visible behaviour (what is in Redis and PostgreSQL when
// the PUT answers), tag invalidation across tiers, promotion, bad input,
// stats and metrics, and write-back surviving SIGTERM and kill -9 between
// the acknowledgement and the flush.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon, runSophiad, fetchJson, wsConnect, sendJson, nextMessage, until } from './lib/daemon.mjs';
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { redisCommand, pgQuery } from './lib/servers.mjs';

const run = `${process.pid}${Math.random().toString(36).slice(2, 6)}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// write_back with a long interval: nothing flushes unless asked.
const yaml = (interval = '60') => `
plugins:
  path: ["@PLUGIN_DIR@"]
  instances:
    wt:
      plugin: write_through
    wb:
      plugin: write_back
      options:
        flush_interval: ${interval}
    wa:
      plugin: write_around
cache:
  write:
    default: wt
    prefixes:
      "wb:": wb
      "wa:": wa
`;

const put = (d, key, body) =>
  fetchJson(`${d.url}/api/cache/${encodeURIComponent(key)}`, { method: 'PUT', body: JSON.stringify(body) });
const get = (d, key) => fetchJson(`${d.url}/api/cache/${encodeURIComponent(key)}`);
const post = (d, path, body) =>
  fetchJson(`${d.url}/api/cache/${path}`, { method: 'POST', body: JSON.stringify(body) });

async function pgValue(key) {
  const rows = await pgQuery(
    `SELECT convert_from(value, 'UTF8') FROM sophia_cache WHERE key = '${key}' ` +
      `AND (expires_at IS NULL OR expires_at > now())`,
  );
  return rows.length ? rows[0][0] : null;
}

const redisValue = (key) => redisCommand(['GET', `sophia:c:${key}`]);

async function journalHas(key) {
  const entries = await redisCommand(['XRANGE', 'sophia:wb:journal', '-', '+']);
  return entries.some(([, kv]) => kv[1] === key);
}

const eventually = (what, fn, ms = 10000) => until(fn, what, ms, 50);

test('write_through: every tier has the value when the PUT answers', async () => {
  const d = await startDaemon({ yaml: yaml() });
  try {
    const key = `wt:${run}:a`;
    const r = await put(d, key, { value: { n: 1 }, ttl: 60, tags: ['t1'] });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.strategy, 'wt');
    assert.equal(await pgValue(key), '{"n":1}');
    assert.match(await redisValue(key), /t1\n\{"n":1\}$/);
    const g = await get(d, key);
    assert.equal(g.status, 200);
    assert.deepEqual(g.body.value, { n: 1 });
    assert.equal(g.body.tier, 'l1');
  } finally {
    await d.stop();
  }
});

test('write_around: L3 only; the next read comes from L3 and is promoted', async () => {
  const d = await startDaemon({ yaml: yaml() });
  try {
    const key = `wa:${run}:b`;
    assert.equal((await put(d, key, { value: 'old' })).status, 200);
    const r = await put(d, key, { value: 'new' });
    assert.equal(r.body.strategy, 'wa');
    assert.equal(await pgValue(key), '"new"');
    assert.equal(await redisValue(key), null);
    const g1 = await get(d, key);
    assert.equal(g1.body.value, 'new');
    assert.equal(g1.body.tier, 'l3');
    assert.equal((await get(d, key)).body.tier, 'l1');
    await eventually('promoted into L2', async () => (await redisValue(key)) !== null);
  } finally {
    await d.stop();
  }
});

test('write_back: acked after L1 + journal; L2/L3 only after the flush', async () => {
  const d = await startDaemon({ yaml: yaml() });
  try {
    const key = `wb:${run}:c`;
    const r = await put(d, key, { value: 42 });
    assert.equal(r.status, 200);
    assert.equal(r.body.strategy, 'wb');
    assert.ok(await journalHas(key), 'journal entry written before the ack');
    assert.equal(await pgValue(key), null);
    assert.equal(await redisValue(key), null);
    assert.equal((await get(d, key)).body.value, 42);
    let s = (await fetchJson(`${d.url}/api/stats`)).body.cache;
    assert.ok(s.write_back.dirty >= 1);
    assert.equal((await post(d, 'flush', {})).status, 200);
    assert.equal(await pgValue(key), '42');
    await eventually('journal trimmed', async () => !(await journalHas(key)));
    assert.notEqual(await redisValue(key), null);
    s = (await fetchJson(`${d.url}/api/stats`)).body.cache;
    assert.equal(s.write_back.dirty, 0);
  } finally {
    await d.stop();
  }
});

// The cache resolves its write strategies when it is bound to a plugin set
// (at start and on every reload), not by name on each put: a reload that
// replaces the instance behind a prefix must be followed at once.
test('reload: a prefix whose instance changes plugin follows the new one', async () => {
  const d = await startDaemon({ yaml: yaml() });
  try {
    const before = `wa:${run}:r1`;
    assert.equal((await put(d, before, { value: 1 })).body.strategy, 'wa');
    assert.equal(await redisValue(before), null); // write-around: not in L2
    const reloads = (await fetchJson(`${d.url}/api/stats`)).body.reload.reloads;
    await d.writeConfig(yaml().replace('plugin: write_around', 'plugin: write_through'));
    d.signal('SIGHUP');
    await eventually('the reload', async () =>
      (await fetchJson(`${d.url}/api/stats`)).body.reload.reloads > reloads);
    const after = `wa:${run}:r2`;
    const r = await put(d, after, { value: 2 });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.strategy, 'wa');
    assert.match(await redisValue(after), /2$/); // write-through: L2 at the ack
    assert.equal(await pgValue(after), '2');
  } finally {
    await d.stop();
  }
});

// The start-up replay (200 ms after start) flushes what a previous run
// left in the journal, not this run's own puts: those wait for their
// strategy's interval (60 s here) however the replay and the put interleave.
test('write_back: a put made before the start-up replay is not flushed by it', async () => {
  const d = await startDaemon({ yaml: yaml() });
  try {
    const key = `wb:${run}:early`;
    assert.equal((await put(d, key, { value: 7 })).status, 200);
    await sleep(1000); // the replay polls 200 ms after start and ends at once
    assert.equal(await pgValue(key), null);
    assert.ok((await fetchJson(`${d.url}/api/stats`)).body.cache.write_back.dirty >= 1);
  } finally {
    await d.stop();
  }
});

test('write_back: SIGTERM flushes what was acknowledged', async () => {
  const d = await startDaemon({ yaml: yaml() });
  const key = `wb:${run}:term`;
  assert.equal((await put(d, key, { value: 'bye' })).status, 200);
  assert.equal(await pgValue(key), null);
  const st = await d.stop('SIGTERM');
  assert.equal(st.code, 0);
  assert.equal(await pgValue(key), '"bye"');
});

test('write_back: kill -9 between ack and flush; the journal replays into L3', async () => {
  const d1 = await startDaemon({ yaml: yaml() });
  const key = `wb:${run}:crash`;
  assert.equal((await put(d1, key, { value: { survived: true } })).status, 200);
  await d1.stop('SIGKILL');
  assert.equal(await pgValue(key), null, 'not flushed before the crash');
  assert.ok(await journalHas(key));
  const d2 = await startDaemon({ yaml: yaml() });
  try {
    await eventually('replayed value in L3', async () => (await pgValue(key)) === '{"survived":true}');
    await eventually('journal trimmed', async () => !(await journalHas(key)));
    const g = await get(d2, key);
    assert.deepEqual(g.body.value, { survived: true });
  } finally {
    await d2.stop();
  }
});

test('tag and key invalidation reach every tier', async () => {
  const d = await startDaemon({ yaml: yaml() });
  try {
    const tag = `user_data_${run}`;
    const a = `wt:${run}:ta`, b = `wt:${run}:tb`, c = `wt:${run}:tc`;
    for (const k of [a, b]) assert.equal((await put(d, k, { value: k, tags: [tag, 'other'] })).status, 200);
    assert.equal((await put(d, c, { value: c })).status, 200);
    const r = await post(d, 'invalidate', { tags: [tag], keys: [c] });
    assert.equal(r.status, 200);
    assert.deepEqual(r.body.invalidated, { keys: 1, tags: 1 });
    for (const k of [a, b, c]) {
      assert.equal((await get(d, k)).status, 404, k);
      assert.equal(await pgValue(k), null, k);
      assert.equal(await redisValue(k), null, k);
    }
    const k2 = `wt:${run}:del`;
    await put(d, k2, { value: 1 });
    assert.equal((await fetchJson(`${d.url}/api/cache/${k2}`, { method: 'DELETE' })).status, 200);
    assert.equal((await get(d, k2)).status, 404);
    assert.equal(await pgValue(k2), null);
  } finally {
    await d.stop();
  }
});

test('a value only in L2/L3 is found by a fresh daemon, promoted, and counted', async () => {
  const d1 = await startDaemon({ yaml: yaml() });
  const key = `wt:${run}:promo`;
  await put(d1, key, { value: 'p', ttl: 60 });
  await d1.stop();
  // d1 recorded the key as hot on its way out, and d2 would warm L1 with it
  // (when it ranks among the top keys of this Redis): taken off that list,
  // the key is only in L2/L3.
  await redisCommand(['ZREM', 'sophia:hot', key]);
  const d2 = await startDaemon({ yaml: yaml() });
  try {
    // "Ready" is any /healthz answer; the L3 miss counted below needs the
    // PostgreSQL pool up (a get skips a tier that is still connecting).
    await eventually('every tier up', async () => (await fetchJson(`${d2.url}/healthz`)).status === 200);
    const g = await get(d2, key);
    assert.equal(g.body.tier, 'l2');
    assert.equal((await get(d2, key)).body.tier, 'l1');
    assert.equal((await get(d2, `wt:${run}:nope`)).status, 404);
    const s = (await fetchJson(`${d2.url}/api/stats`)).body.cache;
    assert.ok(s.l2.hits >= 1);
    assert.ok(s.l1.hits >= 1);
    assert.ok(s.l3.misses >= 1);
    for (const t of ['l1', 'l2', 'l3']) {
      for (const f of ['hits', 'misses', 'hit_rate', 'p50_us', 'p99_us']) assert.ok(f in s[t], `${t}.${f}`);
    }
    const m = await fetch(`${d2.url}/metrics`).then((x) => x.text());
    assert.match(m, /sophia_cache_hits_total\{tier="l2"\} [1-9]/);
    assert.match(m, /sophia_cache_latency_us\{tier="l1",quantile="0.99"\}/);
  } finally {
    await d2.stop();
  }
});

test('bad input gets a clear 4xx and the daemon keeps serving', async () => {
  const d = await startDaemon({ yaml: yaml() });
  try {
    const k = `wt:${run}:bad`;
    const cases = [
      ['{not json', 'bad_json'],
      ['[1,2]', 'bad_json'],
      [JSON.stringify({ ttl: 5 }), 'bad_request'],
      [JSON.stringify({ value: 1, ttl: -1 }), 'bad_ttl'],
      [JSON.stringify({ value: 1, tags: 'x' }), 'bad_request'],
      [JSON.stringify({ value: 1, tags: ['a\nb'] }), 'bad_request'],
    ];
    for (const [body, code] of cases) {
      const r = await fetchJson(`${d.url}/api/cache/${k}`, { method: 'PUT', body });
      assert.equal(r.status, 400, body);
      assert.equal(r.body.error.code, code, body);
    }
    assert.equal((await fetchJson(`${d.url}/api/cache/bad%ff`)).body.error.code, 'bad_key'); // more in cache_keys
    assert.equal((await post(d, 'invalidate', { tags: 'x' })).status, 400);
    assert.equal((await fetchJson(`${d.url}/api/cache/invalidate`, { method: 'PUT', body: '{}' })).status, 405);
    assert.equal((await fetchJson(`${d.url}/healthz`)).status, 200);
  } finally {
    await d.stop();
  }
});

test('warming: hot keys recorded by one run are loaded into L1 by the next', async () => {
  const d1 = await startDaemon({ yaml: yaml() });
  const key = `wt:${run}:hot`;
  await put(d1, key, { value: 'warm' });
  for (let i = 0; i < 20; i++) await get(d1, key);
  await d1.stop(); // SIGTERM records the hot keys
  const score = await redisCommand(['ZSCORE', 'sophia:hot', key]);
  assert.ok(Number(score) > 0, 'recorded in sophia:hot');
  const d2 = await startDaemon({ yaml: yaml() });
  try {
    // sophia:hot holds every test's hot keys, loaded in batches: wait for
    // the end of the whole warm-up (its log line), not its first key,
    // which under load came well before this one.
    await eventually('warmed at start', async () => d2.stderrLines.some((l) => /L1 warmed/.test(l)), 10000);
    assert.equal((await get(d2, key)).body.tier, 'l1', 'in L1 before anyone asked');
    const r = await post(d2, 'warm', { count: 10 });
    assert.equal(r.status, 200);
    assert.ok(r.body.warmed >= 1);
  } finally {
    await d2.stop();
  }
});

test('WS request cache.get reads through the tiers', async () => {
  const d = await startDaemon({ yaml: yaml() });
  try {
    const key = `wt:${run}:ws`;
    await put(d, key, { value: { via: 'ws' } });
    const ws = await wsConnect(d.wsUrl);
    sendJson(ws, { type: 'request', id: 'r1', method: 'cache.get', params: { key } });
    const m = await nextMessage(ws, (x) => x.id === 'r1');
    assert.equal(m.type, 'response');
    assert.deepEqual(m.data.value, { via: 'ws' });
    assert.equal(m.data.tier, 'l1');
    sendJson(ws, { type: 'request', id: 'r2', method: 'cache.get', params: { key: `${key}:none` } });
    const e = await nextMessage(ws, (x) => x.id === 'r2');
    assert.equal(e.type, 'error');
    assert.equal(e.error.code, 'not_found');
    sendJson(ws, { type: 'request', id: 'r3', method: 'cache.get', params: {} });
    assert.equal((await nextMessage(ws, (x) => x.id === 'r3')).error.code, 'bad_request');
    ws.close();
  } finally {
    await d.stop();
  }
});

test('write_back: a full dirty set refuses puts with 503 + Retry-After, then recovers', async () => {
  const y = yaml().replace('flush_interval: 60', 'flush_interval: 60\n        max_dirty: 2');
  const d = await startDaemon({ yaml: y });
  try {
    const codes = [];
    for (let i = 0; i < 3; i++) codes.push((await put(d, `wb:${run}:bp${i}`, { value: i })).status);
    assert.deepEqual(codes, [200, 200, 503]);
    const r = await fetchJson(`${d.url}/api/cache/wb:${run}:bpx`, { method: 'PUT', body: '{"value":1}' });
    if (r.status === 503) {
      assert.equal(r.body.error.code, 'busy');
      assert.equal(r.headers.get('retry-after'), '1');
    }
    // The refusal started a flush: the set drains and puts go through again.
    await eventually('accepted again', async () => (await put(d, `wb:${run}:bp2`, { value: 2 })).status === 200);
    assert.equal((await post(d, 'flush', {})).status, 200);
    for (let i = 0; i < 3; i++) assert.equal(await pgValue(`wb:${run}:bp${i}`), String(i));
    assert.ok((await fetchJson(`${d.url}/api/stats`)).body.cache.write_back.refused >= 1);
  } finally {
    await d.stop();
  }
});

// Per-tier TTLs (cache.l1/l2/l3.ttl): each tier keeps an entry at most its
// own ttl; a put without ttl gets the longest one; a put with a shorter ttl
// wins everywhere; a promotion keeps the remaining lifetime capped by the
// receiving tier's ttl. The pool size shows in /api/stats.
test('per-tier TTLs: L1 expires first, then L2, L3 keeps the entry longest', async () => {
  const y = `${yaml()}  l1:\n    ttl: 1\n  l2:\n    ttl: 3\n  l3:\n    ttl: 60\n    pool: 2\n`;
  const d = await startDaemon({ yaml: y });
  try {
    const key = `wt:${run}:tiers`;
    const short = `wt:${run}:short`;
    const t0 = Date.now();
    assert.equal((await put(d, key, { value: 'v' })).status, 200);
    assert.equal((await put(d, short, { value: 's', ttl: 0.8 })).status, 200);
    const pttl = (k) => redisCommand(['PTTL', `sophia:c:${k}`]);
    const pgLeft = async (k) =>
      Number((await pgQuery(`SELECT extract(epoch FROM expires_at - now()) FROM sophia_cache WHERE key = '${k}'`))[0][0]);
    // No ttl: L2 gets cache.l2.ttl, L3 the longest tier ttl (60 s).
    const p = await pttl(key);
    assert.ok(p > 0 && p <= 3000, `L2 PTTL ${p}`);
    const left = await pgLeft(key);
    assert.ok(left > 50 && left <= 60, `L3 expires in ${left} s`);
    // A ttl shorter than every tier's wins in each of them.
    assert.ok((await pttl(short)) <= 800);
    assert.ok((await pgLeft(short)) <= 0.8);
    assert.equal((await get(d, key)).body.tier, 'l1');

    await sleep(Math.max(0, t0 + 1200 - Date.now()));
    let g = await get(d, key);
    assert.equal(g.status, 200);
    assert.equal(g.body.tier, 'l2', 'L1 (1 s) expired, L2 (3 s) still has it');
    assert.equal((await get(d, short)).status, 404, 'a 0.8 s put is gone from every tier');

    await sleep(Math.max(0, t0 + 3300 - Date.now()));
    assert.equal(await pttl(key), -2, 'L2 dropped it after its 3 s');
    g = await get(d, key);
    assert.equal(g.status, 200);
    assert.equal(g.body.tier, 'l3');
    assert.deepEqual(g.body.value, 'v');
    // Promoted back into L2 for at most L2's ttl, not L3's remaining ~57 s.
    // The promotion is a write after the answer, which now leaves at once,
    // so it may reach Redis just after the client read the answer.
    let again = -2;
    await eventually('promoted into L2', async () => (again = await pttl(key)) > 0, 2000);
    assert.ok(again > 0 && again <= 3000, `promoted PTTL ${again}`);
    const l3 = (await fetchJson(`${d.url}/api/stats`)).body.cache.l3;
    assert.equal(l3.connections, 2);
    assert.equal(l3.connections_up, 2);
  } finally {
    await d.stop();
  }
});

test('--check: a bad cache.l3.pool or tier ttl is named with FILE:LINE:COL', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sophia-cache-'));
  try {
    const file = join(dir, 'bad.yaml');
    writeFileSync(file, 'cache:\n  l3:\n    pool: 65\n  l2:\n    ttl: -1\n');
    const r = await runSophiad(['--check', '-c', file], { SOPHIA_REDIS_URL: '', SOPHIA_PG_URL: '' });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /bad\.yaml:3:11: cache\.l3\.pool: '65' is not a connection count from 1 to 64/);
    assert.match(r.stderr, /bad\.yaml:5:10: cache\.l2\.ttl: '-1' is not a duration/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
