// durable - what durable acceptance (core/ingest/durable.h) costs on ingest:
// POST /ingest/{stream} into the same sophiad, one stream with
// `durable: false` (the in-memory queue, the peer) and one with
// `durable: true` (MULTI/XADD.../EXEC to Redis before the 202, processing
// through the consumer group), plus the floor under the durable path: a
// raw client doing the same MULTI/XADD×N/EXEC per body straight to Redis.
//   1. throughput: 16 POSTs of 100-event bodies in flight for --seconds;
//      accepted events/s (202s), and processed/s (until /api/stats shows
//      every accepted event processed by the metrics processor).
//   2. latency: one POST of 10 events at a time (closed loop) for
//      --seconds; p50/p99/max of the time to the 202.
// Redis: SOPHIA_REDIS_URL, or a throwaway redis-server started here
// (no persistence, loopback). Each target runs --runs times, interleaved.
//
// Usage: SOPHIAD=build/core/sophiad SOPHIA_PLUGIN_DIR=build/plugins \
//        node tests/bench/durable.mjs [--seconds 3] [--runs 3]
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { freePort, sleep, startRedis, waitPort } from './harness.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const SECONDS = opt('seconds', 3);
const RUNS = opt('runs', 3);

// ------------------------------------------------------------- servers
async function startSophiad(redisUrl) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sophia-bench-durable-'));
  const port = await freePort();
  writeFileSync(path.join(dir, 'sophia.yaml'), `
log: {level: warn}
plugins:
  path: ["${path.resolve(process.env.SOPHIA_PLUGIN_DIR)}"]
  instances:
    m: {plugin: metrics}
streams:
  memory: {processor: m, durable: false, queue_size: 100000}
  durable: {processor: m, durable: true, queue_size: 100000}
`);
  const proc = spawn(process.env.SOPHIAD, ['-c', path.join(dir, 'sophia.yaml'), '--listen', `127.0.0.1:${port}`], {
    env: { ...process.env, SOPHIA_REDIS_URL: redisUrl, SOPHIA_PG_URL: '' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  await waitPort(port);
  await sleep(300); // the Redis connections
  proc.on('exit', (code) => { if (code) process.exit(1); });
  return { port, stop: () => { proc.kill('SIGTERM'); rmSync(dir, { recursive: true, force: true }); } };
}

// -------------------------------------------------------------- clients
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

function post(port, stream, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: `/ingest/${stream}`, method: 'POST', agent,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', reject);
    req.end(body);
  });
}

function getJson(port, p) {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: p, agent }, (res) => {
      let t = '';
      res.on('data', (c) => (t += c));
      res.on('end', () => resolve(JSON.parse(t)));
    }).on('error', reject);
  });
}

// A raw RESP client: MULTI, XADD per event, EXEC per body; a body is
// done when its n + 2 replies (+OK, +QUEUED × n, EXEC's array) arrived.
function skipReply(buf, i) { // index after one whole reply at i, or -1
  const e = buf.indexOf('\r\n', i);
  if (e < 0) return -1;
  const t = buf[i];
  const n = Number(buf.slice(i + 1, e));
  if (t === '$') return n < 0 ? e + 2 : (buf.length >= e + 2 + n + 2 ? e + 2 + n + 2 : -1);
  if (t === '*') {
    let j = e + 2;
    for (let k = 0; k < n; k++) if ((j = skipReply(buf, j)) < 0) return -1;
    return j;
  }
  return e + 2; // + - :
}

function rawRedis(url) {
  const m = /^redis:\/\/([^:/]+):(\d+)/.exec(url);
  const sock = net.connect(Number(m[2]), m[1]);
  sock.setNoDelay(true);
  const waiting = []; // {left: replies still due, resolve}
  let buf = '';
  sock.on('data', (chunk) => {
    buf += chunk.toString('latin1');
    let i = 0;
    for (;;) {
      const j = skipReply(buf, i);
      if (j < 0) break;
      i = j;
      if (--waiting[0].left === 0) waiting.shift().resolve(202);
    }
    buf = buf.slice(i);
  });
  const enc = (a) => `*${a.length}\r\n${a.map((x) => `$${Buffer.byteLength(x)}\r\n${x}\r\n`).join('')}`;
  return {
    ready: new Promise((r) => sock.once('connect', r)),
    append(events) {
      return new Promise((resolve) => {
        waiting.push({ left: events.length + 2, resolve });
        sock.write(enc(['MULTI']) + events.map((e) => enc(['XADD', 'bench:raw', '*', 'data', e])).join('') + enc(['EXEC']));
      });
    },
    close: () => sock.destroy(),
  };
}

