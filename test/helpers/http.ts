// HTTP against a test API server: a JSON POST that keeps the raw body text, and the official
// openai client pointed at a base URL.
import OpenAI from 'openai';

export interface HttpReply {
  status: number;
  /** the body parsed as JSON, undefined when it is not JSON */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  json: any;
  text: string;
}

/** POST `body` (JSON-encoded unless raw: a string sent as is) to base + path. */
export async function post(base: string, path: string, body: unknown, opts: { raw?: boolean; timeoutMs?: number } = {}): Promise<HttpReply> {
  const r = await fetch(base + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: opts.raw ? (body as string) : JSON.stringify(body),
    signal: AbortSignal.timeout(opts.timeoutMs ?? 60_000),
  });
  const text = await r.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: r.status, json, text };
}

/** The openai client for the API at `url` (no retries: a failure is the test's to see). */
export function openaiClient(url: string, timeoutMs = 60_000): OpenAI {
  return new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: timeoutMs });
}
