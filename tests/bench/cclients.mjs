// cclients - drives fanout_client (fanout_client.c), the C WebSocket
// receiver the fan-out and ingest benchmarks share: N raw-socket clients
// in one epoll process, client i subscribed to `<prefix><i % ntopics>`.
// Latency is publish time (a payload's "value", CLOCK_MONOTONIC ms: see
// now()) to receipt, on the same clock at both ends.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { sleep } from './harness.mjs';

// CLOCK_MONOTONIC in ms: the same clock in every thread and in fanout_client.
export const now = () => Number(process.hrtime.bigint()) / 1e6;

// FANOUT_CLIENT, else next to SOPHIAD: ../tests/bench/fanout_client.
export function clientPath() {
  return process.env.FANOUT_CLIENT
    || path.join(path.dirname(process.env.SOPHIAD || '.'), '..', 'tests', 'bench', 'fanout_client');
}

// Resolves once every client is subscribed. delivered() is the frame count
// (polled every 2 ms); latencies() returns and resets the samples.
export async function startCClients(client, wsUrl, n, ntopics, prefix) {
  const { hostname, port } = new URL(wsUrl);
  const proc = spawn(client, [hostname, port, String(n), String(ntopics), prefix], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const waiters = [];
  let buf = '';
  let ready;
  const isReady = new Promise((resolve, reject) => {
    ready = resolve;
    proc.once('exit', (code) => reject(new Error(`fanout_client exited with ${code}`)));
    proc.once('error', reject);
  });
  proc.stdout.setEncoding('utf8');
  proc.stdout.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line === 'ready') ready();
      else waiters.shift()?.(line.split(' '));
    }
  });
  const ask = (cmd) => new Promise((resolve) => {
    waiters.push(resolve);
    proc.stdin.write(`${cmd}\n`);
  });
  await isReady;
  let count = 0;
  let bytes = 0;
  let polling = true;
  const poll = (async () => {
    while (polling) {
      [count, bytes] = (await ask('c')).slice(1).map(Number);
      await sleep(2);
    }
  })();
  return {
    delivered: () => count,
    bytes: () => bytes, // on the wire, frame headers included
    async latencies() {
      const [, k, p50, p99, max] = await ask('r');
      return { n: Number(k), p50: Number(p50), p99: Number(p99), max: Number(max) };
    },
    async stop() {
      polling = false;
      await poll;
      proc.stdin.write('q\n');
      await new Promise((r) => (proc.exitCode !== null ? r() : proc.once('exit', r)));
    },
  };
}
