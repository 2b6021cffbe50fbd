// sophia-test: run-serial
// The test harness itself: the servers scripts/test started are real and
// reachable, the sophiad under test runs, and the helpers in lib/ do what
// the other integration tests rely on. Runs serially because it stops and
// restarts the shared Redis and PostgreSQL.
//
// The daemon helpers are checked against a tiny fake daemon written here, so
// that a harness bug is told apart from a sophiad bug.

import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { WebSocketServer } from 'ws';

import {
  fetchJson,
  nextMessage,
  runSophiad,
  sendJson,
  startDaemon,
  substitute,
  takeMessages,
  wsClosed,
  wsConnect,
} from './lib/daemon.mjs';
import {
  createDatabase,
  dropDatabase,
  pgAddress,
  pgQuery,
  redisCommand,
  startPostgres,
  startRedis,
  stopPostgres,
  stopRedis,
  tcpProbe,
} from './lib/servers.mjs';

// Serves /healthz like sophiad, echoes its config file on stderr, and exits
// 0 on SIGTERM. FAKE_EXIT makes it die at once with that code instead,
// FAKE_IGNORE_TERM ignore SIGTERM, FAKE_ASAN print a sanitizer report.
const FAKE_DAEMON = `#!${process.execPath}
const http = require('node:http');
const fs = require('node:fs');
const args = process.argv.slice(2);
const cfg = args[args.indexOf('-c') + 1];
const [host, port] = args[args.indexOf('--listen') + 1].split(':');
if (process.env.FAKE_EXIT) {
  console.error('fake: cannot start, config ' + cfg);
  process.exit(Number(process.env.FAKE_EXIT));
}
console.error('fake: config ' + fs.readFileSync(cfg, 'utf8').trim());
console.error('fake: extra ' + JSON.stringify(args.slice(4)));
const srv = http.createServer((req, res) => {
  res.writeHead(req.url === '/healthz' ? 503 : 404, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ status: 'degraded', url: req.url }));
});
srv.listen(Number(port), host, () => console.error('fake: listening'));
process.on('SIGTERM', () => {
  if (process.env.FAKE_IGNORE_TERM) return console.error('fake: ignoring SIGTERM');
  if (process.env.FAKE_ASAN) console.error('==1==ERROR: AddressSanitizer: heap-use-after-free on address 0x1');
  console.error('fake: bye');
  process.exit(0);
});
`;

let scratch;
let fake;

before(async () => {
  scratch = await mkdtemp(path.join(os.tmpdir(), 'sophia-harness-'));
  fake = path.join(scratch, 'fake-sophiad.cjs');
  await writeFile(fake, FAKE_DAEMON);
  await chmod(fake, 0o755);
});

after(async () => {
  await rm(scratch, { recursive: true, force: true });
});

