// The webhook output (plugins/outputs/webhook, SDK 1.2) against a real
// node HTTP receiver: each processed event, and each alert its processor
// raised, is POSTed in batches as a JSON array with an HMAC-SHA256
// signature header the receiver checks. The event contract holds for
// outputs: an event is acknowledged (XACK on its durable stream) only
// once the webhook took it, so while the receiver answers 503 or drops
// the connection the entries stay pending in Redis, and once it comes
// back every accepted event arrives (at least once). A SIGHUP reload
// that replaces the output while the receiver is down loses nothing.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { startDaemon, fetchJson, until, runSophiad, substitute } from './lib/daemon.mjs';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ingest, pendingEntries, publishes } from './lib/outputs.mjs';
import { redisCommand } from './lib/servers.mjs';

const run = `${process.pid}-${Date.now()}`;
const SECRET = `s3cret-${run}`;
const key = `out:hook:${run}`;

// The receiver: `mode` is 'ok', 'fail' (503) or 'close' (drops the
// socket without an answer). Every POST is checked and counted.
const rx = { mode: 'ok', records: [], posts: 0, refused: 0, badSig: 0 };
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    rx.posts++;
    if (rx.mode === 'close') {
      rx.refused++;
      req.socket.destroy();
      return;
    }
    if (rx.mode === 'fail') {
      rx.refused++;
      res.writeHead(503).end('down');
      return;
    }
    const body = Buffer.concat(chunks);
    const want = `sha256=${createHmac('sha256', SECRET).update(body).digest('hex')}`;
    const got = String(req.headers['x-sophia-signature'] || '');
    if (got.length !== want.length || !timingSafeEqual(Buffer.from(got), Buffer.from(want))) {
      rx.badSig++;
      res.writeHead(401).end('bad signature');
      return;
    }
    assert.equal(req.headers['content-type'], 'application/json');
    assert.equal(req.headers['x-test'], 'yes');
    rx.records.push(...JSON.parse(body));
    res.writeHead(200).end('ok');
  });
});

let d;
let port;

function yaml(timeout = '5') {
  return `
plugins:
  path: ["@TEST_PLUGIN_DIR@"]
  instances:
    act:
      plugin: actions
    hook:
      plugin: webhook
      options:
        url: http://127.0.0.1:${port}/in
        secret_env: SOPHIA_TEST_HOOK_SECRET
        headers: ["X-Test: yes"]
        timeout: ${timeout}
        batch_size: 7
        flush_interval: 0.02
        retry_base: 0.05
        retry_cap: 0.3
streams:
  hooked:
    processor: act
    outputs: [hook]
    durable: true
    redis:
      key: ${key}
      group: g
      block: 200ms
`;
}

before(async () => {
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  port = server.address().port;
  d = await startDaemon({ yaml: yaml(), env: { SOPHIA_TEST_HOOK_SECRET: SECRET } });
});

after(async () => {
  if (d) await d.stop();
  server.close();
  await redisCommand(['DEL', key]).catch(() => {});
});


const eventsSeen = (tag) => new Set(rx.records
  .filter((r) => r.type === 'event' && r.event.tag === tag).map((r) => r.event.n));


