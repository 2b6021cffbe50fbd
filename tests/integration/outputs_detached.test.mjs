// Alerts raised outside an event reach outputs (host/output.h): the
// `window` test plugin's timer closes a window and, when its sum is over
// `alert_over`, raises an alert with no event behind it. The webhook
// output POSTs it to a real node HTTP receiver as {"type":"alert",
// "stream":null,"event_id":null,"instance":"win",...}. Nothing waits on
// such an alert, so while the receiver answers 503 it is retried like
// any batch, and arrives once the receiver is back.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startDaemon, fetchJson, until } from './lib/daemon.mjs';
import { ingest } from './lib/outputs.mjs';

const rx = { records: [], fail: false, refused: 0 };
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    if (rx.fail) {
      rx.refused++;
      res.writeHead(503).end('down');
      return;
    }
    rx.records.push(...JSON.parse(Buffer.concat(chunks)));
    res.writeHead(200).end('ok');
  });
});

let d;
const alerts = () => rx.records.filter((r) => r.type === 'alert');

before(async () => {
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  d = await startDaemon({ yaml: `
plugins:
  path: ["@TEST_PLUGIN_DIR@"]
  instances:
    win:
      plugin: window
      options: {window_s: 0.3, label: hot, alert_over: 10}
    hook:
      plugin: webhook
      options: {url: "http://127.0.0.1:${server.address().port}/in", flush_interval: 0.01, retry_base: 0.05, retry_cap: 0.2}
streams:
  w: {processor: win, durable: false, outputs: [hook]}
` });
});

after(async () => {
  if (d) await d.stop();
  server.close();
});

test('a timer-raised alert reaches the webhook, with the instance that raised it', async () => {
  await ingest(d, 'w', [{ v: 15 }]); // 15 > 10: the window's close alerts
  await until(() => alerts().length >= 1, 'the timer\'s alert at the receiver');
  const a = alerts()[0];
  assert.equal(a.stream, null);
  assert.equal(a.event_id, null);
  assert.equal(a.instance, 'win');
  assert.equal(a.alert.alert_type, 'window_over');
  assert.equal(a.alert.severity, 'warning');
  assert.match(a.alert.message, /window hot summed 15/);
  // the event itself went too, as its own record, before its window closed
  assert.equal(rx.records.filter((r) => r.type === 'event').length, 1);
});

test('while the receiver fails, the alert is retried, then arrives', async () => {
  rx.fail = true;
  const before = alerts().length;
  const refused = rx.refused;
  await ingest(d, 'w', [{ v: 20 }]);
  await until(() => rx.refused >= refused + 3, 'deliveries refused meanwhile');
  assert.equal(alerts().length, before);
  rx.fail = false;
  await until(() => alerts().length === before + 1, 'the alert once the receiver is back');
  assert.match(alerts()[before].alert.message, /summed 20/);
  const s = (await fetchJson(`${d.url}/api/stats`)).body;
  assert.equal(s.outputs.hook.dropped, 0);
  assert.ok(s.outputs.hook.retries >= 3, JSON.stringify(s.outputs.hook));
});
