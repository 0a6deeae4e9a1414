#!/usr/bin/env node
// Runs an ONNX model in onnxruntime (npm package onnxruntime-node) on a whole
// set of rows, in batches, and writes the outputs. ort_run.py does the same in
// Python's onnxruntime; both take the same command line and files.
//
//   node ort_run.js MODEL.onnx MANIFEST.json
//
// MANIFEST.json:
//   {"inputs": [{"name": "x", "dtype": "float32", "shape": [N, ...], "file": "/abs/x.bin"}, ...],
//    "batch_size": B, "threads": T, "outputs_dir": "/abs/dir"}
// Optional keys: "graph_optimization_level" ("disabled" | "basic" | "extended" | "all",
// default "all": what a deployment gets), "device" ("cpu" default, or "cuda"),
// "session_config" ({key: value} strings: onnxruntime's session configuration entries,
// e.g. {"session.qdq_matmulnbits_accuracy_level": "1"}: at "extended" and above
// onnxruntime turns an int4 DequantizeLinear + MatMul into MatMulNBits, which by
// default (level 4) computes with int8-quantized activations).
//
// Every .bin holds raw little-endian row-major data of the whole set, axis 0 the
// row; every input has the same number of rows. The model runs on consecutive
// slices of B rows (the last may be smaller; B = 0 runs every row at once), each
// output is concatenated along axis 0 and written raw to
// <outputs_dir>/output_<i>.bin (i in the model's output order), with
// <outputs_dir>/outputs.json:
//   {"outputs": [{"name", "dtype", "shape", "file"}], "seconds": <time inside run()>,
//    "rows": N, "batches": K, "runtime": "onnxruntime-node 1.30.0 (node v20.20.2)"}
// Dtypes: float32 float64 float16 int8 uint8 int16 uint16 int32 uint32 int64 uint64 bool
// (bool as one byte per element). T = 0: onnxruntime's default thread count.
//
// `node ort_run.js --version` prints onnxruntime-node's version (exit 3 where it
// cannot be loaded).
//
// Exit status: 0 done; 1 bad model, manifest, data or a failed run (one line
// on stderr naming the model and manifest); 2 bad command line; 3 onnxruntime-node
// cannot be loaded.
'use strict';

const fs = require('fs');
const path = require('path');
const { createRequire } = require('module');

const SCRIPT = 'ort_run.js';
const INSTALL_HINT = 'install it with `npm install --ignore-scripts onnxruntime-node@1.30.0` in the ' +
  'repository root (or put its folder on NODE_PATH)';

// numpy dtype name -> [typed array, bytes per element, onnxruntime-node type name]
const DTYPES = {
  float32: [Float32Array, 4, 'float32'],
  float64: [Float64Array, 8, 'float64'],
  float16: [Uint16Array, 2, 'float16'],
  int8: [Int8Array, 1, 'int8'],
  uint8: [Uint8Array, 1, 'uint8'],
  int16: [Int16Array, 2, 'int16'],
  uint16: [Uint16Array, 2, 'uint16'],
  int32: [Int32Array, 4, 'int32'],
  uint32: [Uint32Array, 4, 'uint32'],
  int64: [BigInt64Array, 8, 'int64'],
  uint64: [BigUint64Array, 8, 'uint64'],
  bool: [Uint8Array, 1, 'bool'],
};

class Failure extends Error {}

function fail(message) {
  throw new Failure(message);
}

function oneLine(text) {
  return String(text).replace(/\s*\n\s*/g, ' ').trim();
}

// onnxruntime-node from the usual places: this script's folder upward (the
// repository root's node_modules), NODE_PATH (node reads it itself), then the
// working directory's node_modules.
function loadOrt() {
  const errors = [];
  const attempts = [() => require('onnxruntime-node'),
    () => createRequire(path.join(process.cwd(), 'ort_run.js'))('onnxruntime-node')];
  for (const attempt of attempts) {
    try {
      return attempt();
    } catch (e) {
      errors.push(e);
      if (e.code !== 'MODULE_NOT_FOUND') break;  // found but broken: say why
    }
  }
  const last = errors[errors.length - 1];
  const why = last.code === 'MODULE_NOT_FOUND' ? 'the npm package onnxruntime-node is not installed'
    : `onnxruntime-node does not load (${oneLine(last.message)})`;
  process.stderr.write(`${SCRIPT}: ${why}; ${INSTALL_HINT}\n`);
  process.exit(3);
}

