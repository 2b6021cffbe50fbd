// sophia-test: run-serial
// sophia-test: cost 43
// The event contract end to end (SPEC §11, issue 17): an event is
// acknowledged - its durable entry XACKed - only once every effect it
// produced is durable where its write strategy says. Each test ingests
// numbered events steadily into a durable stream whose processor (the
// `failer` test plugin) caches each event under its number, injects a
// fault, and then checks PostgreSQL itself: every event answered 202 has
// its put committed in L3, not only in the cache.
//  - sophiad killed with SIGKILL mid-stream and started again;
//  - PostgreSQL crashed (pg_ctl -m immediate) and restarted;
//  - Redis restarted (SHUTDOWN SAVE: the harness's Redis keeps no AOF, and
//    a Redis that forgets what it acknowledged is Redis's own durability,
//    README "Durable acceptance"): XACKs lost with the connection leave
//    entries pending, re-read and applied again, none missing;
//  - a write-back set too small for the traffic (max_dirty 4, a slow
//    flush): puts refused with EBUSY turn events into RETRYs with back-off,
//    and all of them land, none dropped; each is published once (publishes
//    wait until the event's other effects are durable);
//  - an event that keeps failing reaches the dead letter with its reason
//    after max_attempts, the back-off visible in the time it took.
// Each test prints one `contract:` line with its counts.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startDaemon, fetchJson, freePort, timeoutScale, until, wsConnect, nextMessage,
} from './lib/daemon.mjs';
import {
  redisCommand, redisAddress, tcpProbe, pgAddress, pgQuery, createDatabase, dropDatabase,
  stopPostgres, startPostgres, startRedis,
} from './lib/servers.mjs';
import { unlink } from 'node:fs/promises';
import path from 'node:path';

const run = `${process.pid}${Math.random().toString(36).slice(2, 6)}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const eventually = (what, fn, ms = 30000 * timeoutScale) => until(fn, what, ms, 100);
const keys = [];
after(async () => {
  for (const k of keys) await redisCommand(['DEL', k, `${k}:dead`]).catch(() => {});
});

// synchronous_commit on for this database: a commit sophiad hears of is in
// the WAL and survives the server crash (see faults.test.mjs).
async function durableDatabase() {
  const url = await createDatabase('contract');
  const { database } = pgAddress(url);
  await pgQuery(`ALTER DATABASE ${database} SET synchronous_commit = on`);
  return url;
}

function yaml(name, { extra = '', cache = '', sleepMarkers = true } = {}) {
  const key = `sophia:test:contract:${run}:${name}`;
  keys.push(key);
  return `
plugins:
  path: ["@TEST_PLUGIN_DIR@", "@PLUGIN_DIR@"]
  instances:
    failer:
      plugin: failer
      options: {topic: "c:${run}", cache_prefix: "c:${run}:${name}:", sleep: ${sleepMarkers}}
${cache}
streams:
  ct:
    processor: failer
    durable: true
    queue_size: 50000
    batch_size: 16
${extra}
    redis:
      key: ${key}
      group: g
      consumer: A
      block: 200ms
      claim_idle: 5s
