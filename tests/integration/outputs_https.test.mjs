// The webhook output over https:// (core/event/tls_client.c) against a
// real node https server whose self-signed certificate (for 127.0.0.1)
// this test makes with the openssl CLI. With `ca_file` naming that
// certificate, batches arrive - several at once (max_inflight), each
// POST on its own TLS connection, and on new ones after the server
// closed them. Without it the daemon checks the system's CA store, refuses
// the server, delivers nothing and says why in its log, naming the
// output and the url; the events wait, unacknowledged. `tls_verify:
// false` delivers, with a warning at load. `max_inflight: 1` sends one
// batch at a time, in order. A daemon stopped while it retries such a
// server, its TLS requests in flight, exits cleanly (the sanitized run
// checks it frees them).
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startDaemon, fetchJson, until } from './lib/daemon.mjs';
import { ingest, publishes } from './lib/outputs.mjs';

const certDir = mkdtempSync(path.join(process.env.SOPHIA_TEST_TMP || os.tmpdir(), 'sophia-outs-tls-'));
execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'key.pem',
  '-out', 'cert.pem', '-days', '2', '-subj', '/CN=sophia-outputs-test',
  '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'],
{ cwd: certDir, stdio: ['ignore', 'ignore', 'pipe'] });
const certFile = path.join(certDir, 'cert.pem');

// The receiver: answers each POST after a short wait, so batches that
// go at once overlap; `open` / `maxOpen` count requests in progress.
// With `close`, it answers "Connection: close" and ends the connection.
const rx = { records: [], open: 0, maxOpen: 0, tlsSockets: 0, close: false, strict: [], strictOpen: 0, strictMax: 0 };
const server = https.createServer({
  key: readFileSync(path.join(certDir, 'key.pem')), cert: readFileSync(certFile),
}, (req, res) => {
  const chunks = [];
  const strict = req.url === '/strict'; // max_inflight: 1's own counters
  if (strict) rx.strictMax = Math.max(rx.strictMax, ++rx.strictOpen);
  else rx.maxOpen = Math.max(rx.maxOpen, ++rx.open);
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => setTimeout(() => {
    if (strict) rx.strictOpen--;
    else rx.open--;
    const recs = JSON.parse(Buffer.concat(chunks));
    if (strict) rx.strict.push(...recs);
    else rx.records.push(...recs);
    res.writeHead(200, rx.close ? { connection: 'close' } : {}).end('ok');
  }, 30));
});
server.on('secureConnection', () => rx.tlsSockets++);

let d;
const seen = (tag) => new Set(rx.records.filter((r) => r.type === 'event' && r.event.tag === tag)
  .map((r) => r.event.n));

before(async () => {
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const url = `https://127.0.0.1:${server.address().port}/in`;
  const hook = (extra) => `
      plugin: webhook
      options: {url: "${url}", batch_size: 5, flush_interval: 0.01, retry_base: 0.05, retry_cap: 0.2${extra}}`;
  d = await startDaemon({ yaml: `
plugins:
  path: ["@TEST_PLUGIN_DIR@"]
  instances:
    act: {plugin: actions}
    trusted:${hook(`, ca_file: "${certFile}"`)}
    untrusted:${hook('')}
    insecure:${hook(', tls_verify: false')}
    strict:${hook(`, ca_file: "${certFile}", max_inflight: 1`).replace('/in"', '/strict"')}
streams:
  good: {processor: act, durable: false, outputs: [trusted]}
  bad: {processor: act, durable: false, outputs: [untrusted]}
  lax: {processor: act, durable: false, outputs: [insecure]}
  ordered: {processor: act, durable: false, outputs: [strict]}
` });
});

after(async () => {
  try {
    if (d) await d.stop();
  } finally { // a failed stop must not leave the server holding the process
    server.close();
    rmSync(certDir, { recursive: true, force: true });
  }
});

