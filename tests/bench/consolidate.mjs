// consolidate - a full consolidation pass at size (issue #20 item 3): for
// each --n, a memory table bulk-loaded with COPY (straight into
// PostgreSQL: the API's embedding and index inserts are not what is
// measured), then three phases on one sophiad each:
//  1. build: sophiad starts on the table and builds its faiss index (HNSW
//     from memory.hnsw_threshold); the time to ready and the RSS;
//  2. idle: the index file loaded, no consolidator: /healthz latency for
//     --probe seconds, RSS;
//  3. pass: the same with the dedup and decay consolidators running
//     back to back (every 50ms, batch --batch; decay with neighbors 0, as
//     in config/sophia.yaml): /healthz latency while
//     both complete a full pass (their cursors wrap), each pass's length
//     (/api/stats memory.consolidators), merges and expiries, peak RSS;
//  4. store (only when asked: --phases ...,store): --stores memories
//     through POST /api/memory, 16 in flight, into the loaded store (each
//     answered once embedded, INSERTed and in the index): memories/s, CPU
//     per store, RSS before and after. Its rows stay in the table (a later
//     pass starts from the snapshot it took before, below).
// /healthz is answered on the loop, so its tail is the loop's
// responsiveness; it is probed one request at a time every 10 ms.
//
// Data: --n memories, 12..20 words each from a 3,000-word vocabulary, in
// 1,000 clusters of vectors (cosine ~0.8 to each other: every memory has
// neighbours to look at), 1% near-duplicates of an earlier memory (same
// user, context, cosine ~0.997: dedup merges them), 2% idle for 300 days
// at importance 0.1 (decay expires them); the rest used within 60 days.
// The vectors are synthetic (not the store's embedding of the text): what
// is measured is the pass, not retrieval quality.
//
// Usage: SOPHIAD=build/core/sophiad SOPHIA_PLUGIN_DIR=build/plugins \
//        SOPHIA_PG_URL=... node tests/bench/consolidate.mjs [--n 100000,1000000]
//        [--batch 1000,250] [--dim 384] [--probe 15] [--decay-neighbors 0]
//        [--dir DIR] [--phases copy,build,idle,pass] [--index auto|hnsw|flat]
//        [--pass-limit S] [--stores N]
// (each batch size has a pass of its own over the same rows and index)
// --dir keeps the index file (DIR/bench_cons_<n>.index) after the run,
// in DIR instead of a temporary directory; a later run with the same DIR
// and --phases pass (or idle,pass) starts from that table and index, so
// at 1M the graph is built once for several passes. --pass-limit stops a
// pass after S seconds and reports how far each consolidator got (its
// cursor, the last id it looked at, against the table's largest id).
// (tests/bench/consolidate.sh starts a throwaway PostgreSQL.)
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { cpuSeconds, freePort, request, sleep, waitHttp } from './harness.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const SIZES = String(opt('n', '100000')).split(',').map(Number);
const BATCHES = String(opt('batch', '1000')).split(',').map(Number);
const DIM = Number(opt('dim', 384));
const PROBE_S = Number(opt('probe', 15));
const DECAY_NB = Number(opt('decay-neighbors', 0)); // the example configuration's
const KEEP_DIR = opt('dir', '');
const PASS_LIMIT_S = Number(opt('pass-limit', 0));
const STORES = Number(opt('stores', 10000));
const INDEX = opt('index', 'auto'); // memory.index: hnsw times a small n's pass as a big one's
const PHASES = new Set(String(opt('phases', 'copy,build,idle,pass')).split(','));
const PG = process.env.SOPHIA_PG_URL;
if (!PG || !process.env.SOPHIAD) throw new Error('set SOPHIAD, SOPHIA_PLUGIN_DIR and SOPHIA_PG_URL');
const psql = process.env.SOPHIA_PG_BIN && existsSync(path.join(process.env.SOPHIA_PG_BIN, 'psql'))
  ? path.join(process.env.SOPHIA_PG_BIN, 'psql') : 'psql';

let seed = 42;
const rnd = () => { // xorshift32: the same data every run
  seed ^= seed << 13; seed >>>= 0; seed ^= seed >>> 17; seed ^= seed << 5; seed >>>= 0;
  return seed / 4294967296;
};
const gauss = () => Math.sqrt(-2 * Math.log(rnd() + 1e-12)) * Math.cos(2 * Math.PI * rnd());
const vocab = Array.from({ length: 3000 }, (_, i) => {
  const syl = ['ka', 'lo', 'mi', 'ne', 'ru', 'sa', 'ti', 'vo', 'ze', 'pa', 'do', 'fi'];
  let w = '';
  for (let k = i + 7; k > 0; k = Math.floor(k / 12)) w += syl[k % 12];
  return w;
});