`;
}

// Posts bodies of 10 numbered events until stopped; a body answered 202
// is accepted, anything else (503, refused connection) is not.
function producer(getUrl, { mark = {} } = {}) {
  let next = 0;
  let stopped = false;
  const accepted = [];
  let refused = 0;
  const loop = async () => {
    while (!stopped) {
      const body = Array.from({ length: 10 }, () => ({ n: next++, ...mark }));
      try {
        const r = await fetchJson(`${getUrl()}/ingest/ct`, { method: 'POST', body, timeoutMs: 5000 });
        if (r.status === 202) {
          accepted.push(...body.map((e) => e.n));
          await sleep(10);
          continue;
        }
      } catch { /* down: try again */ }
      refused += body.length;
      await sleep(30);
    }
  };
  const done = Promise.all([loop(), loop()]);
  return { accepted, get refused() { return refused; }, get sent() { return next; }, stop: async () => { stopped = true; await done; } };
}

// The event numbers whose put is committed in L3 (the test's database).
async function inL3(pgUrl, name) {
  const prefix = `c:${run}:${name}:`;
  const rows = await pgQuery(`SELECT key FROM sophia_cache WHERE key LIKE '${prefix}%'`, { url: pgUrl });
  return new Set(rows.map(([k]) => Number(k.slice(prefix.length))));
}

async function allInL3(pgUrl, name, accepted, d) {
  let have = new Set();
  const missing = () => accepted.filter((n) => !have.has(n));
  await eventually('every accepted event committed in L3', async () => {
    have = await inL3(pgUrl, name);
    return missing().length === 0;
  }).catch((err) => {
    err.message += `: ${missing().length} of ${accepted.length} missing, e.g. ${missing().slice(0, 5).join(' ')}`;
    return (d ? fetchJson(`${d.url}/api/stats`) : Promise.resolve(null)).then((r) => {
      if (r) err.message += `; stream ${JSON.stringify({ ...r.body.streams.ct, dead_letters: undefined })}` +
        `; write_back ${JSON.stringify(r.body.cache.write_back)}`;
      throw err;
    }, () => { throw err; });
  });
  return have;
}

const streamStats = async (d) => (await fetchJson(`${d.url}/api/stats`)).body.streams.ct;

test('sophiad SIGKILLed mid-stream: every event answered 202 has its effect in PostgreSQL', async () => {
  const pgUrl = await durableDatabase();
  const port = await freePort();
  const y = yaml('kill');
  const env = { SOPHIA_PG_URL: pgUrl };
  let d = await startDaemon({ yaml: y, env, port });
  try {
    await d.waitForStderr(/redis-source msg="reading"/);
    const p = producer(() => d.url, { mark: { sleep_ms: 1 } });
    await sleep(1500);
    const before = await streamStats(d);
    await d.stop('SIGKILL');
    d = await startDaemon({ yaml: y, env, port });
    await sleep(1500);
    await p.stop();
    const have = await allInL3(pgUrl, 'kill', p.accepted, d);
    await eventually('nothing pending', async () => (await redisCommand(['XPENDING', keys.at(-1), 'g']))[0] === 0);
    const s = await streamStats(d);
    console.log(`contract: sigkill sent=${p.sent} accepted=${p.accepted.length} refused=${p.refused} ` +
      `in_l3=${have.size} processed_before_kill=${before.processed} inflight_at_kill=${before.inflight} ` +
      `processed_after=${s.processed} dead=${s.dead}`);
    assert.ok(p.accepted.length >= 300, `steady traffic (${p.accepted.length} accepted)`);
    assert.equal(s.dead, 0);
  } finally {
    await d.stop();
    await dropDatabase(pgUrl);
  }
});

test('PostgreSQL crashed and restarted mid-stream: every event answered 202 has its effect in PostgreSQL', async () => {
  const pgUrl = await durableDatabase();
  const d = await startDaemon({ yaml: yaml('pg', { sleepMarkers: false }), env: { SOPHIA_PG_URL: pgUrl } });
  let pgBack = false;
  try {
    await d.waitForStderr(/redis-source msg="reading"/);
    const p = producer(() => d.url);
    await sleep(1000);
    await stopPostgres('immediate');
    await sleep(1000);
    const during = await streamStats(d);
    await startPostgres();
    pgBack = true;
    await sleep(1500);
    await p.stop();
    const have = await allInL3(pgUrl, 'pg', p.accepted, d);
    await eventually('nothing pending', async () => (await redisCommand(['XPENDING', keys.at(-1), 'g']))[0] === 0);
    const s = await streamStats(d);
    console.log(`contract: pg-crash sent=${p.sent} accepted=${p.accepted.length} refused=${p.refused} ` +
      `in_l3=${have.size} inflight_while_down=${during.inflight} processed=${s.processed} ` +
      `retried=${s.retried} effect_failures=${s.effect_failures} dead=${s.dead}`);
    assert.ok(p.accepted.length >= 300, `steady traffic (${p.accepted.length} accepted)`);
    assert.ok(during.inflight > 0, 'events waited in flight for L3 while it was down');
    assert.equal(s.dead, 0);
  } finally {
    if (!pgBack) await startPostgres().catch(() => {});
    await d.stop();
    await dropDatabase(pgUrl);
  }
});

test('Redis restarted mid-stream: every event answered 202 has its effect in PostgreSQL', async () => {
  const pgUrl = await durableDatabase();
  const d = await startDaemon({ yaml: yaml('redis', { sleepMarkers: false }), env: { SOPHIA_PG_URL: pgUrl } });
  const [, dir] = await redisCommand(['CONFIG', 'GET', 'dir']);
  const [, file] = await redisCommand(['CONFIG', 'GET', 'dbfilename']);
  let redisBack = false;
  try {
    await d.waitForStderr(/redis-source msg="reading"/);
    const p = producer(() => d.url);
    await sleep(1000);
    await redisCommand(['SHUTDOWN', 'SAVE']).catch(() => {}); // answers by closing
    const { host, port } = redisAddress();
    await eventually('redis port closed', async () => !(await tcpProbe(host, port, 500)), 10000);
    await sleep(1000);
    await startRedis();
    redisBack = true;
    // The snapshot served its turn: no later restart of the shared Redis
    // may load it again.
    await unlink(path.join(dir, file)).catch(() => {});
    await sleep(1500);
    await p.stop();
    const have = await allInL3(pgUrl, 'redis', p.accepted, d);
    await eventually('nothing pending', async () => (await redisCommand(['XPENDING', keys.at(-1), 'g']))[0] === 0);
    const s = await streamStats(d);
    console.log(`contract: redis-restart sent=${p.sent} accepted=${p.accepted.length} refused=${p.refused} ` +
      `in_l3=${have.size} processed=${s.processed} received=${s.received} dead=${s.dead}`);
    assert.ok(p.accepted.length >= 300, `steady traffic (${p.accepted.length} accepted)`);
    assert.ok(p.refused > 0, 'ingest refused while Redis was down (durable: 503)');
    assert.equal(s.dead, 0);
  } finally {
    if (!redisBack) {
      await startRedis().catch(() => {});
      await unlink(path.join(dir, file)).catch(() => {});
    }
    await d.stop();
    await dropDatabase(pgUrl);
  }
});

test('a full write-back set: refused puts turn into RETRYs with back-off, then land; none dropped', async () => {
  const pgUrl = await durableDatabase();
  const cache = `
    wb:
      plugin: write_back
      options: {flush_interval: 0.5, flush_batch: 1000, max_dirty: 4}
