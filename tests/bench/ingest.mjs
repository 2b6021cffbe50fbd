// ingest - events through HTTP batch ingest -> the metrics processor ->
// WebSocket clients, measured end to end on one sophiad.
//
// 100 clients each subscribe to one dashboard (dashboard:d0 … d99); points
// are spread round-robin over the dashboards, so every event is delivered
// to exactly one client and the numbers measure the event path, not
// fan-out (tests/bench/fanout.mjs measures fan-out).
//   1. throughput: a window of POSTs of 1,000-point JSON arrays in flight
//      for a few seconds; events/s = points delivered to clients / time.
//   2. latency at a fixed rate (default 20,000 events/s: a 100-point batch
//      every 5 ms): each point carries its POST's send time, each client
//      records receipt - send (one process, one clock); p50/p99/max.
// L2/L3 are off (SOPHIA_REDIS_URL= SOPHIA_PG_URL=) so the path measured is
// ingest, queue, plugin, L1 put, router; clients run in this process and
// share the machine's two cores with the server.
//
// Usage: SOPHIAD=build/core/sophiad SOPHIA_PLUGIN_DIR=build/plugins \
//        node tests/bench/ingest.mjs [--rate 20000] [--seconds 5]
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '..', 'integration', 'package.json'));
const WebSocket = require('ws');

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const RATE = opt('rate', 20000);
const SECONDS = opt('seconds', 5);
const CLIENTS = 100;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function startSophiad() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'bench-ingest-'));
  const port = await freePort();
  writeFileSync(path.join(dir, 'sophia.yaml'), `
log: {level: error}
websocket: {max_queue: 100000}
plugins:
  path: ["${process.env.SOPHIA_PLUGIN_DIR}"]
  instances:
    metrics: {plugin: metrics}
streams:
  metrics: {processor: metrics, queue_size: 200000, batch_size: 1024}
`);
  const proc = spawn(process.env.SOPHIAD, ['-c', path.join(dir, 'sophia.yaml'), '--listen', `127.0.0.1:${port}`], {
    env: { ...process.env, SOPHIA_REDIS_URL: '', SOPHIA_PG_URL: '' }, stdio: ['ignore', 'ignore', 'inherit'],
  });
  for (let i = 0; i < 100; i++) {
    try {
      await fetch(`http://127.0.0.1:${port}/healthz`);
      return { proc, port };
    } catch { await sleep(50); }
  }
  throw new Error('sophiad did not start');
}

async function connectClients(port, onMetric) {
  const clients = [];
  for (let i = 0; i < CLIENTS; i++) {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`);
    await new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); });
    const subscribed = new Promise((res) => ws.once('message', res));
    ws.send(JSON.stringify({ type: 'subscribe', subscriptions: [`dashboard:d${i}`] }));
    await subscribed;
    ws.on('message', (buf) => onMetric(JSON.parse(buf)));
    clients.push(ws);
  }
  return clients;
}

let seq = 0;
function batch(n, t) {
  const pts = [];
  for (let i = 0; i < n; i++, seq++) {
    pts.push({ metric: 'bench', value: seq, dashboard_id: `d${seq % CLIENTS}`, labels: { t } });
  }
  return JSON.stringify(pts);
}

async function post(port, body) {
  const r = await fetch(`http://127.0.0.1:${port}/ingest/metrics`, {
    method: 'POST', body, headers: { 'content-type': 'application/json' },
  });
  await r.arrayBuffer();
  return r.status;
}

// CPU seconds (user + system) the server has used: per-event cost is
// measured this way too, which holds even when other work shares the CPUs.
function cpuSeconds(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
}

const pct = (v, q) => v[Math.min(v.length - 1, Math.max(0, Math.ceil(q * v.length) - 1))];

async function main() {
  if (!process.env.SOPHIAD || !process.env.SOPHIA_PLUGIN_DIR) throw new Error('set SOPHIAD and SOPHIA_PLUGIN_DIR');
  const { proc, port } = await startSophiad();
  let received = 0;
  let lat = null;
  await connectClients(port, (m) => {
    if (m.type !== 'metric') return;
    received++;
    if (lat) lat.push(performance.now() - m.data.labels.t);
  });

  // 1. throughput
  const tEnd = performance.now() + Math.min(SECONDS, 3) * 1000;
  let sent = 0;
  let refused = 0;
  const t0 = performance.now();
  const cpu0 = cpuSeconds(proc.pid);
  const worker = async () => {
    while (performance.now() < tEnd) {
      const st = await post(port, batch(1000, performance.now()));
      if (st === 202) sent += 1000;
      else refused++;
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  while (received < sent && performance.now() - tEnd < 20000) await sleep(5);
  const thr = received / ((performance.now() - t0) / 1000);
  const thrCpuUs = ((cpuSeconds(proc.pid) - cpu0) * 1e6) / Math.max(1, received);

  // 2. latency at a fixed rate
  received = 0;
  sent = 0;
  lat = [];
  const per = Math.max(1, Math.round(RATE / 200)); // a batch every 5 ms
  const start = performance.now();
  const cpu1 = cpuSeconds(proc.pid);
  let ticks = 0;
  const total = Math.round((RATE * SECONDS) / per);
  const inflight = [];
  while (ticks < total) {
    const due = start + ticks * 5;
    const now = performance.now();
    if (now < due) await sleep(due - now > 1 ? due - now - 0.5 : 0);
    inflight.push(post(port, batch(per, performance.now())).then((s) => { if (s === 202) sent += per; else refused++; }));
    ticks++;
  }
  await Promise.all(inflight);
  const achieved = sent / ((performance.now() - start) / 1000);
  while (received < sent && performance.now() - start < SECONDS * 1000 + 10000) await sleep(5);
  const rateCpuUs = ((cpuSeconds(proc.pid) - cpu1) * 1e6) / Math.max(1, received);
  const load = readFileSync('/proc/loadavg', 'utf8').split(' ')[0];
  lat.sort((a, b) => a - b);
  proc.kill('SIGTERM');

  console.log('\ningest -> metrics plugin -> /ws, 100 clients (one dashboard each), L2/L3 off');
  console.log(`${'phase'.padEnd(40)} ${'events/s'.padStart(10)} ${'p50 ms'.padStart(8)} ${'p99 ms'.padStart(8)} ${'max ms'.padStart(8)} ${'srv µs/ev'.padStart(10)}`);
  console.log(`${'max throughput (4 x 1000-pt POSTs)'.padEnd(40)} ${thr.toFixed(0).padStart(10)} ${''.padStart(8)} ${''.padStart(8)} ${''.padStart(8)} ${thrCpuUs.toFixed(1).padStart(10)}`);
  console.log(`${`fixed rate ${RATE}/s (${per}-pt POST / 5 ms)`.padEnd(40)} ${achieved.toFixed(0).padStart(10)} ${pct(lat, 0.5).toFixed(2).padStart(8)} ${pct(lat, 0.99).toFixed(2).padStart(8)} ${lat[lat.length - 1].toFixed(2).padStart(8)} ${rateCpuUs.toFixed(1).padStart(10)}`);
  console.log(`delivered ${lat.length}/${sent} at the fixed rate; 503s: ${refused}; load average ${load}`);
  console.log(`server CPU per event ${rateCpuUs.toFixed(1)} µs -> one core sustains ~${(1e6 / rateCpuUs).toFixed(0)} events/s`);
  process.exit(0);
}

main().catch((e) => { console.error(e); process.exit(1); });
