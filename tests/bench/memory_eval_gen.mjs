// memory_eval_gen - the memory retrieval evaluation set, generated the same
// way on every run (tests/data/memory_eval/README.md says what it holds).
//
// Why a generator and not a hand-written file: the issue asks for 5,000
// distractors that share the targets' vocabulary, which nobody writes by
// hand; but the targets and the questions must read like what users store
// and ask, so they come from hand-written templates over hand-written word
// lists, drawn with a fixed-seed PRNG (mulberry32). Same seed, same set.
//
// How a question names exactly one memory: every memory is about one
// (account, kind) pair - "the Kelmira Logistics renewal", "the Dovrane Bank
// incident" - and no pair is used twice. A question refers to its account
// (full name, partial name, or a typo of it) and to the kind (in the
// memory's words, or in other words); the rest of the pool uses the same
// accounts, people, topics and kinds in every other combination.
//
// Splits: the first half of the targets is the tuning part, the second the
// held-out part. Each kind has question templates of its own for each part,
// and held-out questions never reuse a tuning template's wording.
//
// `node memory_eval_gen.mjs DIR` writes targets.jsonl and queries.jsonl
// (committed: people read them) to DIR; the eval imports generate().

const SEED = 20261202;
export const N_TARGETS = 260;
export const N_DISTRACTORS = 5200;

