// A correlator's state change is an effect of the event (issue #21): the
// bundled `patterns` correlator (SDK 1.3, persisted key by key) sees the
// events of a durable stream, and an event's entry is XACKed only once
// the keys it changed are written to Redis. So after a kill -9:
//  - an event whose ack was given is in the correlator's Redis hash, and
//    the restarted daemon has it: the rule fires with both events;
//  - under steady traffic, every entry the group no longer lists as
//    pending at the kill has its key in the hash, and after the restart
//    every accepted event's sequence completes (the pending ones are
//    delivered again and observed then).
// Also: a key swept after its window leaves the hash, and the
// correlators' figures in /api/stats and /metrics.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import {
  startDaemon, fetchJson, freePort, timeoutScale, until, wsConnect, nextMessage, takeMessages,
} from './lib/daemon.mjs';
import { redisCommand } from './lib/servers.mjs';

const run = `${process.pid}${Math.random().toString(36).slice(2, 6)}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const eventually = (what, fn, ms = 30000 * timeoutScale) => until(fn, what, ms, 100);
const INSTANCE = `pairs${run}`;
const HASH = `sophia:correlator:${os.hostname()}:${INSTANCE}:keys`;
const cleanup = [HASH];
after(async () => {
  for (const k of cleanup) await redisCommand(['DEL', k, `${k}:dead`]).catch(() => {});
});

function yaml(name) {
  const key = `sophia:test:corrdur:${run}:${name}`;
  cleanup.push(key);
  return {
    key,
    text: `
plugins:
  path: ["@PLUGIN_DIR@"]
  instances:
    metrics: {plugin: metrics}
    ${INSTANCE}:
      plugin: patterns
      options:
        rules:
          - name: pair
            severity: critical
            window: 1h
            steps:
              - {stream: ev, key: labels.deal, match: [{path: value, equals: 1}]}
              - {stream: ev, key: labels.deal, match: [{path: value, equals: 2}]}
          - name: brief
            window: 1s
            steps:
              - {stream: ev, key: labels.deal, match: [{path: value, equals: 3}]}
              - {stream: ev, key: labels.deal, match: [{path: value, equals: 4}]}
        sweep: 0.2
streams:
  ev:
    processor: metrics
    durable: true
    queue_size: 50000
    redis:
      key: ${key}
      group: g
      consumer: A
      block: 200ms
      claim_idle: 2s
correlators:
  ${INSTANCE}:
    streams: [ev]
    snapshot_every: 1h
