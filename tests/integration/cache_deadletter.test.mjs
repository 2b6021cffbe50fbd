// Write-back dead letters, against the real Redis and PostgreSQL: an entry
// L3 refuses for good (here a CHECK constraint on the test's own L3 table,
// SQLSTATE 23514) is moved to the stream sophia:wb:dead with its key,
// value, tags, ttl, SQLSTATE and message, counted and removed from the
// journal, while the other entries of the same flush reach L3. Without a
// Redis that takes it, it stays in the journal and in the in-memory ring
// shown by /api/stats.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon, fetchJson, until } from './lib/daemon.mjs';
import { redisCommand, pgQuery, createDatabase, dropDatabase } from './lib/servers.mjs';

const run = `${process.pid}${Math.random().toString(36).slice(2, 6)}`;

// write_back with a long interval: nothing flushes unless asked.
const yaml = `
plugins:
  path: ["@PLUGIN_DIR@"]
  instances:
    wb:
      plugin: write_back
      options:
        flush_interval: 60
cache:
  write:
    default: wb
`;

const put = (d, key, body) =>
  fetchJson(`${d.url}/api/cache/${encodeURIComponent(key)}`, { method: 'PUT', body });
const fieldsOf = (kv) => Object.fromEntries(kv.reduce((a, v, i) => (i % 2 ? a : [...a, [v, kv[i + 1]]]), []));
const eventually = (what, fn) => until(fn, what, 10000, 50);

async function entries(stream, url) {
  const xs = await redisCommand(['XRANGE', stream, '-', '+'], { url });
  return xs.map(([id, kv]) => ({ id, ...fieldsOf(kv) }));
}

// A daemon on its own L3 database whose table refuses keys containing
// "poison" (the constraint is added once the daemon has created the table).
async function startWithPoisonedL3(env = {}) {
  const pgUrl = await createDatabase('deadletter');
  const d = await startDaemon({ yaml, env: { SOPHIA_PG_URL: pgUrl, ...env } });
  await eventually('L3 up', async () => (await fetchJson(`${d.url}/healthz`)).status === 200);
  await pgQuery("ALTER TABLE sophia_cache ADD CONSTRAINT no_poison CHECK (key NOT LIKE '%poison%')", { url: pgUrl });
  return { d, pgUrl };
}

async function l3Keys(pgUrl) {
  return (await pgQuery('SELECT key FROM sophia_cache ORDER BY key', { url: pgUrl })).map((r) => r[0]);
}

const deadTotal = async (d) =>
  Number((await fetchJson(`${d.url}/metrics`)).text.match(/^sophia_cache_writeback_dead_total (\d+)$/m)?.[1]);

test('a permanent L3 error dead-letters that entry; the rest of its batch reaches L3', async () => {
  const { d, pgUrl } = await startWithPoisonedL3();
  const keys = [`dl:${run}:good1`, `dl:${run}:poison`, `dl:${run}:good2`];
  let deadIds = [];
  try {
    for (const [i, k] of keys.entries()) {
      const r = await put(d, k, { value: { n: i }, ttl: 600, tags: ['dl', `dl${i}`] });
      assert.equal(r.status, 200, r.text);
    }
    const f = await fetchJson(`${d.url}/api/cache/flush`, { method: 'POST', body: {} });
    assert.equal(f.status, 200, f.text);

    const dead = await eventually('the dead letter', async () => {
      const xs = (await entries('sophia:wb:dead')).filter((e) => e.key === keys[1]);
      return xs.length ? xs : null;
    });
    deadIds = dead.map((e) => e.id);
    assert.equal(dead.length, 1);
    const e = dead[0];
    assert.equal(e.sqlstate, '23514');
    assert.match(e.error, /no_poison/);
    assert.equal(e.value, '{"n":1}');
    assert.equal(e.tags, 'dl\x1fdl1');
    assert.ok(Number(e.ttl_s) > 590 && Number(e.ttl_s) <= 600, e.ttl_s);
    assert.ok(Number(e.expires_ms) > Date.now());

    // The others of the same flush are in L3; the bad one is not.
    assert.deepEqual(await l3Keys(pgUrl), [keys[0], keys[2]].sort());
    assert.equal(await deadTotal(d), 1);
    const s = (await fetchJson(`${d.url}/api/stats`)).body.cache.write_back;
    assert.equal(s.dead, 1);
    assert.equal(s.flushed, 2);
    assert.deepEqual(s.dead_letters, [], 'in Redis, so not in the ring');
    assert.equal(s.dirty + s.flushing, 0, 'nothing left retrying');
    // Its journal entries are gone: it is in the dead stream instead.
    await eventually('journal cleared', async () =>
      !(await entries('sophia:wb:journal')).some((j) => keys.includes(j.k)));
    assert.ok(d.stderrLines.some((l) => /dead-lettered/.test(l) && l.includes(keys[1]) && /sqlstate=23514/.test(l)),
      'a log line names the key and the SQLSTATE');
  } finally {
    await d.stop();
    if (deadIds.length) await redisCommand(['XDEL', 'sophia:wb:dead', ...deadIds]);
    await dropDatabase(pgUrl);
  }
});