describe('servers started by scripts/test', () => {
  test('SOPHIA_REDIS_URL answers PING over RESP and keeps a value', async () => {
    assert.match(process.env.SOPHIA_REDIS_URL ?? '', /^redis:\/\//);
    assert.equal(await redisCommand(['PING']), 'PONG');
    const key = `harness:${process.pid}:${Date.now()}`;
    assert.equal(await redisCommand(['SET', key, 'ünïcode value']), 'OK');
    assert.equal(await redisCommand(['GET', key]), 'ünïcode value');
    assert.equal(await redisCommand(['DEL', key]), 1);
    assert.equal(await redisCommand(['GET', key]), null);
    await assert.rejects(redisCommand(['NOSUCHCOMMAND']), /unknown command/i);
  });

  test('SOPHIA_PG_URL accepts connections and queries', async () => {
    assert.match(process.env.SOPHIA_PG_URL ?? '', /^postgres(ql)?:\/\//);
    const { host, port, database } = pgAddress();
    assert.equal(await tcpProbe(host, port), true, `nothing listens on ${host}:${port}`);
    assert.deepEqual(await pgQuery('SELECT current_database(), 6 * 7'), [[database, '42']]);
    await assert.rejects(pgQuery('SELECT * FROM no_such_table'), /no_such_table/);
  });

  test('createDatabase gives an empty database of its own', async () => {
    const url = await createDatabase('harness');
    try {
      await pgQuery('CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2)', { url });
      assert.deepEqual(await pgQuery('SELECT sum(x) FROM t', { url }), [['3']]);
      assert.deepEqual(await pgQuery("SELECT to_regclass('t') IS NULL"), [['t']]);
    } finally {
      await dropDatabase(url);
    }
    await assert.rejects(pgQuery('SELECT 1', { url }), /does not exist/);
  });

  test('Redis can be stopped and started again on the same port', async () => {
    await stopRedis();
    await assert.rejects(redisCommand(['PING'], { timeoutMs: 1000 }));
    await startRedis();
    assert.equal(await redisCommand(['PING']), 'PONG');
  });

  test('PostgreSQL can be stopped and started again on the same port', async () => {
    const { host, port } = pgAddress();
    await stopPostgres();
    assert.equal(await tcpProbe(host, port, 1000), false);
    await startPostgres();
    assert.deepEqual(await pgQuery('SELECT 1'), [['1']]);
  });
});

describe('sophiad under test', () => {
  test('--version exits 0 and prints a version', async () => {
    const { code, signal, stdout, stderr } = await runSophiad(['--version']);
    assert.equal(signal, null, stderr);
    assert.equal(code, 0, stderr);
    assert.match(stdout, /\d/);
  });
});

describe('daemon helpers (against a fake daemon)', () => {
  test('startDaemon writes the config, waits for /healthz, stop() returns the status', async () => {
    const d = await startDaemon({
      bin: fake,
      yaml: 'data_dir: @TMP_DIR@/data\n',
      args: ['--log-level', 'debug'],
    });
    assert.equal(d.url, `http://127.0.0.1:${d.port}`);
    assert.equal(d.wsUrl, `ws://127.0.0.1:${d.port}/ws`);
    await d.waitForStderr(/fake: listening/);
    assert.match(d.stderr(), new RegExp(`fake: config data_dir: ${d.dir}/data`));
    assert.match(d.stderr(), /fake: extra \["--log-level","debug"\]/);
    const health = await fetchJson(`${d.url}/healthz`);
    assert.equal(health.status, 503);
    assert.deepEqual(health.body, { status: 'degraded', url: '/healthz' });
    assert.equal(health.headers.get('content-type'), 'application/json');
    const mark = d.stderrLines.length;
    assert.deepEqual(await d.stop(), { code: 0, signal: null, killed: false });
    assert.match(await d.waitForStderr(/fake: bye/, 1000, mark), /bye/);
  });

  test('startDaemon rejects with the stderr of a daemon that exits first', async () => {
    await assert.rejects(
      startDaemon({ bin: fake, yaml: 'x: 1\n', env: { FAKE_EXIT: '3' } }),
      /exited \(code 3.*cannot start, config .*sophia\.yaml/s,
    );
  });

  test('startDaemon rejects a missing executable clearly', async () => {
    await assert.rejects(
      startDaemon({ bin: path.join(scratch, 'nope'), yaml: 'x: 1\n', readyTimeoutMs: 2000 }),
      /cannot run .*nope/,
    );
  });

  test('stop() falls back to SIGKILL when the daemon ignores SIGTERM', async () => {
    const d = await startDaemon({ bin: fake, yaml: 'x: 1\n', env: { FAKE_IGNORE_TERM: '1' } });
    const status = await d.stop('SIGTERM', 300);
    assert.deepEqual(status, { code: null, signal: 'SIGKILL', killed: true });
    assert.match(d.stderr(), /fake: ignoring SIGTERM/);
  });

  test('stop() rejects when the daemon printed a sanitizer report', async () => {
    const d = await startDaemon({ bin: fake, yaml: 'x: 1\n', env: { FAKE_ASAN: '1' } });
    await assert.rejects(d.stop(), /sanitizer report .*AddressSanitizer: heap-use-after-free/);
    assert.equal((await d.exited).code, 0);
  });

  test('substitute fills the directories and refuses unknown placeholders', () => {
    const saved = { ...process.env };
    try {
      process.env.SOPHIA_PLUGIN_DIR = '/p';
      process.env.SOPHIA_TEST_PLUGIN_DIR = '/tp';
      process.env.SOPHIA_SOURCE_DIR = '/src';
      assert.equal(
        substitute('a: @PLUGIN_DIR@\nb: @TEST_PLUGIN_DIR@\nc: @SOURCE_DIR@\nd: @TMP_DIR@/x\n', '/t'),
        'a: /p\nb: /tp\nc: /src\nd: /t/x\n',
      );
      assert.throws(() => substitute('a: @PLUGINS_DIR@', '/t'), /unknown placeholder @PLUGINS_DIR@/);
      delete process.env.SOPHIA_PLUGIN_DIR;
      assert.throws(() => substitute('a: @PLUGIN_DIR@', '/t'), /not set/);
    } finally {
      process.env = saved;
    }
  });
});

describe('WebSocket helpers (against a local ws server)', () => {
  let wss;
  let url;

  before(async () => {
    wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await new Promise((r) => wss.once('listening', r));
    url = `ws://127.0.0.1:${wss.address().port}/ws`;
    // Three messages at once on connect; echoes what it is sent; closes
    // with 1001 on {"type":"bye"}; refuses /forbidden with 403.
    wss.on('connection', (sock) => {
      for (const n of [1, 2, 3]) sock.send(JSON.stringify({ type: 'metric', n }));
      sock.on('message', (data) => {
        const msg = JSON.parse(data);
        if (msg.type === 'bye') sock.close(1001, 'going away');
        else sock.send(JSON.stringify({ type: 'echo', msg }));
      });
    });
    wss.options.verifyClient = (info, cb) => cb(info.req.url !== '/forbidden', 403);
  });

  after(() => new Promise((r) => wss.close(r)));

  test('messages that arrive before nextMessage is called are not lost', async () => {
    const ws = await wsConnect(url);
    await new Promise((r) => setTimeout(r, 100)); // all three are queued by now
    assert.deepEqual(await nextMessage(ws, (m) => m.n === 2), { type: 'metric', n: 2 });
    assert.deepEqual(await nextMessage(ws), { type: 'metric', n: 1 });
    sendJson(ws, { type: 'ping' });
    assert.deepEqual(await nextMessage(ws, 'echo'), { type: 'echo', msg: { type: 'ping' } });
    assert.deepEqual(takeMessages(ws), [{ type: 'metric', n: 3 }]);
    await assert.rejects(nextMessage(ws, 'never', 200), /timeout: no matching WebSocket message within 200 ms/);
    sendJson(ws, { type: 'bye' });
    assert.deepEqual(await wsClosed(ws), { code: 1001, reason: 'going away' });
    await assert.rejects(nextMessage(ws, 'never'), /WebSocket closed \(1001 going away\)/);
  });

  test('a refused handshake rejects with its HTTP status', async () => {
    const forbidden = url.replace(/\/ws$/, '/forbidden');
    await assert.rejects(wsConnect(forbidden), (err) => err.status === 403);
  });
});
