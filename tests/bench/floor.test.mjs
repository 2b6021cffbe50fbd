// floor.test - the floor server (floor.c) is only worth comparing with if
// the benchmark's receivers take its frames exactly as they take
// sophiad's: same upgrade (node `ws` checks Sec-WebSocket-Accept), same
// `subscribed` answer, same `metric` envelope in the same key order, the
// same points to the same topics, the same 202 {"accepted":N}, for both
// body shapes the benchmarks send (ingest.mjs: a JSON array; fanout.mjs:
// NDJSON). So each check runs against a real sophiad (metrics plugin,
// L2/L3 off, as in the benchmarks) and the floor, and compares them.
// Registered as ctest `bench.floor` (tests/bench/CMakeLists.txt); no
// timing is asserted.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { clientPath, startCClients } from './cclients.mjs';
import { freePort, startFloor, startRedis } from './harness.mjs';
import {
  nextMessage, sendJson, startDaemon, until, wsConnect,
} from '../integration/lib/daemon.mjs';

const servers = {};

before(async () => {
  const d = await startDaemon({
    yaml: `
log: {level: error}
plugins:
  path: ["@PLUGIN_DIR@"]
  instances:
    metrics: {plugin: metrics}
streams:
  metrics: {processor: metrics}
`,
    env: { SOPHIA_REDIS_URL: '', SOPHIA_PG_URL: '' },
  });
  servers.sophiad = { port: d.port, stop: () => d.stop() };
  const port = await freePort();
  const proc = await startFloor(port);
  servers.floor = {
    port,
    stop: () => new Promise((r) => { proc.once('exit', r); proc.kill('SIGTERM'); }),
  };
});

after(async () => {
  for (const s of Object.values(servers)) await s.stop();
});

async function post(port, body, type = 'application/json') {
  const res = await fetch(`http://127.0.0.1:${port}/ingest/metrics`, {
    method: 'POST', headers: { 'content-type': type }, body,
  });
  return { status: res.status, body: await res.json() };
}

// Points whose text holds what a naive split would cut at: a comma, a
// brace, a bracket, an escaped quote, a newline escape, nesting (in
// labels: sophiad publishes no point whose metric name has them).
const arrayBody = JSON.stringify([
  { metric: 'a', value: 1, dashboard_id: 'd1', labels: { note: 'a,}]"\n' } },
  { metric: 'b', value: 2, dashboard_id: 'd2', labels: { k: [1, { x: '}' }] } },
  { metric: 'c', value: 3, dashboard_id: 'd1' },
]);
const ndjsonBody = '{"metric":"n","value":4,"dashboard_id":"d1"}\r\n\n'
  + '{"metric":"n","value":5,"dashboard_id":"d1"}\n';

// What one server sends a node `ws` client subscribed to d1 and d2 for
// both bodies: the answers and each `metric` message.
async function exchange(port) {
  const ws = await wsConnect(`ws://127.0.0.1:${port}/ws`);
  sendJson(ws, { type: 'subscribe', subscriptions: ['dashboard:d1', 'dashboard:d2'] });
  const subscribed = await nextMessage(ws, 'subscribed');
  const answers = [await post(port, arrayBody), await post(port, ndjsonBody, 'application/x-ndjson')];
  const metrics = [];
  for (let i = 0; i < 5; i++) metrics.push(await nextMessage(ws, 'metric'));
  ws.close();
  return { subscribed, answers, metrics };
}

test('a node ws client gets the floor\'s answers and metric messages as it gets sophiad\'s', async () => {
  const s = await exchange(servers.sophiad.port);
  const f = await exchange(servers.floor.port);
  assert.deepEqual(f.subscribed, s.subscribed);
  assert.deepEqual(s.answers, [{ status: 202, body: { accepted: 3 } }, { status: 202, body: { accepted: 2 } }]);
  assert.deepEqual(f.answers, s.answers);
  const shape = (m) => ({
    keys: Object.keys(m), type: m.type, topic: m.topic, dashboard_id: m.dashboard_id,
    metric: m.data.metric, value: m.data.value, labels: m.data.labels,
  });
  // Per topic, in order: sophiad may interleave d1 and d2 differently.
  for (const topic of ['dashboard:d1', 'dashboard:d2']) {
    const mine = (r) => r.metrics.filter((m) => m.topic === topic);
    assert.deepEqual(mine(f).map(shape), mine(s).map(shape), topic);
    for (const r of [s, f]) {
      const seqs = mine(r).map((m) => m.seq);
      assert.ok(seqs.every((q, i) => Number.isInteger(q) && (i === 0 || q === seqs[i - 1] + 1)), `${topic} seqs ${seqs}`);
    }
  }
  assert.deepEqual(f.metrics.map((m) => m.data.value).sort(), [1, 2, 3, 4, 5]);
});

test('fanout_client, the benchmarks\' C receiver, counts the same deliveries from both', async () => {
  const counts = {};
  for (const [name, { port }] of Object.entries(servers)) {
    // four clients on dashboard:c0, c1, c0, c1
    const clients = await startCClients(clientPath(), `ws://127.0.0.1:${port}/ws`, 4, 2, 'dashboard:c');
    let body = '';
    for (let i = 0; i < 10; i++) body += `{"metric":"m","value":${i},"dashboard_id":"c${i % 3}"}\n`;
    const res = await post(port, body, 'application/x-ndjson');
    assert.deepEqual(res, { status: 202, body: { accepted: 10 } }, name);
    // c0 gets 4 points, c1 3 (c2 has no subscriber): 2 clients each
    await until(() => clients.delivered() >= 14, `${name}: 14 deliveries`);
    await new Promise((r) => setTimeout(r, 100));
    counts[name] = clients.delivered();
    await clients.stop();
  }
  assert.deepEqual(counts, { sophiad: 14, floor: 14 });
});