test('without a Redis that takes the dead letter it stays in the journal and in the ring in /api/stats', async () => {
  // A Redis database of its own, where sophia:wb:dead is not a stream, so
  // the XADD fails as it would with Redis gone.
  const redisUrl = new URL(process.env.SOPHIA_REDIS_URL);
  redisUrl.pathname = '/9';
  const url = redisUrl.toString();
  await redisCommand(['FLUSHDB'], { url });
  await redisCommand(['SET', 'sophia:wb:dead', 'not a stream'], { url });
  const { d, pgUrl } = await startWithPoisonedL3({ SOPHIA_REDIS_URL: url });
  const key = `dl:${run}:poison-ring`;
  try {
    assert.equal((await put(d, key, { value: 'x', ttl: 60 })).status, 200);
    assert.equal((await put(d, `dl:${run}:fine`, { value: 'y' })).status, 200);
    assert.equal((await fetchJson(`${d.url}/api/cache/flush`, { method: 'POST', body: {} })).status, 200);
    const s = await eventually('the ring entry', async () => {
      const w = (await fetchJson(`${d.url}/api/stats`)).body.cache.write_back;
      return w.dead_letters.length ? w : null;
    });
    assert.equal(s.dead, 1);
    assert.equal(s.dead_letters.length, 1);
    const e = s.dead_letters[0];
    assert.equal(e.key, key);
    assert.equal(e.value, '"x"');
    assert.equal(e.value_truncated, false);
    assert.equal(e.sqlstate, '23514');
    assert.match(e.error, /no_poison/);
    assert.equal(await deadTotal(d), 1);
    assert.deepEqual(await l3Keys(pgUrl), [`dl:${run}:fine`]);
    // Not lost: the journal still holds it for the next start.
    assert.ok((await entries('sophia:wb:journal', url)).some((j) => j.k === key));
  } finally {
    await d.stop();
    await redisCommand(['FLUSHDB'], { url });
    await dropDatabase(pgUrl);
  }
});

test('a transient L3 error (query canceled, 57014) is retried with back-off, not dead-lettered', async () => {
  const pgUrl = await createDatabase('deadletter');
  const d = await startDaemon({ yaml, env: { SOPHIA_PG_URL: pgUrl } });
  const key = `dl:${run}:transient`;
  try {
    await eventually('L3 up', async () => (await fetchJson(`${d.url}/healthz`)).status === 200);
    // Hold the table so the flush's INSERT waits, then cancel it while it
    // does. 5 s: with 1.5 s, a loaded machine (the sanitizer run) got the
    // put and the flush to PostgreSQL only after the lock was gone.
    const holder = pgQuery('BEGIN; LOCK TABLE sophia_cache IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(5); COMMIT;', { url: pgUrl });
    await eventually('the lock held', async () =>
      (await pgQuery("SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND granted " +
        "AND relation = 'sophia_cache'::regclass", { url: pgUrl }))[0][0] === '1');
    assert.equal((await put(d, key, { value: 'v', ttl: 600 })).status, 200);
    // The flush answers once the write committed, so only after the retry.
    const flushed = fetchJson(`${d.url}/api/cache/flush`, { method: 'POST', body: {} });
    const canceled = await eventually('the INSERT waiting, then canceled', async () => {
      const rows = await pgQuery("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' " +
        "AND query LIKE 'INSERT INTO sophia_cache%'", { url: pgUrl });
      return rows.length > 0 && rows.every((r) => r[0] === 't');
    });
    assert.ok(canceled);
    await holder;
    assert.equal((await flushed).status, 200);
    await eventually('the retried write in L3', async () => (await l3Keys(pgUrl)).includes(key));
    const c = (await fetchJson(`${d.url}/api/stats`)).body.cache;
    assert.ok(c.l3.write_backoffs >= 1, JSON.stringify(c.l3));
    assert.equal(c.write_back.dead, 0);
    assert.equal(await deadTotal(d), 0);
    assert.ok(d.stderrLines.some((l) => /will retry/.test(l) && /sqlstate=57014/.test(l)));
  } finally {
    await d.stop();
    await dropDatabase(pgUrl);
  }
});
