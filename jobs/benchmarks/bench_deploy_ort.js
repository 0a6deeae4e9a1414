#!/usr/bin/env node
// Time one ONNX model in ONNX Runtime (onnxruntime-node, CPU): the twin of
// jobs/benchmarks/bench_deploy_ort.py, same command line and same JSON line.
//   node jobs/benchmarks/bench_deploy_ort.js MODEL.onnx [--batch B] [--runs N] [--warmup W] [--threads T]
//        [--dims NAME=V[,NAME=V...]] [--input-shape [INPUT=]D0xD1x...] [--int-range LO:HI] [--seed S]
// Inputs are random, of each input's dtype and shape as the session reports them: axis 0 of
// every input is the batch and gets B (an error when the model fixes it to another size); any
// other symbolic axis needs --dims, keyed by the axis' name, by INPUT:AXIS, or `*` for every
// remaining one. --input-shape gives an input's whole shape instead (its axis 0 must be B;
// INPUT= may be left out when the model has one input). Integer inputs are drawn from [LO, HI)
// (default 0:2, safe for masks and any embedding table; give the vocabulary for token ids),
// floats from a standard normal. One session (intra-op threads T, inter-op 1, sequential, all
// graph optimizations), W untimed runs, then N timed runs of session.run on the same inputs.
// Usage errors exit 2, ONNX Runtime errors 1. Prints one JSON line: median_ms, p90_ms, runs,
// batch, threads, ort_version, and runner, model, warmup, min_ms, mean_ms, times_ms, inputs.
// onnxruntime-node is found from this file's directory upwards (the repository's node_modules).
'use strict';
const os = require('os');
const ort = require('onnxruntime-node');

