// Two sophiad nodes sharing the harness's Redis (cluster.redis): a publish
// on node A reaches a subscriber on node B with the same topic and seq,
// `since` on B replays what A published, and cluster counters show up.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startDaemon, fetchJson, wsConnect, nextMessage, sendJson,
} from './lib/daemon.mjs';

const redis = process.env.SOPHIA_REDIS_URL;
const yaml = (node) => `
cluster:
  redis: "${redis}"
  node_id: ${node}
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
      if (s.cluster && s.cluster.up) break;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
});
after(async () => { await Promise.all([a, b].filter(Boolean).map((n) => n.stop())); });

const id = `c${process.pid}x${Date.now()}`;
const topic = `dashboard:${id}`;
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
  assert.deepEqual(onA.map((m) => [m.topic, m.seq, m.data.value]), [[topic, 1, 1], [topic, 2, 2]]);
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
  sendJson(wb, { type: 'subscribe', subscriptions: [topic], since: { [topic]: 1 } });
  await nextMessage(wb, 'subscribed');
  const got = [await nextMessage(wb, 'metric'), await nextMessage(wb, 'metric')];
  assert.deepEqual(got.map((m) => [m.seq, m.data.value]), [[2, 2], [3, 3]]);
  wb.close();
});
