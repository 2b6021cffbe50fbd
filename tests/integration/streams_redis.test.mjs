// Redis Streams as a source, against the real Redis of the harness:
// at-least-once delivery with effects exactly once across a consumer that
// dies mid-batch, work shared by two sophiad processes in one group,
// dead-lettering after N failed deliveries, and reads paused (not
// refused) while the stream queue is full.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon, fetchJson, wsConnect, nextMessage, until as waitUntil } from './lib/daemon.mjs';
import { redisCommand } from './lib/servers.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const run = `${process.pid}-${Date.now()}`;
const keys = [];

function yaml(key, { consumer, sleepMarkers = true, queue = 1000, count = 10, batch = 256 } = {}) {
  return `
plugins:
  path: ["@TEST_PLUGIN_DIR@"]
  instances:
    failer:
      plugin: failer
      options: {topic: rs, cache_prefix: "rs:${key}:", sleep: ${sleepMarkers}}
streams:
  rs:
    processor: failer
    queue_size: ${queue}
    batch_size: ${batch}
    redis:
      key: ${key}
      group: g
      consumer: ${consumer}
      count: ${count}
      block: 200ms
      claim_idle: 300ms
      dead_letter_after: 3
`;
}

function newKey(name) {
  const k = `sophia:test:${run}:${name}`;
  keys.push(k, `${k}:dead`);
  return k;
}

after(async () => {
  for (const k of keys) await redisCommand(['DEL', k]).catch(() => {});
});

const xadd = (key, obj) => redisCommand(['XADD', key, '*', 'data', typeof obj === 'string' ? obj : JSON.stringify(obj)]);
const pendingCount = async (key) => (await redisCommand(['XPENDING', key, 'g']))[0];
const rsStats = async (d) => (await fetchJson(`${d.url}/api/stats`)).body.streams.rs;

const until = (fn, what, ms = 10000) => waitUntil(fn, what, ms, 50);

async function subscribe(d) {
  const ws = await wsConnect(d.wsUrl);
  // since 0: what the daemon published before this subscription too (a
  // claim can run before a test gets to subscribe)
  ws.send(JSON.stringify({ type: 'subscribe', subscriptions: ['rs'], since: { rs: 0 } }));
  await nextMessage(ws, 'subscribed');
  return ws;
}