`,
  };
}

const point = (deal, value) => ({ metric: 'stage', value, dashboard_id: 'corr', labels: { deal } });
const pairOf = (m) => m.type === 'alert' && m.data?.alert_type === 'correlation' && m.data?.rule === 'pair';

async function alerts(d) {
  const ws = await wsConnect(d.wsUrl);
  ws.send(JSON.stringify({ type: 'subscribe', subscriptions: ['alerts'] }));
  await nextMessage(ws, 'subscribed');
  return ws;
}

async function pendingCount(key) {
  return (await redisCommand(['XPENDING', key, 'g']))[0];
}

// The deal of each entry of the stream, by entry id.
async function entryDeals(key) {
  const out = new Map();
  for (const [id, fields] of await redisCommand(['XRANGE', key, '-', '+'])) {
    for (let i = 1; i < fields.length; i += 2) {
      try { out.set(id, JSON.parse(fields[i]).labels.deal); } catch { /* not the body */ }
    }
  }
  return out;
}

// The group's last-delivered-id from XINFO GROUPS' flat field lists.
function lastDelivered(groups, name) {
  for (const g of groups) {
    const f = Object.fromEntries(Array.from({ length: g.length / 2 }, (_, i) => [g[2 * i], g[2 * i + 1]]));
    if (f.name === name) return f['last-delivered-id'];
  }
  return '0-0';
}
const idLE = (a, b) => {
  const [am, as] = a.split('-').map(BigInt);
  const [bm, bs] = b.split('-').map(BigInt);
  return am < bm || (am === bm && as <= bs);
};

async function hashFields() {
  return new Set(await redisCommand(['HKEYS', HASH]));
}
const fieldOf = (deal) => `pair\x1f${deal}`;

test('kill -9 after an ack: the restarted correlator still has the acknowledged observation', async () => {
  await redisCommand(['DEL', HASH]);
  const port = await freePort();
  const { key, text } = yaml('one');
  let d = await startDaemon({ yaml: text, port });
  try {
    await d.waitForStderr(/redis-source msg="reading"/);
    const r = await fetchJson(`${d.url}/ingest/ev`, { method: 'POST', body: [point('K1', 1)] });
    assert.equal(r.status, 202);
    await eventually('the event acknowledged', async () =>
      (await fetchJson(`${d.url}/api/stats`)).body.streams.ev.processed >= 1 && (await pendingCount(key)) === 0);
    // Acked well before any snapshot (snapshot_every: 1h is the 1.2 path's).
    assert.ok((await hashFields()).has(fieldOf('K1')), 'K1 written before its ack');
    const stats = (await fetchJson(`${d.url}/api/stats`)).body.correlators[INSTANCE];
    assert.equal(stats.per_key, true);
    assert.equal(stats.observed, 1);
    assert.equal(stats.open_keys, 1);
    assert.ok(stats.persist_writes >= 1 && stats.persist_keys_written >= 1 && stats.persist_bytes > 0, JSON.stringify(stats));
    assert.equal(stats.persist_errors, 0);
    assert.ok(stats.last_persist_ms >= 0);
    await d.stop('SIGKILL');
    d = await startDaemon({ yaml: text, port });
    await d.waitForStderr(/state restored.*from=redis keys=1/);
    const ws = await alerts(d);
    assert.equal((await fetchJson(`${d.url}/ingest/ev`, { method: 'POST', body: [point('K1', 2)] })).status, 202);
    const m = await nextMessage(ws, pairOf, 10000 * timeoutScale);
    ws.close();
    assert.equal(m.data.key, 'K1');
    assert.deepEqual(m.data.events.map((e) => e.event.value), [1, 2]);
    // The sequence fired and started over: so does K1's record in Redis.
    await eventually('K1 written back at its first step', async () => {
      const rec = JSON.parse(await redisCommand(['HGET', HASH, fieldOf('K1')]));
      return rec.stage === 0 && rec.hits.length === 0;
    });
    const s = (await fetchJson(`${d.url}/api/stats`)).body.correlators[INSTANCE];
    assert.equal(s.alerts, 1);
    assert.equal(s.observed, 1, 'counted since this start');
    assert.equal(s.open_keys, 1);
    // A key idle past its rule's keep is swept: deleted from the hash too.
    assert.equal((await fetchJson(`${d.url}/ingest/ev`, { method: 'POST', body: [point('B1', 3)] })).status, 202);
    await eventually('B1 written', async () => (await hashFields()).has(`brief\x1fB1`));
    await eventually('B1 swept and deleted', async () => !(await hashFields()).has(`brief\x1fB1`));
    await eventually('the deletion counted', async () => {
      const c = (await fetchJson(`${d.url}/api/stats`)).body.correlators[INSTANCE];
      return c.persist_keys_deleted >= 1 && c.open_keys === 1 && c.dirty === 0;
    });
    const metrics = await (await fetch(`${d.url}/metrics`)).text();
    assert.match(metrics, new RegExp(`sophia_correlator_alerts_total\\{instance="${INSTANCE}"\\} 1`));
    assert.match(metrics, /# TYPE sophia_correlator_persist_writes_total counter/);
  } finally {
    await d.stop();
  }
});

test('kill -9 under steady traffic: no acknowledged event is missing from the restored state', async () => {
  await redisCommand(['DEL', HASH]);
  const port = await freePort();
  const { key, text } = yaml('steady');
  let d = await startDaemon({ yaml: text, port });
  const accepted = [];
  let next = 0;
  let stopped = false;
  const produce = async () => {
    while (!stopped) {
      const body = Array.from({ length: 10 }, () => point(`S${next++}`, 1));
      try {
        const r = await fetchJson(`${d.url}/ingest/ev`, { method: 'POST', body, timeoutMs: 5000 });
        if (r.status === 202) accepted.push(...body.map((e) => e.labels.deal));
      } catch { /* down: these were not accepted */ }
      await sleep(5);
    }
  };
  try {
    await d.waitForStderr(/redis-source msg="reading"/);
    const producers = Promise.all([produce(), produce()]);
    await sleep(1500);
    await d.stop('SIGKILL');
    stopped = true;
    await producers;
    // Redis as the kill left it: an entry the group delivered and no
    // longer lists as pending was acked (one never delivered was not).
    const deals = await entryDeals(key);
    const pending = new Set((await redisCommand(['XPENDING', key, 'g', '-', '+', 1000000])).map((p) => p[0]));
    const delivered = lastDelivered(await redisCommand(['XINFO', 'GROUPS', key]), 'g');
    const acked = [...deals].filter(([id]) => !pending.has(id) && idLE(id, delivered)).map(([, deal]) => deal);
    const have = await hashFields();
    const lost = acked.filter((deal) => !have.has(fieldOf(deal)));
    console.log(`correlate-durable: accepted=${accepted.length} entries=${deals.size} delivered_to=${delivered} acked=${acked.length} ` +
      `pending=${pending.size} in_hash=${have.size} lost=${lost.length}`);
    assert.ok(acked.length >= 50, `steady traffic acked (${acked.length})`);
    assert.deepEqual(lost.slice(0, 10), [], 'an acked event whose key is not in the hash');
    // Restarted: the pending entries come again; then every accepted
    // deal's second step fires the rule with both events.
    d = await startDaemon({ yaml: text, port });
    await d.waitForStderr(/state restored.*from=redis/);
    await eventually('nothing pending', async () => (await pendingCount(key)) === 0);
    const ws = await alerts(d);
    for (let i = 0; i < accepted.length; i += 200) {
      const body = accepted.slice(i, i + 200).map((deal) => point(deal, 2));
      assert.equal((await fetchJson(`${d.url}/ingest/ev`, { method: 'POST', body })).status, 202);
    }
    const fired = new Set();
    await eventually('every accepted deal fired', async () => {
      for (const m of takeMessages(ws).filter(pairOf)) {
        assert.deepEqual(m.data.events.map((e) => e.event.value), [1, 2], `${m.data.key}: both events`);
        fired.add(m.data.key);
      }
      return accepted.every((deal) => fired.has(deal));
    }).catch((err) => {
      err.message += `: ${accepted.filter((x) => !fired.has(x)).length} of ${accepted.length} did not fire`;
      throw err;
    });
    ws.close();
  } finally {
    stopped = true;
    await d.stop();
  }
});

test('an SDK 1.2 correlator (whole state only) keeps the snapshot path', async () => {
  const SNAP = `sophia:correlator:${os.hostname()}:tally${run}`;
  cleanup.push(SNAP);
  const text = `