cache:
  write:
    default: wb`;
  const extra = '    max_attempts: 50\n    retry_base: 20ms\n    retry_cap: 200ms';
  const d = await startDaemon({ yaml: yaml('wb', { cache, extra, sleepMarkers: false }), env: { SOPHIA_PG_URL: pgUrl } });
  const ws = await wsConnect(d.wsUrl);
  try {
    ws.send(JSON.stringify({ type: 'subscribe', subscriptions: [`c:${run}`] }));
    await nextMessage(ws, 'subscribed');
    const heard = new Map(); // n -> times published
    const order = [];
    ws.on('message', (raw) => {
      const m = JSON.parse(raw.toString('utf8'));
      if (m.type !== 'data' || m.topic !== `c:${run}`) return;
      heard.set(m.data.n, (heard.get(m.data.n) || 0) + 1);
      order.push(m.data.n);
    });
    await d.waitForStderr(/redis-source msg="reading"/);
    const p = producer(() => d.url);
    await sleep(2000);
    await p.stop();
    const have = await allInL3(pgUrl, 'wb', p.accepted, d);
    await eventually('every event published', async () => heard.size >= p.accepted.length);
    const s = await streamStats(d);
    const wb = (await fetchJson(`${d.url}/api/stats`)).body.cache.write_back;
    console.log(`contract: write-back-full accepted=${p.accepted.length} in_l3=${have.size} ` +
      `processed=${s.processed} retried=${s.retried} effect_failures=${s.effect_failures} ` +
      `wb_refused=${wb?.refused} dead=${s.dead} published=${heard.size}`);
    assert.ok(p.accepted.length >= 100, `steady traffic (${p.accepted.length} accepted)`);
    assert.ok(s.retried > 0 && s.effect_failures > 0, 'puts were refused and the events retried');
    assert.equal(s.dead, 0, 'none dropped');
    assert.ok(s.processed >= p.accepted.length);
    await sleep(300); // a second publish would arrive now
    const twice = [...heard].filter(([, c]) => c > 1);
    assert.deepEqual(twice, [], 'a retried event is published once, when it commits');
    // A body's 10 events are consecutive numbers, in order in the Redis
    // stream: they are published in that order, retries or not.
    const last = new Map(); // body -> last n heard
    const outOfOrder = order.filter((n) => {
      const b = Math.floor(n / 10);
      const bad = last.has(b) && last.get(b) > n;
      last.set(b, n);
      return bad;
    });
    assert.deepEqual(outOfOrder, [], 'publishes in stream order');
  } finally {
    ws.close();
    await d.stop();
    await dropDatabase(pgUrl);
  }
});

test('an event that keeps failing reaches the dead letter with its reason after max_attempts, backing off', async () => {
  const extra = '    max_attempts: 5\n    retry_base: 200ms\n    retry_cap: 2s';
  const d = await startDaemon({ yaml: yaml('dead', { extra, sleepMarkers: false }) });
  const key = keys.at(-1);
  try {
    await d.waitForStderr(/redis-source msg="reading"/);
    const t0 = Date.now();
    const r = await fetchJson(`${d.url}/ingest/ct`, { method: 'POST', body: [{ n: 1, retry: true }, { n: 2 }] });
    assert.equal(r.status, 202);
    const dead = await eventually('a dead letter', async () => {
      const x = await redisCommand(['XRANGE', `${key}:dead`, '-', '+']);
      return x.length ? x : null;
    });
    const took = Date.now() - t0;
    const f = Object.fromEntries(dead[0][1].reduce((acc, v, i) => (i % 2 ? acc[acc.length - 1].push(v) : acc.push([v]), acc), []));
    const s = await streamStats(d);
    console.log(`contract: dead-letter took_ms=${took} retried=${s.retried} reason="${f._reason}"`);
    assert.equal(f._reason, 'processor retry (5 attempts)');
    assert.deepEqual(JSON.parse(f.data), { n: 1, retry: true });
    assert.equal(s.retried, 4);
    assert.equal(s.dead, 1);
    assert.equal(s.dead_reasons.retry_exhausted, 1);
    // Full jitter over 0.2, 0.4, 0.8, 1.6 s: the mean total is 1.5 s; below
    // 150 ms would mean no back-off at all (4 draws all under ~4%).
    assert.ok(took >= 150, `backed off (${took} ms)`);
    // The event behind it waited for it (head of the queue), then went on.
    assert.equal(s.processed, 1);
    await eventually('nothing pending', async () => (await redisCommand(['XPENDING', key, 'g']))[0] === 0);
  } finally {
    await d.stop();
  }
});

test('a stream not fed from Redis: dead letters in the /api/stats ring with their reason, counted in /metrics', async () => {
  const d = await startDaemon({
    yaml: `
