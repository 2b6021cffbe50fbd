// Who may send StatsD datagrams: a bare port binds to loopback; a
// non-loopback listen without streams.<name>.statsd.allow is refused by
// --check with the HTTP listener's wording; with an allow-list a datagram
// from outside it is dropped and counted (/api/stats sources.statsd.refused
// and /metrics sophia_statsd_refused_total), one from inside is processed.
// All on loopback: 127.0.0.2 is a different source address than 127.0.0.1.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  startDaemon, fetchJson, runSophiad, substitute, until,
} from './lib/daemon.mjs';

function freeUdpPort() {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    s.bind(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Sends one datagram to 127.0.0.1:port from the source address `from`. */
function sendFrom(from, port, text) {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    s.once('error', reject);
    s.bind(0, from, () => s.send(Buffer.from(text), port, '127.0.0.1', (err) => {
      s.close();
      if (err) reject(err); else resolve();
    }));
  });
}

const plugins = `
plugins:
  path: ["@PLUGIN_DIR@"]
  instances:
    metrics: {plugin: metrics}
`;

let d;
let narrowPort;
let widePort;
let barePort;

before(async () => {
  [narrowPort, widePort, barePort] = await Promise.all([freeUdpPort(), freeUdpPort(), freeUdpPort()]);
  d = await startDaemon({
    yaml: `${plugins}
streams:
  narrow:
    processor: metrics
    statsd: {listen: "127.0.0.1:${narrowPort}", allow: [127.0.0.2/32]}
  wide:
    processor: metrics
    statsd: {listen: "127.0.0.1:${widePort}", allow: [127.0.0.0/8, "::1/128"]}
  bare:
    processor: metrics
    statsd: {listen: ${barePort}}
`,
    env: { SOPHIA_REDIS_URL: '' }, // in-memory streams: nothing here is about Redis
  });
});
after(async () => { if (d) await d.stop(); });

const statsd = async (name) => (await fetchJson(`${d.url}/api/stats`)).body.streams[name].sources.statsd;

test('a datagram from outside the allow-list is dropped and counted; one from inside is processed', async () => {
  await sendFrom('127.0.0.1', narrowPort, 'refused.metric:1|c');
  await until(async () => (await statsd('narrow')).refused === 1, 'the datagram refused');
  assert.equal((await statsd('narrow')).datagrams, 0);
  assert.equal((await statsd('narrow')).points, 0);
  await sendFrom('127.0.0.2', narrowPort, 'allowed.metric:1|c');
  await until(async () => (await statsd('narrow')).points === 1, 'the allowed datagram taken');
  assert.equal((await statsd('narrow')).refused, 1);
  const metrics = (await fetchJson(`${d.url}/metrics`)).text;
  assert.match(metrics, /# TYPE sophia_statsd_refused_total counter/);
  assert.match(metrics, /sophia_statsd_refused_total\{stream="narrow"\} 1\n/);
  assert.match(metrics, /sophia_statsd_refused_total\{stream="wide"\} 0\n/);
});

test('a /8 allow-list takes every loopback source', async () => {
  await sendFrom('127.0.0.1', widePort, 'a:1|c');
  await sendFrom('127.0.0.3', widePort, 'b:2|g');
  await until(async () => (await statsd('wide')).points === 2, 'both taken');
  assert.equal((await statsd('wide')).refused, 0);
});

test('a bare port listens on 127.0.0.1 and takes any local sender', async () => {
  await d.waitForStderr(new RegExp(`statsd msg="listening \\(udp\\)" listen=127\\.0\\.0\\.1:${barePort} stream=bare allow=0`));
  await sendFrom('127.0.0.1', barePort, 'c:1|c');
  await until(async () => (await statsd('bare')).points === 1, 'taken');
});

test('--check refuses a non-loopback StatsD listen without allow, with its position; allow makes it valid', async () => {
  const dir = mkdtempSync(path.join(process.env.SOPHIA_TEST_TMP || os.tmpdir(), 'sophia-statsd-'));
  const file = path.join(dir, 'sophia.yaml');
  writeFileSync(file, substitute(`${plugins}
streams:
  metrics:
    processor: metrics
    statsd:
      listen: 0.0.0.0:8125
`, dir));
  const res = await runSophiad(['-c', file, '--check'], { SOPHIA_REDIS_URL: '', SOPHIA_PG_URL: '' });
  assert.equal(res.code, 1, res.stderr);
  assert.ok(res.stderr.includes(`${file}:11:15: streams.metrics.statsd.listen 0.0.0.0:8125 is not loopback `
    + 'but no allow-list is set (streams.metrics.statsd.allow: [CIDR, ...])'), res.stderr);
  writeFileSync(file, substitute(`${plugins}
streams:
  metrics:
    processor: metrics
    statsd:
      listen: 0.0.0.0:8125
      allow: [10.0.0.0/8, 10.1.2.3/8]
`, dir));
  const bad = await runSophiad(['-c', file, '--check'], { SOPHIA_REDIS_URL: '', SOPHIA_PG_URL: '' });
  assert.equal(bad.code, 1);
  assert.ok(bad.stderr.includes(`${file}:12:27: streams.metrics.statsd.allow: '10.1.2.3/8' has host bits set`), bad.stderr);
  writeFileSync(file, substitute(`${plugins}
streams:
  metrics:
    processor: metrics
    statsd:
      listen: 0.0.0.0:8125
      allow: [10.0.0.0/8]
`, dir));
  const ok = await runSophiad(['-c', file, '--check'], { SOPHIA_REDIS_URL: '', SOPHIA_PG_URL: '' });
  assert.equal(ok.code, 0, ok.stderr);
});
