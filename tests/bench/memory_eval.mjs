// memory_eval - retrieval quality of /api/memory/search on the evaluation
// set (memory_eval_gen.mjs, tests/data/memory_eval/README.md): for the
// vector leg alone, the full-text leg alone and their fusion, recall@1,
// recall@5, MRR (over the top 10) and p99 latency, on the tuning and the
// held-out part.
//
// How: a real sophiad on a real PostgreSQL (SOPHIA_PG_URL) with a table of
// its own. It stores the targets and distractors through POST /api/memory,
// is restarted (so the run measures the steady state: the index loaded
// from its file and the common-word list computed over the full table),
// then asks each question once per mode (legs=vector, legs=text, fused),
// one at a time, and measures each answer's time at the client.
//
// --tune prints, for the tuning part only, what reciprocal rank fusion
// would score over the two legs' lists for a grid of k and text-leg
// weights (memory.h's SOPHIA_MEM_RRF_K and weights come from it).
//
// --embedder NAME (or MEMEVAL_EMBEDDER) runs it with that bundled embedder
// plugin as memory.embedder (hashing, ngram_idf; options as JSON in
// MEMEVAL_EMBEDDER_OPTIONS); without it the configuration has no
// memory.embedder (the built-in hashing). An embedder that learns from the
// store is fitted and re-embeds as the store fills: the run waits until
// that settled before the restart.
//
// Usage: SOPHIAD=build/core/sophiad SOPHIA_PG_URL=postgresql://... \
//        node tests/bench/memory_eval.mjs [--tune] [--misses] [--embedder NAME]
// memory_eval.test.mjs (ctest bench.memory_eval) runs it and asserts the
// quality target.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { freePort, sleep, waitHttp } from './harness.mjs';
import { generate } from './memory_eval_gen.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const dataDir = path.join(here, '..', 'data', 'memory_eval');
export const MODES = ['vector', 'text', 'fusion'];
const TOP = 10;
let evalsStarted = 0;

const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });

function request(port, method, p, body) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request({ host: '127.0.0.1', port, path: p, method, agent,
      headers: data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {} },
    (res) => {
      let t = '';
      res.on('data', (c) => (t += c));
      res.on('end', () => {
        if (res.statusCode >= 300) reject(new Error(`${method} ${p}: ${res.statusCode} ${t}`));
        else resolve(JSON.parse(t));
      });
    });
    req.on('error', reject);
    req.end(data);
  });
}