test('events and their alerts arrive signed, in batches', async () => {
  const evs = [];
  for (let n = 0; n < 30; n++) {
    evs.push(n % 10 === 0
      ? { op: 'alert', alert_type: 'thr', severity: 'warning', message: `m${n}`, n, tag: 'a' }
      : { op: 'publish', data: { n }, n, tag: 'a' });
  }
  await ingest(d, 'hooked', evs);
  await until(() => eventsSeen('a').size === 30, 'all 30 events at the receiver');
  const alerts = rx.records.filter((r) => r.type === 'alert');
  assert.equal(alerts.length, 3);
  for (const a of alerts) {
    assert.equal(a.stream, 'hooked');
    assert.equal(a.alert.alert_type, 'thr');
    assert.equal(a.alert.severity, 'warning');
  }
  const ev = rx.records.find((r) => r.type === 'event');
  assert.equal(ev.stream, 'hooked');
  assert.equal(ev.source, 'redis'); // durable: read back from its Redis stream
  assert.match(ev.id, /^\d+-\d+$/);
  assert.equal(typeof ev.received_ms, 'number');
  assert.equal(rx.badSig, 0);
  assert.ok(rx.posts >= 30 / 7, `batches of at most 7: ${rx.posts} posts`);
  await until(async () => (await pendingEntries(key)) === 0, 'every entry acknowledged');
  const s = (await fetchJson(`${d.url}/api/stats`)).body;
  assert.ok(s.outputs.hook.delivered >= 33, JSON.stringify(s.outputs));
  const m = await (await fetch(`${d.url}/metrics`)).text();
  const line = m.match(/^sophia_output_records_delivered_total\{instance="hook"\} (\d+)$/m);
  assert.ok(line, 'the figure in /metrics too');
  assert.ok(Number(line[1]) >= 33);
});

test('a receiver that fails and comes back: nothing acked before, everything after', async () => {
  rx.mode = 'fail';
  const before = rx.refused;
  await ingest(d, 'hooked', publishes(40, 'b'));
  await until(() => rx.refused >= before + 3, 'the webhook retried against the 503s');
  // Every entry read is still pending: none may be acked while undelivered.
  await until(async () => (await pendingEntries(key)) === 40, '40 entries pending in Redis');
  rx.mode = 'close';
  const closed = rx.refused;
  await until(() => rx.refused >= closed + 2, 'the webhook retried against dropped sockets');
  assert.equal(await pendingEntries(key), 40, 'still nothing acknowledged');
  assert.equal(eventsSeen('b').size, 0);
  rx.mode = 'ok';
  await until(() => eventsSeen('b').size === 40, 'all 40 events once the receiver is back');
  await until(async () => (await pendingEntries(key)) === 0, 'then acknowledged');
  const s = (await fetchJson(`${d.url}/api/stats`)).body;
  assert.ok(s.outputs.hook.retries >= 4, JSON.stringify(s.outputs));
  assert.equal(s.streams.hooked.failed, 0);
});

test('a reload that replaces the output while the receiver is down loses nothing', async () => {
  rx.mode = 'fail';
  await ingest(d, 'hooked', publishes(25, 'c'));
  await until(async () => (await pendingEntries(key)) === 25, '25 entries pending');
  const reloads = (await fetchJson(`${d.url}/api/stats`)).body.reload.reloads;
  await d.writeConfig(yaml('4')); // another option: a new webhook instance
  d.signal('SIGHUP');
  await until(async () => (await fetchJson(`${d.url}/api/stats`)).body.reload.reloads > reloads,
    'the reload happened');
  assert.equal(eventsSeen('c').size, 0);
  rx.mode = 'ok';
  await until(() => eventsSeen('c').size === 25, 'all 25 events after the reload');
  await until(async () => (await pendingEntries(key)) === 0, 'then acknowledged');
  const s = (await fetchJson(`${d.url}/api/stats`)).body;
  const hook = s.plugins.find((p) => p.name === 'hook');
  assert.equal(hook.reload_count, 1);
});

test('--check names an output that is no output instance, with its position', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'outputs-check-'));
  try {
    const file = path.join(dir, 'sophia.yaml');
    writeFileSync(file, substitute(`
plugins:
  path: ["@TEST_PLUGIN_DIR@"]
  instances:
    act:
      plugin: actions
streams:
  s:
    processor: act
    outputs: [nowhere, act]
`, dir));
    const r = await runSophiad(['-c', file, '--check'], { SOPHIA_REDIS_URL: '', SOPHIA_PG_URL: '' });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /sophia\.yaml:10:15: stream 's': output 'nowhere' is not a loaded output instance/);
    assert.match(r.stderr, /sophia\.yaml:10:24: stream 's': output 'act' is not a loaded output instance \(it is a processor\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
