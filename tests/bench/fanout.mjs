// fanout - WebSocket fan-out: sophiad's /ws router against, in the same
// run with the same clients and load, two other servers:
//   - the floor: floor_server (floor.c), one epoll thread doing only the
//     unavoidable work (each point wrapped unparsed in sophiad's `metric`
//     message, one send() per subscriber per POST or per wake-up that read
//     several): sophiad/floor is how far the router is from the least the
//     machine must do;
//   - the node `ws` broadcast server a JavaScript team would write (built
//     into this script: `node fanout.mjs --peer PORT`).
//
// For N clients (100, 1,000, 10,000 with --big) subscribed to one topic,
// then spread over 100 topics, a publisher POSTs NDJSON batches of metric
// points (sophiad: /ingest/metrics through the real metrics plugin; the
// floor: /ingest/metrics; peer: /publish) and keeps a window of batches in
// flight: a batch is done when every subscriber got its messages.
// Reported: messages delivered per second, delivery latency p50/p99
// (publish to receipt, CLOCK_MONOTONIC on both ends) at a steady --rate
// publishes/s and at saturation, server CPU per delivered message in both
// phases (the server process's CPU time, user + system, all threads, over
// the phase - harness.mjs cpuSeconds - divided by the messages delivered
// in it), and server memory per connection (RSS growth / N). A second
// table gives, per scenario, sophiad's figures over the floor's and the
// node peer's.
//
// The receiving side is fanout_client (fanout_client.c, built with the
// tree): N raw-socket WebSocket clients in one epoll process. With node
// `ws` clients (still available: --node-clients, in --workers threads) the
// clients were the bottleneck on a 2-core machine and capped both servers
// at the same rate, hiding the ratio. Every server is measured with the
// same clients; on 2 cores they share the CPU with the server under test.
// Each scenario runs sophiad, the floor and the peer one after the other.
//
// Run it:
//   cmake --build build --target bench          # every benchmark, or:
//   cmake --build build --target sophiad metrics fanout_client floor_server
//   ulimit -n 25000                              # for --big (10,000 clients)
//   SOPHIAD=build/core/sophiad SOPHIA_PLUGIN_DIR=build/plugins \
//     node tests/bench/fanout.mjs [--clients 100,1000] [--seconds 3] \
//       [--rate 100] [--topics 1,100] [--big] [--node-clients [--workers 2]]
//       [--servers sophiad,floor,node] [--runs N] [--payload-bytes N]
//       [--inflate-all]
// --redis URL runs sophiad with that Redis (L2 and, by default, the
// cluster channel) instead of none; --cluster off adds `cluster: {enabled:
// false}`, so `--redis URL --cluster on|off` measures what the default
// cluster costs a node alone. --sophiad-only skips the floor and the node
// peer (--servers picks any of the three). FANOUT_CLIENT overrides where
// fanout_client is (default: next to SOPHIAD, ../tests/bench/fanout_client),
// FLOOR_SERVER where floor_server is (default: beside fanout_client).
// Encodings: --servers also takes sophiad-msgpack (the same sophiad, its
// clients offering Sec-WebSocket-Protocol: sophia.v1.msgpack) and
// sophiad-deflate (JSON with permessage-deflate offered, sophiad started
// with websocket.compression: deflate); B/msg is the bytes on the wire per
// delivered message, frame headers included (fanout_client counts them),
// and a ratio row gives each over plain sophiad, same run. The receivers
// inflate the deflate frames (for their latency samples), on the same
// cores as the server: ~8 per topic do (1 client in n/topics/8; all with
// --inflate-all), so their inflating does not bound a row, as it would
// not with browsers each inflating their own messages.
// --payload-bytes N makes each metric update about N bytes of JSON as
// sophiad sends it (default: none, ~150 B): every point carries `labels`,
// fixed per series (the 50 metrics each have their own, as a real series
// keeps its labels) and made of what a Kubernetes-scraped metric carries
// - cluster, namespace, pod, image with its sha256 digest, commit,
// runbook URL, a description, the query behind it - in words drawn from a
// vocabulary, so deflate sees text, neither random bytes nor one letter
// repeated. Batches shrink as the payload grows (the same ~4 MB of
// messages in flight as 20k small ones), so a window stays in the
// sockets' and queues' reach.
// Quote the load average with the numbers (cat /proc/loadavg): on a shared
// machine they move a lot; the ratios, measured in the same run, move less.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { clientPath, now, startCClients } from './cclients.mjs';
import {
  WebSocket, cpuSeconds, freePort, servePeerWs, sleep, startFloor, waitHttp,
} from './harness.mjs';


