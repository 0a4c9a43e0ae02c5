// Why this file exists: examples/serve promises OpenAI's and Bedrock's HTTP APIs to clients it has
// never seen; this drives it with the official clients (openai, @mistralai/mistralai,
// @aws-sdk/client-bedrock-runtime) on the demo model, over loopback, and checks the answers, a load
// of concurrent requests (same bits as alone), hostile and broken requests, slow and vanishing
// clients, a full queue and a clean exit on SIGTERM / SIGINT. Bounded in time as a whole.
//
//     node test.mjs BUILD_DIR/serve tests/data/demo-mistral/demo-mistral-Q4_0.gguf
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';

import OpenAI from 'openai';
import { Mistral } from '@mistralai/mistralai';
import { BedrockRuntimeClient, InvokeModelCommand } from '@aws-sdk/client-bedrock-runtime';
import { NodeHttpHandler } from '@smithy/node-http-handler';

const [serveBinary, modelPath] = process.argv.slice(2);
if (!serveBinary || !modelPath) {
  console.error('usage: node test.mjs SERVE_BINARY MODEL');
  process.exit(2);
}
const TOTAL_SECONDS = Number(process.env.SERVE_TEST_SECONDS || 300);
const API_KEY = 'local-test-key';
const SAFETY_PROMPT =
  'Always assist with care, respect, and truth. Respond with utmost utility yet securely. Avoid harmful, ' +
  'unethical, prejudiced, or negative content. Ensure replies promote fairness and positivity.';

// ---- servers ------------------------------------------------------------------------------------

const servers = new Set();

function startServer(extraArgs) {
  const child = spawn(serveBinary, ['-m', modelPath, '--port', '0', '--threads', '2', ...extraArgs], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  servers.add(child);
  const server = { child, log: '', exited: null };
  child.stderr.on('data', (d) => { server.log = (server.log + d).slice(-20000); });
  server.exited = new Promise((resolve) => child.on('exit', (code, signal) => {
    servers.delete(child);
    resolve({ code, signal });
  }));
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const match = /^listening on (http:\/\/\S+)\n/m.exec(out);
      if (match && !server.url) {
        server.url = match[1];
        resolve(server);
      }
    });
    server.exited.then(({ code, signal }) =>
      reject(new Error(`serve exited (${code ?? signal}) before listening:\n${server.log}`)));
  });
}

function killAll() {
  for (const child of servers) child.kill('SIGKILL');
}
process.on('exit', killAll);
const deadline = setTimeout(() => {
  console.error(`FAIL: the whole test took more than ${TOTAL_SECONDS} s`);
  killAll();
  process.exit(1);
}, TOTAL_SECONDS * 1000);

// ---- helpers ------------------------------------------------------------------------------------

let server;  // the main server, with --api-key
const checks = [];
function passed(what) {
  checks.push(what);
  console.log(`ok ${checks.length} - ${what}`);
}

