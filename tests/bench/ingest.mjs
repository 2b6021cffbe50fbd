// ingest - events through HTTP batch ingest -> the metrics processor ->
// WebSocket clients, measured end to end on one sophiad and, in the same
// run with the same clients and load, on two others:
//   - the floor: floor_server (floor.c), one epoll thread doing only the
//     unavoidable work - each point wrapped unparsed in sophiad's `metric`
//     message and sent to its dashboard's subscriber, one send() per
//     subscriber per POST (or per wake-up that read several); sophiad/floor
//     is how far the host is from the least the machine must do;
//   - the node peer: the node server a JavaScript team would write for the
//     same path (built into this script: `node ingest.mjs --peer PORT`;
//     node `http` + `ws`, parse the JSON array, per point validate,
//     aggregate per series, keep the latest value as JSON in a map - the L1
//     put - and send the `metric` message to the dashboard's subscribers).
//
// 100 clients (--clients) each subscribe to one dashboard (dashboard:d0 …); points
// are spread round-robin over the dashboards, so every event is delivered
// to exactly one client and the numbers measure the event path, not
// fan-out (tests/bench/fanout.mjs measures fan-out).
//   1. throughput: a window of POSTs of 1,000-point JSON arrays in flight
//      for a few seconds; events/s = points delivered to clients / time.
//   2. latency at a fixed rate (default 20,000 events/s: a 100-point batch
//      every 5 ms): each point's value is its POST's send time
//      (CLOCK_MONOTONIC), each client records receipt - send; p50/p99/max.
// CPU per event: the server process's CPU time (user + system, all its
// threads; harness.mjs cpuSeconds) over the phase, divided by the events
// delivered in it.
// The clients are fanout_client (C, one epoll process; see cclients.mjs),
// or node `ws` clients in this process with --node-clients: those cost
// ~23 µs of CPU per message, on the second of two cores, and their queue
// behind a 100-message burst was most of the latency measured.
// L2/L3 are off (SOPHIA_REDIS_URL= SOPHIA_PG_URL=) so the path measured is
// ingest, queue, plugin, L1 put, router; the clients share the machine's
// two cores with the server under test. The three servers see the same
// clients and the same load; each run measures sophiad, the floor and the
// peer in turn (--runs times), and the table shows every run, then the
// median of the per-run ratios sophiad/floor and sophiad/node.
//
// Usage: SOPHIAD=build/core/sophiad SOPHIA_PLUGIN_DIR=build/plugins \
//        node tests/bench/ingest.mjs [--rate 20000] [--batch 100]
//        [--clients 100] [--seconds 5] [--runs 2] [--tiers]
//        [--only sophiad,floor,peer] [--node-clients]
// The issue-18 shape: --rate 5000 --batch 50 --clients 1 (one subscriber).
// (FANOUT_CLIENT: the receiver, default next to SOPHIAD as in fanout.mjs;
// FLOOR_SERVER: the floor, default beside it; see harness.mjs floorPath)
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import v8 from 'node:v8';
import vm from 'node:vm';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc'); // a full collection, between phases
import { clientPath, now, startCClients } from './cclients.mjs';
import {
  WebSocket, cpuSeconds, freePort, servePeerWs, sleep, startFloor, waitHttp,
} from './harness.mjs';

const self = fileURLToPath(import.meta.url);

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const RATE = opt('rate', 20000);
const SECONDS = opt('seconds', 5);
const RUNS = opt('runs', 2);
// which servers to measure, of sophiad, floor, peer
const ONLY = (args.includes('--only') ? args[args.indexOf('--only') + 1] : 'sophiad,floor,peer').split(',');
const CLIENTS = opt('clients', 100);
// --tiers: sophiad with the repository's default configuration
// (config/sophia.yaml: durable Redis stream, write-back journal for
// `metric:` keys, L3) against SOPHIA_REDIS_URL and SOPHIA_PG_URL, instead
// of L2/L3 off. The floor then appends each point to that Redis before
// its 202 (floor.c --redis), the least a durable ingest must do; the peer
// has no tiers either way.
const TIERS = args.includes('--tiers');
const WARMUP = 0.5; // seconds at the fixed rate before measuring
const NODE_CLIENTS = args.includes('--node-clients');

