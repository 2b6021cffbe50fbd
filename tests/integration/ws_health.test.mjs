// Connection health and limits: the server pings idle connections and
// kills the ones that never answer (all their subscriptions go with
// them), answers pings from clients, and refuses connections past
// websocket.max_connections.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import {
  startDaemon, fetchJson, wsConnect, nextMessage, sendJson, timeoutScale,
} from './lib/daemon.mjs';

const YAML = `
websocket:
  ping_interval: 300ms
  pong_timeout: 1s
  max_connections: 3
`;

let d;
before(async () => { d = await startDaemon({ yaml: YAML }); });
after(async () => { if (d) await d.stop(); });

const stats = async () => (await fetchJson(`${d.url}/api/stats`)).body.websocket;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A client that upgrades by hand, subscribes, then never answers a ping.
function deadClient(port) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    let upgraded = false;
    sock.on('error', reject);
    sock.on('connect', () => {
      sock.write(`GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n`
        + `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    });
    sock.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      if (upgraded) return;
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = buf.subarray(0, end).toString();
      if (!/^HTTP\/1\.1 101/.test(head)) return reject(new Error(head));
      upgraded = true;
      // one masked text frame: subscribe, so cleanup of subscriptions shows
      const payload = Buffer.from(JSON.stringify({ type: 'subscribe', subscriptions: ['health:dead'] }));
      const mask = randomBytes(4);
      const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]));
      sock.write(Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, masked]));
      resolve(sock);
    });
  });
}

test('a connection that never answers pings is closed and its subscriptions cleaned', async () => {
  const before = await stats();
  const live = await wsConnect(d.wsUrl); // the ws package answers pings
  let pinged = 0;
  live.on('ping', () => pinged++);
  const sock = await deadClient(d.port);
  let closed = false;
  sock.on('close', () => { closed = true; });
  let s;
  for (let i = 0; i < 40; i++) {
    s = await stats();
    if (s.subscriptions === before.subscriptions + 1) break;
    await sleep(50);
  }
  assert.equal(s.connections, before.connections + 2);
  assert.equal(s.subscriptions, before.subscriptions + 1);
  for (let i = 0; i < 160 * timeoutScale && !closed; i++) await sleep(50);
  assert.ok(closed, 'the server closed the dead connection');
  for (let i = 0; i < 40; i++) {
    s = await stats();
    if (s.connections === before.connections + 1) break;
    await sleep(50);
  }
  assert.equal(s.connections, before.connections + 1, `only the live one is left: ${JSON.stringify(s)}`);
  assert.equal(s.subscriptions, before.subscriptions);
  assert.ok(s.dead_closed >= 1);
  assert.ok(pinged >= 1, 'the live client was pinged');
  // and the live one, which answered, is still usable
  sendJson(live, { type: 'ping' });
  assert.deepEqual(await nextMessage(live, 'pong'), { type: 'pong' });
  live.close();
});

test('past max_connections the upgrade is refused with 503', async () => {
  const open = [];
  for (let i = 0; i < 3; i++) open.push(await wsConnect(d.wsUrl));
  await assert.rejects(wsConnect(d.wsUrl), (e) => e.status === 503);
  for (const ws of open) ws.close();
  await sleep(100);
  const ws = await wsConnect(d.wsUrl);
  ws.close();
});
