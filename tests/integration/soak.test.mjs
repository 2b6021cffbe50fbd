// sophia-test: cost 24
// Leaks and memory over time, against one sophiad:
//  - 10,000 WebSocket connections opened and closed in batches, each one
//    subscribing (exact topics, a pattern, a topic of its own) while events
//    are published to some of those topics; half close cleanly, half just
//    drop the TCP connection. Afterwards the daemon counts 0 connections
//    and 0 subscriptions, and under the sanitizer build (scripts/test
//    --sanitize) LeakSanitizer's exit report must be empty: d.stop()
//    rejects on any report, so a leaked connection fails this test.
//  - A bounded soak of ingest + WebSocket fan-out + cache traffic, sampling
//    the daemon's VmRSS from /proc: after a warm-up (caches, history and
//    queues filled to their bounds) RSS must stay flat. Plain builds only
//    assert it (ASan's quarantine and shadow memory make RSS meaningless);
//    SOPHIA_SOAK_SECONDS sets the length (default 15, 8 under the
//    sanitizers; the README figure comes from a 60 s run).
// Each test prints one `soak:` line with its figures.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import WebSocket from 'ws';
import { startDaemon, fetchJson, timeoutScale, until } from './lib/daemon.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const sanitized = Boolean(process.env.ASAN_OPTIONS);

const YAML = `
plugins:
  path: ["@TEST_PLUGIN_DIR@"]
  instances:
    echo:
      plugin: echo
      options: {topic: "soak:events"}
streams:
  soak:
    processor: echo
websocket:
  max_connections: 10000
`;

const eventually = (what, fn, ms = 20000 * timeoutScale) => until(fn, what, ms, 100);

const wsStats = async (d) => (await fetchJson(`${d.url}/api/stats`)).body.websocket;

// One connection's life: open, subscribe, wait for the answer, then either
// a clean close (1000) or a dropped socket. Resolves to the number of
// updates it received meanwhile; rejects on a failed handshake.
function churnOne(url, i) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    let updates = 0;
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`connection ${i} stuck`));
    }, 20000 * timeoutScale);
    ws.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    ws.on('open', () => {
      ws.send(JSON.stringify({
        type: 'subscribe',
        subscriptions: ['soak:events', 'stream:*', `churn:${i % 500}`, 'updates:data'],
      }));
    });
    ws.on('message', (raw) => {
      const m = JSON.parse(raw.toString('utf8'));
      if (m.type === 'data') updates++;
      if (m.type !== 'subscribed') return;
      clearTimeout(timer);
      // A moment subscribed, so updates are in flight when it goes.
      setTimeout(() => {
        if (i % 2) ws.close(1000);
        else ws.terminate();
        resolve(updates);
      }, 20);
    });
  });
}

test('10,000 WebSocket connections opened, subscribed and closed: none left, nothing leaked', async () => {
  const d = await startDaemon({ yaml: YAML });
  try {
    const total = 10000;
    const batch = 200;
    let stop = false;
    let posted = 0;
    // Events keep flowing to the topics the connections subscribe to, so
    // some of them are closed with updates queued.
    const ingest = (async () => {
      while (!stop) {
        const body = Array.from({ length: 20 }, () => JSON.stringify({ n: posted++ })).join('\n');
        const r = await fetchJson(`${d.url}/ingest/soak`, { method: 'POST', body });
        assert.equal(r.status, 202);
        await sleep(2);
      }
    })();
    const t0 = Date.now();
    let updates = 0;
    for (let i = 0; i < total; i += batch) {
      const got = await Promise.all(Array.from({ length: batch }, (_, j) => churnOne(d.wsUrl, i + j)));
      updates += got.reduce((a, b) => a + b, 0);
    }
    const secs = (Date.now() - t0) / 1000;
    stop = true;
    await ingest;
    const s = await eventually('every connection gone', async () => {
      const st = await wsStats(d);
      return st.connections === 0 ? st : null;
    });
    console.log(`soak: ws-churn connections=${total} in ${secs.toFixed(1)} s ` +
      `(${Math.round(total / secs)}/s) connections_total=${s.connections_total} subscriptions=${s.subscriptions} ` +
      `topics=${s.topics} events=${posted} updates_received=${updates} sanitizer=${sanitized}`);
    assert.ok(s.connections_total >= total);
    assert.equal(s.subscriptions, 0);
    assert.equal(s.refused, 0);
    // The 500 churn:N topics had subscribers and never a message: gone with
    // them, or any client could grow the daemon by naming new topics.
    assert.ok(s.topics <= 10, `${s.topics} topics left`);
  } finally {
    // Under the sanitizer build this is the leak check: LeakSanitizer runs
    // at exit and stop() rejects on its report.
    const status = await d.stop();
    assert.equal(status.code, 0);
  }
});

