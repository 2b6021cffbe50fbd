// Durable acceptance (core/ingest/durable.h) against the real Redis of the
// harness: numbered events are ingested steadily into a durable stream
// whose processor (the `failer` test plugin, 1 ms per event) is slower
// than ingest, so a backlog waits in Redis and a batch is read but not
// acknowledged when sophiad is killed with SIGKILL; started again on the
// same Redis, every event that was answered 202 must come out of the
// processor exactly once (WebSocket subscribers on the old and the new
// process together). A durable stream whose Redis is unreachable
// answers 503 + Retry-After, never a silent in-memory 202; durable: false
// keeps the memory queue, which a kill -9 may empty.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startDaemon, runSophiad, fetchJson, wsConnect, nextMessage, takeMessages, freePort, until as waitUntil,
} from './lib/daemon.mjs';
import { redisAddress, redisCommand } from './lib/servers.mjs';
import net from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const run = `${process.pid}-${Date.now()}`;
const keys = [];

after(async () => {
  for (const k of keys) await redisCommand(['DEL', k]).catch(() => {});
});

// No key: the stream's default key is the node's own (name, hostname,
// listen address), so the restart on the same port finds it, under the
// same default consumer name. `key` names one explicitly.
function yaml({ key, durable = 'true', topic = 'dur' }) {
  return `
plugins:
  path: ["@TEST_PLUGIN_DIR@"]
  instances:
    slow:
      plugin: failer
      options: {topic: ${topic}, cache_prefix: "dur:${run}:"}
websocket:
  history: 50000
streams:
  dur:
    processor: slow
    durable: ${durable}
    queue_size: 50000
    batch_size: 1
    redis:${key ? `\n      key: ${key}` : ''}
      group: g
      block: 200ms
      claim_idle: 2s
`;
}

const until = (fn, what, ms = 15000) => waitUntil(fn, what, ms, 50);

async function healthy(d) {
  await until(async () => (await fetchJson(`${d.url}/healthz`)).status === 200, 'healthz 200');
}

// Subscribes to the plugin's topic; `since` 0 replays what the daemon published
// before the subscription (a restarted daemon starts on its backlog at once).
async function subscribe(d, topic = 'dur') {
  const ws = await wsConnect(d.wsUrl);
  ws.send(JSON.stringify({ type: 'subscribe', subscriptions: [topic], since: { [topic]: 0 } }));
  await nextMessage(ws, 'subscribed');
  return ws;
}

// The numbers in the topic's publications received so far on ws.
function drainNumbers(ws, into, topic = 'dur') {
  for (const m of takeMessages(ws)) {
    assert.notEqual(m.type, 'resync', 'history too small for the test');
    if (m.topic === topic && m.data && typeof m.data.n === 'number') into.push(m.data.n);
  }
}

// Posts bodies of `size` numbered events from `workers` loops until
// stop() is called; a body answered 202 is accepted, anything else
// (503, connection refused while sophiad is down) is not.
function producer(getUrl, { workers = 3, size = 20 } = {}) {
  let next = 0;
  let stopped = false;
  const accepted = [];
  const unanswered = []; // sent, no 202: may or may not have been stored
  let ok = 0;
  let failed = 0;
  const loop = async () => {
    while (!stopped) {
      const body = Array.from({ length: size }, () => ({ n: next++, sleep_ms: 1 }));
      try {
        const res = await fetchJson(`${getUrl()}/ingest/dur`, {
          method: 'POST', body, timeoutMs: 3000,
        });
        if (res.status === 202) {
          accepted.push(...body.map((e) => e.n));
          ok++;
          continue;
        }
      } catch { /* sophiad is down: try again shortly */ }
      unanswered.push(...body.map((e) => e.n));
      failed++;
      await sleep(20);
    }
  };
  const done = Promise.all(Array.from({ length: workers }, loop));
  return {
    accepted, unanswered,
    stats: () => ({ ok, failed, sent: next }),
    stop: async () => { stopped = true; await done; },
  };
}

function counts(ns) {
  const m = new Map();
  for (const n of ns) m.set(n, (m.get(n) || 0) + 1);
  return m;
}

