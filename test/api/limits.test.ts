// What one HTTP client can cost the API server (src/api/limits.ts): a multi-megabyte prompt is
// refused at once, by body size or by its length before tokenizing, while another request
// completes; a client sending its body slowly is cut off within the configured time; over the
// concurrency cap a request gets a clear 503; over the connection cap a connection is closed;
// a long prompt is counted in slices without blocking the event loop.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { LocalBackend } from '../../src/gateway/local.js';
import { createApiServer, type ApiServer } from '../../src/api/server.js';
import { STORIES_GGUF } from '../helpers/paths.js';
import { post } from '../helpers/http.js';
import { checkPromptLength } from '../../src/api/prompt-length.js';

const MODEL = 'stories260K';
let backend: LocalBackend;
let server: ApiServer;
let url: string;

before(async () => {
  backend = await LocalBackend.open(STORIES_GGUF, { stages: 1 });
  server = createApiServer(backend, {
    maxBodyBytes: 4 * 1024 * 1024,
    maxConcurrent: 2,
    maxConnections: 8,
    requestTimeoutMs: 1_000,
    headersTimeoutMs: 1_000,
  });
  url = await server.listen(0);
});
after(async () => {
  await server?.close();
  await backend?.close();
});

/** a raw HTTP request whose body trickles in; resolves with how long the server kept it open */
function slowBody(port: number, everyMs: number, maxMs: number): Promise<{ closedAfterMs: number; reply: string }> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    let reply = '';
    const sock: Socket = connect(port, '127.0.0.1', () => {
      sock.write(`POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n{"model":`);
    });
    const timer = setInterval(() => {
      if (Date.now() - t0 > maxMs) sock.destroy();
      else if (!sock.destroyed) sock.write(' ');
    }, everyMs);
    sock.on('data', (d) => (reply += d.toString()));
    sock.on('error', () => undefined);
    sock.on('close', () => {
      clearInterval(timer);
      resolve({ closedAfterMs: Date.now() - t0, reply });
    });
  });
}

test('a multi-megabyte prompt is refused at once while another request completes', async () => {
  const huge = 'Once upon a time there was a dog. '.repeat(100_000); // 3.4 MB, under the body limit
  const other = post(
    url,
    '/v1/completions',
    { model: MODEL, prompt: 'Once upon a time', max_tokens: 24, temperature: 0 },
    { timeoutMs: 30_000 },
  );
  const t0 = performance.now();
  const r = await post(url, '/v1/completions', { model: MODEL, prompt: huge, max_tokens: 4 }, { timeoutMs: 30_000 });
  const ms = performance.now() - t0;
  assert.equal(r.status, 400, r.text);
  assert.equal(r.json.error.code, 'context_length_exceeded');
  assert.equal(r.json.error.param, 'prompt');
  assert.match(r.json.error.message, /context is 512 tokens/);
  assert.ok(ms < 2_000, `refused in ${ms} ms`);
  const chat = await post(
    url,
    '/v1/chat/completions',
    { model: MODEL, messages: [{ role: 'user', content: huge }] },
    { timeoutMs: 30_000 },
  );
  assert.equal(chat.status, 400, chat.text);
  assert.equal(chat.json.error.param, 'messages');
  // over the body limit: 413 before the body is even parsed
  const big = await post(url, '/v1/completions', { model: MODEL, prompt: huge + huge }, { timeoutMs: 30_000 });
  assert.equal(big.status, 413, big.text);
  assert.equal(big.json.error.code, 'request_too_large');
  const o = await other;
  assert.equal(o.status, 200, o.text);
  assert.equal(o.json.usage.completion_tokens, 24);
});

test('a client sending its body slowly is cut off within the configured time', async () => {
  const port = Number(new URL(url).port);
  const { closedAfterMs, reply } = await slowBody(port, 100, 10_000);
  assert.ok(closedAfterMs < 3_000, `slow client held ${closedAfterMs} ms (request time-out 1 000 ms)`);
  assert.match(reply, /^HTTP\/1\.1 408/);
  const ok = await post(url, '/v1/completions', { model: MODEL, prompt: 'Once', max_tokens: 2, temperature: 0 });
  assert.equal(ok.status, 200, ok.text);
});

test('over the concurrency cap a request gets a clear 503; over the connection cap a connection is closed', async () => {
  const acs = [new AbortController(), new AbortController()];
  try {
    for (const ac of acs) {
      const res = await fetch(url + '/v1/completions', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: MODEL, prompt: 'Once upon a time', max_tokens: 400, temperature: 0, stream: true }),
        signal: ac.signal,
      });
      await res.body!.getReader().read(); // generating
    }
    const r = await post(url, '/v1/completions', { model: MODEL, prompt: 'Once', max_tokens: 2 });
    assert.equal(r.status, 503, r.text);
    assert.equal(r.json.error.code, 'capacity');
    assert.match(r.json.error.message, /limit 2/);
  } finally {
    for (const ac of acs) ac.abort();
  }
  // connections beyond maxConnections (8) are closed by the server straight away
  const socks: Socket[] = [];
  try {
    const closed = await Promise.all(
      Array.from(
        { length: 12 },
        () =>
          new Promise<boolean>((resolve) => {
            const s = connect(Number(new URL(url).port), '127.0.0.1');
            socks.push(s);
            s.on('error', () => undefined);
            s.on('close', () => resolve(true));
            setTimeout(() => resolve(false), 500);
          }),
      ),
    );
    assert.ok(closed.filter(Boolean).length >= 4, `closed: ${closed.filter(Boolean).length} of 12`);
  } finally {
    for (const s of socks) s.destroy();
  }
  for (let i = 0; i < 20; i++) {
    const ok = await post(url, '/v1/completions', { model: MODEL, prompt: 'Once', max_tokens: 2, temperature: 0 }).catch(() => undefined);
    if (ok?.status === 200) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail('the server did not answer after the connections were closed');
});

test('a long prompt is counted in slices with the event loop served between them', async () => {
  // as if one token could stand for a million characters (a vocabulary with very long tokens):
  // the length bound cannot refuse, so the slices must
  const c = { tokenizer: backend.tokenizer, contextLength: 512, maxTokenChars: 1_000_000, sliceChars: 2_000 };
  const text = 'Once upon a time there was a dog. '.repeat(30_000); // 1 MB, ~300k tokens here
  let maxGap = 0;
  let last = performance.now();
  const ticker = setInterval(() => {
    const t = performance.now();
    maxGap = Math.max(maxGap, t - last);
    last = t;
  }, 1);
  const t0 = performance.now();
  try {
    await assert.rejects(
      checkPromptLength(c, text, false, 'prompt'),
      (e: Error & { code?: string }) => e.code === 'context_length_exceeded',
    );
  } finally {
    clearInterval(ticker);
  }
  // refused after the first few slices, not after tokenizing the megabyte
  assert.ok(performance.now() - t0 < 1_000, `took ${performance.now() - t0} ms`);
  assert.ok(maxGap < 200, `event loop blocked ${maxGap} ms`);
  // a text that fits passes, whichever way it is cut
  const fits = 'Once upon a time there was a dog. '.repeat(40); // 1 360 characters, ~400 tokens
  assert.ok(backend.tokenizer.encode(fits).length < 512);
  await checkPromptLength({ ...c, sliceChars: 400 }, fits, false, 'prompt');
});