const points = (n, k) => Array.from({ length: n }, (_, i) => ({ metric: `m${(k + i) % 50}`, value: i, dashboard_id: 'b' }));

async function throughput(send, processed) {
  let accepted = 0;
  let k = 0;
  const end = performance.now() + SECONDS * 1000;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (performance.now() < end) {
      const evs = points(100, k++);
      if ((await send(evs)) === 202) accepted += 100;
    }
  }));
  const t1 = performance.now();
  let done = t1;
  if (processed) {
    const limit = Date.now() + 60000;
    while ((await processed()) < accepted && Date.now() < limit) await sleep(5);
    done = performance.now();
  }
  return { accepted_s: accepted / ((t1 - t0) / 1000), processed_s: processed ? accepted / ((done - t0) / 1000) : NaN };
}

async function latency(send) {
  const lat = [];
  let k = 0;
  const end = performance.now() + SECONDS * 1000;
  while (performance.now() < end) {
    const t = performance.now();
    if ((await send(points(10, k++))) !== 202) throw new Error('not 202');
    lat.push(performance.now() - t);
  }
  lat.sort((a, b) => a - b);
  const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))];
  return { p50: q(0.5), p99: q(0.99), max: lat[lat.length - 1], n: lat.length };
}

// ----------------------------------------------------------------- main
const redis = process.env.SOPHIA_REDIS_URL
  ? { url: process.env.SOPHIA_REDIS_URL, stop: () => {} } : await startRedis();
let d;
let raw;
const cleanup = () => {
  raw?.close();
  d?.stop();
  redis.stop();
  agent.destroy();
};
process.on('exit', cleanup); // also when a start fails: no server is left behind
d = await startSophiad(redis.url);
raw = rawRedis(redis.url);
await raw.ready;
const stat = (s) => async () => (await getJson(d.port, '/api/stats')).streams[s].processed;
const targets = {
  memory: { send: (evs) => post(d.port, 'memory', JSON.stringify(evs)), processed: stat('memory') },
  durable: { send: (evs) => post(d.port, 'durable', JSON.stringify(evs)), processed: stat('durable') },
  'raw MULTI/XADD/EXEC': { send: (evs) => raw.append(evs.map((e) => JSON.stringify(e))), processed: null },
};
const rows = Object.fromEntries(Object.keys(targets).map((t) => [t, []]));
try {
  for (let r = 0; r < RUNS; r++) {
    for (const [name, t] of Object.entries(targets)) {
      const tp = await throughput(t.send, t.processed);
      const lt = await latency(t.send);
      rows[name].push({ ...tp, ...lt });
    }
  }
} finally {
  cleanup();
  process.removeListener('exit', cleanup);
}

const med = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const f0 = (x) => (Number.isNaN(x) ? '-' : Math.round(x).toLocaleString('en-US'));
const f2 = (x) => x.toFixed(2);
let load = '';
try { load = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' '); } catch { /* not Linux */ }
console.log(`\ndurable acceptance: ${SECONDS} s per measurement, ${RUNS} runs each (median; every run in brackets), load ${load}`);
console.log('| target | accepted events/s (16 × 100-event POSTs) | processed events/s | 202 latency, 10-event POST, p50 / p99 / max ms |');
console.log('|---|---|---|---|');
for (const [name, rs] of Object.entries(rows)) {
  console.log(`| ${name} | ${f0(med(rs.map((x) => x.accepted_s)))} [${rs.map((x) => f0(x.accepted_s)).join(', ')}] | ` +
    `${f0(med(rs.map((x) => x.processed_s)))} | ${f2(med(rs.map((x) => x.p50)))} / ${f2(med(rs.map((x) => x.p99)))} / ` +
    `${f2(med(rs.map((x) => x.max)))} [p99 ${rs.map((x) => f2(x.p99)).join(', ')}] |`);
}
const m = rows.memory;
const du = rows.durable;
console.log(`\ndurable / memory: accepted ${f2(med(du.map((x) => x.accepted_s)) / med(m.map((x) => x.accepted_s)))}×, ` +
  `processed ${f2(med(du.map((x) => x.processed_s)) / med(m.map((x) => x.processed_s)))}×, ` +
  `p99 ${f2(med(du.map((x) => x.p99)) / med(m.map((x) => x.p99)))}×`);