test('kill -9 mid-stream: every event answered 202 is processed and published exactly once', async (t) => {
  const d1 = await startDaemon({ yaml: yaml({}) });
  await healthy(d1);
  const key = (await fetchJson(`${d1.url}/api/stats`)).body.streams.dur.sources.redis.key;
  assert.match(key, new RegExp(`^sophia:stream:dur@.+/127\\.0\\.0\\.1:${d1.port}$`));
  keys.push(key, `${key}:dead`);
  const ws1 = await subscribe(d1);
  let url = d1.url;
  const p = producer(() => url);
  const seen = [];

  await until(() => p.accepted.length >= 600, '600 accepted events before the kill');
  d1.proc.kill('SIGKILL');
  await d1.exited;
  const [pendingAtKill] = await redisCommand(['XPENDING', key, 'g']);
  const unreadAtKill = (await redisCommand(['XINFO', 'GROUPS', key]))[0][11]; // lag
  const pendingIds = new Set((await redisCommand(['XPENDING', key, 'g', '-', '+', 100000])).map(([id]) => id));
  const pendingNs = new Set((await redisCommand(['XRANGE', key, '-', '+']))
    .filter(([id]) => pendingIds.has(id)).map(([, f]) => JSON.parse(f[1]).n));
  await sleep(100); // let the last frames the old process wrote arrive
  drainNumbers(ws1, seen);
  const acceptedBeforeKill = p.accepted.length;
  const seenBeforeKill = seen.length;
  const publishedByKilled = seen.slice();
  ws1.terminate();

  // Same port: the producer keeps posting (and failing) throughout.
  const d2 = await startDaemon({ yaml: yaml({}), port: d1.port });
  await healthy(d2);
  const ws2 = await subscribe(d2);
  await until(() => p.accepted.length >= acceptedBeforeKill + 300, '300 more accepted after restart');
  await p.stop();

  const accepted = new Set(p.accepted);
  await until(() => {
    drainNumbers(ws2, seen);
    const got = new Set(seen);
    return [...accepted].every((n) => got.has(n));
  }, `all ${accepted.size} accepted events published`).catch((err) => {
    const got = new Set(seen);
    const missing = [...accepted].filter((n) => !got.has(n));
    err.message += `: ${missing.length} missing, e.g. ${missing.slice(0, 10)}`;
    return (async () => {
      const info = await redisCommand(['XINFO', 'GROUPS', key]);
      const pend = await redisCommand(['XPENDING', key, 'g', '-', '+', 10]);
      const all = await redisCommand(['XRANGE', key, '-', '+']);
      const where = all.filter(([, f]) => missing.includes(JSON.parse(f[1]).n)).map(([id]) => id);
      err.message += `; groups ${JSON.stringify(info)}; pending ${JSON.stringify(pend)}; missing ids ${where.slice(0, 5)}`;
      throw err;
    })();
  });
  // Nothing left pending in the group once the backlog is done.
  await until(async () => (await redisCommand(['XPENDING', key, 'g']))[0] === 0, 'no pending entries');
  await sleep(300); // a duplicate would arrive in this time
  drainNumbers(ws2, seen);

  const c = counts(seen);
  const dups = [...c].filter(([, k]) => k > 1);
  const sent = new Set([...p.accepted, ...p.unanswered]);
  const strangers = [...c.keys()].filter((n) => !sent.has(n));
  const unansweredStored = p.unanswered.filter((n) => c.has(n)).length;
  const st = (await fetchJson(`${d2.url}/api/stats`)).body.streams.dur;
  t.diagnostic(`at the kill: ${pendingAtKill} read and not acknowledged, ${unreadAtKill} not read yet`);
  t.diagnostic(`accepted ${accepted.size} (${acceptedBeforeKill} before the kill), published ` +
    `${c.size} distinct (${seenBeforeKill} by the killed process), duplicates ${dups.length}, ` +
    `unanswered ${p.unanswered.length} of which stored anyway ${unansweredStored}, ` +
    `restarted process: received ${st.received} processed ${st.processed}, ` +
    `producer ${JSON.stringify(p.stats())}`);
  // At least once: what can come out twice is what was published and not
  // yet acknowledged at the instant of the SIGKILL. XACKs are batched per
  // loop turn after the commits (source_redis.c) and events commit in the
  // order they were processed, at most 256 in flight per stream
  // (stream.h), so the duplicates are the tail of what the killed process
  // published, each still pending in the group at the kill: an ack lost
  // or late anywhere else would show up as a duplicate further back.
  const tail = publishedByKilled.slice(-dups.length);
  assert.ok(dups.length <= 256, `events published twice: ${JSON.stringify(dups)}`);
  assert.deepEqual(dups.map(([n]) => n).sort((a, b) => a - b), dups.length ? tail.sort((a, b) => a - b) : [],
    `the duplicates are not the tail of what the killed process published: ${JSON.stringify(dups)}`);
  for (const [n] of dups) assert.ok(pendingNs.has(n), `duplicate ${n} was acknowledged before the kill`);
  assert.deepEqual(strangers, []);
  for (const n of accepted) assert.ok(c.get(n) >= 1, `event ${n} published`);
  // The restarted process took over what the dead one had read and not
  // acknowledged (its own pending list, same consumer name) plus the rest.
  assert.ok(pendingAtKill > 0, 'the kill found no batch in flight');
  assert.match(d2.stderr(), /re-read own pending entries/);
  assert.equal(st.failed, 0);
  assert.equal(st.processed + seenBeforeKill >= accepted.size, true);
  // The other effect, keyed by the event's number (so exactly once
  // whatever the redelivery): a cache entry per accepted event, written
  // by either process and read back through the new one.
  const ns = [...accepted];
  for (let i = 0; i < ns.length; i += 50) {
    const got = await Promise.all(ns.slice(i, i + 50).map((n) =>
      fetchJson(`${d2.url}/api/cache/${encodeURIComponent(`dur:${run}:${n}`)}`)));
    got.forEach((r, j) => assert.equal(r.status, 200, `cache entry of event ${ns[i + j]}`));
  }
  ws2.close();
  await d2.stop();
});

