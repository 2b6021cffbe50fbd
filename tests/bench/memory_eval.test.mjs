// bench.memory_eval - the retrieval quality target of issue 20 checked on
// the evaluation set (memory_eval.mjs runs it against a real sophiad and
// PostgreSQL): the fusion is at least as good as the better leg on
// recall@1, recall@5 and MRR, on both parts of the set, with the built-in
// feature hashing and with the bundled ngram_idf embedder, whose vector
// leg is better; and held-out recall@1 stays above a floor. Quality, not
// timing: the latencies are printed, never asserted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import { runEval, formatTable } from './memory_eval.mjs';

let out;
let idf; // the same evaluation with the bundled ngram_idf embedder

// Both evaluations at once, each with its own sophiad and table: each
// asks its questions one at a time, so together they use the cores one
// alone leaves idle (CI time halves); the printed latencies are then of
// a shared machine, and only quality is asserted.
let both;
const evaluations = () => (both ??= Promise.all([runEval({ embedder: null }),
  runEval({ embedder: 'ngram_idf' })]));

test('the evaluation runs on the whole set', { timeout: 600000 }, async () => {
  [out, idf] = await evaluations();
  console.log(formatTable(out.summary));
  console.log(`load average: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  for (const s of Object.values(out.summary)) assert.equal(s.n, 260);
  for (const split of ['tuning', 'heldout']) { // the exact figures the checks allow slack on
    for (const metric of ['r1', 'r5', 'mrr']) {
      const f = out.summary[`fusion/${split}`][metric];
      const best = Math.max(out.summary[`vector/${split}`][metric], out.summary[`text/${split}`][metric]);
      console.log(`${split} ${metric}: fusion ${f.toFixed(3)}, better leg ${best.toFixed(3)}${f < best ? ' (under)' : ''}`);
    }
  }
});

// Fusion against the better leg, per metric and part, with either
// embedder. Recency and access counts move near-ties by a question between
// runs, so a part may read a question or two (of 260) under the better leg
// without anything having changed: the check allows 2/260 and prints the
// exact figures. All six pairs are checked (recall@5 on the tuning part
// too, since the text leg scores a synonym group as one concept and the
// vector leg no longer breaks its ties). Held-out recall@1 reaches the
// issue's 0.95 (0.954 with either embedder); fusion >= the better leg
// holds exactly in most runs, but where the text leg ties (two memories of
// one account, told apart only by meaning) the text leg alone is ordered
// by id and the fusion by the vector leg, so either can win by a question.
// (+1e-9: 247/260 >= 249/260 - 2/260 is false in floating point)
const SLACK = 2 / 260 + 1e-9;
const runs = { hashing: () => out, ngram_idf: () => idf };
for (const [name, get] of Object.entries(runs))
  for (const split of ['tuning', 'heldout'])
    for (const metric of ['r1', 'r5', 'mrr'])
      test(`fusion >= the better leg (within 2 questions), ${name}: ${metric} on ${split}`, () => {
        const run = get();
        assert.ok(run, 'the evaluation did not run');
        const f = run.summary[`fusion/${split}`][metric];
        const best = Math.max(run.summary[`vector/${split}`][metric], run.summary[`text/${split}`][metric]);
        assert.ok(f >= best - SLACK, `fusion ${metric} ${f.toFixed(3)} < best leg ${best.toFixed(3)} - 2/260 on ${split}`);
      });

// The second bundled embedder (issue 20 item 4): idf learnt from the
// store, so its vector leg must beat feature hashing's in the same run.
test('the evaluation runs with memory.embedder: ngram_idf', { timeout: 600000 }, async () => {
  [out, idf] = await evaluations();
  console.log('ngram_idf:');
  console.log(formatTable(idf.summary));
  console.log(`load average: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  for (const s of Object.values(idf.summary)) assert.equal(s.n, 260);
});

for (const metric of ['r1', 'mrr']) {
  test(`ngram_idf's vector leg beats hashing's: ${metric} on held-out`, () => {
    assert.ok(out && idf, 'an evaluation did not run');
    const h = out.summary['vector/heldout'][metric], n = idf.summary['vector/heldout'][metric];
    console.log(`vector leg held-out ${metric}: hashing ${h.toFixed(3)}, ngram_idf ${n.toFixed(3)}`);
    assert.ok(n > h, `ngram_idf ${n.toFixed(3)} <= hashing ${h.toFixed(3)}`);
  });
}

// A floor a few questions under what is reached (0.950-0.958 held-out,
// with either embedder, over several runs when this was written; 0.904-
// 0.919 before identifiers' numbers, stop words in phrases and typed-form
// typo correction; 0.815 before the text leg scored synonym groups as
// concepts), so the retrieval cannot fall back unnoticed; the bar
// is 0.95.
const FLOOR = 0.94;
for (const [name, get] of Object.entries(runs))
  test(`fusion recall@1 on held-out stays >= ${FLOOR}, ${name} (issue 20 asks 0.95)`, () => {
    const run = get();
    assert.ok(run, 'the evaluation did not run');
    const r1 = run.summary['fusion/heldout'].r1;
    console.log(`${name}: held-out fusion recall@1 ${r1.toFixed(3)} (issue 20's bar: 0.95)`);
    assert.ok(r1 >= FLOOR, `held-out fusion recall@1 ${r1.toFixed(3)} < ${FLOOR}`);
  });
