// instr_load - the load instr.sh counts instructions under (and
// scripts/pgo trains its profile with): one `ws`
// client subscribed to dashboard:d0, then POSTs of 50 metric points to
// /ingest/metrics one at a time, 10 ms apart (sophiad runs under
// callgrind, ~50x slower), each POST's points all delivered before the
// phase ends. Prints "warm" after the warm-up POSTs and waits for a line
// on stdin before the measured ones, then prints "done".
//   node instr_load.mjs PORT POSTS WARMUP_POSTS
import http from 'node:http';
import { createRequire } from 'node:module';

const require = createRequire(new URL('../integration/package.json', import.meta.url));
const WebSocket = require('ws');
const [port, posts, warm] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4] || 0)];

const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`);
await new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); });
const subscribed = new Promise((res) => ws.once('message', res));
ws.send(JSON.stringify({ type: 'subscribe', subscriptions: ['dashboard:d0'] }));
await subscribed;
let got = 0;
ws.on('message', (b) => { if (JSON.parse(b).type === 'metric') got++; });

const agent = new http.Agent({ keepAlive: true });
function post(body) {
  return new Promise((res, rej) => {
    const req = http.request({
      host: '127.0.0.1', port, path: '/ingest/metrics', method: 'POST', agent,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    }, (r) => { r.resume(); r.on('end', () => res(r.statusCode)); });
    req.on('error', rej);
    req.end(body);
  });
}

let value = 1000;
async function run(n) {
  const want = got + n * 50;
  for (let i = 0; i < n; i++) {
    const pts = [];
    // non-integral values, as ingest.mjs's send times are
    for (let k = 0; k < 50; k++) pts.push({ metric: 'bench', value: (value++) + 0.25, dashboard_id: 'd0' });
    const status = await post(JSON.stringify(pts));
    if (status !== 202) throw new Error(`POST answered ${status}`);
    await new Promise((r) => setTimeout(r, 10));
  }
  while (got < want) await new Promise((r) => setTimeout(r, 20));
}

await run(warm);
process.stdout.write('warm\n');
await new Promise((r) => process.stdin.once('data', r));
await run(posts);
process.stdout.write('done\n');
ws.terminate();
agent.destroy();