test('what every group has processed is trimmed from the Redis Stream', async () => {
  const d = await startDaemon({ yaml: yaml({}) });
  await healthy(d);
  const stats = async () => (await fetchJson(`${d.url}/api/stats`)).body.streams.dur;
  const key = (await stats()).sources.redis.key;
  keys.push(key, `${key}:dead`);
  for (let b = 0; b < 10; b++) {
    const body = Array.from({ length: 100 }, (_, i) => ({ n: b * 100 + i }));
    assert.equal((await fetchJson(`${d.url}/ingest/dur`, { method: 'POST', body })).status, 202);
  }
  await until(async () => (await stats()).processed === 1000, '1000 processed');
  // XTRIM MINID ~ drops whole stream nodes (100 entries each by default).
  await until(async () => (await redisCommand(['XLEN', key])) <= 100, 'the stream trimmed');
  assert.ok((await stats()).sources.redis.durable.trimmed >= 900);
  assert.equal((await redisCommand(['XPENDING', key, 'g']))[0], 0);
  await d.stop();
});

// Redis's MONITOR: every command as `<time> [<db> <client addr>] "CMD" "arg"...`.
async function monitor() {
  const { host, port } = redisAddress();
  const sock = net.connect(port, host);
  let text = '';
  sock.setEncoding('utf8');
  sock.on('data', (d) => { text += d; });
  await new Promise((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject); });
  sock.write('MONITOR\r\n');
  await waitUntil(async () => text.startsWith('+OK'), 'MONITOR on');
  return {
    // [client address, command, its arguments as printed] of each command
    commands: () => [...text.matchAll(/^\+[\d.]+ \[\d+ ([^\]]+)\] "(\w+)"(.*)$/gm)].map((m) => [m[1], m[2].toUpperCase(), m[3]]),
    stop: () => sock.destroy(),
  };
}

test('a durable stream\'s XACKs ride on its next append (one write, one answer); all are acked once appends stop', async () => {
  const d = await startDaemon({ yaml: yaml({}) });
  await healthy(d);
  const stats = async () => (await fetchJson(`${d.url}/api/stats`)).body.streams.dur;
  const key = (await stats()).sources.redis.key;
  keys.push(key, `${key}:dead`);
  const mon = await monitor();
  try {
    for (let b = 0; b < 30; b++) {
      const body = Array.from({ length: 5 }, (_, i) => ({ n: b * 5 + i, sleep_ms: 1 }));
      assert.equal((await fetchJson(`${d.url}/ingest/dur`, { method: 'POST', body })).status, 202);
    }
    await until(async () => (await stats()).processed === 150, '150 processed');
    await until(async () => (await redisCommand(['XPENDING', key, 'g']))[0] === 0, 'no pending entries');
    const cmds = mon.commands().filter(([, , args]) => args.includes(`"${key}"`));
    const appender = new Set(cmds.filter(([, c]) => c === 'EVAL').map(([a]) => a));
    const acks = cmds.filter(([, c]) => c === 'XACK');
    assert.equal(appender.size, 1, 'one append connection');
    assert.ok(acks.some(([a]) => appender.has(a)), 'some XACK went on the append connection');
  } finally {
    mon.stop();
    await d.stop();
  }
});

