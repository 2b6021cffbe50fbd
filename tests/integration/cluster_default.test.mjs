// Nodes on one Redis are one cluster by default: three sophiads started
// with the harness's Redis (SOPHIA_REDIS_URL) and no cluster section keep
// their L1s coherent and share publishes with one seq per topic; with
// `cluster: {enabled: false}` they stay independent. Node ids are unique
// without configuration (hostname:pid).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startDaemon, fetchJson, wsConnect, nextMessage, sendJson, until,
} from './lib/daemon.mjs';

const yaml = (extra = '') => `
plugins:
  path: ["@PLUGIN_DIR@"]
  instances:
    metrics:
      plugin: metrics
streams:
  metrics:
    processor: metrics
${extra}`;
const OPT_OUT = 'cluster:\n  enabled: false\n';

const stats = async (n) => (await fetchJson(`${n.url}/api/stats`)).body.websocket;
const put = (n, key, value) => fetchJson(`${n.url}/api/cache/${key}`, {
  method: 'PUT', body: JSON.stringify({ value, ttl: 60 }),
});
const get = (n, key) => fetchJson(`${n.url}/api/cache/${key}`);
const ingest = (n, body) => fetchJson(`${n.url}/ingest/metrics`, { method: 'POST', body });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const run = `d${process.pid}x${Date.now()}`;

let nodes = [];
after(async () => { await Promise.all(nodes.map((n) => n.stop())); });

async function subscriber(n, topic) {
  const ws = await wsConnect(n.wsUrl);
  sendJson(ws, { type: 'subscribe', subscriptions: [topic] });
  await nextMessage(ws, 'subscribed');
  return ws;
}

test('three nodes with no cluster section form a cluster on redis.url', async (t) => {
  nodes = await Promise.all([1, 2, 3].map(() => startDaemon({ yaml: yaml() })));
  const [a, b, c] = nodes;
  for (const n of nodes) {
    await until(async () => {
      const cl = (await stats(n)).cluster;
      return cl && cl.up && cl.alone === false;
    }, 'every node subscribed and hearing the others');
  }
  const ids = await Promise.all(nodes.map(async (n) => (await stats(n)).cluster.node));
  assert.equal(new Set(ids).size, 3, `distinct node ids: ${ids}`);
  for (const id of ids) assert.match(id, /^.+:\d+$/, 'hostname:pid');

  await t.test('a PUT on B drops the old value from A\'s L1', async () => {
    const key = `dflt-${run}`;
    assert.ok((await put(a, key, 1)).status < 300);
    assert.equal((await get(a, key)).body.value, 1);
    const hits = (await fetchJson(`${a.url}/api/stats`)).body.cache.l1.hits;
    assert.equal((await get(a, key)).body.value, 1);
    assert.ok((await fetchJson(`${a.url}/api/stats`)).body.cache.l1.hits > hits, 'A serves it from L1');
    assert.ok((await put(b, key, 2)).status < 300);
    await until(async () => (await get(a, key)).body.value === 2, 'A returns the value B wrote');
    assert.equal((await get(c, key)).body.value, 2);
  });

  await t.test('ingest on A reaches subscribers on B and C, one seq per topic', async () => {
    const did = `${run}ws`;
    const topic = `dashboard:${did}`;
    const socks = await Promise.all(nodes.map((n) => subscriber(n, topic)));
    const point = (value) => ({ metric: 'revenue', value, timestamp: '2024-01-20T10:30:00Z', dashboard_id: did });
    assert.equal((await ingest(a, point(10))).status, 202);
    const first = await Promise.all(socks.map((ws) => nextMessage(ws, 'metric')));
    assert.equal((await ingest(c, point(11))).status, 202);
    const second = await Promise.all(socks.map((ws) => nextMessage(ws, 'metric')));
    const s1 = first[0].seq;
    for (let i = 0; i < 3; i++) {
      assert.deepEqual([first[i].topic, first[i].seq, first[i].data.value], [topic, s1, 10], `node ${i}`);
      assert.deepEqual([second[i].seq, second[i].data.value], [s1 + 1, 11], `node ${i}: C's publish follows A's`);
    }
    for (const ws of socks) ws.close();
    const sa = (await stats(a)).cluster;
    assert.ok(sa.out >= 1, JSON.stringify(sa));
  });
  await Promise.all(nodes.map((n) => n.stop()));
  nodes = [];
});

test('cluster: {enabled: false} keeps nodes on one Redis independent', async () => {
  nodes = await Promise.all([1, 2].map(() => startDaemon({ yaml: yaml(OPT_OUT) })));
  const [a, b] = nodes;
  assert.equal((await stats(a)).cluster, undefined, 'no cluster link');
  const key = `optout-${run}`;
  assert.ok((await put(a, key, 1)).status < 300);
  assert.equal((await get(a, key)).body.value, 1); // now in A's L1
  assert.ok((await put(b, key, 2)).status < 300);
  assert.equal((await get(b, key)).body.value, 2);
  await sleep(300);
  assert.equal((await get(a, key)).body.value, 1, 'A keeps its own L1 entry: nobody told it');

  const did = `${run}solo`;
  const topic = `dashboard:${did}`;
  const [wa, wb] = await Promise.all(nodes.map((n) => subscriber(n, topic)));
  const got = [];
  wb.on('message', (raw) => { const m = JSON.parse(raw); if (m.type === 'metric') got.push(m); });
  assert.equal((await ingest(a, { metric: 'm', value: 1, dashboard_id: did })).status, 202);
  const onA = await nextMessage(wa, 'metric');
  assert.equal(onA.data.value, 1);
  await sleep(300);
  assert.deepEqual(got, [], 'B\'s subscriber hears nothing of A');
  wa.close();
  wb.close();
});