test('https with ca_file: verified, batches overlap, and new connections after the server closed them', async () => {
  await ingest(d, 'good', publishes(40, 'g'));
  await until(() => seen('g').size === 40, 'all 40 events over https');
  // 8 batches of 5 cut at once: up to max_inflight (4) POSTs at a time
  assert.ok(rx.maxOpen >= 2 && rx.maxOpen <= 4, `requests in progress at most: ${rx.maxOpen}`);
  rx.close = true; // each answer ends its connection: every POST shakes hands anew
  const sockets = rx.tlsSockets;
  await ingest(d, 'good', publishes(60, 'g2'));
  await until(() => seen('g2').size === 60, 'the next events, on new TLS connections');
  assert.ok(rx.tlsSockets >= sockets + 8, `a handshake per POST: ${sockets} -> ${rx.tlsSockets}`);
  rx.close = false;
  const s = (await fetchJson(`${d.url}/api/stats`)).body;
  assert.equal(s.outputs.trusted.failed, 0);
  assert.equal(s.streams.good.failed, 0);
});

test('a certificate the system store does not trust is refused, with the output and the url in the log', async () => {
  const url = `https://127.0.0.1:${server.address().port}/in`;
  await ingest(d, 'bad', publishes(5, 'b'));
  const line = await d.waitForStderr(/instance=untrusted .*certificate verify failed/);
  assert.ok(line.includes(url), line);
  assert.match(line, /self[- ]signed certificate/);
  await until(async () => (await fetchJson(`${d.url}/api/stats`)).body.outputs.untrusted.retries >= 1,
    'the batch is retried, not dropped');
  const s = (await fetchJson(`${d.url}/api/stats`)).body;
  assert.equal(s.outputs.untrusted.delivered, 0);
  assert.equal(s.streams.bad.processed, 0, 'nothing acknowledged');
  assert.equal(seen('b').size, 0, 'nothing reached the server');
});

test('tls_verify: false delivers, and said so at load', async () => {
  assert.match(d.stderr(), /instance=insecure .*tls_verify: false/);
  await ingest(d, 'lax', publishes(5, 'l'));
  await until(() => seen('l').size === 5, 'the events, unverified');
});

test('max_inflight: 1 sends one batch at a time, in order', async () => {
  await ingest(d, 'ordered', publishes(40, 'o'));
  await until(() => rx.strict.length === 40, 'all 40 events');
  assert.equal(rx.strictMax, 1, 'never two POSTs at once');
  assert.deepEqual(rx.strict.map((r) => r.event.n), [...Array(40).keys()], 'in the order they came');
});

// At stop, the requests in flight are cancelled; a bufferevent may still
// have a deferred callback queued, whose reference only a last loop pass
// drops (core/event/loop.c). The race is hit when the stop and a TLS
// read fall in one loop pass, so: four outputs with up to four 1-event
// batches each in flight, retried every 10-20 ms, stopped three times.
test('stopped while retrying over TLS, the daemon exits cleanly and frees its requests', async () => {
  const url = `https://127.0.0.1:${server.address().port}/in`;
  const outs = [0, 1, 2, 3].map((i) => `
    out${i}: {plugin: webhook, options: {url: "${url}", batch_size: 1, flush_interval: 0, retry_base: 0.01, retry_cap: 0.02}}`);
  for (let i = 0; i < 3; i++) {
    const e = await startDaemon({ yaml: `
plugins:
  path: ["@TEST_PLUGIN_DIR@"]
  instances:
    act: {plugin: actions}${outs.join('')}
streams:
  bad: {processor: act, durable: false, outputs: [out0, out1, out2, out3]}
` });
    await ingest(e, 'bad', publishes(4, 's'));
    await e.waitForStderr(/instance=out3 .*certificate verify failed/);
    await new Promise((r) => setTimeout(r, 50 + Math.random() * 100));
    const status = await e.stop(); // rejects on a sanitizer report
    assert.equal(status.code, 0, `exit status of stop ${i}`);
  }
});