function fail(message) {
  process.stderr.write(`bench_deploy_ort.js: ${message}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const a = {batch: 1, runs: 20, warmup: 5, threads: os.availableParallelism ? os.availableParallelism() : os.cpus().length,
             dims: [], inputShape: [], intRange: '0:2', seed: 0, model: null};
  const numeric = {'--batch': 'batch', '--runs': 'runs', '--warmup': 'warmup', '--threads': 'threads', '--seed': 'seed'};
  const lists = {'--dims': 'dims', '--input-shape': 'inputShape'};
  for (let i = 0; i < argv.length; ++i) {
    let arg = argv[i], value;
    const eq = arg.indexOf('=');
    if (arg.startsWith('--') && eq > 0) { value = arg.slice(eq + 1); arg = arg.slice(0, eq); }
    const take = () => {
      if (value !== undefined) return value;
      if (i + 1 >= argv.length) fail(`${arg} wants a value`);
      return argv[++i];
    };
    if (arg === '-h' || arg === '--help') {
      process.stdout.write('usage: bench_deploy_ort.js MODEL.onnx [--batch B] [--runs N] [--warmup W] [--threads T] ' +
                           '[--dims NAME=V] [--input-shape [INPUT=]D0xD1x...] [--int-range LO:HI] [--seed S]\n');
      process.exit(0);
    } else if (arg in numeric) {
      const text = take();
      if (!/^-?\d+$/.test(text)) fail(`${arg} wants a whole number, got ${JSON.stringify(text)}`);
      a[numeric[arg]] = parseInt(text, 10);
    } else if (arg in lists) {
      a[lists[arg]].push(take());
    } else if (arg === '--int-range') {
      a.intRange = take();
    } else if (arg.startsWith('-')) {
      fail(`unknown option ${arg}`);
    } else if (a.model === null) {
      a.model = arg;
    } else {
      fail(`one model only (got ${a.model} and ${arg})`);
    }
  }
  if (a.model === null) fail('give the model: bench_deploy_ort.js MODEL.onnx [options]');
  if (a.batch < 1 || a.runs < 1 || a.warmup < 0 || a.threads < 1) {
    fail('--batch, --runs and --threads must be >= 1, --warmup >= 0');
  }
  return a;
}

function parseDims(items) {
  const dims = {};
  for (const item of items) {
    for (const part of item.split(',').filter(Boolean)) {
      const eq = part.lastIndexOf('=');
      const key = part.slice(0, eq), value = part.slice(eq + 1);
      if (eq <= 0 || !/^\d+$/.test(value) || parseInt(value, 10) < 1) {
        fail(`--dims wants NAME=V with V >= 1, got ${JSON.stringify(part)}`);
      }
      dims[key] = parseInt(value, 10);
    }
  }
  return dims;
}

function parseShapes(items, names) {
  const shapes = {};
  for (const item of items) {
    const eq = item.lastIndexOf('=');
    let name = item.slice(0, eq), text = item.slice(eq + 1);
    if (eq < 0) {
      if (names.length !== 1) fail(`--input-shape ${item}: the model has inputs ${names.join(', ')}; write INPUT=SHAPE`);
      name = names[0];
    }
    if (!names.includes(name)) fail(`--input-shape ${item}: no input ${JSON.stringify(name)} (inputs: ${names.join(', ')})`);
    const parts = text ? text.replace(/,/g, 'x').split('x') : [];
    if (!parts.every((p) => /^\d+$/.test(p))) fail(`--input-shape ${item}: want D0xD1x... with whole numbers`);
    shapes[name] = parts.map((p) => parseInt(p, 10));
  }
  return shapes;
}

// The concrete shape of input `name`; declared holds numbers and strings (symbolic; '' = unnamed).
function resolveShape(name, declared, batch, dims, given) {
  if (name in given) {
    const shape = given[name];
    if (shape.length && shape[0] !== batch) fail(`--input-shape of ${name} has axis 0 = ${shape[0]}, not the batch ${batch}`);
    return shape;
  }
  return declared.map((dim, axis) => {
    if (axis === 0) {
      if (typeof dim === 'number' && dim !== batch) {
        fail(`input ${name} fixes its batch axis (axis 0) to ${dim}; batch ${batch} needs a model exported with a dynamic axis 0`);
      }
      return batch;
    }
    if (typeof dim === 'number') return dim;
    for (const key of [dim, `${name}:${axis}`, '*']) {
      if (key && key in dims) return dims[key];
    }
    fail(`input ${name} axis ${axis} is symbolic (${dim ? JSON.stringify(dim) : 'unnamed'}): give its size with --dims ` +
         `${dim || `${name}:${axis}`}=V (declared shape [${declared.map((d) => (d === '' ? '?' : d)).join(', ')}])`);
  });
}

// mulberry32: a small seeded generator, so both runners' inputs are reproducible.
function generator(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function float16Bits(value) {  // round-to-nearest IEEE half from a float32
  const f32 = new Float32Array([value]), u32 = new Uint32Array(f32.buffer)[0];
  const sign = (u32 >>> 16) & 0x8000, exponent = ((u32 >>> 23) & 0xff) - 127 + 15, mantissa = u32 & 0x7fffff;
  if (exponent <= 0) return sign;  // |value| < 2^-14: flushed to zero (fine for random inputs)
  if (exponent >= 31) return sign | 0x7c00;
  const half = sign | (exponent << 10) | (mantissa >>> 13);
  return half + ((mantissa >>> 12) & 1);
}

const ARRAYS = {
  float32: Float32Array, float64: Float64Array, float16: Uint16Array, int8: Int8Array, uint8: Uint8Array,
  int16: Int16Array, uint16: Uint16Array, int32: Int32Array, uint32: Uint32Array, int64: BigInt64Array,
  uint64: BigUint64Array, bool: Uint8Array,
};

function randomTensor(type, shape, random, lo, hi) {
  if (!(type in ARRAYS)) fail(`input type ${type} is not generated by this runner`);
  const count = shape.reduce((n, d) => n * d, 1);
  const data = new ARRAYS[type](count);
  const normal = () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  for (let i = 0; i < count; ++i) {
    if (type === 'bool') data[i] = random() < 0.5 ? 0 : 1;
    else if (type === 'float32' || type === 'float64') data[i] = normal();
    else if (type === 'float16') data[i] = float16Bits(normal());
    else {
      const v = lo + Math.floor(random() * (hi - lo));
      data[i] = type === 'int64' || type === 'uint64' ? BigInt(v) : v;
    }
  }
  return new ort.Tensor(type, data, shape);
}

function percentile(sorted, q) {  // nearest rank, as the Python runner
  return sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)];
}

const round = (x, digits) => Math.round(x * 10 ** digits) / 10 ** digits;

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const range = /^(-?\d+):(-?\d+)$/.exec(a.intRange);
  if (!range || parseInt(range[2], 10) <= parseInt(range[1], 10)) {
    fail(`--int-range wants LO:HI with HI > LO, got ${JSON.stringify(a.intRange)}`);
  }
  const lo = parseInt(range[1], 10), hi = parseInt(range[2], 10);
  const session = await ort.InferenceSession.create(a.model, {
    executionProviders: ['cpu'], intraOpNumThreads: a.threads, interOpNumThreads: 1,
    executionMode: 'sequential', graphOptimizationLevel: 'all',
  });
  const metas = session.inputMetadata;
  const dims = parseDims(a.dims);
  const given = parseShapes(a.inputShape, metas.map((m) => m.name));
  const random = generator(a.seed);
  const feeds = {}, inputs = [];
  for (const m of metas) {
    if (!m.isTensor) fail(`input ${m.name} is not a tensor`);
    const shape = resolveShape(m.name, m.shape, a.batch, dims, given);
    feeds[m.name] = randomTensor(m.type, shape, random, lo, hi);
    inputs.push({name: m.name, dtype: m.type, shape, declared: m.shape.map((d) => (d === '' ? '?' : d))});
  }

  for (let i = 0; i < a.warmup; ++i) await session.run(feeds);
  const times = [];
  for (let i = 0; i < a.runs; ++i) {
    const start = process.hrtime.bigint();
    await session.run(feeds);
    times.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  const sorted = [...times].sort((x, y) => x - y);
  const n = sorted.length;
  const median = n % 2 ? sorted[(n - 1) / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
  process.stdout.write(JSON.stringify({
    median_ms: round(median, 4), p90_ms: round(percentile(sorted, 0.9), 4), runs: a.runs, batch: a.batch,
    threads: a.threads, ort_version: ort.env.versions.node || ort.env.versions.common, runner: 'node', model: a.model,
    warmup: a.warmup, min_ms: round(sorted[0], 4), mean_ms: round(times.reduce((s, t) => s + t, 0) / n, 4),
    times_ms: times.map((t) => round(t, 3)), inputs,
  }) + '\n');
  await session.release();
}

main().catch((e) => {  // ONNX Runtime's errors (loading, running) as one line, exit 1
  process.stderr.write(`bench_deploy_ort.js: ${e && e.message ? e.message : String(e)}\n`);
  process.exit(1);
});
