// Two sophiad nodes sharing the harness's Redis (cluster.redis): a publish
// on node A reaches a subscriber on node B with the same topic and seq,
// `since` on B replays what A published, and cluster counters show up.
// The per-topic seq keys in Redis expire (2 x history_age) and a topic's
// seq keeps increasing across an expiry, and across the local sweep
// freeing the topic (its seq continues from Redis).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import {
  startDaemon, fetchJson, wsConnect, nextMessage, sendJson,
} from './lib/daemon.mjs';

const redis = process.env.SOPHIA_REDIS_URL;
const yaml = (node) => `
cluster:
  redis: "${redis}"
  node_id: ${node}
websocket:
  history_age: 30
plugins:
  path: ["@PLUGIN_DIR@"]
  instances:
    metrics:
      plugin: metrics
streams:
  metrics:
    processor: metrics
`;

let a;
let b;
before(async () => {
  [a, b] = await Promise.all([startDaemon({ yaml: yaml('node-a') }), startDaemon({ yaml: yaml('node-b') })]);
  for (const n of [a, b]) {
    for (let i = 0; i < 100; i++) {
      const s = (await fetchJson(`${n.url}/api/stats`)).body.websocket;
      if (s.cluster && s.cluster.up && !s.cluster.alone) break; // the other node heard
      await new Promise((r) => setTimeout(r, 50));
    }
  }
});
after(async () => { await Promise.all([a, b].filter(Boolean).map((n) => n.stop())); });

const id = `c${process.pid}x${Date.now()}`;
const topic = `dashboard:${id}`;
let first; // the topic's first seq
const point = (value) => ({ metric: 'm', value, timestamp: '2024-01-20T10:30:00Z', dashboard_id: id });

test('a publish on node A reaches subscribers on A and B with the same seq', async () => {
  const wa = await wsConnect(a.wsUrl);
  const wb = await wsConnect(b.wsUrl);
  for (const ws of [wa, wb]) {
    sendJson(ws, { type: 'subscribe', subscriptions: [topic] });
    await nextMessage(ws, 'subscribed');
  }
  assert.equal((await fetchJson(`${a.url}/ingest/metrics`, { method: 'POST', body: point(1) })).status, 202);
  assert.equal((await fetchJson(`${b.url}/ingest/metrics`, { method: 'POST', body: point(2) })).status, 202);
  const onA = [await nextMessage(wa, 'metric'), await nextMessage(wa, 'metric')];
  const onB = [await nextMessage(wb, 'metric'), await nextMessage(wb, 'metric')];
  assert.deepEqual(onB, onA, 'both nodes deliver the same messages, same order, same seqs');
  const s1 = onA[0].seq;
  assert.deepEqual(onA.map((m) => [m.topic, m.seq, m.data.value]), [[topic, s1, 1], [topic, s1 + 1, 2]]);
  first = s1;
  wa.close();
  wb.close();
  const sa = (await fetchJson(`${a.url}/api/stats`)).body.websocket.cluster;
  assert.equal(sa.node, 'node-a');
  assert.ok(sa.out >= 1 && sa.in >= 2, JSON.stringify(sa));
});

test('since on node B replays what node A published', async () => {
  assert.equal((await fetchJson(`${a.url}/ingest/metrics`, { method: 'POST', body: point(3) })).status, 202);
  await new Promise((r) => setTimeout(r, 200));
  const wb = await wsConnect(b.wsUrl);
  sendJson(wb, { type: 'subscribe', subscriptions: [topic], since: { [topic]: first } });
  await nextMessage(wb, 'subscribed');
  const got = [await nextMessage(wb, 'metric'), await nextMessage(wb, 'metric')];
  assert.deepEqual(got.map((m) => [m.seq, m.data.value]), [[first + 1, 2], [first + 2, 3]]);
  wb.close();
});

// One command on a fresh connection to the harness's Redis (RESP2), after
// a SELECT of its db: what came back once `complete` says it is all there.
function redisExchange(args, complete) {
  const { hostname, port, pathname } = new URL(redis);
  const db = pathname.slice(1) || '0';
  const enc = (a) => `*${a.length}\r\n${a.map((x) => `$${Buffer.byteLength(x)}\r\n${x}\r\n`).join('')}`;
  return new Promise((resolve, reject) => {
    const sock = net.connect(Number(port), hostname);
    let buf = '';
    sock.on('error', reject);
    sock.on('data', (d) => {
      buf += d;
      if (!complete(buf)) return;
      sock.end();
      resolve(buf);
    });
    sock.write(enc(['SELECT', db]) + enc(args.map(String)));
  });
}

// A one-line reply (+OK of SELECT, then the reply's first line).
async function redisCommand(...args) {
  return (await redisExchange(args, (b) => b.split('\r\n').length >= 3)).split('\r\n')[1];
}

// Redis's count of EVAL calls (INFO commandstats, a bulk string).
async function evalCalls() {
  const whole = (b) => {
    const m = /^\+OK\r\n\$(\d+)\r\n/.exec(b);
    return m && Buffer.byteLength(b) >= m[0].length + Number(m[1]);
  };
  const info = await redisExchange(['INFO', 'commandstats'], whole);
  return Number((/cmdstat_eval:calls=(\d+)/.exec(info) || [0, 0])[1]);
}