// The committed files are what people read: they must be what the
// generator makes.
function checkCommitted(set) {
  const read = (f) => readFileSync(path.join(dataDir, f), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
  if (!same(read('targets.jsonl'), set.targets) || !same(read('queries.jsonl'), set.queries))
    throw new Error('tests/data/memory_eval differs from memory_eval_gen.mjs: regenerate it ' +
      '(node tests/bench/memory_eval_gen.mjs tests/data/memory_eval)');
}

async function startSophiad(dir, table, embedder) {
  const port = await freePort();
  const opts = process.env.MEMEVAL_EMBEDDER_OPTIONS || '{}';
  writeFileSync(path.join(dir, 'sophia.yaml'), `
log: {level: warn}
memory:
  table: ${table}
  index_path: ${path.join(dir, 'memory.index')}
${embedder ? `  embedder: emb
plugins:
  instances:
    emb: {plugin: ${embedder}, options: ${opts}}
` : ''}`);
  const proc = spawn(process.env.SOPHIAD, ['-c', path.join(dir, 'sophia.yaml'), '--listen', `127.0.0.1:${port}`], {
    env: { ...process.env, SOPHIA_REDIS_URL: '' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  let stopping = false;
  const exited = new Promise((r) => proc.on('exit', (code, sig) => {
    if (!stopping) console.error(`sophiad exited on its own: code ${code} signal ${sig}`);
    r();
  }));
  await waitHttp(`http://127.0.0.1:${port}/healthz`, proc);
  for (let i = 0; i < 400; i++) {
    const s = await request(port, 'GET', '/api/stats').catch(() => null);
    if (s && s.memory && s.memory.status === 'ready') break;
    await sleep(50);
  }
  return { port, stop: async () => { stopping = true; proc.kill('SIGTERM'); await exited; } };
}

// Until the embedder serves what it wants (fits and re-embeds done).
export async function embedderSettled(port) {
  for (let i = 0; i < 6000; i++) {
    const s = await request(port, 'GET', '/api/stats');
    const e = s.memory.embedder;
    if (e && e.state === 'ready' && e.serving === e.want) return e;
    await sleep(50);
  }
  throw new Error('the embedder did not settle');
}

// Targets and distractors interleaved (targets are not the oldest rows),
// eight stores in flight.
async function load(port, set) {
  const items = set.distractors.map((content) => ({ content }));
  set.targets.forEach((t, i) => items.splice(Math.floor((i * items.length) / set.targets.length) + i, 0, t));
  const ids = new Map(); // target id -> memory id
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const it = items[next++];
      const r = await request(port, 'POST', '/api/memory', { content: it.content, memory_type: 'fact' });
      if (it.id) ids.set(it.id, r.id);
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  return ids;
}

function pct(a, p) {
  const s = [...a].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))];
}

function summarize(rows) {
  const n = rows.length;
  return {
    n,
    r1: rows.filter((r) => r.rank === 1).length / n,
    r5: rows.filter((r) => r.rank >= 1 && r.rank <= 5).length / n,
    mrr: rows.reduce((s, r) => s + (r.rank ? 1 / r.rank : 0), 0) / n,
    p99: pct(rows.map((r) => r.ms), 0.99),
  };
}

// Ranks as memory_search.c gives them: equal scores share a rank.
function tiedRanks(list) {
  let r = 0;
  return list.map(([id, sc], i) => {
    if (i === 0 || sc !== list[i - 1][1]) r = i + 1;
    return [id, r];
  });
}

// Offline RRF over the two legs' lists (rank-based, so score scales do not
// matter): sum of w / (k + rank).
function rrfRank(vec, txt, target, k, wText) {
  const s = new Map();
  for (const [id, r] of tiedRanks(vec)) s.set(id, (s.get(id) || 0) + 1 / (k + r));
  for (const [id, r] of tiedRanks(txt)) s.set(id, (s.get(id) || 0) + wText / (k + r));
  const order = [...s.entries()].sort((a, b) => b[1] - a[1] || b[0] - a[0]).map((e) => e[0]);
  return order.indexOf(target) + 1;
}

export async function runEval({ tune = false, log = () => {}, embedder = process.env.MEMEVAL_EMBEDDER } = {}) {
  if (!process.env.SOPHIAD || !process.env.SOPHIA_PG_URL) throw new Error('SOPHIAD and SOPHIA_PG_URL must be set');
  const set = generate();
  checkCommitted(set);
  const dir = mkdtempSync(path.join(process.env.SOPHIA_TEST_TMP || os.tmpdir(), 'sophia-memeval-'));
  // unique also between evaluations run at once by one process
  const table = `memeval_${process.pid}_${Date.now().toString(36)}_${++evalsStarted}`;
  let d = await startSophiad(dir, table, embedder);
  const results = { vector: [], text: [], fusion: [] };
  const lists = [];
  try {
    const t0 = performance.now();
    const ids = await load(d.port, set);
    log(`stored ${ids.size} targets + ${set.distractors.length} distractors in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const e = await embedderSettled(d.port);
    log(`embedder ${e.serving} (${e.fits} fits, ${e.reembeds} re-embeds) after ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    await d.stop();
    d = await startSophiad(dir, table, embedder);
    log('restarted');
    if (process.env.MEMEVAL_KEEP) { log(`kept: port ${d.port} table ${table}`); await sleep(1e9); }
    await sleep(1000); // the common-word refresh (memory.c) over the full table
    for (const q of set.queries) {
      const target = ids.get(q.target);
      const lsts = {};
      for (const mode of MODES) {
        const legs = mode === 'fusion' ? 'all' : mode;
        const k = tune && mode !== 'fusion' ? 40 : TOP;
        const p = `/api/memory/search?k=${k}&legs=${legs}&q=${encodeURIComponent(q.q)}`;
        const t = performance.now();
        const r = await request(d.port, 'GET', p);
        const ms = performance.now() - t;
        const order = r.results.map((x) => x.id);
        lsts[mode] = r.results.map((x) => [x.id, mode === 'text' ? x.score_parts.text : x.score_parts.vector]);
        const rank = order.slice(0, TOP).indexOf(target) + 1;
        results[mode].push({ ...q, rank, ms, top: r.results[0] && r.results[0].content });
      }
      if (tune && q.split === 'tuning') lists.push({ target, vec: lsts.vector, txt: lsts.text });
    }
  } finally {
    await d.stop();
    rmSync(dir, { recursive: true, force: true });
    // the table stays only when the run failed before this point
    await dropTable(table).catch(() => {});
  }
  const table_ = {};
  for (const mode of MODES)
    for (const split of ['tuning', 'heldout'])
      table_[`${mode}/${split}`] = summarize(results[mode].filter((r) => r.split === split));
  const out = { summary: table_, results };
  if (tune) {
    out.tune = [];
    for (const k of [0.5, 1, 2, 3, 5, 10, 60])
      for (const w of [1, 2, 3, 4, 6, 10, 20, 30, 50]) {
        const rows = lists.map((l) => ({ rank: rrfRank(l.vec, l.txt, l.target, k, w), ms: 0 }));
        out.tune.push({ k, wText: w, ...summarize(rows) });
      }
  }
  return out;
}

// The table goes when the run ends (psql from the PATH, as servers.sh uses).
function dropTable(table) {
  return new Promise((resolve, reject) => {
    const p = spawn('psql', [process.env.SOPHIA_PG_URL, '-qAtc', `DROP TABLE IF EXISTS ${table}; DROP TABLE IF EXISTS ${table}_stats; DROP TABLE IF EXISTS ${table}_embedder`],
      { stdio: 'ignore' });
    p.on('exit', (c) => (c === 0 ? resolve() : reject(new Error(`psql ${c}`))));
    p.on('error', reject);
  });
}

export function formatTable(summary) {
  const lines = ['| leg | split | n | recall@1 | recall@5 | MRR | p99 ms |', '|---|---|---|---|---|---|---|'];
  for (const [key, s] of Object.entries(summary)) {
    const [mode, split] = key.split('/');
    lines.push(`| ${mode} | ${split} | ${s.n} | ${s.r1.toFixed(3)} | ${s.r5.toFixed(3)} | ${s.mrr.toFixed(3)} | ${s.p99.toFixed(2)} |`);
  }
  return lines.join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2);
  const ei = args.indexOf('--embedder');
  const out = await runEval({ tune: args.includes('--tune'), log: (s) => console.log(s),
    ...(ei >= 0 ? { embedder: args[ei + 1] } : {}) });
  console.log(formatTable(out.summary));
  console.log(`load average: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  if (args.includes('--misses'))
    for (const mode of MODES)
      for (const r of out.results[mode])
        if (r.rank !== 1) console.log(`${mode} ${r.split} rank=${r.rank} [${r.tags}] ${r.q}  => ${r.top}`);
  if (out.tune) {
    // best by the sum of the three metrics the target names
    out.tune.sort((a, b) => b.r1 + b.r5 + b.mrr - (a.r1 + a.r5 + a.mrr));
    console.log('tuning split, offline RRF (k, text weight): best by recall@1 + recall@5 + MRR');
    for (const t of out.tune.slice(0, 12))
      console.log(`k=${t.k} wText=${t.wText} r1=${t.r1.toFixed(3)} r5=${t.r5.toFixed(3)} mrr=${t.mrr.toFixed(3)}`);
  }
  process.exit(0);
}