// ------------------------------------------------------------- the peer
function runPeer(port) {
  const topics = new Map(); // topic -> Set<ws>
  const seqs = new Map();
  const series = new Map(); // "dashboard\x1fmetric" -> aggregate
  const cache = new Map(); // the L1: key -> JSON text
  const point = (p) => {
    if (typeof p !== 'object' || p === null || typeof p.metric !== 'string' || !p.metric ||
        typeof p.value !== 'number') return false;
    const dash = typeof p.dashboard_id === 'string' && p.dashboard_id ? p.dashboard_id : null;
    const timestamp = p.timestamp ?? new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    const skey = `${dash ?? ''}\x1f${p.metric}`;
    const s = series.get(skey);
    if (s) {
      s.count++; s.sum += p.value; s.min = Math.min(s.min, p.value); s.max = Math.max(s.max, p.value);
    } else {
      series.set(skey, { count: 1, sum: p.value, min: p.value, max: p.value });
    }
    cache.set(`metric:${dash ?? '_'}:${p.metric}`, JSON.stringify({ value: p.value, timestamp }));
    if (!dash) return true;
    const data = { metric: p.metric, value: p.value, timestamp };
    if (p.labels != null) data.labels = p.labels;
    const topic = `dashboard:${dash}`;
    const seq = (seqs.get(topic) || 0) + 1;
    seqs.set(topic, seq);
    const subs = topics.get(topic);
    if (subs) {
      const msg = JSON.stringify({ type: 'metric', topic, seq, dashboard_id: dash, data });
      for (const ws of subs) ws.send(msg);
    }
    return true;
  };
  const server = http.createServer((req, res) => {
    if (req.method !== 'POST' || req.url !== '/ingest/metrics') {
      res.writeHead(404).end();
      return;
    }
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      let body;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch (e) {
        res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ error: String(e) }));
        return;
      }
      const pts = Array.isArray(body) ? body : [body];
      let n = 0;
      for (const p of pts) n += point(p) ? 1 : 0;
      res.writeHead(202, { 'content-type': 'application/json' }).end(JSON.stringify({ accepted: n }));
    });
  });
  servePeerWs(server, topics);
  server.listen(port, '127.0.0.1');
}

// ---------------------------------------------------------- the harness
async function startSophiad() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'bench-ingest-'));
  const port = await freePort();
  writeFileSync(path.join(dir, 'sophia.yaml'), TIERS ? defaultConfig(dir) : `
log: {level: error}
websocket: {max_queue: 100000}
plugins:
  path: ["${process.env.SOPHIA_PLUGIN_DIR}"]
  instances:
    metrics: {plugin: metrics}
streams:
  metrics: {processor: metrics, queue_size: 200000, batch_size: 1024}
`);
  const env = TIERS ? process.env : { ...process.env, SOPHIA_REDIS_URL: '', SOPHIA_PG_URL: '' };
  const proc = spawn(process.env.SOPHIAD, ['-c', path.join(dir, 'sophia.yaml'), '--listen', `127.0.0.1:${port}`], {
    env, stdio: ['ignore', 'ignore', 'inherit'],
  });
  await waitHttp(`http://127.0.0.1:${port}/healthz`, proc);
  return { proc, port };
}