function mulberry32(a) {
  return () => {
    a |= 0;
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const FIRST = ['Priya', 'Marcus', 'Elena', 'Tomasz', 'Aisha', 'Jonas', 'Mei', 'Rafael', 'Ingrid', 'Kwame',
  'Sofia', 'Dmitri', 'Hannah', 'Omar', 'Lucia', 'Kenji', 'Fatima', 'Pieter', 'Nadia', 'Carlos',
  'Greta', 'Samir', 'Yuki', 'Andre', 'Leila', 'Bruno', 'Olga', 'Tariq', 'Chloe', 'Mateo'];
const LAST = ['Raman', 'Okafor', 'Lindqvist', 'Novak', 'Haddad', 'Brennan', 'Castillo', 'Watanabe', 'Moreau', 'Schultz',
  'Adeyemi', 'Petrov', 'Kowalski', 'Ferreira', 'Nakamura', 'Oyelaran', 'Jansen', 'Rossi', 'Dubois', 'Mendes',
  'Sorensen', 'Varga', 'Kaplan', 'Ibarra', 'Whitfield', 'Cho', 'Abara', 'Lindgren', 'Quinn', 'Zeller'];
const SUFFIX = ['Logistics', 'Health', 'Bank', 'Labs', 'Foods', 'Energy', 'Media', 'Retail', 'Insurance', 'Robotics',
  'Pharma', 'Airlines', 'Capital', 'Telecom', 'Studios'];
const ONSET = ['b', 'd', 'k', 'l', 'm', 'n', 'p', 'r', 's', 't', 'v', 'z', 'br', 'dr', 'kr', 'tr', 'st', 'gl', 'h', 'f'];
const VOWEL = ['a', 'e', 'i', 'o', 'u', 'a', 'e', 'o'];
const CODA = ['n', 'r', 'l', 'x', 'th', 'v', 'nd', 'rk'];

const WEEKDAY = ['Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday'];
const MONTH = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'];
const TOPIC = ['SSO setup', 'data retention', 'API rate limits', 'the mobile app', 'usage reporting', 'audit logs',
  'the Salesforce integration', 'seat pricing', 'data export', 'uptime guarantees', 'the EU data center', 'custom roles'];
const STAGE = ['negotiation', 'legal review', 'proposal', 'procurement', 'verbal commit'];
const COMPETITOR = ['Zendesk', 'HubSpot', 'Intercom', 'Freshworks', 'Gong'];
const REASON = ['pricing', 'missing SSO', 'a weak mobile app', 'slow support', 'no EU hosting'];
const MEDIUM = ['email', 'Slack', 'text messages', 'video calls'];
const TIME = ['10am', 'noon', '3pm', '9am'];
const FORMAT = ['PDF', 'CSV', 'paper copies', 'XML'];
const SERVICE = ['checkout', 'login', 'search', 'billing', 'sync', 'notifications'];
const CAUSE = ['an expired TLS certificate', 'a full disk', 'a bad deploy', 'a DNS misconfiguration', 'a database failover', 'a memory leak'];
const CHANNEL = ['sales', 'support', 'eng-infra', 'cs-escalations', 'deals', 'product'];
const DECISION = ['waive the setup fee', 'extend the trial by two weeks', 'assign a dedicated engineer', 'pause the rollout', 'offer a quarterly invoice'];
const ISSUE = ['slow dashboards', 'missing exports', 'broken SSO', 'duplicate notifications', 'wrong invoices'];
const BLOCKER = ['a signed DPA', 'SSO configuration', 'a data import', 'their IT approval', 'a sandbox account'];
const ARTIFACT = ['a SOC 2 report', 'a penetration test summary', 'an architecture diagram', 'a data flow map'];
const FEATURE = ['dark mode', 'bulk edit', 'a Jira sync', 'scheduled reports', 'two-factor login', 'an audit trail'];
const PRODUCT = ['analytics', 'inbox', 'mobile', 'admin console'];

// Each kind: how its memories are written (two phrasings, drawn at random)
// and, per split, how its questions are asked. In a question, {A} is the
// account as the question refers to it (full, partial or misspelt); the
// other slots are the memory's own values. `tags` says what each question
// template exercises.
const KINDS = [
  {
    kind: 'call', slots: { P: 'person', T: TOPIC, W: WEEKDAY },
    mem: ['Call with {P} of {C}: they asked about {T} and want a follow-up on {W}.',
      'Had a call with {C} ({P}); questions about {T}, follow-up booked for {W}.'],
    tune: [['what did {A} ask about on the call', 'paraphrase'],
      ['{A} call questions {T}', 'word order'],
      ['when is the follow up with {A}', 'paraphrase']],
    held: [['which day did we promise {A} a followup', 'synonym'],
      ['{A} phoned us with questions - what about', 'synonym'],
      ['calls with {A} asking about {T}', 'inflection']],
  },
  {
    kind: 'deal', slots: { P: 'person', S: STAGE, N: 'amount' },
    mem: ['The {C} deal moved to {S} at ${N}k annual value; {P} is our champion.',
      '{C} deal update: now in {S}, ${N}k per year, champion is {P}.'],
    tune: [['what stage is the {A} deal in', 'paraphrase'],
      ['{A} deal ${N}k', 'numbers'],
      ['who is our champion at {A}', 'paraphrase']],
    held: [['where does the {A} opportunity stand', 'synonym'],
      ['status of the {A} contract worth {N}k', 'numbers'],
      ['{A} opportunities in {S}', 'inflection']],
  },
  {
    kind: 'lost', slots: { X: COMPETITOR, R: REASON },
    mem: ['We lost the {C} deal to {X} because of {R}.',
      'Closed-lost: {C} went with {X}, the reason given was {R}.'],
    tune: [['why did we lose {A}', 'paraphrase'],
      ['{A} lost to {X}', 'word order']],
    held: [['which competitor beat us at {A}', 'synonym'],
      ['reason {A} chose {X} over us', 'synonym']],
  },
  {
    kind: 'renewal', slots: { P: 'person', M: MONTH, D: 'pct' },
    mem: ['{C} renewal is due in {M}; {P} wants a {D}% discount for a three year term.',
      'Renewal for {C} comes up in {M} and {P} is asking for {D}% off a three year term.'],
    tune: [['when does {A} renew', 'inflection'],
      ['{A} renewal discount', 'word order'],
      ['how much discount does {A} want', 'paraphrase']],
    held: [['{A} price cut request on the renewal', 'synonym'],
      ['is {A} renewing in {M}', 'inflection'],
      ['{D} percent off for {A}', 'numbers']],
  },
  {
    kind: 'contact', slots: { P: 'person', E: MEDIUM, H: TIME },
    mem: ['{P} at {C} prefers {E} over phone calls and only before {H}.',
      'Contact preference for {C}: {P} likes {E}, no phone calls, before {H} only.'],
    tune: [['how does {A} like to be contacted', 'paraphrase'],
      ['{A} prefers {E}', 'word order'],
      ['best time to reach {Pf} at {A}', 'partial name']],
    held: [['should we ring {A} or write to them', 'synonym'],
      ['{Pf} preferred channel {A}', 'partial name'],
      ['reaching out to {A}: what do they prefer', 'inflection']],
  },
  {
    kind: 'invoice', slots: { P: 'person', F: FORMAT },
    mem: ['{C} wants invoices as {F} sent to {P}.',
      'Billing preference at {C}: invoices in {F} format, addressed to {P}.'],
    tune: [['invoice format for {A}', 'paraphrase'],
      ['who gets the {A} invoices', 'paraphrase']],
    held: [['how should we send bills to {A}', 'synonym'],
      ['{A} invoicing as {F}', 'inflection']],
  },
  {
    kind: 'incident', slots: { V: SERVICE, U: CAUSE, I: 'incident', N: 'minutes' },
    mem: ['Incident INC-{I}: {V} outage for {C} caused by {U}; resolved after {N} minutes.',
      'INC-{I} postmortem: {C} had a {V} outage from {U}, fixed in {N} minutes.'],
    tune: [['what caused the {A} {V} outage', 'paraphrase'],
      ['INC-{I}', 'numbers'],
      ['{A} outage root cause', 'word order']],
    held: [['why was {V} down for {A}', 'symptom'],
      ['{A} could not use {V} - what happened', 'symptom'],
      ['incident {I} cause', 'numbers']],
  },
  {
    kind: 'slack', slots: { P: 'person', L: CHANNEL, Q: DECISION, T: TOPIC },
    mem: ['Slack thread in #{L}: we decided to {Q} for {C} after {P} raised {T}.',
      'Decision in #{L} on Slack: {Q} for {C}; {P} had raised {T}.'],
    tune: [['what did we decide for {A} on Slack', 'paraphrase'],
      ['{A} slack decision {L}', 'word order']],
    held: [['what was agreed in the {A} thread', 'synonym'],
      ['decisions made on slack about {A}', 'inflection']],
  },
  {
    kind: 'escalation', slots: { P: 'person', Y: ISSUE, W: WEEKDAY },
    mem: ['{P} from {C} escalated {Y} to their VP; we promised a fix by {W}.',
      'Escalation: {C} ({P}) took {Y} to their VP, fix promised for {W}.'],
    tune: [['what did {A} escalate', 'paraphrase'],
      ['{A} escalation fix date', 'word order']],
    held: [['{A} complained to management about what', 'synonym'],
      ['escalations from {A} about {Y}', 'inflection']],
  },
  {
    kind: 'onboarding', slots: { P: 'person', B: BLOCKER },
    mem: ['Onboarding of {C} is blocked on {B}; {P} owns the next step.',
      '{C} onboarding stuck waiting for {B}, next step is with {P}.'],
    tune: [['what is blocking {A} onboarding', 'paraphrase'],
      ['who owns the next step for {A} onboarding', 'paraphrase']],
    held: [['why is {A} setup stalled', 'synonym'],
      ['{A} onboarded yet? waiting on {B}', 'inflection']],
  },
  {
    kind: 'security', slots: { P: 'person', Z: ARTIFACT },
    mem: ['{C} security review asks for {Z}; {P} is the reviewer.',
      'Security questionnaire from {C}: they need {Z}, reviewed by {P}.'],
    tune: [['what does {A} need for the security review', 'paraphrase'],
      ['{A} security reviewer', 'word order']],
    held: [['{A} infosec assessment requirements', 'synonym'],
      ['documents {A} security reviews require', 'inflection']],
  },
  {
    kind: 'feature', slots: { P: 'person', G: FEATURE, O: PRODUCT },
    mem: ['{P} at {C} asked for {G} in the {O} product.',
      'Feature request from {C} ({P}): {G} for {O}.'],
    tune: [['what feature did {A} request', 'paraphrase'],
      ['{A} feature request {O}', 'word order']],
    held: [['what does {A} want us to build', 'synonym'],
      ['{A} requesting {G}', 'inflection']],
  },
  {
    kind: 'qbr', slots: { P: 'person', M: MONTH, D: 'day', T: TOPIC },
    mem: ['Quarterly business review with {C} is set for {M} {D}; {P} will present {T}.',
      'QBR with {C} on {M} {D}, {P} presenting {T}.'],
    tune: [['when is the {A} quarterly review', 'paraphrase'],
      ['{A} QBR date', 'word order']],
    held: [['{A} business review meeting date', 'synonym'],
      ['who presents at the {A} quarterly', 'paraphrase']],
  },
  {
    kind: 'billing', slots: { P: 'person', N: 'amount', K: 'invoice' },
    mem: ['{C} was double charged ${N} on invoice {K}; {P} expects a refund.',
      'Billing error: {C} charged twice (${N}, invoice {K}), {P} wants the money back.'],
    tune: [['was {A} double charged', 'paraphrase'],
      ['invoice {K} refund', 'numbers']],
    held: [['{A} overbilled - do they get money back', 'synonym'],
      ['refunds owed to {A} for duplicate charges', 'inflection']],
  },
];

function pick(rng, a) {
  return a[Math.floor(rng() * a.length)];
}

function titleCase(s) {
  return s[0].toUpperCase() + s.slice(1);
}

// Pronounceable made-up account names (Kelmira, Dovrane...), unique, and
// unique as a prefix too, so a partial name still names one account.
function accounts(rng, n) {
  const out = [];
  const used = new Set();
  while (out.length < n) {
    const w = pick(rng, ONSET) + pick(rng, VOWEL) + pick(rng, ONSET) + pick(rng, VOWEL) +
      (rng() < 0.6 ? pick(rng, CODA) : '');
    if (w.length < 5 || used.has(w) || used.has(w.replace(/s$/, ''))) continue;
    used.add(w);
    const short = titleCase(w);
    out.push({ short, full: `${short} ${pick(rng, SUFFIX)}` });
  }
  return out;
}

// One realistic slip of the keyboard in a word of 5+ letters: swapped
// neighbours, a dropped letter, or a doubled one (never the first letter).
export function typo(rng, w) {
  const i = 1 + Math.floor(rng() * (w.length - 2));
  const kind = Math.floor(rng() * 3);
  if (kind === 0) return w.slice(0, i) + w[i + 1] + w[i] + w.slice(i + 2);
  if (kind === 1) return w.slice(0, i) + w.slice(i + 1);
  return w.slice(0, i) + w[i] + w.slice(i);
}

function slotValue(rng, spec, people, acct) {
  if (Array.isArray(spec)) return pick(rng, spec);
  switch (spec) {
    case 'person': return pick(rng, people);
    case 'amount': return String(20 + Math.floor(rng() * 480));
    case 'pct': return String(5 + Math.floor(rng() * 26));
    case 'minutes': return String(7 + Math.floor(rng() * 170));
    case 'incident': return String(1000 + Math.floor(rng() * 9000));
    case 'invoice': return `${acct.short.slice(0, 2).toUpperCase()}-${10000 + Math.floor(rng() * 89999)}`;
    case 'day': return String(1 + Math.floor(rng() * 28));
    default: throw new Error(`unknown slot ${spec}`);
  }
}

function fill(tpl, v) {
  return tpl.replace(/\{(\w+)\}/g, (_, k) => {
    if (v[k] === undefined) throw new Error(`template ${tpl}: no value for {${k}}`);
    return v[k];
  });
}

function makeMemory(rng, kind, acct, people, usedNumbers) {
  const v = { C: acct.full };
  for (const [slot, spec] of Object.entries(kind.slots)) {
    let val;
    do val = slotValue(rng, spec, people, acct);
    while ((spec === 'incident' || spec === 'invoice') && usedNumbers.has(val));
    if (spec === 'incident' || spec === 'invoice') usedNumbers.add(val);
    v[slot] = val;
  }
  if (v.P) v.Pf = v.P.split(' ')[0];
  return { content: fill(pick(rng, kind.mem), v), kind: kind.kind, values: v };
}

// Damerau-Levenshtein distance (adjacent swaps count one).
function editDistance(a, b) {
  const d = [];
  for (let i = 0; i <= a.length; i++) d.push([i, ...new Array(b.length).fill(0)]);
  for (let j = 0; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++) {
      const c = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + c);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[a.length][b.length];
}

// How a question refers to the account: mostly a partial name (that is how
// people talk), sometimes the full name, sometimes with a typo - only in a
// name of 6+ letters, and only a typo that leaves the name closer to its
// account than to any other (a reader could still tell which one it is).
function accountRef(rng, acct, accts) {
  const r = rng();
  if (r < 0.5) return { A: acct.short, how: 'partial name' };
  if (r < 0.8 || acct.short.length < 6) return { A: acct.full, how: 'full name' };
  const t = typo(rng, acct.short);
  const lo = t.toLowerCase();
  const clash = accts.some((o) => o !== acct && editDistance(lo, o.short.toLowerCase()) <= 1);
  return clash ? { A: acct.short, how: 'partial name' } : { A: t, how: 'typo' };
}

export function generate() {
  const rng = mulberry32(SEED);
  const people = [];
  for (const f of FIRST) for (const l of LAST) people.push(`${f} ${l}`);
  const accts = accounts(rng, 420);
  // every (account, kind) pair once, shuffled; the first N_TARGETS are targets
  const pairs = [];
  for (const a of accts) for (const k of KINDS) pairs.push([a, k]);
  for (let i = pairs.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [pairs[i], pairs[j]] = [pairs[j], pairs[i]];
  }
  if (pairs.length < N_TARGETS + N_DISTRACTORS) throw new Error('not enough pairs');
  const usedNumbers = new Set();
  const targets = [];
  const queries = [];
  for (let t = 0; t < N_TARGETS; t++) {
    const [acct, kind] = pairs[t];
    const split = t < N_TARGETS / 2 ? 'tuning' : 'heldout';
    const mem = makeMemory(rng, kind, acct, people, usedNumbers);
    const id = `t${String(t).padStart(3, '0')}`;
    targets.push({ id, split, kind: kind.kind, content: mem.content });
    // two questions per target, from two different templates of its split
    const tpls = split === 'tuning' ? kind.tune : kind.held;
    const first = Math.floor(rng() * tpls.length);
    for (const ti of [first, (first + 1) % tpls.length]) {
      const [tpl, tag] = tpls[ti];
      const ref = accountRef(rng, acct, accts);
      const q = fill(tpl, { ...mem.values, A: ref.A });
      const tags = [tag];
      if (tpl.includes('{A}')) tags.push(ref.how);
      queries.push({ q, target: id, split, tags: [...new Set(tags)] });
    }
  }
  const distractors = [];
  for (let d = 0; d < N_DISTRACTORS; d++) {
    const [acct, kind] = pairs[N_TARGETS + d];
    distractors.push(makeMemory(rng, kind, acct, people, usedNumbers).content);
  }
  return { targets, queries, distractors };
}

// The held-out templates must not repeat a tuning template's wording.
export function templateOverlap() {
  const bad = [];
  for (const k of KINDS)
    for (const [h] of k.held)
      for (const kk of KINDS)
        for (const [t] of kk.tune) if (h === t) bad.push(h);
  return bad;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { writeFileSync } = await import('node:fs');
  const path = await import('node:path');
  const dir = process.argv[2] || '.';
  const { targets, queries } = generate();
  writeFileSync(path.join(dir, 'targets.jsonl'), targets.map((t) => JSON.stringify(t)).join('\n') + '\n');
  writeFileSync(path.join(dir, 'queries.jsonl'), queries.map((q) => JSON.stringify(q)).join('\n') + '\n');
  console.log(`${targets.length} targets, ${queries.length} queries written to ${dir}`);
}
