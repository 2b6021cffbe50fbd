// Redis URLs with credentials on every Redis connection sophiad makes,
// against a redis-server this test starts itself with a password
// (requirepass) and an ACL user: the L2 cache, the cluster channel (its
// command and SUBSCRIBE connections), a durable stream and the Redis
// Streams source behind it all authenticate (node A as the ACL user with a
// password that needs percent-encoding, node B as the default user with
// `:password@`). A cache put lands in Redis, an ingest is durable, a
// publish crosses from A to B, an entry XADDed from outside is processed.
// A wrong password or none: /healthz is 503 naming l2, cluster and the
// source, the log names the URL as redis://user:***@host:port/db with
// Redis's reason, and no password appears in the log, /api/stats or
// /metrics.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import {
  startDaemon, fetchJson, freePort, wsConnect, sendJson, nextMessage, until,
} from './lib/daemon.mjs';

const ROOT_PW = `root-${process.pid}-pw`;
const USER = 'sophia';
const USER_PW = `p@ss:w/rd%${process.pid}`; // '@', ':', '/' and '%' need escaping
const DB = 3;
const STREAM_KEY = `sophia:test:auth:${process.pid}`;

// The harness exports its own Redis in SOPHIA_REDIS_URL, which would
// override redis.url: these daemons must use only the URLs in their YAML.
const NO_ENV_URLS = { SOPHIA_REDIS_URL: undefined, SOPHIA_CLUSTER_REDIS_URL: undefined };

let redisPort;
let redisProc;
let redisDir;
let a;
let b;

function cli(args, { user = USER, pass = USER_PW, db = DB } = {}) {
  const auth = user ? ['--user', user, '--pass', pass] : ['-a', pass];
  return new Promise((resolve, reject) => {
    execFile('redis-cli', ['-h', '127.0.0.1', '-p', String(redisPort), ...auth, '--no-auth-warning', '-n', String(db), ...args],
      (err, stdout, stderr) => {
        // redis-cli exits 0 on a refused AUTH or an error reply: its text says so.
        const out = stdout.trim();
        if (err || /AUTH failed/.test(stderr) || /^(ERR|WRONGPASS|NOAUTH|NOPERM)\b/.test(out)) {
          reject(new Error(`${err ? err.message : 'redis-cli'}: ${stderr} ${out}`));
        } else {
          resolve(out);
        }
      });
  });
}

const url = ({ user = USER, pass = USER_PW, db = DB } = {}) =>
  `redis://${user ?? ''}${pass === null ? '' : `:${encodeURIComponent(pass)}@`}127.0.0.1:${redisPort}/${db}`;

const yaml = (node, { l2, cluster, stream = true } = {}) => `
redis:
  url: "${l2}"
cluster:
  redis: "${cluster}"
  node_id: ${node}
plugins:
  path: ["@PLUGIN_DIR@"]
  instances:
    metrics: {plugin: metrics}
streams:
  metrics:
    processor: metrics
${stream ? `    durable: true
    redis:
      key: ${STREAM_KEY}
      group: g
      block: 200ms
` : ''}`;