plugins:
  path: ["@TEST_PLUGIN_DIR@"]
  instances:
    failer:
      plugin: failer
      options: {topic: "ring:${run}", cache_prefix: "ring:${run}:", sleep: false}
streams:
  mem:
    processor: failer
    durable: false
    max_attempts: 2
    retry_base: 50ms
    retry_cap: 100ms
`,
  });
  try {
    const r = await fetchJson(`${d.url}/ingest/mem`, {
      method: 'POST', body: [{ n: 1, fail: true }, { n: 2, retry: true }, { n: 3 }],
    });
    assert.equal(r.status, 202);
    const s = await eventually('two dead letters', async () => {
      const x = (await fetchJson(`${d.url}/api/stats`)).body.streams.mem;
      return x.dead === 2 && x.processed === 1 ? x : null;
    });
    assert.deepEqual(s.dead_letters.map((e) => [e.event.n, e.reason, e.attempts]), [
      [1, 'processor error', 0],
      [2, 'processor retry (2 attempts)', 2],
    ]);
    assert.deepEqual(s.dead_reasons, { processor_error: 1, retry_exhausted: 1, effect_exhausted: 0 });
    assert.equal(s.retried, 1);
    assert.equal(s.inflight, 0);
    const metrics = await (await fetch(`${d.url}/metrics`)).text();
    assert.match(metrics, /^sophia_stream_dead_letters_total\{stream="mem"\} 2$/m);
    assert.match(metrics, /^sophia_stream_events_retried_total\{stream="mem"\} 1$/m);
    assert.match(metrics, /^sophia_stream_inflight\{stream="mem"\} 0$/m);
  } finally {
    await d.stop();
  }
});