function readManifest(manifestPath) {
  let text;
  try {
    text = fs.readFileSync(manifestPath, 'utf8');
  } catch (e) {
    fail(`cannot read the manifest: ${e.message}`);
  }
  let m;
  try {
    m = JSON.parse(text);
  } catch (e) {
    fail(`the manifest is not JSON: ${e.message}`);
  }
  if (m === null || typeof m !== 'object' || Array.isArray(m)) fail('the manifest is not a JSON object');
  if (!Array.isArray(m.inputs) || m.inputs.length === 0) fail('"inputs" must be a non-empty list');
  const batchSize = m.batch_size === undefined ? 0 : m.batch_size;
  if (!Number.isInteger(batchSize) || batchSize < 0) fail(`"batch_size" must be an integer >= 0, got ${JSON.stringify(m.batch_size)}`);
  const threads = m.threads === undefined ? 0 : m.threads;
  if (!Number.isInteger(threads) || threads < 0) fail(`"threads" must be an integer >= 0, got ${JSON.stringify(m.threads)}`);
  if (typeof m.outputs_dir !== 'string' || !m.outputs_dir) fail('"outputs_dir" must be a path');
  const level = m.graph_optimization_level === undefined ? 'all' : m.graph_optimization_level;
  if (!['disabled', 'basic', 'extended', 'all'].includes(level)) {
    fail(`"graph_optimization_level" must be disabled, basic, extended or all, got ${JSON.stringify(level)}`);
  }
  const device = m.device === undefined ? 'cpu' : m.device;
  if (!['cpu', 'cuda'].includes(device)) fail(`"device" must be cpu or cuda, got ${JSON.stringify(device)}`);
  const sessionConfig = m.session_config === undefined ? {} : m.session_config;
  if (sessionConfig === null || typeof sessionConfig !== 'object' || Array.isArray(sessionConfig) ||
      !Object.values(sessionConfig).every((v) => typeof v === 'string')) {
    fail('"session_config" must be an object of strings');
  }
  const base = path.dirname(path.resolve(manifestPath));
  const seen = new Set();
  const inputs = m.inputs.map((inp, i) => {
    const where = `inputs[${i}]`;
    if (inp === null || typeof inp !== 'object') fail(`${where} is not an object`);
    if (typeof inp.name !== 'string' || !inp.name) fail(`${where}: "name" must be a string`);
    if (seen.has(inp.name)) fail(`input '${inp.name}' is listed twice`);
    seen.add(inp.name);
    if (!(inp.dtype in DTYPES)) {
      fail(`input '${inp.name}': dtype ${JSON.stringify(inp.dtype)} is not one of ${Object.keys(DTYPES).join(', ')}`);
    }
    if (!Array.isArray(inp.shape) || inp.shape.length === 0 || !inp.shape.every((d) => Number.isInteger(d) && d >= 0)) {
      fail(`input '${inp.name}': "shape" must list at least the row axis, as integers >= 0, got ${JSON.stringify(inp.shape)}`);
    }
    if (typeof inp.file !== 'string' || !inp.file) fail(`input '${inp.name}': "file" must be a path`);
    return { name: inp.name, dtype: inp.dtype, shape: inp.shape, file: path.resolve(base, inp.file) };
  });
  const rows = inputs[0].shape[0];
  for (const inp of inputs) {
    if (inp.shape[0] !== rows) {
      fail(`inputs disagree on the row count: '${inputs[0].name}' has ${rows} rows, '${inp.name}' has ${inp.shape[0]}`);
    }
  }
  return { inputs, rows, batchSize, threads, level, device, sessionConfig, outputsDir: path.resolve(base, m.outputs_dir) };
}