const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};

// ------------------------------------------------------------- the peer
function runPeer(port) {
  const topics = new Map(); // topic -> Set<ws>
  const seqs = new Map();
  const server = http.createServer((req, res) => {
    if (req.method !== 'POST' || req.url !== '/publish') {
      res.writeHead(404).end();
      return;
    }
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      let n = 0;
      for (const line of body.split('\n')) {
        if (!line) continue;
        const p = JSON.parse(line);
        const topic = `dashboard:${p.dashboard_id}`;
        const seq = (seqs.get(topic) || 0) + 1;
        seqs.set(topic, seq);
        const { dashboard_id: id, ...data } = p;
        const msg = JSON.stringify({ type: 'metric', topic, seq, dashboard_id: id, data });
        for (const ws of topics.get(topic) || []) ws.send(msg);
        n++;
      }
      res.writeHead(202, { 'content-type': 'application/json' }).end(JSON.stringify({ accepted: n }));
    });
  });
  servePeerWs(server, topics);
  server.listen(port, '127.0.0.1');
}


// ---------------------------------------------------------- the harness
function rssKb(pid) {
  const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmRSS:\s+(\d+)/m);
  return m ? Number(m[1]) : 0;
}

async function startSophiad(port, compression = 'off') {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fanout-'));
  const conf = path.join(dir, 'sophia.yaml');
  writeFileSync(conf, `
server:
  max_body: 64MiB
log:
  level: warn
websocket:
  max_connections: 20000
  max_queue: 8192
  history: 64
${compression !== 'off' ? `  compression: ${compression}\n` : ''}${opt('cluster', 'on') === 'off' ? 'cluster:\n  enabled: false\n' : ''}plugins:
  path: ["${process.env.SOPHIA_PLUGIN_DIR}"]
  instances:
    metrics:
      plugin: metrics
streams:
  metrics:
    processor: metrics
    queue_size: 1000000
    batch_size: 2000
`);
  const proc = spawn(process.env.SOPHIAD, ['-c', conf, '--listen', `127.0.0.1:${port}`], {
    stdio: ['ignore', 'ignore', 'inherit'],
    // the router, not the cache (unless --redis: L2 and the cluster)
    env: { ...process.env, SOPHIA_REDIS_URL: opt('redis', ''), SOPHIA_PG_URL: '' },
  });
  await waitHttp(`http://127.0.0.1:${port}/healthz`);
  return { proc, publishUrl: `http://127.0.0.1:${port}/ingest/metrics`, wsUrl: `ws://127.0.0.1:${port}/ws` };
}

