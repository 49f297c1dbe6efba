#!/usr/bin/env node
// bench.js — the BullMQ + Redis peer of am2z-bench (bench/run.sh runs it).
//
// Two roles, two processes, against a Redis server the harness started:
//
//   node bench.js worker --port P [--concurrency 100]
//       a BullMQ Worker on queue "increment" (processor
//       {...data, count: data.count + 1}); prints "ready"; also opens and
//       closes per-session workers when the client asks (session workload).
//   node bench.js client --port P --workload rt|tp|chain3|par3|session [--rounds N]
//       [--jobs N] [--window N] [--cycles N] [--state-bytes N]
//       prints one JSON object a line, the same fields as am2z-bench --json:
//       rt:      sequential queue.add + job.waitUntilFinished, p50/p99 µs;
//       tp:      addBulk in chunks, at most `window` unfinished jobs, jobs/s
//                from the first add to the last "completed" event;
//       chain3:  a flow (FlowProducer) of three nested jobs on queue "flow":
//                each increments its child's result (BullMQ runs the
//                deepest child first), p50/p99 of flow add -> top finished;
//       par3:    a flow of three `increment` children under a "merge"
//                parent that merges their results (BullMQ's way to run
//                branches in parallel and join them), p50/p99 as chain3;
//       session: AM2Z's DistributedRuntime session lifecycle on BullMQ —
//                a queue + QueueEvents + worker per session, one job,
//                then stopSession = close the worker, obliterate the queue.
//
// Completed jobs: the newest 1,000 are kept (removeOnComplete: 1000, a
// common BullMQ setting), as am2z keeps 1,000 completed results per
// processor by default (retain-completed).
'use strict';

const { Queue, Worker, QueueEvents, FlowProducer } = require('bullmq');
const IORedis = require('ioredis');

const CTL = 'am2z-bench:ctl';
const ACK = 'am2z-bench:ack';

function parseArgs(argv) {
  const o = {
    role: argv[0], port: 6379, concurrency: 100, workload: 'rt', rounds: 2000,
    jobs: 50000, window: 2000, cycles: 1000, stateBytes: 100,
  };
  for (let i = 1; i < argv.length; i += 2) {
    const k = argv[i].replace(/^--/, '').replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (!(k in o)) throw new Error(`unknown option ${argv[i]}`);
    o[k] = typeof o[k] === 'number' ? Number(argv[i + 1]) : argv[i + 1];
  }
  return o;
}

const connection = (o) => ({ host: '127.0.0.1', port: o.port, maxRetriesPerRequest: null });

// The same processor logic as am2z's `increment`.
async function increment(job) {
  return { ...job.data, count: job.data.count + 1 };
}

// Steps of the flow workloads: "inc" increments its child's result (or its
// own data at a leaf); "merge" joins the children's results.
async function flowStep(job) {
  const values = Object.values(await job.getChildrenValues());
  if (job.name === 'merge') return Object.assign({}, job.data, ...values);
  const base = values.length ? values[0] : job.data;
  return { ...base, count: base.count + 1 };
}

// A state of about `bytes` JSON bytes: count, session, filler.
function state(session, bytes) {
  const base = JSON.stringify({ count: 0, sessionId: session, pad: '' }).length;
  return { count: 0, sessionId: session, pad: 'x'.repeat(Math.max(0, bytes - base)) };
}

const KEEP = { removeOnComplete: 1000 };

const nowUs = () => Number(process.hrtime.bigint() / 1000n);

function latency(o, name, lat) {
  lat.sort((a, b) => a - b);
  const n = lat.length;
  return {
    workload: name, n, state_bytes: o.stateBytes, p50_us: lat[n >> 1],
    p99_us: lat[Math.floor(n * 99 / 100)], min_us: lat[0], max_us: lat[n - 1],
  };
}

