// harness - what the node benchmark scripts share: ports, waiting for a
// server, the `/ws` subscribe protocol of their node peers, the floor
// server (floor.c), a server process's CPU time and a plain HTTP call.
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import http from 'node:http';
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

// FLOOR_SERVER, else beside FANOUT_CLIENT, else next to SOPHIAD as
// ../tests/bench/floor_server (the build tree's layout).
// Resolves once something listens on 127.0.0.1:port (rejects after ms).
export async function waitPort(port, ms = 10000) {
  const end = Date.now() + ms;
  for (;;) {
    const ok = await new Promise((r) => {
      const c = net.connect(port, '127.0.0.1', () => { c.destroy(); r(true); });
      c.on('error', () => r(false));
    });
    if (ok) return;
    if (Date.now() > end) throw new Error(`port ${port} did not open`);
    await sleep(50);
  }
}

// A throwaway redis-server on a free port, without persistence.
export async function startRedis() {
  const port = await freePort();
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '',
    '--appendonly', 'no'], { stdio: 'ignore' });
  await waitPort(port);
  return { url: `redis://127.0.0.1:${port}/0`, stop: () => proc.kill('SIGTERM') };
}

export function floorPath() {
  if (process.env.FLOOR_SERVER) return process.env.FLOOR_SERVER;
  if (process.env.FANOUT_CLIENT) return path.join(path.dirname(process.env.FANOUT_CLIENT), 'floor_server');
  return path.join(path.dirname(process.env.SOPHIAD || '.'), '..', 'tests', 'bench', 'floor_server');
}

// The floor server (floor.c: the least work the benchmark's path needs)
// on 127.0.0.1:port; resolves once it answers /healthz. redisPort: the
// durable floor, appending each point to that Redis before its 202.
export async function startFloor(port, redisPort) {
  const argv = redisPort ? [String(port), '--redis', String(redisPort)] : [String(port)];
  const proc = spawn(floorPath(), argv, { stdio: ['ignore', 'ignore', 'inherit'] });
  await waitHttp(`http://127.0.0.1:${port}/healthz`, proc);
  return proc;
}

// CPU seconds (user + system) process `pid` has used, all its threads:
// the sum of each thread's run time in /proc/PID/task/*/schedstat (ns),
// since /proc/PID/stat's utime + stime count in 10 ms ticks, too coarse
// for a 1.5 s phase at 100 publishes/s. Threads that exit in between
// would be missed; none of the three servers starts or ends one while
// measured. Falls back to /proc/PID/stat where schedstat is missing.
export function cpuSeconds(pid) {
  let tasks;
  try {
    tasks = readdirSync(`/proc/${pid}/task`).map((t) => `/proc/${pid}/task/${t}/schedstat`);
    readFileSync(tasks[0], 'utf8');
  } catch {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in ticks (USER_HZ 100)
  }
  let ns = 0;
  for (const t of tasks) {
    try {
      ns += Number(readFileSync(t, 'utf8').split(' ')[0]);
    } catch { /* the thread ended just now */ }
  }
  return ns / 1e9;
}

// One keep-alive agent for a script's API calls: destroy it when the script
// is done, so that its idle sockets let the process exit.
export const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

// An HTTP call to 127.0.0.1:port: body is JSON text or undefined; resolves
// to {status, text}, whatever the status.
export function request(port, method, p, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: p, method, agent,
      headers: body ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } : {} },
    (res) => {
      let t = '';
      res.on('data', (c) => (t += c));
      res.on('end', () => resolve({ status: res.statusCode, text: t }));
    });
    req.on('error', reject);
    req.end(body);
  });
}