async function startPeer(port) {
  const proc = spawn(process.execPath, [fileURLToPath(import.meta.url), '--peer', String(port)], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  await waitHttp(`http://127.0.0.1:${port}/`);
  return { proc, publishUrl: `http://127.0.0.1:${port}/publish`, wsUrl: `ws://127.0.0.1:${port}/ws` };
}

async function startFloorServer(port) {
  const proc = await startFloor(port);
  return { proc, publishUrl: `http://127.0.0.1:${port}/ingest/metrics`, wsUrl: `ws://127.0.0.1:${port}/ws` };
}

const starters = {
  sophiad: startSophiad,
  floor: startFloorServer,
  'node ws': startPeer,
  // the clients' offer (fanout_client reads FANOUT_PROTOCOL / FANOUT_DEFLATE)
  'sophiad msgpack': async (port) => ({ ...(await startSophiad(port)), env: { FANOUT_PROTOCOL: 'sophia.v1.msgpack' } }),
  'sophiad deflate': async (port) => ({ ...(await startSophiad(port, 'deflate')), env: { FANOUT_DEFLATE: '1' } }),
};

async function connectClients(wsUrl, from, to, ntopics, onMsg) {
  const clients = [];
  const CONCURRENCY = 200;
  for (let i = from; i < to; i += CONCURRENCY) {
    const batch = [];
    for (let k = i; k < Math.min(to, i + CONCURRENCY); k++) {
      batch.push(new Promise((resolve, reject) => {
        const ws = new WebSocket(wsUrl, { perMessageDeflate: false });
        ws.on('error', reject);
        ws.on('open', () => {
          ws.send(JSON.stringify({ type: 'subscribe', subscriptions: [`dashboard:b${k % ntopics}`] }));
        });
        ws.on('message', (data) => {
          if (ws._subscribed) return onMsg(data);
          ws._subscribed = true;
          resolve(ws);
        });
      }));
    }
    clients.push(...(await Promise.all(batch)));
  }
  return clients;
}

function percentile(sorted, p) {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
}

// One client thread: connects clients [from, to), counts what arrives and
// samples latencies; the main thread asks for them by message.
async function runWorker() {
  const { wsUrl, from, to, ntopics } = workerData;
  let delivered = 0;
  let lat = [];
  const onMsg = (data) => {
    delivered++;
    if ((delivered & 7) === 0) {
      const s = data.toString();
      const i = s.indexOf('"value":');
      lat.push(now() - parseFloat(s.slice(i + 8)));
    }
  };
  const clients = await connectClients(wsUrl, from, to, ntopics, onMsg);
  const timer = setInterval(() => parentPort.postMessage({ type: 'count', delivered }), 5);
  parentPort.on('message', (m) => {
    if (m === 'report') {
      parentPort.postMessage({ type: 'lat', lat, delivered });
      lat = [];
    } else if (m === 'stop') {
      clearInterval(timer);
      for (const ws of clients) ws.terminate();
      parentPort.close();
    }
  });
  parentPort.postMessage({ type: 'ready' });
}

async function startWorkers(wsUrl, n, ntopics) {
  const w = Math.max(1, Math.min(Number(opt('workers', '2')), n));
  const counts = new Array(w).fill(0);
  const workers = [];
  for (let i = 0; i < w; i++) {
    const from = Math.floor((n * i) / w);
    const to = Math.floor((n * (i + 1)) / w);
    const worker = new Worker(fileURLToPath(import.meta.url), { workerData: { wsUrl, from, to, ntopics } });
    worker.on('message', (m) => { if (m.type === 'count') counts[i] = m.delivered; });
    workers.push(worker);
  }
  await Promise.all(workers.map((wk) => new Promise((resolve, reject) => {
    wk.on('error', reject);
    wk.on('message', (m) => { if (m.type === 'ready') resolve(); });
  })));
  return {
    delivered: () => counts.reduce((a, b) => a + b, 0),
    async latencies() {
      const parts = await Promise.all(workers.map((wk) => new Promise((resolve) => {
        const on = (m) => { if (m.type === 'lat') { wk.off('message', on); resolve(m.lat); } };
        wk.on('message', on);
        wk.postMessage('report');
      })));
      const lat = parts.flat().sort((a, b) => a - b);
      return { n: lat.length, p50: percentile(lat, 0.5), p99: percentile(lat, 0.99) };
    },
    async stop() {
      await Promise.all(workers.map((wk) => new Promise((resolve) => {
        wk.once('exit', resolve);
        wk.postMessage('stop');
      })));
    },
  };
}

// ---------------------------------------------------- the points posted
const PAYLOAD = Number(opt('payload-bytes', '0'));
const WORDS = ('request latency error rate budget burn window checkout payment '
  + 'gateway upstream timeout retry queue depth consumer lag partition broker '
  + 'replica leader election disk pressure memory eviction cache hit miss ratio '
  + 'ingress egress bandwidth connection pool saturation database primary standby '
  + 'failover shard tenant region zone cluster node pod container restart crash '
  + 'loop backoff deployment rollout canary traffic split p99 p95 median slo '
  + 'alert page escalate oncall incident postmortem dashboard panel series scrape '
  + 'interval target exporter histogram bucket counter gauge summary quantile').split(' ');

// A deterministic generator per series, so its labels are the same each time.
function rng(seed) {
  let x = seed * 2654435761 % 4294967296 || 1;
  return () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x / 4294967296; };
}