before(async () => {
  redisPort = await freePort();
  redisDir = await mkdtemp(path.join(process.env.SOPHIA_TEST_TMP || os.tmpdir(), 'redis-auth-'));
  redisProc = spawn('redis-server', [
    '--port', String(redisPort), '--bind', '127.0.0.1', '--dir', redisDir,
    '--save', '', '--appendonly', 'no', '--requirepass', ROOT_PW,
    '--user', USER, 'on', `>${USER_PW}`, '~*', '&*', '+@all',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  await until(async () => (await cli(['PING']).catch(() => '')) === 'PONG', 'redis-server with auth');
  // The server does refuse the unauthenticated and the wrong password.
  await assert.rejects(cli(['PING'], { user: USER, pass: 'nope' }), /WRONGPASS/);
  [a, b] = await Promise.all([
    startDaemon({ yaml: yaml('node-a', { l2: url(), cluster: url() }), env: NO_ENV_URLS }),
    startDaemon({
      yaml: yaml('node-b', { l2: url({ user: null, pass: ROOT_PW, db: 4 }), cluster: url({ user: null, pass: ROOT_PW, db: 0 }), stream: false }),
      env: NO_ENV_URLS,
    }),
  ]);
  for (const n of [a, b]) {
    await until(async () => (await fetchJson(`${n.url}/healthz`)).status === 200, `${n === a ? 'A' : 'B'} healthy`);
  }
  // A node publishes through Redis once it has heard another (cluster.h).
  for (const n of [a, b]) {
    await until(async () => (await fetchJson(`${n.url}/api/stats`)).body.websocket.cluster?.alone === false,
      `${n === a ? 'A' : 'B'} hears the other node`);
  }
});

after(async () => {
  await Promise.all([a, b].filter(Boolean).map((n) => n.stop()));
  if (redisProc) {
    redisProc.kill('SIGTERM');
    await new Promise((r) => redisProc.once('exit', r));
  }
  if (redisDir) await rm(redisDir, { recursive: true, force: true });
});

test('both nodes are up on every tier, authenticated as the ACL user and as the default user', async () => {
  for (const n of [a, b]) {
    const h = await fetchJson(`${n.url}/healthz`);
    assert.equal(h.status, 200, JSON.stringify(h.body));
    assert.equal(h.body.tiers.l2, 'up');
    assert.equal(h.body.tiers.cluster, 'up');
  }
  const clients = await cli(['CLIENT', 'LIST']);
  assert.match(clients, new RegExp(`user=${USER} `), 'A connected as the ACL user');
  assert.match(clients, /user=default /, 'B connected as the default user');
});

test('a cache put lands in Redis (L2) in the URL\'s database', async () => {
  const key = `auth:${process.pid}:k`;
  const put = await fetchJson(`${a.url}/api/cache/${key}`, { method: 'PUT', body: { value: { x: 42 } } });
  assert.ok(put.status < 300, JSON.stringify(put.body));
  await until(async () => (await cli(['EXISTS', `sophia:c:${key}`])) === '1', 'the key in Redis db 3');
  assert.match(await cli(['GET', `sophia:c:${key}`]), /42/);
});

test('an ingest on the durable stream is stored in Redis before the 202, and processed', async () => {
  const stats = async () => (await fetchJson(`${a.url}/api/stats`)).body.streams.metrics;
  const before = await stats();
  assert.equal(before.sources.redis.up, true, JSON.stringify(before.sources));
  const res = await fetchJson(`${a.url}/ingest/metrics`, {
    method: 'POST', body: [{ metric: 'm', value: 1 }, { metric: 'm', value: 2 }],
  });
  assert.equal(res.status, 202);
  assert.equal((await stats()).sources.redis.durable.appended, before.sources.redis.durable.appended + 2);
  assert.ok(Number(await cli(['XLEN', STREAM_KEY])) >= 2);
  await until(async () => (await stats()).processed >= before.processed + 2, 'both processed');
});

test('an entry XADDed to the stream key from outside is read by the Redis source', async () => {
  const stats = async () => (await fetchJson(`${a.url}/api/stats`)).body.streams.metrics;
  const before = await stats();
  await cli(['XADD', STREAM_KEY, '*', 'data', JSON.stringify({ metric: 'ext', value: 7 })]);
  await until(async () => (await stats()).sources.redis.read > before.sources.redis.read, 'the entry read');
  await until(async () => (await stats()).processed > before.processed, 'the entry processed');
});

test('a publish on node A crosses the authenticated cluster channel to node B', async () => {
  const id = `auth${process.pid}`;
  const ws = await wsConnect(b.wsUrl);
  sendJson(ws, { type: 'subscribe', subscriptions: [`dashboard:${id}`] });
  await nextMessage(ws, 'subscribed');
  const res = await fetchJson(`${a.url}/ingest/metrics`, {
    method: 'POST', body: { metric: 'revenue', value: 125000, timestamp: '2024-01-20T10:30:00Z', dashboard_id: id },
  });
  assert.equal(res.status, 202);
  const m = await nextMessage(ws, 'metric');
  assert.equal(m.topic, `dashboard:${id}`);
  assert.equal(m.data.value, 125000);
  ws.close();
});

test('no password in /api/stats, /metrics or the log of a working node', async () => {
  const stats = (await fetchJson(`${a.url}/api/stats`)).text;
  const metrics = (await fetchJson(`${a.url}/metrics`)).text;
  for (const [what, text] of [['stats', stats], ['metrics', metrics], ['log', a.stderr()], ['log B', b.stderr()]]) {
    for (const pw of [USER_PW, encodeURIComponent(USER_PW), ROOT_PW]) {
      assert.ok(!text.includes(pw), `${what} shows a password`);
    }
  }
});

test('a wrong password: /healthz degraded naming l2, cluster and the source; the log says why without the password', async () => {
  const bad = `wrong-${process.pid}-pw`;
  const c = await startDaemon({ yaml: yaml('node-c', { l2: url({ pass: bad }), cluster: url({ pass: bad }) }), env: NO_ENV_URLS });
  try {
    await until(async () => {
      const h = await fetchJson(`${c.url}/healthz`);
      return h.status === 503 && ['l2', 'cluster', 'redis:metrics'].every((t) => h.body.down.includes(t));
    }, 'l2, cluster and the source down');
    const h = await fetchJson(`${c.url}/healthz`);
    assert.equal(h.body.status, 'degraded');
    assert.equal(h.body.tiers.l2, 'down');
    assert.equal(h.body.tiers.cluster, 'down');
    const redacted = `redis://${USER}:***@127.0.0.1:${redisPort}/${DB}`;
    const l2Line = await c.waitForStderr(/redis msg="L2 down/);
    assert.ok(l2Line.includes(`url=${redacted}`), l2Line);
    assert.match(l2Line, /AUTH refused: WRONGPASS/);
    const clLine = await c.waitForStderr(/cluster msg="pub\/sub connection down/);
    assert.ok(clLine.includes(`url=${redacted}`), clLine);
    assert.match(clLine, /AUTH refused: WRONGPASS/);
    // Still serving: an ingest into the durable stream is refused with 503, not a crash.
    const res = await fetchJson(`${c.url}/ingest/metrics`, { method: 'POST', body: { metric: 'm', value: 1 } });
    assert.equal(res.status, 503);
    const stats = (await fetchJson(`${c.url}/api/stats`)).text;
    const metrics = (await fetchJson(`${c.url}/metrics`)).text;
    for (const [what, text] of [['log', c.stderr()], ['stats', stats], ['metrics', metrics]]) {
      for (const pw of [bad, USER_PW, encodeURIComponent(USER_PW), ROOT_PW]) {
        assert.ok(!text.includes(pw), `${what} shows a password`);
      }
    }
  } finally {
    await c.stop();
  }
});

test('no password in the URL of a server that needs one: degraded, and the log says how to give one', async () => {
  const plain = `redis://127.0.0.1:${redisPort}/${DB}`;
  const c = await startDaemon({ yaml: yaml('node-d', { l2: plain, cluster: plain, stream: false }), env: NO_ENV_URLS });
  try {
    await until(async () => {
      const h = await fetchJson(`${c.url}/healthz`);
      return h.status === 503 && h.body.down.includes('l2') && h.body.down.includes('cluster');
    }, 'l2 and cluster down');
    const line = await c.waitForStderr(/redis msg="L2 down/);
    assert.match(line, /NOAUTH/);
    assert.match(line, /redis:\/\/:PASSWORD@HOST/);
  } finally {
    await c.stop();
  }
});
