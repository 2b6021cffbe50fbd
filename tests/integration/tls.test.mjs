// server.tls: the HTTPS/WSS listener beside the plain one. The test makes
// its own CA and server certificates with the openssl CLI, starts sophiad
// with server.tls pointing at them (paths relative to the YAML file), and
// talks to it with node's https/tls and the `ws` package over wss://, all
// verifying the certificate against that CA. Then the certificate files
// are replaced and SIGHUP sent: new connections must get the new
// certificate while an open wss connection keeps working; a broken file
// must keep the running certificate and count a reload failure; a plain
// HTTP request to the TLS port must be refused (a failed handshake,
// counted) without harm to the daemon.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile, rename } from 'node:fs/promises';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import {
  startDaemon, fetchJson, freePort, wsConnect, nextMessage, sendJson, wsClosed, until,
  timeoutScale,
} from './lib/daemon.mjs';

let d;
let certDir; // our CA and the server's files, beside the daemon's own dir
let ca;
let tlsPort;
let uniq = 0;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const dash = () => `tls${process.pid}x${++uniq}`;

function openssl(args) {
  execFileSync('openssl', args, { cwd: certDir, stdio: ['ignore', 'ignore', 'pipe'] });
}

// A server certificate for 127.0.0.1/localhost signed by our CA, written
// beside and then renamed over cert.pem/key.pem (as a deploy would).
async function issue(serialHex, cn) {
  const tag = `s${serialHex}`;
  openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${tag}.key`, '-out', `${tag}.csr`,
    '-subj', `/CN=${cn}`]);
  await writeFile(path.join(certDir, `${tag}.ext`), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  openssl(['x509', '-req', '-in', `${tag}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key',
    '-set_serial', `0x${serialHex}`, '-days', '2', '-extfile', `${tag}.ext`, '-out', `${tag}.pem`]);
  await rename(path.join(certDir, `${tag}.pem`), path.join(certDir, 'cert.pem'));
  await rename(path.join(certDir, `${tag}.key`), path.join(certDir, 'key.pem'));
}

/** One HTTPS request on a fresh connection: {status, body, cert, protocol}. */
function httpsRequest(urlPath, { method = 'GET', body, withCa = true } = {}) {
  return new Promise((resolve, reject) => {
    const req = https.request({
      host: '127.0.0.1', port: tlsPort, path: urlPath, method, agent: false,
      ca: withCa ? ca : undefined,
      headers: body === undefined ? {} : { 'content-type': 'application/json',
        'content-length': Buffer.byteLength(body) },
      timeout: 10000 * timeoutScale,
    }, (res) => {
      const cert = res.socket.getPeerCertificate();
      const protocol = res.socket.getProtocol();
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({
        status: res.statusCode, text: Buffer.concat(chunks).toString('utf8'), cert, protocol,
      }));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('https request timed out')));
    req.end(body);
  });
}

const stats = async () => (await fetchJson(`${d.url}/api/stats`)).body;

async function ingest(id, metric, value) {
  const body = JSON.stringify({
    metric, value, timestamp: '2024-01-20T10:30:00Z', dashboard_id: id,
  });
  const res = await httpsRequest('/ingest/metrics', { method: 'POST', body });
  assert.equal(res.status, 202, res.text);
}

// Resolves to the socket's bytes once the server closed it (or errored).
function rawExchange(socket, bytes) {
  return new Promise((resolve) => {
    const chunks = [];
    socket.on('data', (c) => chunks.push(c));
    const done = (err) => resolve({ text: Buffer.concat(chunks).toString('latin1'), err });
    socket.on('end', () => done());
    socket.on('close', () => done());
    socket.on('error', (err) => done(err));
    socket.write(bytes);
  });
}

async function hup(key) {
  const before = (await stats()).reload[key];
  d.signal('SIGHUP');
  await until(async () => (await stats()).reload[key] > before, `reload.${key} to grow`);
  return stats();
}

before(async () => {
  const base = process.env.SOPHIA_TEST_TMP || os.tmpdir();
  certDir = await mkdtemp(path.join(base, 'sophia-tls-'));
  openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem',
    '-days', '2', '-subj', '/CN=Sophia Test CA']);
  ca = readFileSync(path.join(certDir, 'ca.pem'));
  await issue('1001', 'sophia-one');
  tlsPort = await freePort();
  // Relative to the YAML file, which lives in the daemon's own temp dir
  // (a sibling of certDir).
  const rel = path.join('..', path.basename(certDir));
  d = await startDaemon({
    yaml: `
websocket: {max_queue: 100000} # no coalescing: every update is counted
server:
  max_body: 8MiB
  tls:
    listen: "127.0.0.1:${tlsPort}"
    cert: ${rel}/cert.pem
    key: ${rel}/key.pem
plugins:
  path: ["@PLUGIN_DIR@"]
  instances:
    metrics: {plugin: metrics}
streams:
  metrics: {processor: metrics, durable: false}
`,
  });
});

