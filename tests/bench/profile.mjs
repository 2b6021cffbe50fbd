// profile - where sophiad's CPU goes on a benchmark path, as text: the
// README's "Where the microseconds go" table and its flame-graph summary
// come from this, so they can be made again after any change.
//
//   perf record -F 2000 --call-graph dwarf,16384 -p <sophiad pid> -o perf.data -- sleep 8
//   perf script -i perf.data > perf.txt
//   node tests/bench/profile.mjs perf.txt [--us 7.8] [--tree 2]
//
// Each sample's stack is put in the innermost stage it passes through, so
// the stages add up to 100%: parse (the request body to
// events), http (the rest of reading and answering requests), plugin (the
// processor's process()), cache (the cache puts its actions make), durable
// (the Redis stream, journal and their replies), publish (routing a
// publish: rendering, history, queues), send (writing to WebSocket
// clients), commit (freeing an event's actions and JSON), loop (waiting,
// libevent, libuv, timers). --us spreads a measured CPU per event over the
// stages; --tree N prints the inclusive call tree down to N% (the flame
// graph as text).
import { readFileSync } from 'node:fs';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};

// A stage and the frames that start it; the innermost match wins, so a
// publish made from a Redis reply's commit is "publish", and the parse
// inside a request's read is "parse".
const STAGES = [
  ['parse', ['sophia_ingest_parse', 'parse_events', 'sophia_ingest_parse_fast', 'sophia_ingest_parse_spans', 'sophia_ingest_parse_fast_spans']],
  ['plugin', ['sophia_ctx_process']],
  ['cache', ['apply_cache_put', 'apply_cache_del', 'sophia_cache_put_async', 'flush_one', 'on_committed']],
  ['publish', ['apply_publishes', 'sophia_ws_publish', 'sophia_ws_route']],
  ['commit', ['flight_free', 'item_clear', 'sophia_ctx_free']],
  ['send', ['ws_on_flush', 'client_flush', 'sophia_ws_writeable']],
  ['durable', ['on_read', 'on_exec', 'send_body', 'on_journal', 'journal_add', 'redisProcessCallbacks', 'redisAsyncHandleWrite', 'redisAsyncHandleRead', 'send_acks']],
  ['http', ['conn_advance', 'http_on_read', 'http_on_write', 'bufferevent_run_readcb_', 'evbuffer_read', 'evbuffer_write_atmost']],
];

function stacks(text) {
  const out = [];
  let cur = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) {
      if (cur.length) out.push(cur.reverse());
      cur = [];
    } else if (/^\s/.test(line)) {
      const sym = line.trim().split(/\s+/)[1] || '';
      const name = sym.split('+0x')[0];
      if (name && !name.startsWith('0x') && name !== '[unknown]') cur.push(name);
    }
  }
  if (cur.length) out.push(cur.reverse());
  return out;
}

function stageOf(st) {
  let best = null;
  let at = -1;
  for (const [name, frames] of STAGES) {
    const i = st.findLastIndex((f) => frames.includes(f));
    if (i > at) [best, at] = [name, i];
  }
  return best || 'loop';
}

function tree(all, minPct) {
  const counts = new Map();
  for (const st of all) {
    for (let i = 1; i <= st.length; i++) {
      const k = st.slice(0, i).join(';');
      counts.set(k, (counts.get(k) || 0) + 1);
    }
  }
  const show = (prefix, depth) => {
    const kids = [...counts].filter(([k]) => {
      const parts = k.split(';');
      return parts.length === depth + 1 && (depth === 0 || parts.slice(0, depth).join(';') === prefix);
    }).sort((a, b) => b[1] - a[1]);
    for (const [k, c] of kids) {
      const pct = (100 * c) / all.length;
      if (pct < minPct) continue;
      console.log(`${pct.toFixed(1).padStart(6)}% ${'  '.repeat(depth)}${k.split(';').pop()}`);
      show(k, depth + 1);
    }
  };
  show('', 0);
}

const file = args.find((a, i) => !a.startsWith('--') && !(i > 0 && args[i - 1].startsWith('--')));
if (!file) {
  console.error('usage: node tests/bench/profile.mjs perf.txt [--us N] [--tree PCT]');
  process.exit(2);
}
const all = stacks(readFileSync(file, 'utf8'));
const us = opt('us', 0);
const by = new Map();
for (const st of all) by.set(stageOf(st), (by.get(stageOf(st)) || 0) + 1);
console.log(`${all.length} samples`);
console.log(`| stage | share |${us ? ' µs per event |' : ''}`);
console.log(`|---|---|${us ? '---|' : ''}`);
for (const name of [...STAGES.map((s) => s[0]), 'loop']) {
  const n = by.get(name) || 0;
  const share = n / all.length;
  console.log(`| ${name} | ${(100 * share).toFixed(1)}% |${us ? ` ${(us * share).toFixed(2)} |` : ''}`);
}
if (args.includes('--tree')) {
  // the flame graph as text: from the loop's dispatch down
  const trimmed = all.map((st) => {
    const i = st.indexOf('event_base_loop');
    return i >= 0 ? st.slice(i + 1) : st;
  });
  console.log('');
  tree(trimmed, opt('tree', 2));
}