async function worker(o) {
  const main = new Worker('increment', increment, { connection: connection(o), concurrency: o.concurrency });
  const flow = new Worker('flow', flowStep, { connection: connection(o), concurrency: o.concurrency });
  await Promise.all([main.waitUntilReady(), flow.waitUntilReady()]);
  const sessions = new Map();
  const sub = new IORedis(connection(o));
  const pub = new IORedis(connection(o));
  await sub.subscribe(CTL);
  sub.on('message', async (_ch, text) => {
    const m = JSON.parse(text);
    if (m.op === 'open') {
      const w = new Worker(m.queue, increment, { connection: connection(o), concurrency: o.concurrency });
      sessions.set(m.queue, w);
      await w.waitUntilReady();
    } else if (m.op === 'close') {
      const w = sessions.get(m.queue);
      sessions.delete(m.queue);
      if (w) await w.close();
    }
    await pub.publish(ACK, text);
  });
  const stop = async () => {
    await Promise.all([main.close(), flow.close(), ...[...sessions.values()].map((w) => w.close())]);
    sub.disconnect();
    pub.disconnect();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  console.log('ready');
}

async function roundTrips(o) {
  const queue = new Queue('increment', { connection: connection(o) });
  const events = new QueueEvents('increment', { connection: connection(o), lastEventId: '0-0' });
  await events.waitUntilReady();
  const data = state('bench-rt', o.stateBytes);
  const lat = [];
  for (let i = 0; i < o.rounds + 50; i++) {      // 50 warm-up rounds
    const t0 = nowUs();
    const job = await queue.add('increment', data, KEEP);
    const r = await job.waitUntilFinished(events, 30000);
    if (i >= 50) lat.push(nowUs() - t0);
    data.count = r.count;
  }
  await Promise.all([queue.close(), events.close()]);
  return latency(o, 'rt', lat);
}

function chainTree(data) {
  let node = { name: 'inc', queueName: 'flow', data, opts: KEEP };
  for (let i = 1; i < 3; i++) {
    node = { name: 'inc', queueName: 'flow', data: {}, opts: KEEP, children: [node] };
  }
  return node;
}

function parTree(data) {
  const child = () => ({ name: 'inc', queueName: 'flow', data, opts: KEEP });
  return { name: 'merge', queueName: 'flow', data, opts: KEEP, children: [child(), child(), child()] };
}

async function flows(o, name, tree) {
  const producer = new FlowProducer({ connection: connection(o) });
  const events = new QueueEvents('flow', { connection: connection(o), lastEventId: '0-0' });
  await events.waitUntilReady();
  let data = state(`bench-${name}`, o.stateBytes);
  const lat = [];
  for (let i = 0; i < o.rounds + 50; i++) {      // 50 warm-up rounds
    const t0 = nowUs();
    const added = await producer.add(tree(data));
    const r = await added.job.waitUntilFinished(events, 30000);
    if (i >= 50) lat.push(nowUs() - t0);
    data = { ...data, count: r.count };
  }
  await Promise.all([producer.close(), events.close()]);
  return latency(o, name, lat);
}

async function throughput(o) {
  const queue = new Queue('increment', { connection: connection(o) });
  const events = new QueueEvents('increment', { connection: connection(o), lastEventId: '0-0' });
  await events.waitUntilReady();
  const chunk = Math.max(1, o.window >> 1);
  const sessions = 1000;
  const datas = Array.from({ length: sessions }, (_, s) => state(`bench-tp-${s}`, o.stateBytes));
  let submitted = 0, done = 0, failed = 0;
  let wake = null;
  events.on('completed', () => { done++; if (wake) wake(); });
  events.on('failed', () => { done++; failed++; if (wake) wake(); });
  const t0 = nowUs();
  while (done < o.jobs) {
    if (submitted < o.jobs && submitted - done <= o.window - chunk) {
      const n = Math.min(chunk, o.jobs - submitted);
      const bulk = [];
      for (let i = 0; i < n; i++) bulk.push({ name: 'increment', data: datas[(submitted + i) % sessions], opts: KEEP });
      await queue.addBulk(bulk);
      submitted += n;
      continue;
    }
    await new Promise((resolve) => { wake = resolve; });
    wake = null;
  }
  const secs = (nowUs() - t0) / 1e6;
  await Promise.all([queue.close(), events.close()]);
  return {
    workload: 'tp', jobs: o.jobs, state_bytes: o.stateBytes, sessions, window: o.window,
    seconds: Number(secs.toFixed(3)), jobs_per_s: Math.round(o.jobs / secs), failed,
  };
}

async function sessionCycles(o) {
  const pub = new IORedis(connection(o));
  const sub = new IORedis(connection(o));
  const waiting = new Map();
  await sub.subscribe(ACK);
  sub.on('message', (_ch, text) => {
    const resolve = waiting.get(text);
    waiting.delete(text);
    if (resolve) resolve();
  });
  const ask = (op, queue) => {
    const text = JSON.stringify({ op, queue });
    const acked = new Promise((resolve) => waiting.set(text, resolve));
    return pub.publish(CTL, text).then(() => acked);
  };
  const lat = [];
  for (let i = 0; i < o.cycles + 20; i++) {      // 20 warm-up cycles
    const t0 = nowUs();
    const name = `increment-bench-sc-${process.pid}-${i}`;
    const queue = new Queue(name, { connection: connection(o) });
    // from the start of the (new) queue's event stream: with the default
    // "$" a completion that lands before QueueEvents' first XREAD is never
    // seen and waitUntilFinished times out (happened ~1 in 500 cycles)
    const events = new QueueEvents(name, { connection: connection(o), lastEventId: '0-0' });
    await Promise.all([events.waitUntilReady(), ask('open', name)]);
    const job = await queue.add('increment', state(name, o.stateBytes), KEEP);
    try {
      await job.waitUntilFinished(events, 30000);
    } catch (e) {
      console.error(`cycle ${i}: state ${await job.getState()} counts ${JSON.stringify(await queue.getJobCounts())}`);
      throw e;
    }
    await ask('close', name);
    await queue.obliterate({ force: true });
    await Promise.all([queue.close(), events.close()]);
    if (i >= 20) lat.push(nowUs() - t0);
  }
  pub.disconnect();
  sub.disconnect();
  return latency(o, 'session', lat);
}

async function client(o) {
  // a lost completion must fail the case, not hang the harness
  setTimeout(() => { console.error('bullmq-bench: no end after 600 s'); process.exit(1); }, 600000).unref();
  const run = {
    rt: roundTrips, tp: throughput, session: sessionCycles,
    chain3: (x) => flows(x, 'chain3', chainTree), par3: (x) => flows(x, 'par3', parTree),
  }[o.workload];
  if (!run) throw new Error(`unknown workload ${o.workload}`);
  console.log(JSON.stringify(await run(o)));
  process.exit(0);
}

const o = parseArgs(process.argv.slice(2));
(o.role === 'worker' ? worker(o) : client(o)).catch((e) => {
  console.error(`bullmq-bench: ${e.stack || e}`);
  process.exit(1);
});