after(async () => {
  if (d) await d.stop();
  if (certDir) await rm(certDir, { recursive: true, force: true });
});

test('GET /healthz over HTTPS, verified against the test CA', async () => {
  const res = await httpsRequest('/healthz');
  assert.equal(res.status, 200, res.text);
  assert.equal(JSON.parse(res.text).status, 'ok');
  assert.equal(res.cert.serialNumber, '1001');
  assert.equal(res.cert.subject.CN, 'sophia-one');
  assert.ok(['TLSv1.2', 'TLSv1.3'].includes(res.protocol), res.protocol);
  // The plain listener still answers beside it.
  assert.equal((await fetchJson(`${d.url}/healthz`)).status, 200);
});

test('a client without the CA refuses the certificate', async () => {
  await assert.rejects(httpsRequest('/healthz', { withCa: false }),
    (err) => /UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED|UNABLE_TO_GET_ISSUER/.test(err.code));
});

// Resolves to the handshake's error, or null once it succeeded.
function handshake(opts) {
  const s = tls.connect({ host: '127.0.0.1', port: tlsPort, ca, ...opts });
  return new Promise((resolve) => {
    s.on('error', resolve);
    s.on('secureConnect', () => {
      const cipher = s.getCipher().name;
      s.destroy();
      resolve({ ok: true, cipher });
    });
  });
}

test('TLS 1.1 and non-AEAD TLS 1.2 ciphers are refused by the server; ALPN is http/1.1', async () => {
  // The client allows both; the server's alert is what fails them.
  const old = await handshake({ maxVersion: 'TLSv1.1', minVersion: 'TLSv1',
    ciphers: 'DEFAULT@SECLEVEL=0' });
  assert.equal(old.code, 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION', String(old.message ?? old));
  const weak = await handshake({ maxVersion: 'TLSv1.2', ciphers: 'AES128-SHA:AES256-SHA256' });
  assert.equal(weak.code, 'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE', String(weak.message ?? weak));
  const good = await handshake({ maxVersion: 'TLSv1.2' });
  assert.ok(good.ok, String(good.message));
  assert.match(good.cipher, /^ECDHE-.*(GCM|CHACHA20)/);
  const s = tls.connect({ host: '127.0.0.1', port: tlsPort, ca, ALPNProtocols: ['h2', 'http/1.1'] });
  await new Promise((resolve, reject) => { s.on('secureConnect', resolve); s.on('error', reject); });
  assert.equal(s.alpnProtocol, 'http/1.1');
  assert.ok(s.authorized, String(s.authorizationError));
  s.destroy();
});

test('POST /ingest with a body over HTTPS', async () => {
  const id = dash();
  const ws = await wsConnect(d.wsUrl); // plain /ws sees what came in over TLS
  sendJson(ws, { type: 'subscribe', subscriptions: [`dashboard:${id}`] });
  await nextMessage(ws, 'subscribed');
  await ingest(id, 'over_tls', 42);
  const m = await nextMessage(ws, 'metric');
  assert.equal(m.data.metric, 'over_tls');
  assert.equal(m.data.value, 42);
  ws.close();
});

test('two pipelined requests on one TLS connection get two answers in order', async () => {
  const s = tls.connect({ host: '127.0.0.1', port: tlsPort, ca });
  await new Promise((resolve, reject) => { s.on('secureConnect', resolve); s.on('error', reject); });
  assert.ok(s.authorized);
  const host = `127.0.0.1:${tlsPort}`;
  const { text } = await rawExchange(s,
    `GET /healthz HTTP/1.1\r\nHost: ${host}\r\n\r\n`
    + `GET /nope HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
  const statuses = [...text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((x) => Number(x[1]));
  assert.deepEqual(statuses, [200, 404], text);
  assert.ok(text.indexOf('"status":"ok"') < text.lastIndexOf('HTTP/1.1 404'), 'in order');
});

test('wss://: subscribe and receive updates, many and large, through the bridge', async () => {
  const id = dash();
  const ws = await wsConnect(`wss://127.0.0.1:${tlsPort}/ws`, { ca });
  sendJson(ws, { type: 'subscribe', subscriptions: [`dashboard:${id}`] });
  await nextMessage(ws, 'subscribed');
  await ingest(id, 'first', 1);
  assert.equal((await nextMessage(ws, 'metric')).data.metric, 'first');
  // About 6 MiB of updates while this client does not read: more than the
  // kernel's socket buffers and the bridge's 256 KiB watermark, so the
  // bridge stops reading from lws and the rest waits in lws's queue. Every
  // update still arrives, once, in order.
  const N = 60;
  const pad = 'x'.repeat(100 * 1024);
  const lines = [];
  for (let i = 0; i < N; i++) {
    lines.push(JSON.stringify({
      metric: 'big', value: i, timestamp: '2024-01-20T10:30:00Z', dashboard_id: id,
      labels: { pad },
    }));
  }
  const outBefore = (await stats()).websocket.messages_out;
  ws._socket.pause();
  const res = await httpsRequest('/ingest/metrics', { method: 'POST', body: lines.join('\n') });
  assert.equal(res.status, 202, res.text);
  await sleep(1000);
  // Held back, not buffered without bound: lws has not taken them all.
  const handed = (await stats()).websocket.messages_out - outBefore;
  assert.ok(handed < N, `${handed} of ${N} updates left the router while the client read nothing`);
  ws._socket.resume();
  for (let i = 0; i < N; i++) {
    const m = await nextMessage(ws, 'metric');
    assert.equal(m.data.value, i);
  }
  const st = await stats();
  assert.ok(st.http.upgrades >= 1);
  ws.close();
  await wsClosed(ws);
});

test('SIGHUP: new connections get the new certificate, an open wss keeps working', async () => {
  const id = dash();
  const ws = await wsConnect(`wss://127.0.0.1:${tlsPort}/ws`, { ca });
  sendJson(ws, { type: 'subscribe', subscriptions: [`dashboard:${id}`] });
  await nextMessage(ws, 'subscribed');
  assert.equal(ws._socket.getPeerCertificate().serialNumber, '1001');

  await issue('2002', 'sophia-two');
  await hup('reloads');
  const res = await httpsRequest('/healthz');
  assert.equal(res.status, 200);
  assert.equal(res.cert.serialNumber, '2002');
  assert.equal(res.cert.subject.CN, 'sophia-two');

  await ingest(id, 'after_rotation', 7);
  const m = await nextMessage(ws, 'metric');
  assert.equal(m.data.metric, 'after_rotation');
  assert.equal(ws._socket.getPeerCertificate().serialNumber, '1001', 'the open one kept its session');
  ws.close();
  await wsClosed(ws);
});

test('SIGHUP with a broken certificate keeps the running one and counts a failure', async () => {
  const failuresBefore = (await stats()).reload.failures;
  await writeFile(path.join(certDir, 'cert.pem'), 'not a certificate\n');
  const s = await hup('failures');
  assert.equal(s.reload.failures, failuresBefore + 1);
  assert.match(s.reload.last_error, /server\.tls\.cert: .*cert\.pem is not a PEM certificate/);
  const res = await httpsRequest('/healthz');
  assert.equal(res.status, 200);
  assert.equal(res.cert.serialNumber, '2002');
  // A key that does not belong to the certificate: refused the same way.
  await issue('3003', 'sophia-three');
  openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'key.pem', '-out', 'other.csr',
    '-subj', '/CN=other']);
  const s2 = await hup('failures');
  assert.match(s2.reload.last_error, /server\.tls\.key: private key .*key\.pem does not match certificate/);
  assert.equal((await httpsRequest('/healthz')).cert.serialNumber, '2002');
});

