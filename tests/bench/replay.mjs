// replay - what a replay (core/ingest/replay.h) costs live traffic: one
// sophiad, a durable `hist` stream filled with --fill metric points (a
// retention keeps them), and a live stream `live` (durable: false) fed by
// one client posting 10-event bodies in a closed loop. For --seconds each:
// no replay, then a replay of `hist` into a second metrics instance at
// each --rates events/s. Per phase: the live POSTs' p50/p99/max time to
// the 202 (the replay shares the loop; rate-limiting is what keeps these
// flat) and the events/s the replay achieved (from /api/stats); each
// replay is limited to about the phase's length.
// Redis: SOPHIA_REDIS_URL, or a throwaway redis-server started here.
//
// Usage: SOPHIAD=build/core/sophiad SOPHIA_PLUGIN_DIR=build/plugins \
//        node tests/bench/replay.mjs [--seconds 5] [--fill 50000] [--rates 1000,10000,100000]
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { agent, freePort, request, sleep, waitHttp } from './harness.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const SECONDS = Number(opt('seconds', 5));
const FILL = Number(opt('fill', 50000));
const RATES = String(opt('rates', '1000,10000,100000')).split(',').map(Number);

async function startRedis() {
  if (process.env.SOPHIA_REDIS_URL) return { url: process.env.SOPHIA_REDIS_URL, stop: () => {} };
  const port = await freePort();
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '',
    '--appendonly', 'no'], { stdio: 'ignore' });
  await sleep(300);
  return { url: `redis://127.0.0.1:${port}/0`, stop: () => proc.kill('SIGTERM') };
}

const stats = async (port) => JSON.parse((await request(port, 'GET', '/api/stats')).text);
const points = (n, k, tag) => JSON.stringify(Array.from({ length: n },
  (_, i) => ({ metric: `${tag}${(k + i) % 50}`, value: k + i, dashboard_id: tag })));

async function liveLatency(port) {
  const lat = [];
  let k = 0;
  const end = performance.now() + SECONDS * 1000;
  while (performance.now() < end) {
    const t = performance.now();
    if ((await request(port, 'POST', '/ingest/live', points(10, k += 10, 'l'))).status !== 202) throw new Error('not 202');
    lat.push(performance.now() - t);
  }
  lat.sort((a, b) => a - b);
  const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))];
  return { p50: q(0.5), p99: q(0.99), max: lat[lat.length - 1], n: lat.length };
}

const redis = await startRedis();
const dir = mkdtempSync(path.join(os.tmpdir(), 'sophia-bench-replay-'));
const port = await freePort();
const key = `bench:replay:${process.pid}`;
writeFileSync(path.join(dir, 'sophia.yaml'), `
log: {level: warn}
plugins:
  path: ["${path.resolve(process.env.SOPHIA_PLUGIN_DIR)}"]
  instances:
    m: {plugin: metrics}
    m2: {plugin: metrics}
streams:
  live: {processor: m, durable: false, queue_size: 100000}
  hist: {processor: m, durable: true, queue_size: 100000, redis: {key: "${key}"}, retention: {count: ${FILL * 2}}}
`);
const proc = spawn(process.env.SOPHIAD, ['-c', path.join(dir, 'sophia.yaml'), '--listen', `127.0.0.1:${port}`], {
  env: { ...process.env, SOPHIA_REDIS_URL: redis.url, SOPHIA_PG_URL: '' }, stdio: ['ignore', 'ignore', 'inherit'],
});
process.on('exit', () => { proc.kill('SIGTERM'); redis.stop(); rmSync(dir, { recursive: true, force: true }); });
await waitHttp(`http://127.0.0.1:${port}/healthz`, proc);
await sleep(300);

for (let k = 0; k < FILL; k += 500) await request(port, 'POST', '/ingest/hist', points(500, k, 'h'));
while ((await stats(port)).streams.hist.processed < FILL) await sleep(50);
const load = () => os.loadavg()[0].toFixed(2);
console.log(`filled ${FILL} entries; load ${load()}`);

const fmt = (l) => `p50 ${l.p50.toFixed(2)} ms  p99 ${l.p99.toFixed(2)} ms  max ${l.max.toFixed(1)} ms  (${l.n} POSTs)`;
console.log(`no replay            ${fmt(await liveLatency(port))}  load ${load()}`);
for (const rate of RATES) {
  const r = await request(port, 'POST', '/api/streams/hist/replay', JSON.stringify({ target: 'm2', rate, limit: Math.min(FILL, rate * (SECONDS + 1)) }));
  if (r.status !== 202) throw new Error(r.text);
  const before = (await stats(port)).streams.hist.replay.done;
  const t0 = performance.now();
  const l = await liveLatency(port);
  const st = (await stats(port)).streams.hist.replay;
  const eps = (st.done - before) / ((performance.now() - t0) / 1000);
  console.log(`replay at ${String(rate).padEnd(7)}   ${fmt(l)}  replayed ${eps.toFixed(0)} events/s  load ${load()}`);
  // Let it end (or stop waiting) before the next rate.
  const until = Date.now() + 120000;
  while ((await stats(port)).streams.hist.replay.state === 'running' && Date.now() < until) await sleep(200);
}
agent.destroy();
process.exit(0);