plugins:
  path: ["@TEST_PLUGIN_DIR@", "@PLUGIN_DIR@"]
  instances:
    metrics: {plugin: metrics}
    tally${run}: {plugin: tally12, options: {fire_at: 2}}
streams:
  t: {processor: metrics}
correlators:
  tally${run}:
    streams: [t]
    snapshot_every: 1s
`;
  const ev = { metric: 'm', value: 1, dashboard_id: 'corr', k: 'A' };
  let d = await startDaemon({ yaml: text });
  try {
    await d.waitForStderr(/no state read|state restored|redis-source|L2 up/);
    assert.equal((await fetchJson(`${d.url}/ingest/t`, { method: 'POST', body: [ev] })).status, 202);
    await eventually('a whole-state snapshot written', async () =>
      JSON.parse(await redisCommand(['GET', SNAP]) ?? '{}').A === 1);
    const s = (await fetchJson(`${d.url}/api/stats`)).body.correlators[`tally${run}`];
    assert.equal(s.per_key, false);
    assert.equal(s.observed, 1);
    assert.ok(s.persist_writes >= 1 && s.persist_bytes > 0, JSON.stringify(s));
    assert.equal(await redisCommand(['EXISTS', `${SNAP}:keys`]), 0, 'no per-key hash');
    assert.deepEqual(await d.stop(), { code: 0, signal: null, killed: false });
    d = await startDaemon({ yaml: text });
    await d.waitForStderr(/state restored.*from=snapshot/);
    const ws = await alerts(d);
    assert.equal((await fetchJson(`${d.url}/ingest/t`, { method: 'POST', body: [ev] })).status, 202);
    const m = await nextMessage(ws, (x) => x.type === 'alert' && x.data?.alert_type === 'tally', 10000 * timeoutScale);
    ws.close();
    assert.equal(m.data.key, 'A');
    assert.equal(m.data.count, 2, 'the count came back from the snapshot');
  } finally {
    await d.stop();
  }
});
