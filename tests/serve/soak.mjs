// Why this file exists: a server that answers every request of a short test can still leak a little per
// request or fail one request in thousands. This keeps examples/serve busy on the demo model, over
// loopback, with N concurrent clients of the official openai package sending a mix of chat and
// completion requests (streaming and not, short max_tokens) for a bounded time, samples the server's
// resident memory (VmRSS) every few seconds, and fails if any request failed or memory grew past a
// margin after warm-up. Bounded in time as a whole (the run, then a fixed grace period).
//
//     node soak.mjs SERVE_BINARY MODEL [seconds, default 600] [clients, default 16]
//     SOAK_RSS_MARGIN_MB (default 16): how far above the warm-up RSS the server may go
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';

import OpenAI from 'openai';

const [serveBinary, modelPath, secondsArg, clientsArg] = process.argv.slice(2);
if (!serveBinary || !modelPath) {
  console.error('usage: node soak.mjs SERVE_BINARY MODEL [seconds] [clients]');
  process.exit(2);
}
const SECONDS = Number(secondsArg || 600);
const CLIENTS = Number(clientsArg || 16);
if (!(SECONDS > 0 && SECONDS <= 86400) || !(Number.isInteger(CLIENTS) && CLIENTS >= 1 && CLIENTS <= 256)) {
  console.error('soak.mjs: seconds must be in (0, 86400] and clients an integer in [1, 256]');
  process.exit(2);
}
const RSS_MARGIN_MB = Number(process.env.SOAK_RSS_MARGIN_MB || 16);
const SAMPLE_MS = 2000;
// Memory settles once every slot, the KV cache and the allocator's arenas have been used: the first
// tenth of the run (at least 10 s, at most 60 s) is warm-up, its highest sample the baseline.
const WARMUP_MS = Math.min(60000, Math.max(10000, SECONDS * 100));
const GRACE_MS = 120000;  // for in-flight requests and the server's exit after the run
const API_KEY = 'soak-key';

function fail(message) {
  console.error(`soak: ${message}`);
  if (server && server.exitCode === null) server.kill('SIGKILL');
  process.exit(1);
}
const hardStop = setTimeout(() => fail(`did not finish within ${SECONDS}s + ${GRACE_MS / 1000}s`), SECONDS * 1000 + GRACE_MS);

// ---- the server ---------------------------------------------------------------------------------

let serverLog = '';
const server = spawn(serveBinary, ['-m', modelPath, '--host', '127.0.0.1', '--port', '0', '--threads', '2',
                                   '--parallel', '4', '--max-queue', String(Math.max(64, CLIENTS * 2)),
                                   '--api-key', API_KEY], { stdio: ['ignore', 'pipe', 'pipe'] });
server.stderr.on('data', (d) => { serverLog = (serverLog + d).slice(-20000); });
const serverExited = new Promise((resolve) => server.on('exit', (code, signal) => resolve({ code, signal })));
const url = await new Promise((resolve, reject) => {
  let out = '';
  server.stdout.on('data', (d) => {
    out += d;
    const match = /^listening on (http:\/\/\S+)\n/m.exec(out);
    if (match) resolve(match[1]);
  });
  serverExited.then(({ code, signal }) => reject(new Error(`serve exited (${code ?? signal}) before listening:\n${serverLog}`)));
}).catch((error) => fail(error.message));
if (!/^http:\/\/(127\.0\.0\.1|\[::1\]|localhost)[:/]/.test(url)) fail(`not a loopback address: ${url}`);

