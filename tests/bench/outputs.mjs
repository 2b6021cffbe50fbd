// outputs - what forwarding costs (host/output.h): one sophiad, three
// streams with the metrics processor and durable: false, fed the same
// way: `none` (no output, the peer), `webhook` (the webhook output POSTing
// signed batches to a node receiver in this process) and `redis_stream`
// (XADD batches in MULTI/EXEC to a throwaway Redis), each with the default
// max_inflight (4 batches out at once) and with max_inflight: 1 (strict
// order, one batch at a time: `_inflight1`). 16 POSTs of 100
// events in flight for --seconds, then until /api/stats shows every
// accepted event processed (processed = acknowledged: its records were
// taken by the stream's outputs). Targets interleave, --runs times each.
//
// --latency MS delays each answer of the webhook's receiver, as a
// receiver across a network would (the redis_stream rows are unchanged).
//
// Usage: SOPHIAD=build/core/sophiad SOPHIA_PLUGIN_DIR=build/plugins \
//        node tests/bench/outputs.mjs [--seconds 3] [--runs 3] [--latency 0]
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { agent, freePort, request, sleep, startRedis, waitPort } from './harness.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const SECONDS = opt('seconds', 3);
const RUNS = opt('runs', 3);
const LATENCY = opt('latency', 0);

// The webhook's receiver: counts the records it was sent.
function startReceiver() {
  let records = 0;
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      records += JSON.parse(Buffer.concat(chunks)).length;
      setTimeout(() => res.writeHead(200).end(), LATENCY);
    });
  });
  return new Promise((r) => server.listen(0, '127.0.0.1', () => r({
    port: server.address().port, count: () => records, stop: () => server.close(),
  })));
}

async function startSophiad(redisUrl, hookPort) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sophia-bench-outputs-'));
  const port = await freePort();
  writeFileSync(path.join(dir, 'sophia.yaml'), `
log: {level: error}
plugins:
  path: ["${path.resolve(process.env.SOPHIA_PLUGIN_DIR)}"]
  instances:
    m: {plugin: metrics}
    hook:
      plugin: webhook
      options: {url: "http://127.0.0.1:${hookPort}/in", secret_env: BENCH_HOOK_SECRET}
    hook1:
      plugin: webhook
      options: {url: "http://127.0.0.1:${hookPort}/in", secret_env: BENCH_HOOK_SECRET, max_inflight: 1}
    xadd:
      plugin: redis_stream
      options: {url: "${redisUrl}", key: bench:out, maxlen: 100000}
    xadd1:
      plugin: redis_stream
      options: {url: "${redisUrl}", key: bench:out, maxlen: 100000, max_inflight: 1}
streams:
  none: {processor: m, durable: false, queue_size: 100000}
  webhook: {processor: m, durable: false, queue_size: 100000, outputs: [hook]}
  webhook_inflight1: {processor: m, durable: false, queue_size: 100000, outputs: [hook1]}
  redis_stream: {processor: m, durable: false, queue_size: 100000, outputs: [xadd]}
  redis_stream_inflight1: {processor: m, durable: false, queue_size: 100000, outputs: [xadd1]}
`);
  const proc = spawn(process.env.SOPHIAD, ['-c', path.join(dir, 'sophia.yaml'), '--listen', `127.0.0.1:${port}`], {
    env: { ...process.env, SOPHIA_REDIS_URL: '', SOPHIA_PG_URL: '', BENCH_HOOK_SECRET: 'bench' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  await waitPort(port);
  proc.on('exit', (code) => { if (code) process.exit(1); });
  return { port, stop: () => { proc.kill('SIGTERM'); rmSync(dir, { recursive: true, force: true }); } };
}


const points = (n, k) => Array.from({ length: n }, (_, i) => ({ metric: `m${(k + i) % 50}`, value: i, dashboard_id: 'b' }));

async function throughput(port, stream) {
  const processed = async () => JSON.parse((await request(port, 'GET', '/api/stats')).text).streams[stream].processed;
  const before = await processed();
  let accepted = 0;
  let k = 0;
  const t0 = performance.now();
  const end = t0 + SECONDS * 1000;
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (performance.now() < end) {
      const r = await request(port, 'POST', `/ingest/${stream}`, JSON.stringify(points(100, k++)));
      if (r.status === 202) accepted += 100;
    }
  }));
  const limit = Date.now() + 120000;
  while ((await processed()) - before < accepted && Date.now() < limit) await sleep(5);
  return accepted / ((performance.now() - t0) / 1000);
}

const redis = await startRedis();
const rx = await startReceiver();
const d = await startSophiad(redis.url, rx.port);
const rows = { none: [], webhook: [], webhook_inflight1: [], redis_stream: [], redis_stream_inflight1: [] };
try {
  for (let r = 0; r < RUNS; r++)
    for (const t of Object.keys(rows)) rows[t].push(await throughput(d.port, t));
} finally {
  d.stop();
  rx.stop();
  redis.stop();
  agent.destroy();
}
const med = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const f0 = (x) => Math.round(x).toLocaleString('en-US');
let load = '';
try { load = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' '); } catch { /* not Linux */ }
console.log(`\noutputs: ${SECONDS} s per measurement, ${RUNS} runs each (median; every run in brackets), webhook receiver latency ${LATENCY} ms, load ${load}`);
console.log('| stream | processed (acknowledged) events/s | / none |');
console.log('|---|---|---|');
for (const [t, xs] of Object.entries(rows)) {
  console.log(`| ${t} | ${f0(med(xs))} [${xs.map(f0).join(', ')}] | ${(med(xs) / med(rows.none)).toFixed(2)}× |`);
}
console.log(`webhook receiver got ${rx.count().toLocaleString('en-US')} records`);