test('a body of 50 points goes out in a few EVALs, in order, with consecutive seqs on both nodes', async () => {
  const did = `${id}batch`;
  const t = `dashboard:${did}`;
  const wa = await wsConnect(a.wsUrl);
  const wb = await wsConnect(b.wsUrl);
  for (const ws of [wa, wb]) {
    sendJson(ws, { type: 'subscribe', subscriptions: [t] });
    await nextMessage(ws, 'subscribed');
  }
  const pts = Array.from({ length: 50 }, (_, i) => ({ metric: 'm', value: i, timestamp: '2024-01-20T10:30:00Z', dashboard_id: did }));
  const evals = await evalCalls();
  assert.equal((await fetchJson(`${a.url}/ingest/metrics`, { method: 'POST', body: pts })).status, 202);
  const got = [];
  for (const ws of [wa, wb]) {
    const ms = [];
    for (let i = 0; i < 50; i++) ms.push(await nextMessage(ws, 'metric'));
    got.push(ms.map((m) => [m.seq, m.data.value]));
  }
  assert.deepEqual(got[1], got[0], 'both nodes deliver the same seqs and values');
  const s0 = got[0][0][0];
  assert.deepEqual(got[0], pts.map((p, i) => [s0 + i, p.value]), 'in the body\'s order, seqs consecutive');
  // One EVAL a loop turn, not one a publish (50 before): the body's
  // points are processed over a few turns, 2-18 EVALs in all in 9 runs.
  const used = (await evalCalls()) - evals;
  assert.ok(used >= 1 && used <= 35, `EVAL calls for 50 publishes: ${used}`);
  wa.close();
  wb.close();
});

test('seq keys expire with history_age, and a topic seq never goes back', async () => {
  const key = `sophia:seq:${topic}`;
  const ttl = Number((await redisCommand('TTL', key)).slice(1));
  assert.ok(ttl > 0 && ttl <= 60, `TTL ${key} = ${ttl}: 2 x history_age (30 s)`);
  // An expiry (forced here) must not restart the topic at 1: a client
  // holding seq 3 would be replayed different messages under 4, 5, ...
  assert.equal(await redisCommand('DEL', key), ':1');
  const wa = await wsConnect(a.wsUrl);
  sendJson(wa, { type: 'subscribe', subscriptions: [topic] });
  await nextMessage(wa, 'subscribed');
  assert.equal((await fetchJson(`${b.url}/ingest/metrics`, { method: 'POST', body: point(4) })).status, 202);
  const m = await nextMessage(wa, 'metric');
  assert.ok(m.seq > first + 2, `seq after expiry ${m.seq} > ${first + 2}`);
  assert.ok(Number.isSafeInteger(m.seq));
  wa.close();
  // since from before the expiry: resync, not a replay across the hole.
  const wb = await wsConnect(b.wsUrl);
  sendJson(wb, { type: 'subscribe', subscriptions: [topic], since: { [topic]: first + 2 } });
  assert.equal((await nextMessage(wb, 'resync')).topic, topic);
  wb.close();
});

test('a topic freed by the sweep comes back with its seq continued from Redis', async () => {
  const c = await startDaemon({ yaml: yaml('node-c').replace('history_age: 30', 'history_age: 1s') });
  try {
    for (let i = 0; i < 100; i++) {
      if ((await fetchJson(`${c.url}/api/stats`)).body.websocket.cluster?.alone === false) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const did = `${id}free`;
    const t = `dashboard:${did}`;
    const p = (value) => ({ metric: 'm', value, timestamp: '2024-01-20T10:30:00Z', dashboard_id: did });
    const watch = await wsConnect(c.wsUrl);
    sendJson(watch, { type: 'subscribe', subscriptions: [`dashboard:${did}*`] });
    await nextMessage(watch, 'subscribed');
    assert.equal((await fetchJson(`${c.url}/ingest/metrics`, { method: 'POST', body: [p(1), p(2)] })).status, 202);
    const s2 = (await nextMessage(watch, (m) => m.topic === t && m.data.value === 2)).seq;
    // Nobody subscribes to the exact topic: past history_age it is freed
    // here, while its seq key lives on in Redis (2 x history_age, >= 10 s).
    let gone = false;
    for (let i = 0; i < 200 && !gone; i++) {
      sendJson(watch, { type: 'request', id: `h${i}`, method: 'history', params: { topic: t } });
      gone = (await nextMessage(watch, (m) => m.id === `h${i}`)).data.seq === 0;
      if (!gone) await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(gone, 'the topic is freed locally');
    assert.ok((await fetchJson(`${c.url}/api/stats`)).body.websocket.topics_freed >= 1);
    assert.equal((await fetchJson(`${c.url}/ingest/metrics`, { method: 'POST', body: p(3) })).status, 202);
    const back = await nextMessage(watch, (m) => m.topic === t && m.data.value === 3);
    assert.equal(back.seq, s2 + 1, 'the seq continues from Redis');
    // since = the last seq seen: the continuation is replayed; anything
    // older lies in the freed life and gets resync.
    const late = await wsConnect(c.wsUrl);
    sendJson(late, { type: 'subscribe', subscriptions: [t], since: { [t]: s2 } });
    const m = await nextMessage(late, (x) => x.type === 'metric' || x.type === 'resync');
    assert.deepEqual([m.type, m.seq], ['metric', s2 + 1]);
    sendJson(late, { type: 'subscribe', subscriptions: [t], since: { [t]: s2 - 1 } });
    assert.equal((await nextMessage(late, (x) => x.type === 'metric' || x.type === 'resync')).type, 'resync');
    watch.close();
    late.close();
  } finally {
    await c.stop();
  }
});