// The whole file into a fresh, aligned typed array.
function readInput(inp) {
  const [Typed, itemSize] = DTYPES[inp.dtype];
  const count = inp.shape.reduce((a, b) => a * b, 1);
  let size;
  try {
    size = fs.statSync(inp.file).size;
  } catch (e) {
    fail(`input '${inp.name}': cannot read ${inp.file}: ${e.message}`);
  }
  if (size !== count * itemSize) {
    fail(`input '${inp.name}': ${inp.file} holds ${size} bytes, shape ${JSON.stringify(inp.shape)} of ${inp.dtype} needs ${count * itemSize}`);
  }
  const data = new Typed(count);
  const bytes = new Uint8Array(data.buffer);
  const fd = fs.openSync(inp.file, 'r');
  try {
    let done = 0;
    while (done < size) {
      const n = fs.readSync(fd, bytes, done, Math.min(size - done, 1 << 30), done);
      if (n === 0) fail(`input '${inp.name}': ${inp.file} ended after ${done} of ${size} bytes`);
      done += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  return data;
}

function outputBytes(name, tensor) {
  const data = tensor.data;
  if (!ArrayBuffer.isView(data)) fail(`output '${name}' is of type ${tensor.type}, which has no raw form`);
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

async function main(modelPath, manifestPath) {
  const ort = loadOrt();
  const m = readManifest(manifestPath);
  if (!fs.existsSync(modelPath)) fail('no such model file');

  const options = { interOpNumThreads: 1, graphOptimizationLevel: m.level, executionMode: 'sequential',
    executionProviders: [m.device] };
  if (m.threads > 0) options.intraOpNumThreads = m.threads;
  if (Object.keys(m.sessionConfig).length) options.extra = m.sessionConfig;
  let session;
  try {
    session = await ort.InferenceSession.create(path.resolve(modelPath), options);
  } catch (e) {
    fail(`onnxruntime cannot load the model: ${oneLine(e.message)}`);
  }

  const given = new Map(m.inputs.map((inp) => [inp.name, inp]));
  const missing = session.inputNames.filter((n) => !given.has(n));
  if (missing.length) {
    fail(`the model's input(s) ${missing.map((n) => `'${n}'`).join(', ')} are not in the manifest (the model takes ${session.inputNames.join(', ')})`);
  }
  const extra = m.inputs.filter((inp) => !session.inputNames.includes(inp.name));
  if (extra.length) {
    fail(`the model has no input '${extra[0].name}' (it takes ${session.inputNames.join(', ')})`);
  }
  const data = new Map(m.inputs.map((inp) => [inp.name, readInput(inp)]));
  if (m.rows === 0) fail('the inputs hold no rows');

  const step = m.batchSize > 0 ? m.batchSize : m.rows;
  const chunks = session.outputNames.map(() => []);
  const shapes = session.outputNames.map(() => null);
  const types = session.outputNames.map(() => null);
  let seconds = 0;
  let batches = 0;
  for (let start = 0; start < m.rows; start += step) {
    const n = Math.min(step, m.rows - start);
    const feeds = {};
    for (const inp of m.inputs) {
      const rowSize = inp.shape.slice(1).reduce((a, b) => a * b, 1);
      const slice = data.get(inp.name).subarray(start * rowSize, (start + n) * rowSize);
      feeds[inp.name] = new ort.Tensor(DTYPES[inp.dtype][2], slice, [n, ...inp.shape.slice(1)]);
    }
    const where = `rows ${start}..${start + n - 1}`;
    let result;
    const t0 = process.hrtime.bigint();
    try {
      result = await session.run(feeds);
    } catch (e) {
      fail(`${where}: ${oneLine(e.message)}`);
    }
    seconds += Number(process.hrtime.bigint() - t0) / 1e9;
    batches += 1;
    session.outputNames.forEach((name, i) => {
      const t = result[name];
      const dims = Array.from(t.dims, Number);
      if (dims.length === 0) {
        if (start + n < m.rows || start > 0) fail(`output '${name}' is a scalar: it cannot be concatenated over batches (use batch_size 0)`);
        shapes[i] = [];
      } else if (shapes[i] === null) {
        shapes[i] = dims.slice();
      } else {
        if (JSON.stringify(dims.slice(1)) !== JSON.stringify(shapes[i].slice(1))) {
          fail(`${where}: output '${name}' has shape ${JSON.stringify(dims)}, earlier batches ${JSON.stringify(shapes[i])}: only axis 0 may differ`);
        }
        shapes[i][0] += dims[0];
      }
      if (types[i] !== null && types[i] !== t.type) fail(`${where}: output '${name}' changed type from ${types[i]} to ${t.type}`);
      types[i] = t.type;
      chunks[i].push(outputBytes(name, t));
    });
  }

  try {
    fs.mkdirSync(m.outputsDir, { recursive: true });
  } catch (e) {
    fail(`cannot create outputs_dir: ${e.message}`);
  }
  const outputs = session.outputNames.map((name, i) => {
    const file = path.join(m.outputsDir, `output_${i}.bin`);
    try {
      fs.writeFileSync(file, Buffer.concat(chunks[i]));
    } catch (e) {
      fail(`cannot write ${file}: ${e.message}`);
    }
    return { name, dtype: types[i], shape: shapes[i], file };
  });
  const versions = (ort.env && ort.env.versions) || {};
  const runtime = `onnxruntime-node ${versions.node || versions.common || 'unknown'} (node ${process.version})`;
  const report = { outputs, seconds, rows: m.rows, batches, runtime };
  try {
    // One line per output, as json.dumps would lay it out.
    const lines = report.outputs.map((o) => '  ' + JSON.stringify(o));
    const text = `{"outputs": [\n${lines.join(',\n')}\n ], "seconds": ${report.seconds}, "rows": ${report.rows}, ` +
      `"batches": ${report.batches}, "runtime": ${JSON.stringify(report.runtime)}}\n`;
    fs.writeFileSync(path.join(m.outputsDir, 'outputs.json'), text);
  } catch (e) {
    fail(`cannot write outputs.json: ${e.message}`);
  }
  if (typeof session.release === 'function') await session.release();
}

const args = process.argv.slice(2);
if (args.length === 1 && (args[0] === '-h' || args[0] === '--help')) {
  process.stdout.write(`usage: node ${SCRIPT} MODEL.onnx MANIFEST.json\n       node ${SCRIPT} --version\n`);
  process.exit(0);
}
if (args.length === 1 && args[0] === '--version') {  // loads onnxruntime: exit 3 where it cannot
  const ort = loadOrt();
  const versions = (ort.env && ort.env.versions) || {};
  process.stdout.write(`onnxruntime-node ${versions.node || versions.common || 'unknown'}\n`);
  process.exit(0);
}
if (args.length !== 2) {
  process.stderr.write(`usage: node ${SCRIPT} MODEL.onnx MANIFEST.json\n`);
  process.exit(2);
}
main(args[0], args[1]).then(() => process.exit(0), (e) => {
  const what = e instanceof Failure ? e.message : `internal error: ${oneLine(e && e.stack || e)}`;
  process.stderr.write(`${SCRIPT}: ${args[0]} with ${args[1]}: ${oneLine(what)}\n`);
  process.exit(1);
});
