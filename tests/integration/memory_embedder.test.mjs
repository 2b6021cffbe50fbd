// memory.embedder (issue 20 item 4): the store's embedder is a plugin
// instance, checked with its position; changing it by SIGHUP re-embeds
// every memory in the background while searches go on answering from the
// old index, then the new one serves (score_parts from the new vectors,
// the new id in /api/stats); a restart keeps it without re-embedding, and
// a restart with another embedder re-embeds again.
//
// The re-embed is made slow on purpose by a test embedder (slow_embed:
// delay_us per text), so that searching during it does not depend on the
// machine's speed.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { startDaemon, fetchJson, runSophiad, timeoutScale, until } from './lib/daemon.mjs';

const table = `mememb_${process.pid}_${Date.now().toString(36)}`;
let d;

after(async () => {
  if (d) await d.stop();
});

function yaml(embedder) {
  return `
memory:
  table: ${table}
  index_path: '@TMP_DIR@/memory.index'
${embedder ? `  embedder: ${embedder}\n` : ''}plugins:
  path: ['${process.env.SOPHIA_TEST_PLUGIN_DIR}']
  instances:
    slow: {plugin: slow_embed, options: {dim: 48, delay_us: 3000}}
    idf: {plugin: ngram_idf, options: {dim: 256}}
    m: {plugin: metrics}
`;
}

const emb = async () => (await fetchJson(`${d.url}/api/stats`)).body.memory.embedder;
const settled = () => until(async () => {
  const e = await emb();
  return e.state === 'ready' && e.serving === e.want ? e : null;
}, 'the embedder settled', 120000 * timeoutScale, 100);

async function search(q, legs = 'all') {
  const r = await fetchJson(`${d.url}/api/memory/search?k=5&legs=${legs}&q=${encodeURIComponent(q)}`);
  assert.equal(r.status, 200, r.text);
  return r.body.results;
}

test('memory.embedder must name an embedder instance: errors carry file:line:col', async () => {
  const dir = path.join(process.env.SOPHIA_TEST_TMP || '/tmp', `mememb-${process.pid}`);
  await import('node:fs/promises').then((fs) => fs.mkdir(dir, { recursive: true }));
  const file = path.join(dir, 'bad.yaml');
  for (const [name, want] of [['nope', /bad\.yaml:5:13: memory\.embedder: 'nope' is not a plugin instance/],
    ['m', /bad\.yaml:5:13: memory\.embedder: 'm' is a processor, not an embedder/]]) {
    await writeFile(file, yaml(name).replace('@TMP_DIR@', dir));
    const r = await runSophiad(['-c', file, '--check'], { SOPHIA_PG_URL: process.env.SOPHIA_PG_URL });
    assert.notEqual(r.code, 0);
    assert.match(r.stdout + r.stderr, want);
  }
});

const N = 600;
const facts = Array.from({ length: N }, (_, i) =>
  `account${i} renewal notes: customer ${i} asked about invoice ${i % 7} and the onboarding call`);

test('the built-in embedder by default; SIGHUP to another re-embeds while searches answer', async () => {
  d = await startDaemon({ yaml: yaml(null) });
  let e = await settled();
  assert.match(e.serving, /^hashing\/1\.0\.0\/384\//, 'no memory.embedder: the built-in hashing');
  let next = 0;
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (next < N) {
      const i = next++;
      const r = await fetchJson(`${d.url}/api/memory`, { body: { content: facts[i], memory_type: 'fact' } });
      assert.equal(r.status, 201, r.text);
    }
  }));
  const before = await search('account42 renewal notes');
  assert.match(before[0].content, /^account42 /);

  // 600 texts at 3 ms on the memory workers: a pass of ~1 s at least
  await d.writeConfig(yaml('slow'));
  d.signal('SIGHUP');
  await until(async () => /^slow_embed\//.test((await emb()).want), 'the reload applied',
    10000 * timeoutScale, 20);
  let during = 0;
  let seen = false;
  for (;;) {
    e = await emb();
    if (e.state === 'reembedding') {
      seen = true;
      assert.ok(e.progress.total >= N, JSON.stringify(e));
      assert.match(e.want, /^slow_embed\/0\.1\.0\/48\//);
      assert.match(e.serving, /^hashing\//, 'the old embedder serves until the swap');
      const r = await search('account42 renewal');
      assert.ok(r.length > 0);
      assert.ok(r.some((x) => x.content.startsWith('account42 ')), 'answered from the old index');
      during++;
    } else if (seen || e.serving === e.want) {
      break;
    }
  }
  assert.ok(seen && during > 0, 'searched while the store re-embedded');
  e = await settled();
  assert.match(e.serving, /^slow_embed\/0\.1\.0\/48\//);
  assert.equal(e.dim, 48);
  assert.equal(e.reembeds, 1);
  // the new embedder answers: the same memory comes first, its vector
  // score now the cosine of slow_embed's vectors (whole words hashed)
  const after = await search('account42 renewal notes');
  assert.match(after[0].content, /^account42 /);
  assert.notEqual(after[0].score_parts.vector, before[0].score_parts.vector);
  assert.ok(after[0].score_parts.vector > 0.2, JSON.stringify(after[0].score_parts));
  // stores after the swap land in the new index
  const r = await fetchJson(`${d.url}/api/memory`, { body: { content: 'zebra quokka platypus' } });
  assert.equal(r.status, 201);
  assert.equal((await search('zebra quokka platypus', 'vector'))[0].id, r.body.id);
});

test('a restart keeps the re-embedded store; a restart with another embedder re-embeds again', async () => {
  await d.stop();
  d = await startDaemon({ yaml: yaml('slow') });
  let e = await settled();
  assert.match(e.serving, /^slow_embed\//);
  assert.equal(e.reembeds, 0, 'the index file and the table carry its id');
  await d.stop();
  // the old embedder is configured no more: the text leg answers alone
  // until ngram_idf has re-embedded (and fitted) the store
  d = await startDaemon({ yaml: yaml('idf') });
  const r = await search('account42 renewal');
  assert.match(r[0].content, /^account42 /);
  e = await settled();
  assert.match(e.serving, /^ngram_idf\/1\.0\.0\/256\/.*\/m[0-9a-f]+$/, 'fitted on the store');
  assert.ok(e.fits >= 1);
  const v = await search('account42 renewal notes', 'vector');
  assert.match(v[0].content, /^account42 /);
});
