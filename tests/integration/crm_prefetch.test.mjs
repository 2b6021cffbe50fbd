// crm's stage transitions across nodes and restarts (SDK 1.1 prefetch):
// two sophiad nodes share Redis and PostgreSQL; a deal moves on node A,
// its next stage change arrives at node B, which never saw the deal, and
// then at a restarted node A, whose L1 and memory are gone. Each time the
// transition is published with the `from` stage the other node committed,
// read through the tiers before process() (before the prefetch, B said
// from: false and published no real transition). A batch of several
// changes to one deal on one node reports each from the one before it:
// the stream holds later events while the head's reads are out.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon, fetchJson, wsConnect, nextMessage } from './lib/daemon.mjs';

const RUN = `p${process.pid}x${Date.now()}`;
const DEAL = String(Date.now() % 1000000000);

// Not durable: each node's own queue, so an event posted to a node is
// processed there (a durable stream's consumer group would share them).
const yaml = (node) => `
cluster:
  redis: "${process.env.SOPHIA_REDIS_URL}"
  node_id: ${node}
plugins:
  path: ["@PLUGIN_DIR@"]
  instances:
    crm:
      plugin: crm
      options: {cache_prefix: "crm-${RUN}:"}
streams:
  crm: {processor: crm, durable: false}
`;

let eventId = 0;
const stageEvent = (stage) => ({
  eventId: `${RUN}-${++eventId}`, subscriptionType: 'deal.propertyChange',
  objectId: Number(DEAL), propertyName: 'dealstage', propertyValue: stage,
});

let a;
let b;
const sockets = [];

async function listen(node) {
  const ws = await wsConnect(node.wsUrl);
  ws.send(JSON.stringify({ type: 'subscribe', subscriptions: ['updates:data'] }));
  await nextMessage(ws, 'subscribed');
  sockets.push(ws);
  return ws;
}

// The deal_stage update this node's own crm published for `to`.
const transition = (ws, node, to) => nextMessage(ws, (m) => m.type === 'data' &&
  m.data.kind === 'deal_stage' && m.data.id === DEAL && m.data.to === to &&
  (m.node === undefined || m.node === node), 10000);

async function post(node, events) {
  const r = await fetchJson(`${node.url}/ingest/crm`, { method: 'POST', body: events });
  assert.equal(r.status, 202, r.text);
}

before(async () => {
  [a, b] = await Promise.all([startDaemon({ yaml: yaml('crm-a') }), startDaemon({ yaml: yaml('crm-b') })]);
});
after(async () => {
  for (const ws of sockets) ws.close();
  await Promise.all([a, b].filter(Boolean).map((n) => n.stop()));
});

test('a stage change on node B reports the stage node A committed', async () => {
  const wa = await listen(a);
  const wb = await listen(b);
  await post(a, [stageEvent('appointmentscheduled'), stageEvent('presentationscheduled')]);
  const onA = await transition(wa, 'crm-a', 'presentationscheduled');
  assert.equal(onA.data.from, 'appointmentscheduled', 'in order on A');

  await post(b, stageEvent('closedwon'));
  const onB = await transition(wb, 'crm-b', 'closedwon');
  assert.equal(onB.data.from, 'presentationscheduled');
});

test('after a restart, node A reports the stage node B committed', async () => {
  await a.stop();
  a = await startDaemon({ yaml: yaml('crm-a') });
  const wa = await listen(a);
  await post(a, stageEvent('contractsent'));
  const m = await transition(wa, 'crm-a', 'contractsent');
  assert.equal(m.data.from, 'closedwon');
});

test('a batch of changes to one deal: each from the one before', async () => {
  const wb = await listen(b);
  const stages = ['s1', 's2', 's3', 's4', 's5'];
  await post(b, stages.map(stageEvent));
  let from = 'contractsent';
  for (const to of stages) {
    const m = await transition(wb, 'crm-b', to);
    assert.equal(m.data.from, from, `${to} comes from ${from}`);
    from = to;
  }
  const st = (await fetchJson(`${b.url}/api/stats`)).body.streams.crm;
  assert.equal(st.retried, 0, JSON.stringify(st));
});