test('entries this node appended are taken back as accepted, twins included; a stranger\'s entry is parsed', async () => {
  const d = await startDaemon({ yaml: yaml({}) });
  await healthy(d);
  const stats = async () => (await fetchJson(`${d.url}/api/stats`)).body.streams.dur;
  const key = (await stats()).sources.redis.key;
  keys.push(key, `${key}:dead`);
  const before = (await stats()).sources.redis.durable.reused;
  // 40 distinct events and 60 with one text: every one is processed once
  const body = Array.from({ length: 100 }, (_, i) => ({ n: i < 40 ? i : 'twin' }));
  assert.equal((await fetchJson(`${d.url}/ingest/dur`, { method: 'POST', body })).status, 202);
  await until(async () => (await stats()).processed === 100, '100 processed');
  assert.equal((await stats()).sources.redis.durable.reused - before, 100);
  // another writer's entry is not in memory: parsed from the reply
  await redisCommand(['XADD', key, '*', 'data', '{"n":"stranger"}']);
  await until(async () => (await stats()).processed === 101, 'the stranger processed');
  assert.equal((await stats()).sources.redis.durable.reused - before, 100);
  await d.stop();
});

// The append is one script (durable.c): an append Redis refuses (the key is not
// a stream) is a 503 that wrote nothing; once the key is free, a body is
// appended whole and every event of it processed once.
test('an append Redis refuses is answered 503 and writes nothing; the next is appended whole', async (t) => {
  const key = `sophia:test:dur-refused:${run}`;
  keys.push(key, `${key}:dead`);
  await redisCommand(['SET', key, 'not a stream']);
  const d = await startDaemon({ yaml: yaml({ key }) });
  t.after(() => d.stop());
  const stats = async () => (await fetchJson(`${d.url}/api/stats`)).body.streams.dur;
  // not healthy (no consumer group on a string), but the appender is up
  await until(async () => (await stats()).sources.redis.durable.up, 'appender up');
  // more events than durable.c's look-up window, so that a failed
  // append's slots left in the ring would hide the next append's
  const refusedBody = Array.from({ length: 100 }, (_, i) => ({ n: -1 - i }));
  const refused = await fetchJson(`${d.url}/ingest/dur`, { method: 'POST', body: refusedBody });
  assert.equal(refused.status, 503);
  assert.equal(await redisCommand(['TYPE', key]), 'string');
  assert.equal((await stats()).sources.redis.durable.append_failed, 100);
  assert.equal((await stats()).sources.redis.durable.appended, 0);
  // The group cannot be created on a string: the source retries on a
  // back-off (0.1 s growing to 5 s) and says so once, not every 20 ms poll.
  await d.waitForStderr(/cannot create consumer group/);
  await new Promise((r) => setTimeout(r, 1500));
  const said = d.stderrLines.filter((l) => /cannot create consumer group/.test(l));
  assert.equal(said.length, 1, said.join('\n'));
  await redisCommand(['DEL', key]);
  const ws = await subscribe(d);
  const body = Array.from({ length: 50 }, (_, i) => ({ n: i }));
  assert.equal((await fetchJson(`${d.url}/ingest/dur`, { method: 'POST', body })).status, 202);
  assert.equal((await stats()).sources.redis.durable.appended, 50);
  const got = [];
  await until(async () => { drainNumbers(ws, got); return got.length >= 50; }, '50 published');
  assert.deepEqual([...got].sort((a, b) => a - b), body.map((e) => e.n));
  // the refused append's slots do not stand in the way of the next one's:
  // its events are taken back as accepted, not parsed (durable.c's ring)
  assert.equal((await stats()).sources.redis.durable.reused, 50);
  ws.close();
});