// The labels of metric m, their JSON about `bytes` long.
function labelsFor(m, bytes) {
  const r = rng(m + 1);
  const pick = (k) => Array.from({ length: k }, () => WORDS[Math.floor(r() * WORDS.length)]).join(' ');
  const hex = (k) => Array.from({ length: k }, () => Math.floor(r() * 16).toString(16)).join('');
  const svc = `${WORDS[m % WORDS.length]}-${WORDS[(m * 7 + 3) % WORDS.length]}`;
  const labels = {
    cluster: `prod-eu-west-${1 + (m % 3)}`, namespace: `team-${WORDS[(m * 3) % WORDS.length]}`,
    service: svc, pod: `${svc}-${hex(10)}-${hex(5)}`, container: svc, node: `ip-10-${m % 250}-${(m * 13) % 250}-7.eu-west-1.compute.internal`,
    image: `registry.example.com/platform/${svc}:v${m % 9}.${m % 17}.${m % 5}@sha256:${hex(64)}`,
    commit: hex(40), job: 'kubernetes-pods', instance: `10.${m % 250}.${(m * 7) % 250}.12:9102`,
    runbook_url: `https://runbooks.example.com/${svc}/${pick(3).replace(/ /g, '-')}`,
  };
  let json = JSON.stringify(labels);
  let k = 0;
  while (json.length < bytes - 140 && Object.keys(labels).length < 64) {
    const key = k === 0 ? 'description' : k === 1 ? 'query' : `annotation_${WORDS[k % WORDS.length]}_${k}`;
    const room = bytes - 140 - json.length - key.length - 6;
    const text = k === 1
      ? `sum by (pod) (rate(${svc.replace('-', '_')}_${pick(2).replace(/ /g, '_')}_total{namespace="${labels.namespace}"}[5m]))`
      : pick(Math.max(1, Math.min(40, Math.round(room / 7))));
    labels[key] = text.slice(0, Math.max(1, room));
    json = JSON.stringify(labels);
    k++;
  }
  return json;
}
const LABELS = PAYLOAD ? Array.from({ length: 50 }, (_, m) => labelsFor(m, PAYLOAD)) : null;

// One NDJSON point line: `value` is the publish time (the receivers' latency).
function point(seq, ntopics) {
  const m = seq % 50;
  return `{"metric":"m${m}","value":${now()},"dashboard_id":"b${seq % ntopics}"${LABELS ? `,"labels":${LABELS[m]}` : ''}}\n`;
}

// The fanout_client this process started last (cclients.mjs keeps its
// process to itself): a child whose command is fanout_client, for the
// receivers' CPU. 0 when there is none (--node-clients).
function receiverPid() {
  let pid = 0;
  for (const t of readdirSync('/proc/self/task')) {
    for (const c of readFileSync(`/proc/self/task/${t}/children`, 'utf8').split(' ').filter(Boolean)) {
      try {
        if (readFileSync(`/proc/${c}/comm`, 'utf8').trim() === 'fanout_client') pid = Math.max(pid, Number(c));
      } catch { /* exited */ }
    }
  }
  return pid;
}