function rssKiB() {
  try {
    const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${server.pid}/status`, 'utf8'));
    return match ? Number(match[1]) : null;
  } catch {
    return null;  // exited
  }
}

// ---- the load -----------------------------------------------------------------------------------

const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: API_KEY, maxRetries: 0, timeout: 60000 });
const PROMPTS = ['Tell me about the sea.', 'Count to five.', 'What is a cat?', 'Write one word.',
                 'Once upon a time', 'The capital of France is', 'Say hello in French.', '1, 2, 3,'];
const KINDS = ['chat', 'chat-stream', 'completion', 'completion-stream'];
const counts = Object.fromEntries(KINDS.map((kind) => [kind, { ok: 0, failed: 0 }]));
const failures = [];
let completionTokens = 0;

function check(condition, what) {
  if (!condition) throw new Error(`bad answer: ${what}`);
}

async function oneRequest(kind, n) {
  const prompt = PROMPTS[n % PROMPTS.length];
  const common = { model: 'demo', max_tokens: 2 + (n % 15), temperature: n % 3 === 0 ? 0 : 0.8, seed: n };
  if (kind === 'chat') {
    const answer = await openai.chat.completions.create({ ...common, messages: [{ role: 'user', content: prompt }] });
    check(answer.choices.length === 1 && typeof answer.choices[0].message.content === 'string', 'chat message');
    check(['stop', 'length'].includes(answer.choices[0].finish_reason), 'chat finish_reason');
    completionTokens += answer.usage.completion_tokens;
  } else if (kind === 'completion') {
    const answer = await openai.completions.create({ ...common, prompt });
    check(answer.choices.length === 1 && typeof answer.choices[0].text === 'string', 'completion text');
    check(['stop', 'length'].includes(answer.choices[0].finish_reason), 'completion finish_reason');
    completionTokens += answer.usage.completion_tokens;
  } else {
    const chat = kind === 'chat-stream';
    const stream = chat
      ? await openai.chat.completions.create({ ...common, stream: true, stream_options: { include_usage: true },
                                               messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: prompt }] })
      : await openai.completions.create({ ...common, stream: true, stream_options: { include_usage: true }, prompt });
    let finish = null;
    let usage = null;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices) if (choice.finish_reason) finish = choice.finish_reason;
    }
    check(['stop', 'length'].includes(finish), `${kind} finish_reason ${finish}`);
    check(usage && usage.completion_tokens >= 0, `${kind} usage`);
    completionTokens += usage.completion_tokens;
  }
}

const started = Date.now();
const deadline = started + SECONDS * 1000;
let sequence = 0;
async function client() {
  while (Date.now() < deadline) {
    const n = sequence++;
    const kind = KINDS[n % KINDS.length];
    try {
      await oneRequest(kind, n);
      counts[kind].ok++;
    } catch (error) {
      counts[kind].failed++;
      if (failures.length < 10) failures.push(`${kind} #${n}: ${error.message}`);
    }
  }
}

const samples = [];  // [seconds since start, KiB]
function sample() {
  const kib = rssKiB();
  if (kib !== null) samples.push([(Date.now() - started) / 1000, kib]);
}
sample();
const sampler = setInterval(sample, SAMPLE_MS);
await Promise.all(Array.from({ length: CLIENTS }, client));
sample();
clearInterval(sampler);

server.kill('SIGTERM');
const exit = await serverExited;
clearTimeout(hardStop);

// ---- the verdict --------------------------------------------------------------------------------

const mb = (kib) => (kib / 1024).toFixed(1);
const warm = samples.filter(([t]) => t * 1000 <= WARMUP_MS);
const after = samples.filter(([t]) => t * 1000 > WARMUP_MS);
const baseline = Math.max(...warm.map(([, kib]) => kib));
const peakAfter = after.length ? Math.max(...after.map(([, kib]) => kib)) : baseline;
const peak = Math.max(...samples.map(([, kib]) => kib));
const total = KINDS.reduce((sum, kind) => sum + counts[kind].ok + counts[kind].failed, 0);
const failed = KINDS.reduce((sum, kind) => sum + counts[kind].failed, 0);
const elapsed = (Date.now() - started) / 1000;

console.log(`soak: ${SECONDS}s, ${CLIENTS} clients, ${total} requests (${(total / elapsed).toFixed(1)}/s), ` +
            `${completionTokens} completion tokens, ${failed} failed`);
console.log(`  by kind: ${KINDS.map((kind) => `${kind} ${counts[kind].ok} ok / ${counts[kind].failed} failed`).join(', ')}`);
console.log(`  RSS (MiB, ${samples.length} samples every ${SAMPLE_MS / 1000}s): start ${mb(samples[0][1])}, ` +
            `after warm-up (${WARMUP_MS / 1000}s) ${mb(baseline)}, max ${mb(peak)}, end ${mb(samples[samples.length - 1][1])}; ` +
            `growth after warm-up ${mb(peakAfter - baseline)} (margin ${RSS_MARGIN_MB})`);
const series = samples.filter((_, i) => i % Math.max(1, Math.ceil(samples.length / 12)) === 0);
console.log(`  RSS series: ${series.map(([t, kib]) => `${t.toFixed(0)}s ${mb(kib)}`).join(', ')}`);
console.log(`  server exit on SIGTERM: ${exit.code ?? exit.signal}`);
for (const failure of failures) console.log(`  failure: ${failure}`);

let ok = true;
if (failed > 0) { console.error(`soak: ${failed} request(s) failed`); ok = false; }
if (total === 0) { console.error('soak: no request completed'); ok = false; }
if (peakAfter - baseline > RSS_MARGIN_MB * 1024) {
  console.error(`soak: RSS grew ${mb(peakAfter - baseline)} MiB after warm-up (margin ${RSS_MARGIN_MB} MiB)`);
  ok = false;
}
if (exit.code !== 0) { console.error(`soak: the server did not exit cleanly on SIGTERM (${exit.code ?? exit.signal})\n${serverLog}`); ok = false; }
console.log(ok ? 'soak: PASS' : 'soak: FAIL');
process.exit(ok ? 0 : 1);