function psqlRun(sql, input) {
  return new Promise((resolve, reject) => {
    const p = spawn(psql, ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-d', PG, '-c', sql],
      { stdio: [input ? 'pipe' : 'ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (c) => (out += c));
    p.on('exit', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`psql: ${sql.slice(0, 80)}`))));
    if (input) input(p.stdin);
  });
}

// Rows for COPY (text format), written with back-pressure.
async function load(table, n) {
  const centers = Array.from({ length: 1000 }, () => Float32Array.from({ length: DIM }, gauss));
  const kept = []; // [vector, content, user, topic] of some earlier rows, for twins
  const now = Date.now() / 1000;
  await psqlRun(`COPY ${table} (content, memory_type, context, importance, embedding, user_id, created_at, last_access, access_count) FROM STDIN`, (stdin) => {
    let i = 0;
    const write = () => {
      let ok = true;
      while (ok && i < n) {
        const r = rnd();
        let vec; let content; let user; let topic;
        if (r < 0.01 && kept.length) { // a near-duplicate of an earlier memory
          const [v, c, u, tp] = kept[Math.floor(rnd() * kept.length)];
          vec = v.map((x) => x + 0.05 * gauss());
          content = `${c} again`; user = u; topic = tp;
        } else {
          const c = Math.floor(rnd() * 1000);
          vec = centers[c].map((x) => x + 0.5 * gauss());
          const len = 12 + Math.floor(rnd() * 9);
          content = Array.from({ length: len }, () => vocab[Math.floor(rnd() * vocab.length)]).join(' ');
          user = `u${Math.floor(rnd() * 500)}`; topic = `t${c}`;
          if (kept.length < 20000 && rnd() < 0.1) kept.push([vec, content, user, topic]);
        }
        let norm = 0;
        for (const x of vec) norm += x * x;
        const unit = Float32Array.from(vec, (x) => x / Math.sqrt(norm));
        const idle = r > 0.98 ? 300 * 86400 : rnd() * 60 * 86400;
        const created = now - idle - rnd() * 30 * 86400;
        const imp = r > 0.98 ? 0.1 : 0.5;
        const ts = (s) => new Date(s * 1000).toISOString();
        ok = stdin.write(`${content}\tfact\t{"topic": "${topic}"}\t${imp}\t\\\\x${Buffer.from(unit.buffer).toString('hex')}\t${user}\t${ts(created)}\t${ts(now - idle)}\t${r > 0.98 ? 0 : Math.floor(rnd() * 5)}\n`);
        i++;
      }
      if (i < n) stdin.once('drain', write);
      else stdin.end();
    };
    write();
  });
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
const get = (port, p) => new Promise((resolve, reject) => {
  http.get({ host: '127.0.0.1', port, path: p, agent }, (res) => {
    let t = '';
    res.on('data', (c) => (t += c));
    res.on('end', () => resolve({ status: res.statusCode, text: t }));
  }).on('error', reject);
});
// The loop thread's run time (its tid is the pid), against all threads'.
const loopCpu = (pid) => Number(readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').split(' ')[0]) / 1e9;
const memStats = async (port) => JSON.parse((await get(port, '/api/stats')).text).memory;
const rssMiB = (pid, field = 'VmRSS') => {
  const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(new RegExp(`${field}:\\s+(\\d+) kB`));
  return m ? Number(m[1]) / 1024 : NaN;
};

async function startSophiad(dir, table, consolidate, batch = 0) {
  const port = await freePort();
  const conf = path.join(dir, 'sophia.yaml');
  writeFileSync(conf, `
log: {level: info}
memory:
  table: ${table}
  dim: ${DIM}
  index: ${INDEX}
  index_path: ${path.join(dir, `${table}.index`)}
${consolidate ? `  consolidate:
    dedup: {every: 50ms, batch: ${batch}}
    decay: {every: 50ms, batch: ${batch}, neighbors: ${DECAY_NB}}
plugins:
  path: ["${path.resolve(process.env.SOPHIA_PLUGIN_DIR)}"]
  instances:
    dedup: {plugin: dedup}
    decay: {plugin: decay, options: {half_life: 30d, floor: 0.05}}` : ''}
`);
  const proc = spawn(process.env.SOPHIAD, ['-c', conf, '--listen', `127.0.0.1:${port}`], {
    env: { ...process.env, SOPHIA_REDIS_URL: '' }, stdio: ['ignore', 'ignore', 'ignore'],
  });
  await waitHttp(`http://127.0.0.1:${port}/healthz`, proc);
  const t0 = performance.now();
  while ((await memStats(port)).status !== 'ready') {
    if (proc.exitCode !== null) throw new Error('sophiad exited');
    await sleep(200);
  }
  return { proc, port, readyS: (performance.now() - t0) / 1000 };
}

// --stores memories through the API into the store as it is, 16 in flight.
async function stores(dir, table, n) {
  const s = await startSophiad(dir, table, false);
  const rss0 = rssMiB(s.proc.pid);
  const cpu0 = cpuSeconds(s.proc.pid);
  const t0 = performance.now();
  let next = 0;
  let failed = 0;
  const worker = async () => {
    while (next < STORES) {
      const i = next++;
      const len = 12 + (i % 9);
      const content = Array.from({ length: len }, (_, k) => vocab[(i * 7919 + k * 104729) % vocab.length]).join(' ');
      const body = JSON.stringify({ content, memory_type: 'fact', user_id: `u${i % 500}`, context: { topic: `t${i % 1000}` } });
      const r = await request(s.port, 'POST', '/api/memory', body);
      if (r.status !== 201 && r.status !== 200) failed++;
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  const secs = (performance.now() - t0) / 1000;
  const cpu = cpuSeconds(s.proc.pid) - cpu0;
  const st = await memStats(s.port);
  console.log(`n=${n}: ready in ${s.readyS.toFixed(1)} s; stored ${STORES - failed} (${failed} failed) in ${secs.toFixed(1)} s: ${((STORES - failed) / secs).toFixed(0)} memories/s, ${(1e6 * cpu / STORES).toFixed(0)} µs CPU each; the store has ${st.count}; RSS ${rss0.toFixed(0)} -> ${rssMiB(s.proc.pid).toFixed(0)} MiB; load ${load1()}`);
  await stop(s.proc);
}

const stop = (proc) => new Promise((r) => { proc.once('exit', r); proc.kill('SIGTERM'); });

// /healthz one at a time, every 10 ms, until done() says so.
async function probe(port, done) {
  const lat = [];
  while (!(await done())) {
    const t = performance.now();
    const res = await get(port, '/healthz');
    lat.push(performance.now() - t);
    if (res.status !== 200 && res.status !== 503) throw new Error(`/healthz ${res.status}`);
    await sleep(10);
  }
  lat.sort((a, b) => a - b);
  const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))];
  return `p50 ${q(0.5).toFixed(2)} ms, p99 ${q(0.99).toFixed(2)} ms, max ${lat.at(-1).toFixed(1)} ms (${lat.length})`;
}

// A full pass of dedup and decay side by side, /healthz probed meanwhile.
async function pass(dir, table, n, batch) {
  const s = await startSophiad(dir, table, true, batch);
  const t0 = performance.now();
  const cpu0 = cpuSeconds(s.proc.pid);
  const loop0 = loopCpu(s.proc.pid);
  let peak = 0;
  let next = t0 + 1000;
  const limit = PASS_LIMIT_S ? t0 + PASS_LIMIT_S * 1000 : Infinity;
  const busy = await probe(s.port, async () => {
    peak = Math.max(peak, rssMiB(s.proc.pid));
    if (performance.now() < next) return false; // /api/stats once a second
    next += 1000;
    const c = (await memStats(s.port)).consolidators;
    return (c.dedup.passes >= 1 && c.decay.passes >= 1) || performance.now() > limit;
  });
  const cpu = cpuSeconds(s.proc.pid) - cpu0;
  const loopS = loopCpu(s.proc.pid) - loop0;
  const m = await memStats(s.port);
  const c = m.consolidators;
  console.log(`n=${n}: the pass /healthz ${busy}; load ${load1()}`);
  if (!(c.dedup.passes >= 1 && c.decay.passes >= 1)) {
    const maxId = Number(await psqlRun(`SELECT max(id) FROM ${table}`));
    const at = (x) => (x.passes >= 1 ? 'a full pass' : `${(100 * x.position / maxId).toFixed(1)}% (id ${x.position} of ${maxId})`);
    console.log(`n=${n}: stopped after ${((performance.now() - t0) / 1000).toFixed(0)} s (--pass-limit): dedup at ${at(c.dedup)}, decay at ${at(c.decay)}; merged ${m.merged}, expired ${m.expired}; CPU ${cpu.toFixed(0)} s (loop thread ${loopS.toFixed(0)} s); RSS peak ${peak.toFixed(0)} MiB (VmHWM ${rssMiB(s.proc.pid, 'VmHWM').toFixed(0)} MiB)`);
    await stop(s.proc);
    return;
  }
  console.log(`n=${n}: dedup pass ${c.dedup.last_pass_s.toFixed(1)} s, decay pass ${c.decay.last_pass_s.toFixed(1)} s (batch ${batch}, side by side), both in ${((performance.now() - t0) / 1000).toFixed(1)} s; merged ${m.merged}, expired ${m.expired}; CPU ${cpu.toFixed(0)} s (loop thread ${loopS.toFixed(0)} s); RSS peak ${peak.toFixed(0)} MiB (VmHWM ${rssMiB(s.proc.pid, 'VmHWM').toFixed(0)} MiB)`);
  await stop(s.proc);
}

const load1 = () => os.loadavg()[0].toFixed(2);
for (const n of SIZES) {
  const table = `bench_cons_${n}`;
  const dir = KEEP_DIR || mkdtempSync(path.join(os.tmpdir(), 'sophia-bench-cons-'));
  if (KEEP_DIR) mkdirSync(dir, { recursive: true });
  let s;
  try {
    if (PHASES.has('copy')) { // (the last pass's rows and index are from the table before)
      rmSync(`${path.join(dir, `${table}.index`)}.orig`, { force: true });
      await psqlRun(`DROP TABLE IF EXISTS ${table}, ${table}_stats, ${table}_words, ${table}_history, ${table}_cons, ${table}_orig`);
      s = await startSophiad(dir, table, false); // the schema
      await stop(s.proc);
      const t0 = performance.now();
      await load(table, n);
      await psqlRun(`VACUUM ANALYZE ${table}`);
      console.log(`n=${n}: COPY ${((performance.now() - t0) / 1000).toFixed(0)} s; load ${load1()}`);
    }

    const ix = path.join(dir, `${table}.index`);
    if (PHASES.has('build')) {
      rmSync(ix, { force: true });
      rmSync(`${ix}.orig`, { force: true });
      s = await startSophiad(dir, table, false);
      const st = await memStats(s.port);
      console.log(`n=${n}: index built (${st.index}) in ${s.readyS.toFixed(0)} s (${cpuSeconds(s.proc.pid).toFixed(0)} s CPU), RSS ${rssMiB(s.proc.pid).toFixed(0)} MiB, peak ${rssMiB(s.proc.pid, 'VmHWM').toFixed(0)} MiB; load ${load1()}`);
      await sleep(3000); // the index file is saved
      await stop(s.proc);
    }

    if (PHASES.has('idle')) {
      s = await startSophiad(dir, table, false);
      const tEnd = performance.now() + PROBE_S * 1000;
      const idle = await probe(s.port, async () => performance.now() > tEnd);
      console.log(`n=${n}: idle     /healthz ${idle}; RSS ${rssMiB(s.proc.pid).toFixed(0)} MiB; load ${load1()}`);
      await stop(s.proc);
    }

    // Each batch size starts from the same rows and index file.
    const cols = 'id, content, memory_type, context, importance, created_at, last_access, access_count, feedback, consolidated_into, embedding, user_id, agent_id, session_id';
    if ((PHASES.has('pass') || PHASES.has('store')) && !existsSync(`${ix}.orig`)) {
      await psqlRun(`DROP TABLE IF EXISTS ${table}_orig; CREATE TABLE ${table}_orig AS SELECT ${cols} FROM ${table}`);
      copyFileSync(ix, `${ix}.orig`);
    }
    for (const batch of PHASES.has('pass') ? BATCHES : []) {
      await psqlRun(`TRUNCATE ${table}, ${table}_history, ${table}_cons; INSERT INTO ${table} (${cols}) SELECT ${cols} FROM ${table}_orig`);
      copyFileSync(`${ix}.orig`, ix);
      await pass(dir, table, n, batch);
    }
    if (PHASES.has('store')) await stores(dir, table, n);
  } finally {
    if (!KEEP_DIR) rmSync(dir, { recursive: true, force: true });
  }
}
agent.destroy();