async function runScenario(server, n, ntopics, seconds) {
  const rss0 = rssKb(server.proc.pid);
  // deflate: ~8 clients per topic inflate (fanout_client's header says why)
  const inflateEvery = server.env?.FANOUT_DEFLATE && !args.includes('--inflate-all')
    ? Math.max(1, Math.round(n / ntopics / 8)) : 1;
  const env = { ...server.env, ...(inflateEvery > 1 ? { FANOUT_INFLATE_EVERY: String(inflateEvery) } : {}) };
  Object.assign(process.env, env); // spawn passes it on
  const clients = NODE_CLIENTS ? await startWorkers(server.wsUrl, n, ntopics)
    : await startCClients(CLIENT, server.wsUrl, n, ntopics, 'dashboard:b');
  for (const k of Object.keys(env)) delete process.env[k];
  await sleep(200);
  const memPerConn = ((rssKb(server.proc.pid) - rss0) * 1024) / n;
  // Batches sized so one batch is ~20k deliveries (fewer for big payloads:
  // ~4 MB of messages); two in flight.
  const perWindow = Math.max(400, Math.round(20000 * Math.min(1, 200 / Math.max(1, PAYLOAD))));
  const batch = Math.max(ntopics, Math.min(2000, Math.ceil(perWindow / (n / ntopics))));
  const perBatch = batch * (n / ntopics); // each point reaches n/ntopics clients
  const agent = new http.Agent({ keepAlive: true });
  let sent = 0;
  let seq = 0;
  const t0 = performance.now();
  const deadline = t0 + seconds * 1000;
  await clients.latencies(); // drop samples from before the run
  const rxPid = NODE_CLIENTS ? 0 : receiverPid();
  const rxCpu0 = rxPid ? cpuSeconds(rxPid) : NaN;
  const cpu0 = cpuSeconds(server.proc.pid);
  while (performance.now() < deadline) {
    while (sent - clients.delivered() < 2 * perBatch && performance.now() < deadline) {
      let body = '';
      for (let i = 0; i < batch; i++, seq++) body += point(seq, ntopics);
      await post(agent, server.publishUrl, body);
      sent += perBatch;
    }
    await sleep(1);
  }
  const endWait = performance.now() + 5000;
  while (clients.delivered() < sent && performance.now() < endWait) await sleep(2);
  const elapsed = (performance.now() - t0) / 1000;
  const satDelivered = clients.delivered();
  const bytesPerMsg = clients.bytes ? clients.bytes() / Math.max(1, satDelivered) : NaN;
  const satCpuUs = ((cpuSeconds(server.proc.pid) - cpu0) * 1e6) / Math.max(1, satDelivered);
  // what the receivers spent per message (inflating, for deflate): on this
  // machine it is CPU the server did not get
  const rxCpuUs = rxPid ? ((cpuSeconds(rxPid) - rxCpu0) * 1e6) / Math.max(1, satDelivered) : NaN;
  const rate = satDelivered / elapsed;
  const lost = sent - satDelivered;
  const load = await clients.latencies();
  // Latency at a steady rate (--rate publishes/s, default 100).
  const d1 = clients.delivered();
  const cpu1 = cpuSeconds(server.proc.pid);
  const t1 = performance.now();
  for (let i = 0; performance.now() - t1 < 1500; i++, seq++) {
    await post(agent, server.publishUrl, point(seq, ntopics));
    await sleep(1000 / RATE);
  }
  await sleep(200);
  const steadyCpuUs = ((cpuSeconds(server.proc.pid) - cpu1) * 1e6) / Math.max(1, clients.delivered() - d1);
  const steady = await clients.latencies();
  await clients.stop();
  agent.destroy();
  await sleep(300);
  return {
    rate, lost, load, memPerConn, p50: steady.p50, p99: steady.p99, satCpuUs, steadyCpuUs, bytesPerMsg, rxCpuUs, inflateEvery,
  };
}

function post(agent, url, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', agent, headers: { 'content-type': 'application/x-ndjson' } }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 202 ? resolve() : reject(new Error(`publish: HTTP ${res.statusCode}`))));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const RATE = Number(opt('rate', '100'));
// each scenario runs every server this many times, interleaved; the ratio
// table gives the median of the per-run ratios
const RUNS = Number(opt('runs', '1'));
const NODE_CLIENTS = args.includes('--node-clients');
const CLIENT = clientPath();
const fmt = (x, d = 0) => (Number.isFinite(x) ? x.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d }) : '-');

// Which servers run: --servers (sophiad,floor,node), or --sophiad-only.
function kindsToRun() {
  if (args.includes('--sophiad-only')) return ['sophiad'];
  const names = {
    sophiad: 'sophiad', floor: 'floor', node: 'node ws', 'sophiad-msgpack': 'sophiad msgpack', 'sophiad-deflate': 'sophiad deflate',
  };
  return opt('servers', 'sophiad,floor,node').split(',').map((k) => {
    if (!names[k]) throw new Error(`--servers: unknown server "${k}" (${Object.keys(names).join(', ')})`);
    return names[k];
  });
}

const median = (v) => [...v].sort((a, b) => a - b)[Math.floor((v.length - 1) / 2)];

