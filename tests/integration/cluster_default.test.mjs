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

test('a node alone publishes locally; a newcomer joins it and seqs keep increasing', async () => {
  nodes = [await startDaemon({ yaml: yaml() })];
  const [a] = nodes;
  await until(async () => (await stats(a)).cluster?.up, 'A subscribed');
  assert.equal((await stats(a)).cluster.alone, true, 'nobody else on the channel');
  const did = `${run}alone`;
  const topic = `dashboard:${did}`;
  const point = (value) => ({ metric: 'm', value, dashboard_id: did });
  const wa = await subscriber(a, topic);
  assert.equal((await ingest(a, point(1))).status, 202);
  const m1 = await nextMessage(wa, 'metric');
  const cl = (await stats(a)).cluster;
  assert.ok(cl.local >= 1 && cl.out === 0, `delivered without Redis: ${JSON.stringify(cl)}`);

  // Past A's first 5 s it stops telling invalidations to nobody; a
  // newcomer must still never see a stale value.
  await sleep(5200);
  const key = `alone-${run}`;
  assert.ok((await put(a, key, 1)).status < 300);
  const b = await startDaemon({ yaml: yaml() });
  nodes.push(b);
  for (const n of nodes) {
    await until(async () => (await stats(n)).cluster?.alone === false, 'the two nodes hear each other');
  }
  assert.equal((await get(b, key)).body.value, 1); // now in B's L1
  assert.ok((await put(a, key, 2)).status < 300);
  await until(async () => (await get(b, key)).body.value === 2, 'B drops the value A replaced');

  const wb = await subscriber(b, topic);
  assert.equal((await ingest(a, point(2))).status, 202);
  const [ma, mb] = [await nextMessage(wa, 'metric'), await nextMessage(wb, 'metric')];
  assert.equal(ma.seq, mb.seq, 'one seq on both nodes');
  assert.ok(ma.seq > m1.seq, `the topic's seq went on: ${m1.seq} then ${ma.seq}`);
  assert.equal(mb.data.value, 2);
  assert.ok((await stats(a)).cluster.out >= 1, 'through Redis now');
  wa.close();
  wb.close();
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