test('durable: false keeps the memory queue: a kill -9 may lose accepted events', async (t) => {
  const key = `sophia:test:${run}:mem`;
  keys.push(key, `${key}:dead`);
  // A topic of its own: nodes on one Redis share topics (cluster.h), and a
  // daemon an earlier failed test left running must not feed this one's.
  const topic = 'dur-mem';
  const d1 = await startDaemon({ yaml: yaml({ key, durable: 'false', topic }) });
  await healthy(d1);
  const ws1 = await subscribe(d1, topic);
  let url = d1.url;
  const p = producer(() => url);
  await until(() => p.accepted.length >= 600, '600 accepted events before the kill');
  d1.proc.kill('SIGKILL');
  await d1.exited;
  await sleep(100);
  const seen = [];
  drainNumbers(ws1, seen, topic);
  ws1.terminate();
  const d2 = await startDaemon({ yaml: yaml({ key, durable: 'false', topic }), port: d1.port });
  await healthy(d2);
  const ws2 = await subscribe(d2, topic);
  await p.stop();
  await sleep(300);
  drainNumbers(ws2, seen, topic);
  const c = counts(seen);
  const lost = p.accepted.filter((n) => !c.has(n)).length;
  t.diagnostic(`memory queue: accepted ${p.accepted.length}, published ${c.size}, ` +
    `lost at the kill ${lost} (may be 0: the queue is drained in microseconds)`);
  // Only what cannot flake: nothing is published twice or invented, and
  // the stream never touched Redis.
  assert.deepEqual([...c].filter(([, k]) => k > 1), []);
  const sent = new Set([...p.accepted, ...p.unanswered]);
  assert.deepEqual([...c.keys()].filter((n) => !sent.has(n)), []);
  assert.equal(await redisCommand(['XLEN', key]), 0); // its redis: source made the key, empty
  ws2.close();
  await d2.stop();
});

test('a durable stream whose Redis is down answers 503 + Retry-After, never a silent 202', async () => {
  const port = await freePort(); // nothing listens there
  const d = await startDaemon({
    yaml: `
plugins:
  path: ["@TEST_PLUGIN_DIR@"]
  instances:
    echo:
      plugin: echo
      options: {topic: dur}
streams:
  explicit: {processor: echo, durable: true}
  implicit: {processor: echo}
  memory: {processor: echo, durable: false}
`,
    env: { SOPHIA_REDIS_URL: `redis://127.0.0.1:${port}/0` },
  });
  for (const s of ['explicit', 'implicit']) {
    const res = await fetchJson(`${d.url}/ingest/${s}`, { method: 'POST', body: [{ n: 1 }, { n: 2 }] });
    assert.equal(res.status, 503, s);
    assert.equal(res.headers.get('retry-after'), '1');
    assert.equal(res.body.error.code, 'durable_unavailable');
  }
  const mem = await fetchJson(`${d.url}/ingest/memory`, { method: 'POST', body: [{ n: 1 }] });
  assert.equal(mem.status, 202);
  const st = (await fetchJson(`${d.url}/api/stats`)).body.streams;
  assert.equal(st.explicit.received, 0);
  assert.equal(st.implicit.received, 0);
  const h = await fetchJson(`${d.url}/healthz`);
  assert.equal(h.status, 503);
  assert.ok(h.body.down.includes('redis:explicit'), JSON.stringify(h.body));
  await d.stop();
});

test('--check refuses durable: true without Redis, and a non-boolean durable', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sophia-durable-'));
  const file = path.join(dir, 'sophia.yaml');
  writeFileSync(file, `
plugins:
  path: ["${process.env.SOPHIA_TEST_PLUGIN_DIR}"]
  instances:
    echo: {plugin: echo, options: {topic: dur}}
streams:
  a: {processor: echo, durable: true}
  b: {processor: echo, durable: maybe}
`);
  const res = await runSophiad(['--check', '-c', file], { SOPHIA_REDIS_URL: '' });
  rmSync(dir, { recursive: true, force: true });
  assert.equal(res.code, 1, JSON.stringify(res));
  assert.match(res.stderr, /streams\.a\.durable: true needs Redis/);
  assert.match(res.stderr, /durable: expected a boolean \(true\/false\), got 'maybe'/);
});

test('durable switched on a kept stream by SIGHUP: logged as waiting for a restart, the stream keeps working', async () => {
  const key = `sophia:test:${run}:hup`;
  keys.push(key, `${key}:dead`);
  const d = await startDaemon({ yaml: yaml({ key, durable: 'false' }) });
  await healthy(d);
  const mark = d.stderrLines.length;
  await d.writeConfig(yaml({ key, durable: 'true' }));
  d.signal('SIGHUP');
  await d.waitForStderr(/durable and queue_size changes take effect at restart.*stream=dur/, undefined, mark);
  const r = await fetchJson(`${d.url}/ingest/dur`, { method: 'POST', body: { n: 1 } });
  assert.equal(r.status, 202);
  await until(async () => (await fetchJson(`${d.url}/api/stats`)).body.streams.dur.processed === 1, 'processed after the reload');
  assert.equal(await redisCommand(['XLEN', key]), 0, 'still the memory queue until a restart');
  await d.stop();
});