test('a consumer killed mid-batch: a second one claims its entries; every effect exactly once', async () => {
  const key = newKey('kill');
  // A, ready and blocked in XREADGROUP, gets all 10 entries in one read
  // (a script adds them atomically), stalls in entry 3 (its loop stops, so
  // nothing of the batch is acked: XACKs leave a loop turn after the
  // batch) and dies there. Nobody watches A's publications: the effects
  // counted are B's.
  const a = await startDaemon({ yaml: yaml(key, { consumer: 'A' }) });
  await a.waitForStderr(/redis-source msg="reading"/);
  const entries = Array.from({ length: 10 }, (_, n) => JSON.stringify(n === 3 ? { n, sleep_ms: 6000 } : { n }));
  await redisCommand(['EVAL', "for i, v in ipairs(ARGV) do redis.call('XADD', KEYS[1], '*', 'data', v) end", 1, key, ...entries]);
  await until(async () => (await pendingCount(key).catch(() => 0)) === 10, 'A to hold 10 pending');
  await a.stop('SIGKILL');
  const fromA = [];

  const b = await startDaemon({ yaml: yaml(key, { consumer: 'B', sleepMarkers: false }) });
  try {
    const wsB = await subscribe(b);
    const seen = new Map();
    for (const m of fromA) seen.set(m.data.n, (seen.get(m.data.n) || 0) + 1);
    while ([...seen.values()].reduce((x, y) => x + y, 0) < 10) {
      const m = await nextMessage(wsB, (x) => x.type === 'data', 10000);
      seen.set(m.data.n, (seen.get(m.data.n) || 0) + 1);
    }
    assert.deepEqual([...seen.keys()].sort((x, y) => x - y), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    for (const [n, c] of seen) assert.equal(c, 1, `effect of entry ${n} applied once`);
    await until(async () => (await pendingCount(key)) === 0, 'B to ack everything');
    await assert.rejects(nextMessage(wsB, (x) => x.type === 'data', 500), /timeout/);
    const cached = await fetchJson(`${b.url}/api/cache/${encodeURIComponent(`rs:${key}:9`)}`);
    assert.equal(cached.status, 200, cached.text);
    wsB.close();
  } finally {
    await b.stop();
  }
});

test('two sophiad processes in one group share the work, each entry processed once', async () => {
  const key = newKey('share');
  const a = await startDaemon({ yaml: yaml(key, { consumer: 'A', count: 5 }) });
  const b = await startDaemon({ yaml: yaml(key, { consumer: 'B', count: 5 }) });
  try {
    await a.waitForStderr(/redis-source msg="reading"/);
    await b.waitForStderr(/redis-source msg="reading"/);
    for (let n = 0; n < 300; n++) await xadd(key, { n });
    const total = async () => (await rsStats(a)).processed + (await rsStats(b)).processed;
    await until(async () => (await total()) >= 300, '300 processed');
    await sleep(200);
    assert.equal(await total(), 300);
    assert.ok((await rsStats(a)).processed > 0, 'A took a share');
    assert.ok((await rsStats(b)).processed > 0, 'B took a share');
    await until(async () => (await pendingCount(key)) === 0, 'everything acked');
  } finally {
    await a.stop();
    await b.stop();
  }
});

test('dead letters in <key>:dead with the reason: processor ERROR and bad JSON at once, RETRY after max_attempts', async () => {
  const key = newKey('dead');
  const d = await startDaemon({ yaml: yaml(key, { consumer: 'A' }) });
  try {
    await xadd(key, { n: 1, fail: true });
    await xadd(key, '{"n": 2, oops');
    await xadd(key, { n: 3 });
    await xadd(key, { n: 4, retry: true });
    const dead = await until(async () => {
      const r = await redisCommand(['XRANGE', `${key}:dead`, '-', '+']);
      return r.length === 3 ? r : null;
    }, 'three dead letters');
    const fields = dead.map(([, f]) => Object.fromEntries(f.reduce((acc, v, i) => (i % 2 ? acc[acc.length - 1].push(v) : acc.push([v]), acc), [])));
    const badJson = fields.find((f) => f.data === '{"n": 2, oops');
    assert.ok(badJson, JSON.stringify(fields));
    assert.match(badJson._reason, /not JSON/);
    const failed = fields.find((f) => f.data === '{"n":1,"fail":true}');
    assert.ok(failed, JSON.stringify(fields));
    assert.equal(failed._reason, 'processor error');
    assert.equal(failed._stream, key);
    const retried = fields.find((f) => f.data === '{"n":4,"retry":true}');
    assert.ok(retried, JSON.stringify(fields));
    assert.equal(retried._reason, 'processor retry (3 attempts)');
    const s = await rsStats(d);
    assert.equal(s.failed, 2, 'the ERROR and the exhausted RETRY');
    assert.equal(s.retried, 2, 'two deliveries tried again');
    assert.equal(s.dead, 2);
    assert.deepEqual(s.dead_reasons, { processor_error: 1, retry_exhausted: 1, effect_exhausted: 0 });
    assert.equal(s.processed, 1);
    assert.equal(s.sources.redis.dead, 3);
    assert.equal(s.sources.redis.up, true);
    await until(async () => (await pendingCount(key)) === 0, 'nothing left pending');
  } finally {
    await d.stop();
  }
});

test('a full queue pauses reading: nothing refused, everything processed', async () => {
  const key = newKey('bp');
  for (let n = 0; n < 40; n++) await xadd(key, { n, sleep_ms: 5 });
  const d = await startDaemon({ yaml: yaml(key, { consumer: 'A', queue: 4 }) });
  try {
    await until(async () => (await rsStats(d)).processed === 40, '40 processed');
    const s = await rsStats(d);
    assert.equal(s.rejected, 0);
    assert.equal(s.received, 40);
    await until(async () => (await pendingCount(key)) === 0, 'all acked');
  } finally {
    await d.stop();
  }
});

test('SIGTERM drains the queue and XACKs what it processed before exiting', async () => {
  const key = newKey('term');
  for (let n = 0; n < 20; n++) await xadd(key, { n, sleep_ms: 40 });
  // One event per loop turn: the signal lands mid-queue, so the shutdown
  // drain processes the rest and its XACKs are flushed on the way out.
  const d = await startDaemon({ yaml: yaml(key, { consumer: 'A', count: 20, batch: 1 }) });
  await until(async () => (await pendingCount(key).catch(() => 0)) > 0, 'entries read');
  const { code } = await d.stop('SIGTERM');
  assert.equal(code, 0);
  assert.equal(await pendingCount(key), 0, 'every processed entry was acked before exit');
  assert.equal(d.stderr().match(/dead-lettered/g), null);
});

test('/healthz names a source that is down (statsd port taken)', async () => {
  const key = newKey('health');
  const dgram = await import('node:dgram');
  const taken = dgram.createSocket('udp4');
  await new Promise((r) => taken.bind(0, '127.0.0.1', r));
  const port = taken.address().port;
  const d = await startDaemon({
    yaml: `${yaml(key, { consumer: 'A' })}  other:
    processor: failer
    durable: false
    statsd: {listen: "127.0.0.1:${port}"}
`,
  });
  try {
    // Once the Redis source and the tiers have connected, only the StatsD
    // source whose port was taken is left down.
    const h = await until(async () => {
      const r = await fetchJson(`${d.url}/healthz`);
      return r.body.down.every((x) => x.startsWith('statsd:')) ? r : null;
    }, 'the redis source and the tiers up');
    assert.equal(h.status, 503);
    assert.deepEqual(h.body.down, ['statsd:other'], JSON.stringify(h.body));
    assert.match(d.stderr(), /cannot listen for StatsD/);
  } finally {
    taken.close();
    await d.stop();
  }
});