async function vmRssKiB(pid) {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)[1]);
}

const CACHE_SOAK_YAML = `
plugins:
  path: ["@TEST_PLUGIN_DIR@", "@PLUGIN_DIR@"]
  instances:
    echo:
      plugin: echo
      options: {topic: "soak:events"}
    wt:
      plugin: write_through
streams:
  soak:
    processor: echo
    # The queue is a ring allocated at full size whose pages the kernel
    # commits as the ring first goes round (~56 bytes per slot): a small
    # one has wrapped within the warm-up, so what is left is real growth.
    queue_size: 1000
cache:
  write:
    default: wt
`;

test('soak: ingest + WebSocket fan-out + cache traffic, RSS flat after warm-up', async () => {
  // Under the sanitizers RSS is not asserted: a short run is the leak
  // check of this traffic (LeakSanitizer at exit).
  const seconds = Number(process.env.SOPHIA_SOAK_SECONDS) || (sanitized ? 8 : 15);
  const warmup = Math.min(5, seconds / 3);
  const d = await startDaemon({ yaml: CACHE_SOAK_YAML });
  const clients = [];
  try {
    // 50 subscribers, each reading everything published.
    let received = 0;
    for (let i = 0; i < 50; i++) {
      const ws = new WebSocket(d.wsUrl);
      await new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
      });
      ws.send(JSON.stringify({ type: 'subscribe', subscriptions: ['soak:events'] }));
      ws.on('message', () => received++);
      clients.push(ws);
    }
    let stop = false;
    let events = 0;
    let cacheOps = 0;
    const ingest = (async () => {
      while (!stop) {
        const body = Array.from({ length: 20 }, () => JSON.stringify({ n: events++, pad: 'x'.repeat(100) })).join('\n');
        const r = await fetchJson(`${d.url}/ingest/soak`, { method: 'POST', body });
        assert.equal(r.status, 202);
        await sleep(10);
      }
    })();
    // Four clients over a bounded key space (500 keys), so the cache
    // reaches its steady size during the warm-up; reads and writes alternate.
    const cacheClient = async () => {
      while (!stop) {
        const op = cacheOps++;
        const key = `soak:${(op >> 1) % 500}`;
        const url = `${d.url}/api/cache/${encodeURIComponent(key)}`;
        const r = op % 2
          ? await fetchJson(url)
          : await fetchJson(url, { method: 'PUT', body: { value: { i: op, pad: 'y'.repeat(200) }, ttl: 600 } });
        assert.ok(r.status === 200 || r.status === 404, `cache ${r.status}`);
      }
    };
    const cache = Promise.all([cacheClient(), cacheClient(), cacheClient(), cacheClient()]);
    const samples = [];
    const pid = d.proc.pid;
    const t0 = Date.now();
    // The time, and at least 1,000 events and cache operations: on a loaded
    // machine the same seconds carry less traffic, and the check is for
    // leaks per operation, not for a rate. A cap ends a stalled run.
    const enough = () => Date.now() - t0 >= seconds * 1000 && events > 1000 && cacheOps > 1000;
    while (!enough() && Date.now() - t0 < 120000 * timeoutScale) {
      await sleep(1000);
      samples.push({ t: (Date.now() - t0) / 1000, rss: await vmRssKiB(pid) });
    }
    stop = true;
    await Promise.all([ingest, cache]);
    const after = samples.filter((s) => s.t > warmup);
    const start = after[0].rss;
    const end = after[after.length - 1].rss;
    const max = Math.max(...after.map((s) => s.rss));
    console.log(`soak: rss seconds=${seconds} events=${events} cache_ops=${cacheOps} ws_received=${received} ` +
      `rss_kib first=${samples[0].rss} after_warmup=${start} end=${end} max=${max} ` +
      `growth=${(((end - start) / start) * 100).toFixed(1)}% sanitizer=${sanitized} ` +
      `series=${samples.filter((_, i) => i % 5 === 4).map((x) => x.rss).join(',')}`);
    assert.ok(events > 1000 && cacheOps > 1000, 'traffic flowed');
    if (!sanitized) {
      // Measured flat (+8 KiB over 55 s at ~800 events/s, 50 subscribers,
      // ~400 cache ops/s); 1.5 MiB leaves room for allocator noise but not
      // for a leak of ~50 bytes per event, which would show here.
      assert.ok(end - start < 1536, `RSS grew from ${start} to ${end} KiB after the warm-up`);
    }
  } finally {
    for (const ws of clients) ws.terminate();
    const status = await d.stop();
    assert.equal(status.code, 0);
  }
});