test('plain HTTP to the TLS port is refused and counted as a failed handshake', async () => {
  const failed = async () => (await stats()).http.tls_handshakes_failed;
  const before = await failed();
  const sock = net.connect({ host: '127.0.0.1', port: tlsPort });
  await new Promise((resolve, reject) => { sock.on('connect', resolve); sock.on('error', reject); });
  const { text } = await rawExchange(sock, `GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
  assert.doesNotMatch(text, /"status":"ok"/);
  await until(async () => (await failed()) > before, 'tls_handshakes_failed to grow');
  // Still serving both listeners.
  assert.equal((await httpsRequest('/healthz')).status, 200);
  assert.equal((await fetchJson(`${d.url}/healthz`)).status, 200);
  const metrics = (await fetchJson(`${d.url}/metrics`)).text;
  const ok = Number(metrics.match(/^sophia_http_tls_handshakes_total\{result="ok"\} (\d+)$/m)?.[1]);
  const bad = Number(metrics.match(/^sophia_http_tls_handshakes_total\{result="failed"\} (\d+)$/m)?.[1]);
  assert.ok(ok >= 8, `ok handshakes ${ok}`);
  assert.ok(bad >= before + 1, `failed handshakes ${bad}`);
  const st = await stats();
  assert.equal(st.http.tls_handshakes_ok, ok);
});

test('a wss client that vanishes, and SIGTERM with one open: 1001, clean exit', async () => {
  const gone = await wsConnect(`wss://127.0.0.1:${tlsPort}/ws`, { ca });
  gone.terminate(); // no close frame, no close_notify
  const ws = await wsConnect(`wss://127.0.0.1:${tlsPort}/ws`, { ca });
  sendJson(ws, { type: 'subscribe', subscriptions: ['dashboard:bye'] });
  await nextMessage(ws, 'subscribed');
  await until(async () => (await stats()).websocket.connections === 1, 'the vanished one to be closed');
  const closed = wsClosed(ws);
  const status = await d.stop();
  assert.equal(status.code, 0);
  assert.equal((await closed).code, 1001);
});