// config/sophia.yaml as shipped, but quiet, with its memory index in `dir`
// and the benchmark's queue sizes (the throughput phase keeps 4,000 points
// in flight, the default queue holds 10,000).
function defaultConfig(dir) {
  if (!process.env.SOPHIA_REDIS_URL || !process.env.SOPHIA_PG_URL) {
    throw new Error('--tiers needs SOPHIA_REDIS_URL and SOPHIA_PG_URL (scripts/servers.sh starts both)');
  }
  const shipped = readFileSync(path.join(path.dirname(self), '../../config/sophia.yaml'), 'utf8');
  return shipped
    .replace(/^(log:\s*\n\s*level:) info/m, '$1 error')
    .replace(/index_path: \S+/, `index_path: ${path.join(dir, 'memory.index')}`)
    // a copied build (a before/after pair) is not in the tree it was built
    // in, so it would not find its bundled plugins by itself
    .replace(/^ {2}# path:\n {2}# {3}- \S+$/m, `  path: ["${process.env.SOPHIA_PLUGIN_DIR}"]`);
}

async function startPeer() {
  const port = await freePort();
  const proc = spawn(process.execPath, [self, '--peer', String(port)], { stdio: ['ignore', 'ignore', 'inherit'] });
  await waitHttp(`http://127.0.0.1:${port}/`, proc);
  return { proc, port };
}

// With --tiers the floor is durable too: each point in Redis (the same
// server sophiad uses) before the POST's 202 and its publish (floor.c).
async function startFloorSrv() {
  const port = await freePort();
  const redisPort = TIERS ? Number(new URL(process.env.SOPHIA_REDIS_URL).port) : 0;
  return { proc: await startFloor(port, redisPort), port };
}

// node `ws` clients (--node-clients), with fanout_client's interface.
async function nodeClients(port) {
  const clients = [];
  let count = 0;
  let lat = [];
  for (let i = 0; i < CLIENTS; i++) {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`);
    await new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); });
    const subscribed = new Promise((res) => ws.once('message', res));
    ws.send(JSON.stringify({ type: 'subscribe', subscriptions: [`dashboard:d${i}`] }));
    await subscribed;
    ws.on('message', (buf) => {
      const m = JSON.parse(buf);
      if (m.type !== 'metric') return;
      count++;
      lat.push(now() - m.data.value);
    });
    clients.push(ws);
  }
  return {
    delivered: () => count,
    async latencies() {
      const v = lat.sort((a, b) => a - b);
      lat = [];
      return { n: v.length, p50: pct(v, 0.5), p99: pct(v, 0.99), max: v[v.length - 1] };
    },
    async stop() { for (const ws of clients) ws.terminate(); },
  };
}

const connectClients = (port) => (NODE_CLIENTS ? nodeClients(port)
  : startCClients(clientPath(), `ws://127.0.0.1:${port}/ws`, CLIENTS, CLIENTS, 'dashboard:d'));

let seq = 0;
// Each point's value is its send time (CLOCK_MONOTONIC ms), which the
// receiver subtracts from its own clock.
function batch(n) {
  const pts = [];
  const t = now();
  for (let i = 0; i < n; i++, seq++) pts.push({ metric: 'bench', value: t, dashboard_id: `d${seq % CLIENTS}` });
  return JSON.stringify(pts);
}

// node's http with a keep-alive pool rather than fetch: fetch cost the
// sender ~3x the CPU per request, on a core it shares with both servers.
const agent = new http.Agent({ keepAlive: true });
function post(port, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1', port, path: '/ingest/metrics', method: 'POST', agent,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const pct = (v, q) => v[Math.min(v.length - 1, Math.max(0, Math.ceil(q * v.length) - 1))];
const median = (v) => [...v].sort((a, b) => a - b)[Math.floor((v.length - 1) / 2)];

// a PER-point POST every TICK ms (default: every 5 ms)
const PER = opt('batch', Math.max(1, Math.round(RATE / 200)));
const TICK = (PER / RATE) * 1000;

// `events` at RATE/s as a PER-point POST every TICK ms; resolves once every
// POST is answered.
async function fixedRate(port, events) {
  const res = { sent: 0, refused: 0, codes: {} };
  const start = performance.now();
  const total = Math.round(events / PER);
  const inflight = [];
  for (let ticks = 0; ticks < total; ticks++) {
    const due = start + ticks * TICK;
    const t = performance.now();
    if (t < due) await sleep(due - t > 1 ? due - t - 0.5 : 0);
    inflight.push(post(port, batch(PER)).then((s) => {
      if (s === 202) res.sent += PER;
      else res.refused++, res.codes[s] = (res.codes[s] || 0) + 1;
    }));
  }
  await Promise.all(inflight);
  return res;
}

// One run against one server: both phases; returns the numbers.
async function measure({ proc, port }) {
  const clients = await connectClients(port);
  let base = 0; // frames delivered before this phase
  const received = () => clients.delivered() - base;

  // 1. throughput
  const tEnd = performance.now() + Math.min(SECONDS, 3) * 1000;
  let sent = 0;
  let refused = 0;
  const codes = {};
  const t0 = performance.now();
  const cpu0 = cpuSeconds(proc.pid);
  const worker = async () => {
    while (performance.now() < tEnd) {
      const st = await post(port, batch(1000));
      if (st === 202) sent += 1000;
      else refused++, codes[st] = (codes[st] || 0) + 1;
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  while (received() < sent && performance.now() - tEnd < 20000) await sleep(5);
  const thr = received() / ((performance.now() - t0) / 1000);
  const thrEvents = received();
  const thrCpuUs = ((cpuSeconds(proc.pid) - cpu0) * 1e6) / Math.max(1, thrEvents);
  // The throughput phase leaves this process ~100 MB of garbage: its
  // major GC, if it fell in the next phase, stalled the sender ~200 ms
  // between stamping a batch and writing it (seen with strace: the server
  // sat idle in epoll_wait meanwhile), whichever server was measured.
  gc();
  await sleep(200);

  // 2. latency at a fixed rate, after WARMUP seconds at that rate
  base = clients.delivered();
  const warm = await fixedRate(port, Math.round(RATE * WARMUP));
  const warmEnd = performance.now() + 10000;
  while (received() < warm.sent && performance.now() < warmEnd) await sleep(5);
  await clients.latencies(); // drop the throughput and warm-up samples
  base = clients.delivered();
  sent = 0;
  const start = performance.now();
  const cpu1 = cpuSeconds(proc.pid);
  const client1 = process.cpuUsage();
  const fixed = await fixedRate(port, RATE * SECONDS);
  sent = fixed.sent;
  refused += fixed.refused;
  for (const [k, v] of Object.entries(fixed.codes)) codes[k] = (codes[k] || 0) + v;
  const achieved = sent / ((performance.now() - start) / 1000);
  while (received() < sent && performance.now() - start < SECONDS * 1000 + 10000) await sleep(5);
  const rateCpuUs = ((cpuSeconds(proc.pid) - cpu1) * 1e6) / Math.max(1, received());
  const cu = process.cpuUsage(client1);
  const clientCpuUs = (cu.user + cu.system) / Math.max(1, received());
  const lat = await clients.latencies();
  const delivered = received();
  await clients.stop();
  return {
    codes, thr, thrCpuUs, events: thrEvents + delivered, achieved, rateCpuUs, clientCpuUs, refused, delivered, sent,
    p50: lat.p50, p99: lat.p99, max: lat.max,
    load: readFileSync('/proc/loadavg', 'utf8').split(' ')[0],
  };
}

async function runOnce(name, start) {
  const srv = await start();
  try {
    return { name, ...(await measure(srv)) };
  } finally {
    srv.proc.kill('SIGTERM');
    const exited = new Promise((r) => (srv.proc.exitCode !== null ? r() : srv.proc.once('exit', r)));
    const t = setTimeout(() => { console.error(`${name} ignored SIGTERM for 10 s: killed`); srv.proc.kill('SIGKILL'); }, 10000);
    await exited;
    clearTimeout(t);
  }
}

const f = (v, d = 0, w = 8) => (Number.isFinite(v) ? v.toFixed(d) : '-').padStart(w);

// The median over paired runs of sophiad's figure k over the other's.
function ratios(rows, other, k) {
  const s = rows.filter((r) => r.name === 'sophiad');
  const o = rows.filter((r) => r.name === other);
  const n = Math.min(s.length, o.length);
  return n ? median(s.slice(0, n).map((r, i) => r[k] / o[i][k])) : NaN;
}

async function main() {
  if (!process.env.SOPHIAD || !process.env.SOPHIA_PLUGIN_DIR) throw new Error('set SOPHIAD and SOPHIA_PLUGIN_DIR');
  const rows = [];
  for (let i = 0; i < RUNS; i++) {
    if (ONLY.includes('sophiad')) rows.push(await runOnce('sophiad', startSophiad));
    if (ONLY.includes('floor')) rows.push(await runOnce('floor', startFloorSrv));
    if (ONLY.includes('peer')) rows.push(await runOnce('node peer', startPeer));
  }
  console.log(`\ningest -> metrics plugin -> /ws, ${CLIENTS} clients (one dashboard each), ${TIERS ? 'default tiers (durable stream, write-back journal, L3; the floor appends each point to the same Redis before its 202)' : 'L2/L3 off'}`);
  console.log(`max throughput: 4 x 1000-pt POSTs in flight; fixed rate: ${RATE}/s as a ${PER}-pt POST every ${TICK.toFixed(1)} ms, after ${WARMUP} s of it;`);
  console.log('µs/ev: server CPU per event (user+system, all threads); client: this process\' CPU per event at the fixed rate;');
  console.log('lost: accepted but not delivered within 10 s; !202: POSTs refused (503 queue full)');
  console.log(`${'server'.padEnd(10)} ${'max ev/s'.padStart(9)} ${'µs/ev'.padStart(6)} ${'rate ev/s'.padStart(9)} ${'p50 ms'.padStart(8)} ${'p99 ms'.padStart(8)} ${'max ms'.padStart(8)} ${'µs/ev'.padStart(6)} ${'client'.padStart(6)} ${'lost'.padStart(5)} ${'!202'.padStart(5)} ${'load'.padStart(5)}`);
  for (const r of rows) {
    console.log(`${r.name.padEnd(10)} ${f(r.thr, 0, 9)} ${f(r.thrCpuUs, 1, 6)} ${f(r.achieved, 0, 9)} ${f(r.p50, 2)} ${f(r.p99, 2)} ${f(r.max, 2)} ${f(r.rateCpuUs, 1, 6)} ${f(r.clientCpuUs, 1, 6)} ${String(r.sent - r.delivered).padStart(5)} ${String(r.refused).padStart(5)} ${r.load.padStart(5)}`);
  }
  if (process.env.INGEST_BENCH_JSON) console.log(JSON.stringify(rows));
  if (!rows.some((r) => r.name === 'sophiad')) process.exit(0);
  console.log(`\nsophiad's figure over the other server's, median of ${RUNS} paired runs (CPU and latency: > 1 = sophiad costs more)`);
  console.log(`${''.padEnd(28)} ${'sophiad/floor'.padStart(13)} ${'sophiad/node'.padStart(13)}`);
  for (const [label, k] of [[`CPU per event at ${RATE}/s`, 'rateCpuUs'], ['CPU per event, max rate', 'thrCpuUs'],
    [`p50 at ${RATE}/s`, 'p50'], [`p99 at ${RATE}/s`, 'p99'], ['max events/s', 'thr']]) {
    console.log(`${label.padEnd(28)} ${f(ratios(rows, 'floor', k), 2, 12)}x ${f(ratios(rows, 'node peer', k), 2, 12)}x`);
  }
  const med = (k) => median(rows.filter((r) => r.name === 'sophiad').map((r) => r[k]));
  console.log(`sophiad at ${RATE}/s: p99 ${med('p99').toFixed(2)} ms (target < 5 ms), ` +
    `server CPU ${med('rateCpuUs').toFixed(1)} µs/event -> one core ~${(1e6 / med('rateCpuUs')).toFixed(0)} events/s`);
  process.exit(0);
}

const peerAt = args.indexOf('--peer');
if (peerAt >= 0) runPeer(Number(args[peerAt + 1]));
else main().catch((e) => { console.error(e); process.exit(1); });
