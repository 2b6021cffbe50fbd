// The redis_stream output (plugins/outputs/redis_stream, SDK 1.2): every
// processed event and alert is XADDed, one MULTI/EXEC per batch, to a
// Redis stream on a Redis of the test's own (so it can stop and start it
// without touching the shared one the durable source reads from). While
// that Redis is down the events stay pending in the source's stream
// (never acknowledged undelivered); when it comes back, every accepted
// event is appended (at least once), and MAXLEN keeps the stream bounded.
// Behind a chain of processors, what reaches the output is what left the
// chain: each event its last link emitted, none for a dropped one.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { startDaemon, fetchJson, until, freePort } from './lib/daemon.mjs';
import { ingest, pendingEntries, publishes } from './lib/outputs.mjs';
import { redisCommand, tcpProbe } from './lib/servers.mjs';

const run = `${process.pid}-${Date.now()}`;
const srcKey = `out:rs:src:${run}`;
let own; // the output's Redis: {port, url, proc}
let d;

function startOwnRedis(port) {
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1',
    '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  return proc;
}

async function ownUp() {
  own.proc = startOwnRedis(own.port);
  await until(() => redisCommand(['PING'], { url: own.url }).then((r) => r === 'PONG', () => false),
    'own redis answers');
}

async function ownDown() {
  await redisCommand(['SHUTDOWN', 'NOSAVE'], { url: own.url }).catch(() => {});
  await until(async () => !(await tcpProbe('127.0.0.1', own.port)), 'own redis stopped');
}

const yaml = () => `
plugins:
  path: ["@TEST_PLUGIN_DIR@"]
  instances:
    act:
      plugin: actions
    rs:
      plugin: redis_stream
      options:
        url: ${own.url}
        key: sink
        maxlen: 1000
        batch_size: 10
        flush_interval: 0.02
        retry_base: 0.05
        retry_cap: 0.3
    chained:
      plugin: redis_stream
      options: {url: "${own.url}", key: chained, flush_interval: 0.02}
    ra: {plugin: relay, options: {mark: a}}
    rb: {plugin: relay, options: {mark: b}}
streams:
  ch:
    processors: [ra, rb]
    outputs: [chained]
    durable: false
  st:
    processor: act
    outputs: [rs]
    durable: true
    redis:
      key: ${srcKey}
      group: g
      block: 200ms
`;

before(async () => {
  const port = await freePort();
  own = { port, url: `redis://127.0.0.1:${port}/0` };
  await ownUp();
  d = await startDaemon({ yaml: yaml() });
});

after(async () => {
  if (d) await d.stop();
  if (own) await ownDown().catch(() => {});
  await redisCommand(['DEL', srcKey]).catch(() => {});
});


// The records in the sink stream, parsed.
async function sink() {
  const entries = await redisCommand(['XRANGE', 'sink', '-', '+'], { url: own.url });
  return entries.map(([, fields]) => {
    assert.equal(fields[0], 'data');
    return JSON.parse(fields[1]);
  });
}

const seen = (recs, tag) => new Set(recs.filter((r) => r.type === 'event' && r.event.tag === tag)
  .map((r) => r.event.n));

test('events and alerts are appended to the stream', async () => {
  const evs = [];
  for (let n = 0; n < 25; n++) {
    evs.push(n === 3
      ? { op: 'alert', alert_type: 'x', severity: 'critical', message: 'hot', n, tag: 'a' }
      : { op: 'publish', data: { n }, n, tag: 'a' });
  }
  await ingest(d, 'st', evs);
  let recs;
  await until(async () => seen(recs = await sink(), 'a').size === 25, '25 events in the sink');
  const alert = recs.find((r) => r.type === 'alert');
  assert.equal(alert.alert.severity, 'critical');
  assert.equal(alert.stream, 'st');
  assert.equal(typeof alert.event_id, 'string');
  await until(async () => (await pendingEntries(srcKey)) === 0, 'all acknowledged');
});

test('the output Redis goes down and comes back: pending, then all appended', async () => {
  await ownDown();
  await ingest(d, 'st', publishes(30, 'b'));
  await until(async () => (await pendingEntries(srcKey)) === 30, '30 entries pending while the sink is down');
  await until(async () => (await fetchJson(`${d.url}/api/stats`)).body.outputs.rs.retries >= 2,
    'the output retried');
  assert.equal(await pendingEntries(srcKey), 30, 'nothing acknowledged undelivered');
  await ownUp(); // an empty Redis: --save ''
  await until(async () => seen(await sink(), 'b').size === 30, 'all 30 in the sink');
  await until(async () => (await pendingEntries(srcKey)) === 0, 'then acknowledged');
  const s = (await fetchJson(`${d.url}/api/stats`)).body;
  assert.equal(s.streams.st.failed, 0);
});

test('an output that cannot take the records (wrong key type) dead-letters after max_attempts', async () => {
  await redisCommand(['SET', 'sink', 'not a stream'], { url: own.url });
  await ingest(d, 'st', [{ op: 'publish', data: { n: 1 }, n: 1, tag: 'c' }]);
  await until(async () => (await fetchJson(`${d.url}/api/stats`)).body.streams.st.dead_reasons.effect_exhausted >= 1,
    'the event went to the dead letter');
  const dead = await redisCommand(['XRANGE', `${srcKey}:dead`, '-', '+']);
  assert.ok(dead.length >= 1);
  await redisCommand(['DEL', `${srcKey}:dead`]).catch(() => {});
});

test('behind a chain, the events that left its last link are delivered', async () => {
  await ingest(d, 'ch', [
    { n: 1, split_at: 'a', split: 3 },
    { n: 2, drop_at: 'b' },
    { n: 3 },
  ]);
  const parse = async () => (await redisCommand(['XRANGE', 'chained', '-', '+'], { url: own.url }))
    .map(([, f]) => JSON.parse(f[1]));
  let recs;
  await until(async () => (recs = await parse()).length >= 4, '4 records: 3 parts of n=1, n=3');
  await until(async () => (await fetchJson(`${d.url}/api/stats`)).body.streams.ch.inflight === 0,
    'nothing in flight');
  recs = await parse();
  assert.equal(recs.length, 4, JSON.stringify(recs));
  const one = recs.filter((r) => r.event.n === 1);
  assert.deepEqual(one.map((r) => r.event.part).sort(), [0, 1, 2]);
  for (const r of recs) {
    assert.equal(r.stream, 'ch');
    assert.deepEqual(r.event.hops, ['a', 'b']);
  }
  assert.equal(recs.filter((r) => r.event.n === 2).length, 0, 'a dropped event sends nothing');
});