// A raw HTTP request: { status, headers, body } (body as a string).
function request(url, { method = 'POST', headers = {}, body, auth = true } = {}) {
  return new Promise((resolve, reject) => {
    const allHeaders = { ...headers };
    if (auth) allHeaders.authorization = `Bearer ${API_KEY}`;
    if (body !== undefined && !allHeaders['content-type']) allHeaders['content-type'] = 'application/json';
    const req = http.request(url, { method, headers: allHeaders, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

function expectError(response, status, what) {
  assert.equal(response.status, status, `${what}: status ${response.status}, body ${response.body.slice(0, 300)}`);
  const parsed = JSON.parse(response.body);
  assert.equal(typeof parsed.error, 'object', `${what}: no error object`);
  for (const field of ['message', 'type', 'param', 'code']) assert.ok(field in parsed.error, `${what}: error has no ${field}`);
  assert.equal(typeof parsed.error.message, 'string');
  return parsed.error;
}

const chatUrl = () => `${server.url}/v1/chat/completions`;
const user = (content) => [{ role: 'user', content }];

async function health(target = server) {
  const response = await request(`${target.url}/health`, { method: 'GET', auth: false });
  return { status: response.status, ...JSON.parse(response.body) };
}

// After every fault the server must still answer a normal request.
async function expectServing(what) {
  const response = await request(chatUrl(), {
    body: JSON.stringify({ model: 'demo', messages: user('Still there?'), max_tokens: 8, temperature: 0 }),
  });
  assert.equal(response.status, 200, `after ${what}: ${response.status} ${response.body}`);
  assert.equal(JSON.parse(response.body).object, 'chat.completion');
}

async function waitUntil(condition, seconds, what) {
  const end = Date.now() + seconds * 1000;
  while (Date.now() < end) {
    if (await condition()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what}: not within ${seconds} s`);
}

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

// ---- the tests ----------------------------------------------------------------------------------

async function testHealthAndAuth() {
  const h = await health();
  assert.equal(h.status, 'ok');
  assert.equal(h.requests_in_flight, 0);
  expectError(await request(`${server.url}/v1/models`, { method: 'GET', auth: false }), 401, 'no key');
  expectError(await request(`${server.url}/v1/models`, { method: 'GET', auth: false, headers: { authorization: 'Bearer nope' } }), 401, 'wrong key');
  expectError(await request(`${server.url}/v1/nothing`, { method: 'GET' }), 404, 'unknown path');
  passed('health without a key; 401 without or with a wrong key; 404 as JSON');
}

async function testOpenAI() {
  const openai = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: API_KEY, maxRetries: 0, timeout: 60000 });
  const models = await openai.models.list();
  assert.equal(models.data.length, 1);
  assert.equal(models.data[0].object, 'model');
  const model = models.data[0].id;
  passed(`openai: models.list -> ${model}`);

  const params = { model, messages: [{ role: 'system', content: 'You are a fortune cookie.' }, ...user('Tell me my fortune.')], max_tokens: 24, temperature: 0 };
  const chat = await openai.chat.completions.create(params);
  assert.equal(chat.object, 'chat.completion');
  assert.match(chat.id, /^chatcmpl-/);
  assert.equal(chat.model, model);
  assert.ok(Number.isInteger(chat.created));
  assert.equal(chat.choices.length, 1);
  assert.equal(chat.choices[0].message.role, 'assistant');
  assert.ok(chat.choices[0].message.content.length > 0);
  assert.ok(['stop', 'length'].includes(chat.choices[0].finish_reason));
  assert.ok(chat.usage.prompt_tokens > 0 && chat.usage.completion_tokens > 0);
  assert.equal(chat.usage.total_tokens, chat.usage.prompt_tokens + chat.usage.completion_tokens);
  passed('openai: chat.completions.create (not streamed)');

  const stream = await openai.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  assert.equal(chunks[0].choices[0].delta.role, 'assistant', 'the first delta carries the role');
  const withReason = chunks.filter((c) => c.choices.length && c.choices[0].finish_reason);
  assert.equal(withReason.length, 1);
  assert.equal(withReason[0].choices[0].finish_reason, chat.choices[0].finish_reason);
  const last = chunks[chunks.length - 1];
  assert.equal(last.choices.length, 0, 'include_usage: a last chunk without choices');
  assert.deepEqual(last.usage, chat.usage);
  assert.ok(chunks.every((c) => c.id === chunks[0].id && c.object === 'chat.completion.chunk'), 'one id for every chunk');
  const streamed = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
  assert.equal(streamed, chat.choices[0].message.content, 'streamed text equals the text not streamed (greedy)');
  passed('openai: chat streamed: role first, finish_reason last, include_usage, same text');

  const plainStream = await openai.chat.completions.create({ ...params, stream: true });
  const plainChunks = [];
  for await (const chunk of plainStream) plainChunks.push(chunk);
  assert.ok(plainChunks.every((c) => c.choices.length === 1 && !c.usage), 'no usage chunk unless asked');
  passed('openai: no usage chunk without stream_options');

  const completion = await openai.completions.create({ model, prompt: 'The best way to', max_tokens: 20, temperature: 0 });
  assert.equal(completion.object, 'text_completion');
  assert.match(completion.id, /^cmpl-/);
  assert.ok(completion.choices[0].text.length > 0);
  assert.equal(completion.usage.completion_tokens, 20);
  assert.equal(completion.choices[0].finish_reason, 'length');
  const completionStream = await openai.completions.create({ model, prompt: 'The best way to', max_tokens: 20, temperature: 0, stream: true });
  let completionText = '';
  let completionReason = null;
  for await (const chunk of completionStream) {
    completionText += chunk.choices[0].text;
    completionReason = chunk.choices[0].finish_reason ?? completionReason;
  }
  assert.equal(completionText, completion.choices[0].text);
  assert.equal(completionReason, 'length');
  const defaultLength = await openai.completions.create({ model, prompt: 'The best way to', temperature: 0 });
  assert.equal(defaultLength.usage.completion_tokens, 16, "completions default to OpenAI's 16 tokens");
  passed('openai: completions.create streamed and not (same text; default max_tokens 16)');

  const stop = await openai.completions.create({ model, prompt: 'The best way to', max_tokens: 20, temperature: 0, stop: [completion.choices[0].text.trim().split(/\s+/)[1]] });
  assert.equal(stop.choices[0].finish_reason, 'stop');
  assert.ok(completion.choices[0].text.startsWith(stop.choices[0].text));
  passed('openai: stop strings end the text before them (finish_reason stop)');

  const seeded = { model, messages: user('Say something.'), max_tokens: 24, temperature: 0.9, seed: 1234 };
  const a = await openai.chat.completions.create(seeded);
  const b = await openai.chat.completions.create(seeded);
  assert.equal(a.choices[0].message.content, b.choices[0].message.content, 'the same seed gives the same text');
  const extras = await openai.chat.completions.create({ ...seeded, top_k: 5, min_p: 0.1, repeat_penalty: 1.3 });
  assert.equal(extras.object, 'chat.completion');
  passed('openai: seed reproduces a sampled reply; top_k / min_p / repeat_penalty accepted');
  return { model, seededText: a.choices[0].message.content, greedyChat: chat };
}

// An independent check of the schema used below (not the server's engine): true when valid.
function validNpc(value) {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const keys = Object.keys(value);
  if (!keys.every((k) => ['name', 'hp', 'mood', 'items'].includes(k))) return false;
  if (typeof value.name !== 'string' || [...value.name].length > 8) return false;
  if (!Number.isInteger(value.hp) || value.hp < 0 || value.hp > 100) return false;
  if (!['calm', 'angry'].includes(value.mood)) return false;
  if ('items' in value && (!Array.isArray(value.items) || value.items.length > 2 || !value.items.every((i) => typeof i === 'boolean'))) return false;
  return true;
}

async function testStructuredOutput({ model }) {
  const openai = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: API_KEY, maxRetries: 0, timeout: 60000 });
  const schema = {
    type: 'object',
    properties: {
      name: { type: 'string', maxLength: 8 },
      hp: { type: 'integer', minimum: 0, maximum: 100 },
      mood: { enum: ['calm', 'angry'] },
      items: { type: 'array', items: { type: 'boolean' }, maxItems: 2 },
    },
    required: ['name', 'hp', 'mood'],
    additionalProperties: false,
  };
  const response_format = { type: 'json_schema', json_schema: { name: 'npc', schema, strict: true } };
  for (let seed = 0; seed < 6; seed++) {
    const reply = await openai.chat.completions.create({
      model, messages: user('Describe the guard as JSON.'), response_format, temperature: 1, seed, max_tokens: 400,
    });
    const { content } = reply.choices[0].message;
    assert.equal(reply.choices[0].finish_reason, 'stop', `seed ${seed}: ${content}`);
    assert.ok(validNpc(JSON.parse(content)), `seed ${seed}: ${content} follows the schema`);
  }
  const stream = await openai.chat.completions.create({
    model, messages: user('Describe the guard as JSON.'), response_format, temperature: 1, seed: 99, max_tokens: 400, stream: true,
  });
  let streamed = '';
  for await (const chunk of stream) streamed += chunk.choices[0]?.delta?.content ?? '';
  assert.ok(validNpc(JSON.parse(streamed)), `streamed: ${streamed}`);
  // Any object: strings are unbounded, so a random model may run out of tokens; every reply that ends
  // by itself is one JSON object.
  let finishedObjects = 0;
  for (let seed = 0; seed < 6; seed++) {
    const anyObject = await openai.chat.completions.create({
      model, messages: user('JSON please.'), response_format: { type: 'json_object' }, temperature: 1, seed, max_tokens: 300,
    });
    if (anyObject.choices[0].finish_reason !== 'stop') continue;
    const parsed = JSON.parse(anyObject.choices[0].message.content);
    assert.ok(typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed), 'json_object: an object');
    finishedObjects++;
  }
  assert.ok(finishedObjects > 0, 'json_object: some replies end by themselves');
  const completion = await openai.completions.create({
    model, prompt: 'NPC:', response_format, temperature: 1, seed: 3, max_tokens: 400,
  });
  assert.ok(validNpc(JSON.parse(completion.choices[0].text)), `completion: ${completion.choices[0].text}`);
  passed('openai: response_format json_schema (8 replies, streamed and not, chat and completion) and json_object validate');

  // The demo model has a v1 tokenizer (no tool tokens): tools are a clear 400 naming 'tools'.
  const tools = [{
    type: 'function',
    function: { name: 'get_weather', description: 'Weather in a city', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } },
  }];
  const refusals = [
    [{ tools }, 'tools', 'v1 model with tools'],
    [{ tools, tool_choice: 'required' }, 'tools', 'v1 model with tool_choice required'],
    [{ tools, tool_choice: { type: 'function', function: { name: 'fly' } } }, 'tool_choice', 'a tool_choice naming no tool'],
    [{ tool_choice: 'required' }, 'tool_choice', 'tool_choice without tools'],
    [{ tools: [{ type: 'function', function: { name: 'bad name' } }] }, 'tools', 'a bad function name'],
    [{ tools, response_format }, 'response_format', 'response_format beside tools'],
    [{ response_format: { type: 'json_schema', json_schema: { schema: { type: 'string', pattern: 'a+' } } } }, 'response_format', 'an unsupported schema keyword'],
    [{ response_format: { type: 'xml' } }, 'response_format', 'an unknown response_format'],
  ];
  for (const [extra, param, what] of refusals) {
    let error = null;
    try {
      await openai.chat.completions.create({ model, messages: user('Weather in Paris?'), max_tokens: 8, ...extra });
    } catch (e) {
      error = e;
    }
    assert.ok(error, `${what}: refused`);
    assert.equal(error.status, 400, `${what}: ${error.message}`);
    assert.equal(error.param, param, `${what}: param ${error.param} (${error.message})`);
  }
  const v1Error = await request(chatUrl(), { body: JSON.stringify({ messages: user('x'), tools }) });
  assert.ok(JSON.parse(v1Error.body).error.message.includes('no tool tokens'), 'the v1 refusal says why');
  // tool_choice "none" ignores the tools; a conversation with tool messages on a v1 model is refused.
  const none = await openai.chat.completions.create({ model, messages: user('Hi'), tools, tool_choice: 'none', max_tokens: 8 });
  assert.equal(none.object, 'chat.completion');
  const history = [
    ...user('Weather in Paris?'),
    { role: 'assistant', content: null, tool_calls: [{ id: 'abcDEF123', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris"}' } }] },
    { role: 'tool', tool_call_id: 'abcDEF123', content: '{"temperature": 22}' },
  ];
  const historyError = expectError(await request(chatUrl(), { body: JSON.stringify({ messages: history, max_tokens: 8 }) }), 400, 'tool history on v1');
  assert.equal(historyError.param, 'messages');
  passed(`openai: ${refusals.length + 1} tool and response_format refusals name their param; tool_choice none is accepted`);
}

async function testMistral({ model, seededText }) {
  const mistral = new Mistral({ apiKey: API_KEY, serverURL: server.url, retryConfig: { strategy: 'none' } });
  const reply = await mistral.chat.complete({ model, messages: user('Say something.'), maxTokens: 24, temperature: 0.9, randomSeed: 1234 });
  assert.equal(reply.choices[0].message.role, 'assistant');
  assert.equal(reply.choices[0].message.content, seededText, "Mistral's random_seed is OpenAI's seed");
  assert.ok(reply.usage.totalTokens > 0);
  passed('mistral: chat.complete with randomSeed equals openai with seed');

  const safe = await mistral.chat.complete({ model, messages: user('Tell me my fortune.'), maxTokens: 24, temperature: 0, safePrompt: true });
  const explicit = await request(chatUrl(), {
    body: JSON.stringify({ model, messages: [{ role: 'system', content: SAFETY_PROMPT }, ...user('Tell me my fortune.')], max_tokens: 24, temperature: 0 }),
  });
  const explicitReply = JSON.parse(explicit.body);
  assert.equal(safe.choices[0].message.content, explicitReply.choices[0].message.content,
    'safe_prompt prepends the safety system prompt');
  assert.equal(safe.usage.promptTokens, explicitReply.usage.prompt_tokens);
  const unsafe = await mistral.chat.complete({ model, messages: user('Tell me my fortune.'), maxTokens: 24, temperature: 0 });
  assert.ok(unsafe.usage.promptTokens < safe.usage.promptTokens);
  passed('mistral: safePrompt = the safety prompt as a system message in front');

  const stream = await mistral.chat.stream({ model, messages: user('Tell me my fortune.'), maxTokens: 24, temperature: 0 });
  let text = '';
  let reason = null;
  for await (const event of stream) {
    text += event.data.choices[0]?.delta?.content ?? '';
    reason = event.data.choices[0]?.finishReason ?? reason;
  }
  assert.equal(text, unsafe.choices[0].message.content);
  assert.ok(['stop', 'length'].includes(reason));
  passed('mistral: chat.stream gives the same text as chat.complete');
}

async function testBedrock({ greedyChat }) {
  const options = {
    region: 'us-east-1',
    endpoint: server.url,
    requestHandler: new NodeHttpHandler(),  // the default HTTP/2 handler needs TLS; this server speaks HTTP/1.1
    maxAttempts: 1,
  };
  // Bedrock API keys travel as 'Authorization: Bearer', which is what --api-key checks.
  const bedrock = new BedrockRuntimeClient({ ...options, token: { token: API_KEY }, authSchemePreference: ['httpBearerAuth'] });
  const modelId = 'mistral.mistral-7b-instruct-v0:2';
  const invoke = async (body) => {
    const response = await bedrock.send(new InvokeModelCommand({ modelId, contentType: 'application/json', accept: 'application/json', body: JSON.stringify(body) }));
    return JSON.parse(new TextDecoder().decode(response.body));
  };
  const out = await invoke({ prompt: '<s>[INST] You are a fortune cookie.\n\nTell me my fortune. [/INST]', max_tokens: 24, temperature: 0 });
  assert.equal(out.outputs.length, 1);
  assert.ok(['stop', 'length'].includes(out.outputs[0].stop_reason));
  // The demo model uses the v1 template: the same prompt as the chat request, and the reply keeps
  // the space SentencePiece puts in front of a continuation.
  assert.equal(out.outputs[0].text.replace(/^ /, ''), greedyChat.choices[0].message.content);
  const multi = await invoke({ prompt: '<s>[INST] Hi [/INST] Hello!</s>[INST] Tell me my fortune. [/INST]', max_tokens: 8, top_p: 0.5, top_k: 10, stop: ['zzz'] });
  assert.equal(multi.outputs.length, 1);
  passed('bedrock: InvokeModel (bearer key, endpoint override) equals the chat reply; </s> between turns');

  await assert.rejects(invoke({ prompt: 42 }), (e) => e.name === 'ValidationException' && /prompt/.test(e.message));
  const sigv4 = new BedrockRuntimeClient({ ...options, credentials: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'dummy' } });
  await assert.rejects(sigv4.send(new InvokeModelCommand({ modelId, body: JSON.stringify({ prompt: 'x' }) })),
    (e) => e.name === 'AccessDeniedException');
  passed('bedrock: ValidationException for a bad body; a SigV4-signed request without the key is refused');
}

async function testBedrockSigV4(small) {
  const bedrock = new BedrockRuntimeClient({
    region: 'us-east-1', endpoint: small.url, requestHandler: new NodeHttpHandler(), maxAttempts: 1,
    credentials: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'dummy-secret' },
  });
  const response = await bedrock.send(new InvokeModelCommand({
    modelId: 'mistral.mixtral-8x7b-instruct-v0:1', contentType: 'application/json', accept: 'application/json',
    body: JSON.stringify({ prompt: '<s>[INST] Tell me my fortune. [/INST]', max_tokens: 8 }),
  }));
  const out = JSON.parse(new TextDecoder().decode(response.body));
  assert.ok(typeof out.outputs[0].text === 'string');
  passed('bedrock: InvokeModel with dummy SigV4 credentials (server without --api-key)');
}

// The load: 200 requests from 16 clients, chat and completions, streamed and not, greedy and seeded.
async function testLoad(model) {
  const prompts = [
    'Tell me my fortune.', 'What does the future hold?', 'Give me some advice.', 'Say something wise.',
    'Who am I?', 'What should I eat today?', 'Write a haiku.', 'Where is the mistral wind?',
  ];
  const kinds = [];
  prompts.forEach((prompt, i) => {
    kinds.push({ api: 'chat', body: { model, messages: user(prompt), max_tokens: 24 + 8 * (i % 4), temperature: 0 } });
    kinds.push({ api: 'completions', body: { model, prompt, max_tokens: 24 + 8 * (i % 3), temperature: 0.8, seed: 100 + i } });
  });
  const url = (api) => `${server.url}/v1/${api === 'chat' ? 'chat/completions' : 'completions'}`;
  const textOf = (api, reply) => (api === 'chat' ? reply.choices[0].message.content : reply.choices[0].text);
  async function send(kind, stream) {
    const started = performance.now();
    const response = await request(url(kind.api), { body: JSON.stringify({ ...kind.body, stream, ...(stream ? { stream_options: { include_usage: true } } : {}) }) });
    const elapsed = performance.now() - started;
    assert.equal(response.status, 200, `load: ${response.status} ${response.body.slice(0, 300)}`);
    if (!stream) {
      const reply = JSON.parse(response.body);
      return { text: textOf(kind.api, reply), tokens: reply.usage.completion_tokens, elapsed };
    }
    const events = response.body.split('\n\n').filter((e) => e.startsWith('data: '));
    assert.equal(events[events.length - 1], 'data: [DONE]');
    let text = '';
    let tokens = 0;
    for (const event of events.slice(0, -1)) {
      const chunk = JSON.parse(event.slice(6));
      if (chunk.usage) tokens = chunk.usage.completion_tokens;
      if (chunk.choices.length) text += kind.api === 'chat' ? chunk.choices[0].delta.content ?? '' : chunk.choices[0].text;
    }
    return { text, tokens, elapsed };
  }

  const alone = [];
  for (const kind of kinds) alone.push((await send(kind, false)).text);

  const total = 200;
  const clients = 16;
  let next = 0;
  const latencies = [];
  let tokens = 0;
  let mismatches = 0;
  const started = performance.now();
  await Promise.all(Array.from({ length: clients }, async () => {
    while (next < total) {
      const i = next++;
      const k = i % kinds.length;
      const result = await send(kinds[k], i % 3 === 0);
      latencies.push(result.elapsed);
      tokens += result.tokens;
      if (result.text !== alone[k]) {
        mismatches++;
        console.error(`load: request ${i} (${kinds[k].api}) differs from the same request alone:\n  ${JSON.stringify(result.text)}\n  ${JSON.stringify(alone[k])}`);
      }
    }
  }));
  const seconds = (performance.now() - started) / 1000;
  latencies.sort((x, y) => x - y);
  assert.equal(latencies.length, total);
  assert.equal(mismatches, 0, 'every answer in the crowd equals the same request alone');
  console.log(`# load: ${total} requests from ${clients} clients in ${seconds.toFixed(2)} s; latency p50 ${percentile(latencies, 50).toFixed(0)} ms, ` +
    `p99 ${percentile(latencies, 99).toFixed(0)} ms; ${tokens} tokens generated, ${(tokens / seconds).toFixed(0)} tokens/s aggregate`);
  passed(`load: ${total} requests from ${clients} concurrent clients all succeed, each equal to the request alone`);
}

async function testBadRequests() {
  const post = (body, headers) => request(chatUrl(), { body, headers });
  const cases = [
    ['malformed JSON', '{"messages": [', 'invalid_json'],
    ['not an object', '[1, 2]', 'invalid_type'],
    ['empty body', '', 'invalid_json'],
    ['messages not a list', JSON.stringify({ messages: 'hi' }), 'invalid_type'],
    ['unknown role', JSON.stringify({ messages: [{ role: 'wizard', content: 'x' }] }), 'invalid_role'],
    ['tool message without tool_call_id', JSON.stringify({ messages: [{ role: 'tool', content: 'x' }] }), 'missing_tool_call_id'],
    ['legacy function role', JSON.stringify({ messages: [{ role: 'function', content: 'x' }] }), 'unsupported_role'],
    ['content a number', JSON.stringify({ messages: [{ role: 'user', content: 5 }] }), 'invalid_type'],
    ['temperature a string', JSON.stringify({ messages: user('x'), temperature: 'hot' }), 'invalid_type'],
    ['temperature out of range', JSON.stringify({ messages: user('x'), temperature: 7 }), 'invalid_type'],
    ['max_tokens negative', JSON.stringify({ messages: user('x'), max_tokens: -5 }), 'invalid_type'],
    ['max_tokens fractional', JSON.stringify({ messages: user('x'), max_tokens: 2.5 }), 'invalid_type'],
    ['stream a string', JSON.stringify({ messages: user('x'), stream: 'yes' }), 'invalid_type'],
    ['stop a number list', JSON.stringify({ messages: user('x'), stop: [1] }), 'invalid_type'],
    ['seed a string', JSON.stringify({ messages: user('x'), seed: 'x' }), 'invalid_type'],
    ['deep nesting', '{"messages":' + '['.repeat(5000) + ']'.repeat(5000) + '}', null],
    ['lone surrogate escape', '{"messages":[{"role":"user","content":"\\udc00"}]}', null],
  ];
  for (const [what, body, code] of cases) {
    const error = expectError(await post(body), 400, what);
    if (code) assert.equal(error.code, code, `${what}: code ${error.code}`);
  }
  const n2 = expectError(await post(JSON.stringify({ messages: user('x'), n: 2 })), 400, 'n = 2');
  assert.equal(n2.param, 'n');
  const badUtf8 = Buffer.concat([Buffer.from('{"messages":[{"role":"user","content":"'), Buffer.from([0xff, 0xc3, 0x28]), Buffer.from('"}]}')]);
  assert.equal(expectError(await post(badUtf8), 400, 'invalid UTF-8').code, 'invalid_utf8');
  const tooLong = expectError(await post(JSON.stringify({ messages: user('word '.repeat(6000)) })), 400, 'prompt longer than --ctx');
  assert.equal(tooLong.code, 'context_length_exceeded');
  passed(`400 with OpenAI's error shape for ${cases.length + 3} malformed, mistyped or invalid bodies`);
  await expectServing('bad requests');

  // Escaping: a role with a control character, a quote, a backslash and non-ASCII comes back in the
  // message intact, which only parses if the server escaped it.
  const role = 'r\u0001\u001f"\\\n\té€😀';
  const echoed = expectError(await post(JSON.stringify({ messages: [{ role, content: 'x' }] })), 400, 'odd role');
  assert.ok(echoed.message.includes(`'${role}'`), `escaped role round-trips: ${JSON.stringify(echoed.message)}`);
  const raw = (await post(JSON.stringify({ messages: [{ role, content: 'x' }] }))).body;
  assert.ok(raw.includes('\\u0001') && raw.includes('\\u001f') && raw.includes('\\"') && raw.includes('\\n') && raw.includes('é€😀'),
    'control characters escaped, non-ASCII passed through as UTF-8');
  passed('JSON escaping: control characters, quotes and backslashes escaped; non-ASCII kept as UTF-8');

  const big = JSON.stringify({ messages: user('x'.repeat(100 * 1024)) });
  const oversized = expectError(await post(big), 413, 'oversized body');
  assert.equal(oversized.code, 'request_too_large');
  const huge = expectError(await post('{"messages":"' + 'x'.repeat(8 << 20) + '"}'), 413, '8 MiB body');
  assert.equal(huge.code, 'request_too_large');
  passed('413 for bodies over --max-body (100 KiB and 8 MiB)');
  await expectServing('oversized bodies');

  // Not HTTP at all.
  await new Promise((resolve) => {
    const socket = net.connect(new URL(server.url).port, '127.0.0.1', () => socket.end('\x00\x01garbage\r\n\r\n'));
    socket.on('close', resolve);
    socket.on('error', resolve);
    socket.resume();
  });
  await expectServing('garbage bytes');
  passed('garbage instead of HTTP: the server keeps serving');
}

// Opens a streamed chat on a raw socket; returns the socket and a promise of everything it reads.
function rawStream(body) {
  const { port } = new URL(server.url);
  const socket = net.connect(port, '127.0.0.1');
  const payload = JSON.stringify(body);
  socket.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${API_KEY}\r\n` +
    `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(payload)}\r\n\r\n${payload}`);
  let received = '';
  const closed = new Promise((resolve) => {
    socket.on('data', (d) => { received += d; });
    socket.on('close', () => resolve(received));
    socket.on('error', () => resolve(received));
  });
  return { socket, closed, received: () => received };
}

async function testDisconnect() {
  // A stream that would run for thousands of tokens; the client leaves after the first pieces.
  const { socket, received } = rawStream({ messages: user('Tell me a very long story.'), max_tokens: 3000, ignore_eos: true, stream: true });
  await waitUntil(() => (received().match(/data: /g) || []).length >= 3, 30, 'first chunks');
  socket.destroy();
  await waitUntil(async () => (await health()).requests_in_flight === 0, 5, 'the sequence is cancelled');
  passed('a client that disconnects mid-stream cancels its sequence');
  await expectServing('a disconnect');
}

async function testSlowReader() {
  // One client stops reading its stream; everyone else must still be served promptly.
  const slow = rawStream({ messages: user('Tell me a story.'), max_tokens: 400, temperature: 0, stream: true });
  slow.socket.pause();
  const started = performance.now();
  const others = await Promise.all(Array.from({ length: 6 }, (_, i) => request(chatUrl(), {
    body: JSON.stringify({ messages: user(`Quick answer ${i}`), max_tokens: 16, temperature: 0 }),
  })));
  const elapsed = performance.now() - started;
  assert.ok(others.every((r) => r.status === 200));
  assert.ok(elapsed < 20000, `others took ${elapsed} ms`);
  slow.socket.resume();
  const text = await Promise.race([slow.closed, new Promise((resolve) => {
    const check = setInterval(() => {
      if (slow.received().includes('data: [DONE]')) { clearInterval(check); resolve(slow.received()); }
    }, 20);
  })]);
  assert.ok(text.includes('data: [DONE]'), 'the slow reader still gets its whole stream');
  slow.socket.destroy();
  passed(`a paused reader does not hold up others (6 requests in ${elapsed.toFixed(0)} ms meanwhile)`);
  await expectServing('a slow reader');
}

async function testQueueLimitAndSigint() {
  const small = await startServer(['--parallel', '1', '--max-queue', '1']);
  try {
    const body = JSON.stringify({ messages: user('Tell me a long story.'), max_tokens: 300, ignore_eos: true });
    const responses = await Promise.all(Array.from({ length: 4 }, () =>
      request(`${small.url}/v1/chat/completions`, { body, auth: false })));
    const refused = responses.filter((r) => r.status === 429);
    assert.ok(refused.length >= 1, `statuses ${responses.map((r) => r.status)}`);
    assert.ok(responses.every((r) => r.status === 200 || r.status === 429));
    for (const r of refused) {
      assert.equal(r.headers['retry-after'], '1');
      expectError(r, 429, 'full queue');
    }
    passed(`429 with Retry-After when the queue is full (${refused.length} of 4 refused with --parallel 1 --max-queue 1)`);
    await testBedrockSigV4(small);
  } finally {
    small.child.kill('SIGINT');
  }
  const { code, signal } = await small.exited;
  assert.equal(code, 0, `exit code after SIGINT: ${code ?? signal}\n${small.log}`);
  passed('SIGINT: exit 0');
}

async function testSigterm() {
  // A stream in flight when SIGTERM arrives still ends properly; the process exits 0.
  const inflight = rawStream({ messages: user('Tell me a very long story.'), max_tokens: 3000, ignore_eos: true, stream: true });
  await waitUntil(() => inflight.received().includes('data: '), 30, 'stream started');
  const started = performance.now();
  server.child.kill('SIGTERM');
  const { code, signal } = await server.exited;
  const seconds = (performance.now() - started) / 1000;
  assert.equal(code, 0, `exit code after SIGTERM: ${code ?? signal}\n${server.log}`);
  const text = await inflight.closed;
  assert.ok(text.includes('data: [DONE]'), 'the stream in flight was ended, not cut');
  assert.ok(text.includes('shutting_down') || text.includes('"finish_reason":"'), 'it says why it ended');
  passed(`SIGTERM: the stream in flight ends with [DONE], exit 0 after ${seconds.toFixed(1)} s`);
}

async function main() {
  const began = performance.now();
  server = await startServer(['--parallel', '4', '--max-queue', '64', '--api-key', API_KEY, '--max-body', String(64 * 1024), '--ctx', '4096']);
  console.log(`# ${serveBinary} on ${modelPath}: ${server.url}`);
  try {
    await testHealthAndAuth();
    const openai = await testOpenAI();
    await testStructuredOutput(openai);
    await testMistral(openai);
    await testBedrock(openai);
    await testBadRequests();
    await testDisconnect();
    await testSlowReader();
    await testLoad(openai.model);
    await testQueueLimitAndSigint();
    await testSigterm();
  } catch (error) {
    console.error(`FAIL: ${error.stack || error}`);
    console.error(`--- serve's log (last lines) ---\n${server.log.split('\n').slice(-40).join('\n')}`);
    killAll();
    process.exit(1);
  }
  clearTimeout(deadline);
  console.log(`# all ${checks.length} checks passed in ${((performance.now() - began) / 1000).toFixed(1)} s`);
}

main();
