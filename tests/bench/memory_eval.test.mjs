// bench.memory_eval - the retrieval quality target of issue 20 checked on
// the evaluation set (memory_eval.mjs runs it against a real sophiad and
// PostgreSQL): the fusion is at least as good as the better leg on
// recall@1, recall@5 and MRR, on both parts of the set. Quality, not
// timing: the latencies are printed, never asserted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import { runEval, formatTable } from './memory_eval.mjs';

let out;

test('the evaluation runs on the whole set', { timeout: 600000 }, async () => {
  out = await runEval();
  console.log(formatTable(out.summary));
  console.log(`load average: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  for (const s of Object.values(out.summary)) assert.equal(s.n, 260);
});

// Not met yet, reported rather than failed (README, "Memory retrieval"):
// on the tuning part recall@5 is two or three questions short of the text
// leg's (the vector leg, which breaks the text leg's ties, breaks some
// badly).
const notYet = { 'r5/tuning': 'recall@5 on tuning is below the text leg' };

for (const split of ['tuning', 'heldout']) {
  for (const metric of ['r1', 'r5', 'mrr']) {
    test(`fusion >= the better leg: ${metric} on ${split}`, { todo: notYet[`${metric}/${split}`] }, () => {
      assert.ok(out, 'the evaluation did not run');
      const f = out.summary[`fusion/${split}`][metric];
      const best = Math.max(out.summary[`vector/${split}`][metric], out.summary[`text/${split}`][metric]);
      assert.ok(f >= best, `fusion ${metric} ${f.toFixed(3)} < best leg ${best.toFixed(3)} on ${split}`);
    });
  }
}

// The bar. Not met yet (README, "Memory retrieval"): reported, not
// failed, until it is.
test('fusion recall@1 >= 0.95 on held-out', { todo: 'issue 20: held-out recall@1 is below 0.95' }, () => {
  assert.ok(out, 'the evaluation did not run');
  const r1 = out.summary['fusion/heldout'].r1;
  assert.ok(r1 >= 0.95, `held-out fusion recall@1 ${r1.toFixed(3)} < 0.95`);
});
