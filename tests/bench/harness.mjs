// harness - what the node benchmark scripts share: ports, waiting for a
// server, and the `/ws` subscribe protocol of their node peers.
import net from 'node:net';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '..', 'integration', 'package.json'));
export const WebSocket = require('ws'); // the integration tests' install

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// Resolves once `url` answers; rejects after 10 s, or at once when `proc`
// (the server's child process, if given) has exited.
export async function waitHttp(url, proc) {
  for (let i = 0; i < 200; i++) {
    if (proc && proc.exitCode !== null) break;
    try {
      await fetch(url);
      return;
    } catch {
      await sleep(50);
    }
  }
  throw new Error(`${url} never answered`);
}

// A node peer's `/ws` on `server`: `subscribe` messages add the socket to
// topics (topic -> Set<ws>), answered `subscribed`; a close removes it.
export function servePeerWs(server, topics) {
  const wss = new WebSocket.WebSocketServer({ server, path: '/ws' });
  wss.on('connection', (ws) => {
    const mine = new Set();
    ws.on('message', (raw) => {
      const m = JSON.parse(raw);
      if (m.type !== 'subscribe') return;
      for (const t of m.subscriptions) {
        if (!topics.has(t)) topics.set(t, new Set());
        topics.get(t).add(ws);
        mine.add(t);
      }
      ws.send(JSON.stringify({ type: 'subscribed', subscriptions: m.subscriptions }));
    });
    ws.on('close', () => { for (const t of mine) topics.get(t).delete(ws); });
  });
}