// Raw bytes to the floor: two requests in one write (pipelined), then a
// body cut in two writes; the answers come back in order.
test('the floor answers pipelined requests and bodies split across reads', async () => {
  const sock = net.connect(servers.floor.port, '127.0.0.1');
  await new Promise((r) => sock.once('connect', r));
  let got = '';
  sock.on('data', (d) => { got += d; });
  const body = '{"metric":"m","value":1,"dashboard_id":"z"}\n{"metric":"m","value":2,"dashboard_id":"z"}\n';
  const head = `POST /ingest/metrics HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n`;
  sock.write(`GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n`);
  await until(() => (got.match(/HTTP\/1\.1 /g) || []).length === 2, 'two answers');
  sock.write(head + body.slice(0, 30));
  await new Promise((r) => setTimeout(r, 50));
  sock.write(body.slice(30));
  await until(() => got.includes('{"accepted":2}'), 'the 202');
  sock.destroy();
  const statuses = got.match(/HTTP\/1\.1 (\d+)/g);
  assert.deepEqual(statuses, ['HTTP/1.1 200', 'HTTP/1.1 404', 'HTTP/1.1 202']);
});

// A subscriber that stops reading: the floor's sendmsg() is cut short,
// the rest waits in its output buffer for EPOLLOUT, behind which later
// frames queue; once it reads again every frame arrives, in order.
test('the floor keeps a slow subscriber\'s frames, in order, until it reads again', async () => {
  const { port } = servers.floor;
  const ws = await wsConnect(`ws://127.0.0.1:${port}/ws`);
  sendJson(ws, { type: 'subscribe', subscriptions: ['dashboard:slow'] });
  await nextMessage(ws, 'subscribed');
  const seqs = [];
  ws.on('message', (raw) => {
    const m = JSON.parse(raw);
    if (m.type === 'metric') seqs.push(m.seq);
  });
  ws._socket.pause(); // the kernel's buffers fill, then the floor's
  const per = 25000;
  const pad = 'x'.repeat(100);
  for (let b = 0; b < 4; b++) {
    let body = '';
    for (let i = 0; i < per; i++) body += `{"metric":"m","value":${b * per + i},"pad":"${pad}","dashboard_id":"slow"}\n`;
    assert.deepEqual(await post(port, body, 'application/x-ndjson'), { status: 202, body: { accepted: per } });
  }
  await new Promise((r) => setTimeout(r, 100));
  assert.ok(seqs.length < 4 * per, `${seqs.length} frames arrived while paused: the buffers never filled`);
  ws._socket.resume();
  await until(() => seqs.length >= 4 * per, `${4 * per} frames`, 30000);
  ws.close();
  assert.equal(seqs.length, 4 * per);
  assert.ok(seqs.every((q, i) => q === i + 1), 'seqs 1..N in order');
});

// --redis: the floor of a durable ingest (ingest.mjs --tiers). A POST is
// answered, and its points published, only once a real Redis holds every
// point; a request pipelined behind it is answered after it, in order.
test('the durable floor answers 202 only once Redis has every point, in order', async (t) => {
  const redis = await startRedis();
  t.after(() => redis.stop());
  const rport = Number(new URL(redis.url).port);
  const port = await freePort();
  const proc = await startFloor(port, rport);
  t.after(() => proc.kill('SIGTERM'));
  const ws = await wsConnect(`ws://127.0.0.1:${port}/ws`);
  sendJson(ws, { type: 'subscribe', subscriptions: ['dashboard:r'] });
  await nextMessage(ws, 'subscribed');
  const values = [];
  ws.on('message', (raw) => {
    const m = JSON.parse(raw);
    if (m.type === 'metric') values.push(m.data.value);
  });
  const sock = net.connect(port, '127.0.0.1');
  await new Promise((r) => sock.once('connect', r));
  let got = '';
  sock.on('data', (d) => { got += d; });
  let body = '';
  for (let i = 0; i < 300; i++) body += `{"metric":"m","value":${i},"dashboard_id":"r"}\n`;
  sock.write(`POST /ingest/metrics HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n${body}`
    + 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nPOST /ingest/metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n');
  await until(() => (got.match(/HTTP\/1\.1 /g) || []).length === 3, 'three answers');
  sock.destroy();
  assert.deepEqual(got.match(/HTTP\/1\.1 (\d+)/g), ['HTTP/1.1 202', 'HTTP/1.1 200', 'HTTP/1.1 202']);
  assert.ok(got.includes('{"accepted":300}') && got.includes('{"accepted":0}'), got);
  const cli = net.connect(rport, '127.0.0.1');
  const xlen = await new Promise((resolve) => {
    cli.once('data', (d) => resolve(String(d)));
    cli.write('XLEN floor:stream\r\n');
  });
  cli.destroy();
  assert.equal(xlen, ':300\r\n');
  await until(() => values.length >= 300, '300 published');
  ws.close();
  assert.deepEqual(values, Array.from({ length: 300 }, (_, i) => i));
});
