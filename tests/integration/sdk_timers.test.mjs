// sophia-test: cost 13
// SDK 1.1 timers against a real sophiad: the `window` test plugin sums the
// events of a tumbling window and closes it on its own timer. The close
// must reach a WebSocket client without any event after the window's
// last one - also right after a reload that replaced the instance: the
// old instance's timer is cancelled with it, the new one arms its own in
// init and closes the window it was handed (export_state/import_state).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startDaemon, fetchJson, wsConnect, nextMessage, takeMessages, timeoutScale,
} from './lib/daemon.mjs';

const OLD_WINDOW_S = 3;
let d;
let ws;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function config(label, windowS) {
  return `
plugins:
  path: ["@TEST_PLUGIN_DIR@", "@PLUGIN_DIR@"]
  instances:
    win:
      plugin: window
      options: {window_s: ${windowS}, label: ${label}, dashboard: win}
streams:
  w: {processor: win}
`;
}

async function post(events) {
  const res = await fetchJson(`${d.url}/ingest/w`, {
    method: 'POST', body: events.map((e) => JSON.stringify(e)).join('\n'),
  });
  assert.equal(res.status, 202, `ingest answered ${res.status}`);
}

const closeOf = (m) => m.type === 'metric' && m.topic === 'dashboard:win' &&
  m.data?.metric === 'window_sum';

before(async () => {
  // A long first window: the reload test must swap well before the old
  // instance's timer would fire, also on a loaded machine under ASan.
  d = await startDaemon({ yaml: config('a', OLD_WINDOW_S) });
  ws = await wsConnect(d.wsUrl);
  ws.send(JSON.stringify({ type: 'subscribe', subscriptions: ['dashboard:win'] }));
  await nextMessage(ws, 'subscribed');
});

after(async () => {
  ws?.close();
  if (d) assert.deepEqual(await d.stop(), { code: 0, signal: null, killed: false }, 'clean exit');
});

test('a window closes on its timer, with no event after its last', async () => {
  const t0 = performance.now();
  await post([{ v: 2 }, { v: 3 }]);
  const m = await nextMessage(ws, closeOf, (OLD_WINDOW_S * 1000 + 3000) * timeoutScale);
  assert.deepEqual(m.data, { metric: 'window_sum', value: 5, count: 2, label: 'a' });
  assert.equal(m.dashboard_id, 'win');
  // Closed by the timer within about one window, not by a later event.
  assert.ok(performance.now() - t0 < OLD_WINDOW_S * 1000 + 3000 * timeoutScale);
  // Empty windows publish nothing.
  await sleep(OLD_WINDOW_S * 1000 + 200);
  assert.deepEqual(takeMessages(ws).filter(closeOf), []);
});

test('right after a reload, the new instance closes the window it was handed', async () => {
  // Just after a close, so the old timer is a whole window away.
  await post([{ v: 1 }]);
  await nextMessage(ws, closeOf, (OLD_WINDOW_S * 1000 + 3000) * timeoutScale);
  await post([{ v: 7 }, { v: 4 }]);
  const before = (await fetchJson(`${d.url}/api/stats`)).body.reload.reloads;
  await d.writeConfig(config('b', 1));
  d.signal('SIGHUP');
  const m = await nextMessage(ws, closeOf, 6000 * timeoutScale);
  // The window's events, closed by the new instance (label b), once.
  assert.deepEqual(m.data, { metric: 'window_sum', value: 11, count: 2, label: 'b' });
  assert.equal((await fetchJson(`${d.url}/api/stats`)).body.reload.reloads, before + 1);
  // The old instance's timer died with it: nothing more from label a,
  // and the new timer keeps closing windows.
  await post([{ v: 5 }]);
  const next = await nextMessage(ws, closeOf, 5000 * timeoutScale);
  assert.deepEqual(next.data, { metric: 'window_sum', value: 5, count: 1, label: 'b' });
  await sleep(1700);
  assert.deepEqual(takeMessages(ws).filter(closeOf), []);
});