// sophiad's figures over `other`'s for one scenario (a markdown row): the
// median over the runs of each run's ratio (the servers of a run were
// measured back to back, so they saw about the same machine).
function ratioRow(n, ntopics, runs, other, mine = 'sophiad') {
  const r = (k) => `${fmt(median(runs.map((res) => res[mine][k] / res[other][k])), 2)}×`;
  return `| ${fmt(n)} | ${ntopics} | ${mine}/${other === 'node ws' ? 'node' : other} | ${r('rate')} | `
    + `${r('satCpuUs')} | ${r('steadyCpuUs')} | ${r('p50')} | ${r('p99')} | ${r('bytesPerMsg')} |`;
}

async function main() {
  if (!process.env.SOPHIAD || !process.env.SOPHIA_PLUGIN_DIR) {
    console.error('set SOPHIAD and SOPHIA_PLUGIN_DIR (cmake --build build --target bench does)');
    process.exit(2);
  }
  const counts = opt('clients', args.includes('--big') ? '100,1000,10000' : '100,1000').split(',').map(Number);
  const seconds = Number(opt('seconds', '3'));
  const kinds = kindsToRun();
  const ratioRows = [];
  console.log(`\nWebSocket fan-out (${seconds} s saturated per row${PAYLOAD ? `, points with ~${PAYLOAD} B messages` : ''}; latency = publish POST sent to client receipt,`);
  console.log(`at a steady ${RATE} publishes/s, and at saturation; µs CPU/msg = server CPU per delivered message)\n`);
  console.log('| clients | topics | server | delivered msg/s | p50 ms | p99 ms | p50/p99 ms saturated | µs CPU/msg saturated | µs CPU/msg steady | KiB/conn | B/msg | µs receivers\' CPU/msg saturated | load |');
  console.log('|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const n of counts) {
    for (const ntopics of opt('topics', '1,100').split(',').map(Number)) {
      const runs = [];
      for (let run = 0; run < RUNS; run++) {
        const res = {};
        for (const kind of kinds) {
          const port = await freePort();
          const server = await starters[kind](port);
          try {
            res[kind] = await runScenario(server, n, ntopics, seconds);
            res[kind].loadavg = readFileSync('/proc/loadavg', 'utf8').split(' ')[0];
          } finally {
            server.proc.kill('SIGTERM');
            await new Promise((r) => (server.proc.exitCode !== null ? r() : server.proc.once('exit', r)));
          }
        }
        for (const kind of kinds) {
          const r = res[kind];
          console.log(`| ${fmt(n)} | ${ntopics} | ${kind} | ${fmt(r.rate)} | ${fmt(r.p50, 2)} | ${fmt(r.p99, 2)} | ${fmt(r.load.p50, 0)} / ${fmt(r.load.p99, 0)} | ${fmt(r.satCpuUs, 2)} | ${fmt(r.steadyCpuUs, 2)} | ${fmt(r.memPerConn / 1024, 1)} | ${fmt(r.bytesPerMsg, 1)} | ${fmt(r.rxCpuUs, 2)} | ${r.loadavg} |`
            + (r.lost > 0 ? ` (${fmt(r.lost)} not delivered)` : '')
            + (r.inflateEvery > 1 ? ` (1 client in ${r.inflateEvery} inflates)` : ''));
        }
        runs.push(res);
      }
      for (const other of ['floor', 'node ws']) {
        if (runs[0].sophiad && runs[0][other]) ratioRows.push(ratioRow(n, ntopics, runs, other));
      }
      for (const mine of ['sophiad msgpack', 'sophiad deflate']) {
        if (runs[0].sophiad && runs[0][mine]) ratioRows.push(ratioRow(n, ntopics, runs, 'sophiad', mine));
      }
    }
  }
  if (!ratioRows.length) return;
  console.log(`\nsophiad's figure over the other server's, same scenario, median of ${RUNS} paired run(s) (CPU and latency: > 1 = sophiad costs more)\n`);
  console.log('| clients | topics | ratio | msg/s | CPU/msg saturated | CPU/msg steady | p50 steady | p99 steady | B/msg |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const row of ratioRows) console.log(row);
}

if (!isMainThread) {
  await runWorker();
} else if (args[0] === '--peer') {
  runPeer(Number(args[1]));
} else {
  await main();
}
