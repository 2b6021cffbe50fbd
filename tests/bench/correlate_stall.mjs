// correlate_stall - does a correlator's persistence stall sophiad's loop?
// One sophiad, a durable stream `ev` (metrics processor) whose events
// (each with 1.2 KB of text, like a Gong call) a `patterns` correlator
// keeps per deal, waiting for a second step: --keys of them are opened by
// 10 clients posting 100-event bodies. Meanwhile a probe asks /healthz
// every 2 ms, one request at a time: its latency is the time the loop
// took to get to it (on a busy machine, also the time the scheduler gave
// to others: the first phase, idle, shows that floor). Phases: idle 3 s,
// the fill (every event's keys written to
// Redis before its ack), 3 s idle after it (timers, the 1 s tick), and a
// SIGHUP that replaces the correlator instance (the new one reads the
// hash back, a page a turn). Per phase: /healthz p50, p99 and max.
// Redis: SOPHIA_REDIS_URL, or a throwaway redis-server started here.
//
// Usage: SOPHIAD=build/core/sophiad SOPHIA_PLUGIN_DIR=build/plugins \
//        node tests/bench/correlate_stall.mjs [--keys 100000]
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { agent, freePort, request, sleep, startRedis, waitHttp } from './harness.mjs';

const args = process.argv.slice(2);
const at = args.indexOf('--keys');
const KEYS = at >= 0 ? Number(args[at + 1]) : 100000;
const PAD = 'x'.repeat(1200);

const stats = async (port) => JSON.parse((await request(port, 'GET', '/api/stats')).text);

// /healthz one at a time until stop(); the latencies.
function probe(port) {
  const lat = [];
  let stopped = false;
  const done = (async () => {
    while (!stopped) {
      const t = performance.now();
      await request(port, 'GET', '/healthz');
      lat.push(performance.now() - t);
      await sleep(2);
    }
  })();
  return { stop: async () => { stopped = true; await done; return lat; } };
}

const fmt = (lat) => {
  lat.sort((a, b) => a - b);
  const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))];
  return `/healthz p50 ${q(0.5).toFixed(2)} ms  p99 ${q(0.99).toFixed(1)} ms  max ${lat[lat.length - 1].toFixed(1)} ms (${lat.length})`;
};

const yaml = (maxEvents) => `
log: {level: warn}
cluster: {node_id: "stall${process.pid}"}
plugins:
  path: ["${path.resolve(process.env.SOPHIA_PLUGIN_DIR)}"]
  instances:
    m: {plugin: metrics}
    deals:
      plugin: patterns
      options:
        max_events: ${maxEvents}
        rules:
          - name: pair
            window: 24h
            steps:
              - {stream: ev, key: labels.deal, match: [{path: value, equals: 1}]}
              - {stream: ev, key: labels.deal, match: [{path: value, equals: 2}]}
streams:
  ev: {processor: m, durable: true, queue_size: 100000, redis: {key: "bench:stall:${process.pid}"}}
correlators:
  deals: {streams: [ev]}
`;

const redis = process.env.SOPHIA_REDIS_URL ? { url: process.env.SOPHIA_REDIS_URL, stop: () => {} } : await startRedis();
const dir = mkdtempSync(path.join(os.tmpdir(), 'sophia-bench-stall-'));
const file = path.join(dir, 'sophia.yaml');
const port = await freePort();
writeFileSync(file, yaml(16));
const proc = spawn(process.env.SOPHIAD, ['-c', file, '--listen', `127.0.0.1:${port}`], {
  env: { ...process.env, SOPHIA_REDIS_URL: redis.url, SOPHIA_PG_URL: '' }, stdio: ['ignore', 'ignore', 'inherit'],
});
process.on('exit', () => { proc.kill('SIGTERM'); redis.stop(); rmSync(dir, { recursive: true, force: true }); });
await waitHttp(`http://127.0.0.1:${port}/healthz`, proc);
while ((await stats(port)).correlators.deals.restoring) await sleep(50);
const load = () => os.loadavg()[0].toFixed(2);

let p = probe(port);
await sleep(3000);
console.log(`idle before the fill: ${fmt(await p.stop())}  load ${load()}`);

p = probe(port);
let next = 0;
const t0 = performance.now();
await Promise.all(Array.from({ length: 10 }, async () => {
  while (next < KEYS) {
    const k = next;
    next += 100;
    const body = JSON.stringify(Array.from({ length: Math.min(100, KEYS - k) },
      (_, i) => ({ metric: 'stage', value: 1, dashboard_id: 's', labels: { deal: `D${k + i}` }, note: PAD })));
    while ((await request(port, 'POST', '/ingest/ev', body)).status !== 202) await sleep(20);
  }
}));
while ((await stats(port)).correlators.deals.open_keys < KEYS) await sleep(50);
const fillS = (performance.now() - t0) / 1000;
console.log(`fill, ${KEYS} keys written in ${fillS.toFixed(1)} s (${(KEYS / fillS).toFixed(0)} events/s): ${fmt(await p.stop())}  load ${load()}`);

p = probe(port);
await sleep(3000);
console.log(`idle 3 s after it:  ${fmt(await p.stop())}  load ${load()}`);

p = probe(port);
writeFileSync(file, yaml(15)); // another option: a new instance
const reloads = (await stats(port)).reload.reloads;
const t1 = performance.now();
proc.kill('SIGHUP');
while ((await stats(port)).reload.reloads === reloads) await sleep(20);
while ((await stats(port)).correlators.deals.restoring) await sleep(50);
const c = (await stats(port)).correlators.deals;
console.log(`reload, ${c.open_keys} keys read back in ${((performance.now() - t1) / 1000).toFixed(1)} s: ${fmt(await p.stop())}  load ${load()}`);
agent.destroy();
process.exit(0);
