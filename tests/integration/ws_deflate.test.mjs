// permessage-deflate on /ws (websocket.compression: deflate, README
// "wire"): a client offering the extension gets it echoed, and the
// router's frames come compressed (RSV1) - each message once for all such
// clients - and inflate to exactly what a plain client gets; what the
// client sends compressed is inflated by lws. A reload to `off` stops
// accepting the offer for new connections. Raw sockets where the frame
// bits matter, the `ws` package (its own inflater, context takeover on)
// for the rest; msgpack clients get compressed binary frames too.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { constants as zc, inflateRawSync } from 'node:zlib';
import { decode } from '@msgpack/msgpack';
import {
  startDaemon, fetchJson, wsConnect, nextMessage, sendJson, timeoutScale,
} from './lib/daemon.mjs';

const config = (compression, min) => `
websocket:
  compression: ${compression}${min ? `\n  compression_min: ${min}` : ''}
plugins:
  path: ["@PLUGIN_DIR@"]
  instances:
    metrics:
      plugin: metrics
streams:
  metrics:
    processor: metrics
    durable: false
`;

let d;
before(async () => { d = await startDaemon({ yaml: config('deflate') }); });
after(async () => { if (d) await d.stop(); });

const run = `z${process.pid}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const wsStats = async () => (await fetchJson(`${d.url}/api/stats`)).body.websocket;

async function ingest(dash, n, labelsLen = 0) {
  const body = Array.from({ length: n }, (_, i) => JSON.stringify({
    metric: `m${i % 3}`, value: i, timestamp: '2024-01-20T10:30:00Z', dashboard_id: dash,
    ...(labelsLen ? { labels: { note: 'x'.repeat(labelsLen) } } : {}),
  })).join('\n');
  assert.equal((await fetchJson(`${d.url}/ingest/metrics`, { method: 'POST', body })).status, 202);
}

// A raw client: the upgrade answer's headers, then server frames with
// their RSV1 bit, inflated when set (RFC 7692: append 00 00 ff ff).
async function rawClient(offer, protocol) {
  const { port } = new URL(d.url);
  const sock = net.connect(Number(port), '127.0.0.1');
  await new Promise((r, j) => { sock.once('connect', r); sock.once('error', j); });
  sock.write('GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
    + 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n'
    + (offer ? `Sec-WebSocket-Extensions: ${offer}\r\n` : '')
    + (protocol ? `Sec-WebSocket-Protocol: ${protocol}\r\n` : '') + '\r\n');
  let buf = Buffer.alloc(0);
  const c = { frames: [], head: null, sock };
  sock.on('data', (b) => {
    buf = Buffer.concat([buf, b]);
    if (!c.head) {
      const i = buf.indexOf('\r\n\r\n');
      if (i < 0) return;
      c.head = buf.subarray(0, i).toString();
      buf = buf.subarray(i + 4);
    }
    for (;;) {
      if (buf.length < 2) return;
      let len = buf[1] & 0x7f;
      let hl = 2;
      if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); hl = 4; }
      if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); hl = 10; }
      if (buf.length < hl + len) return;
      const payload = buf.subarray(hl, hl + len);
      const rsv1 = (buf[0] & 0x40) !== 0;
      const raw = rsv1 ? inflateRawSync(Buffer.concat([payload, Buffer.from([0, 0, 0xff, 0xff])]), { finishFlush: zc.Z_SYNC_FLUSH }) : payload;
      c.frames.push({ rsv1, opcode: buf[0] & 0x0f, wire: hl + len, data: raw });
      buf = buf.subarray(hl + len);
    }
  });
  c.send = (text) => { // masked with a zero key: the payload as is
    const p = Buffer.from(text);
    const h = p.length < 126 ? Buffer.from([0x81, 0x80 | p.length, 0, 0, 0, 0])
      : Buffer.from([0x81, 0x80 | 126, p.length >> 8, p.length & 0xff, 0, 0, 0, 0]);
    sock.write(Buffer.concat([h, p]));
  };
  c.next = async (pred) => {
    for (let i = 0; i < 400 * timeoutScale; i++) {
      const k = c.frames.findIndex(pred);
      if (k >= 0) return c.frames.splice(k, 1)[0];
      await sleep(10);
    }
    throw new Error(`raw client: no matching frame; head ${c.head}; frames ${c.frames.length}`);
  };
  while (!c.head) await sleep(5);
  return c;
}

const asJson = (f) => JSON.parse(f.data.toString());

test('the offer is accepted, frames come compressed and inflate to the JSON a plain client gets', async () => {
  const z = await rawClient('permessage-deflate; client_max_window_bits');
  assert.match(z.head, /^HTTP\/1\.1 101/);
  assert.match(z.head, /sec-websocket-extensions: permessage-deflate/i);
  const plain = await wsConnect(d.wsUrl, { perMessageDeflate: false });
  const topic = `dashboard:${run}a`;
  z.send(JSON.stringify({ type: 'subscribe', subscriptions: [topic] }));
  sendJson(plain, { type: 'subscribe', subscriptions: [topic] });
  assert.equal(asJson(await z.next(() => true)).type, 'subscribed');
  await nextMessage(plain, 'subscribed');
  assert.equal((await wsStats()).connections_deflate, 1);
  // Small updates and ones with a 2 KB label: the large ones must shrink,
  // the small ones go as they are (under compression_min, 1 KiB).
  await ingest(`${run}a`, 6);
  await ingest(`${run}a`, 6, 2000);
  let compressed = 0;
  for (let i = 0; i < 12; i++) {
    const f = await z.next(() => true);
    const want = await nextMessage(plain, 'metric');
    assert.deepEqual(asJson(f), want);
    if (f.rsv1) {
      compressed++;
      assert.ok(f.wire < Buffer.byteLength(JSON.stringify(want)), 'a compressed frame is smaller');
    }
    if (i >= 6) assert.ok(f.rsv1 && f.wire < 400, `a 2 KB update went as ${f.wire} bytes`);
    else assert.equal(f.rsv1, false, `a ${f.wire}-byte update was compressed`);
  }
  assert.equal(compressed, 6);
  z.sock.destroy();
  plain.close();
});

test('the ws package (context takeover, compressing its own messages) works both ways', async () => {
  const ws = await wsConnect(d.wsUrl, { perMessageDeflate: { threshold: 0 } });
  assert.match(ws.extensions, /permessage-deflate/);
  const topic = `dashboard:${run}b`;
  // its subscribe goes compressed (threshold 0): lws inflates it
  sendJson(ws, { type: 'subscribe', subscriptions: [topic], pad: 'p'.repeat(3000) });
  assert.deepEqual((await nextMessage(ws, 'subscribed')).subscriptions, [topic]);
  await ingest(`${run}b`, 30, 500);
  for (let i = 0; i < 30; i++) assert.equal((await nextMessage(ws, 'metric')).data.value, i);
  ws.close();
});

test('msgpack clients with the extension get compressed binary frames', async () => {
  const z = await rawClient('permessage-deflate', 'sophia.v1.msgpack');
  assert.match(z.head, /sec-websocket-protocol: sophia\.v1\.msgpack/i);
  const topic = `dashboard:${run}c`;
  z.send(JSON.stringify({ type: 'subscribe', subscriptions: [topic] }));
  assert.equal(decode((await z.next(() => true)).data).type, 'subscribed');
  await ingest(`${run}c`, 1, 2000);
  const f = await z.next(() => true);
  assert.equal(f.opcode, 2);
  assert.ok(f.rsv1);
  assert.equal(decode(f.data).data.labels.note.length, 2000);
  z.sock.destroy();
});

test('compression_min: 1 (after a reload) compresses the small updates too', async () => {
  const before = (await fetchJson(`${d.url}/api/stats`)).body.reload.reloads;
  await d.writeConfig(config('deflate', 1));
  d.signal('SIGHUP');
  while ((await fetchJson(`${d.url}/api/stats`)).body.reload.reloads <= before) await sleep(20);
  const z = await rawClient('permessage-deflate');
  const topic = `dashboard:${run}e`;
  z.send(JSON.stringify({ type: 'subscribe', subscriptions: [topic] }));
  await z.next(() => true);
  await ingest(`${run}e`, 3);
  for (let i = 0; i < 3; i++) {
    const f = await z.next(() => true);
    assert.ok(f.rsv1, 'a small update compressed');
    assert.ok(f.wire < Buffer.byteLength(JSON.stringify(asJson(f))));
  }
  z.sock.destroy();
});

test('compression: off (after a reload) leaves the offer unanswered', async () => {
  const before = (await fetchJson(`${d.url}/api/stats`)).body.reload.reloads;
  await d.writeConfig(config('off'));
  d.signal('SIGHUP');
  while ((await fetchJson(`${d.url}/api/stats`)).body.reload.reloads <= before) await sleep(20);
  const z = await rawClient('permessage-deflate');
  assert.match(z.head, /^HTTP\/1\.1 101/);
  assert.doesNotMatch(z.head, /sec-websocket-extensions/i);
  const topic = `dashboard:${run}d`;
  z.send(JSON.stringify({ type: 'subscribe', subscriptions: [topic] }));
  await z.next(() => true);
  await ingest(`${run}d`, 1, 2000);
  const f = await z.next(() => true);
  assert.equal(f.rsv1, false);
  assert.equal(asJson(f).data.labels.note.length, 2000);
  z.sock.destroy();
});
