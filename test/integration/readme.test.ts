import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningGateway, startGateway } from '../../examples/gateway.js';
import { MemoryKeyStore } from '../../src/index.js';

const run = promisify(execFile);

/** What the README shows after a command: a JSON body, an HTTP answer (`curl -i`), or text lines. */
type Expected = { kind: 'json'; body: unknown } | { kind: 'http'; text: string } | { kind: 'text'; text: string } | { kind: 'none' };

interface Step {
  command: string;
  expected: Expected;
}

const README = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

/**
 * Every curl command of the README, in the order a reader runs them, each with the block shown
 * after it. The whole README, not only its walkthrough: a curl command anywhere must work when
 * the README is run top to bottom.
 */
function readmeSteps(): Step[] {
  const blocks = [...README.matchAll(/```(\w*)\n([\s\S]*?)```/g)].map((m) => ({ language: m[1] as string, text: m[2] as string }));
  const steps: Step[] = [];
  for (const [index, block] of blocks.entries()) {
    if (!['bash', 'sh', 'shell'].includes(block.language) || !block.text.includes('curl ')) continue;
    const next = blocks[index + 1];
    let expected: Expected = { kind: 'none' };
    if (next?.language === 'json') expected = { kind: 'json', body: JSON.parse(next.text) };
    else if (next?.language === 'http') expected = { kind: 'http', text: next.text };
    else if (next?.language === 'text') expected = { kind: 'text', text: next.text };
    steps.push({ command: block.text.trim(), expected });
  }
  return steps;
}

/** Same keys at every level, same types, equal booleans and numbers (strings vary: ids, keys, times). */
function expectSameShape(actual: unknown, expected: unknown, path = '$'): void {
  if (expected === null || typeof expected !== 'object') {
    if (typeof expected === 'string') expect(typeof actual, path).toBe('string');
    else if (path.endsWith('.created')) expect(typeof actual, path).toBe('number');
    else expect(actual, path).toEqual(expected);
    return;
  }
  if (Array.isArray(expected)) {
    expect(Array.isArray(actual), path).toBe(true);
    expect((actual as unknown[]).length, path).toBe(expected.length);
    for (const [i, item] of expected.entries()) expectSameShape((actual as unknown[])[i], item, `${path}[${i}]`);
    return;
  }
  expect(typeof actual === 'object' && actual !== null, path).toBe(true);
  expect(Object.keys(actual as object).sort(), path).toEqual(Object.keys(expected).sort());
  for (const [name, value] of Object.entries(expected))
    expectSameShape((actual as Record<string, unknown>)[name], value, `${path}.${name}`);
}

/** `…` in a README line stands for any text; a line that is only `…` stands for any number of lines. */
function expectLinesLike(actual: string[], expected: string[], command: string): void {
  const pattern = expected
    .map((line) => (line === '…' ? '(?:[^\\n]*\\n)*?' : `${line.split('…').map(escapeRegExp).join('[^\\n]*')}\\n`))
    .join('');
  expect(`${actual.join('\n')}\n`, command).toMatch(new RegExp(`^${pattern}$`));
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Splits `curl -i` output into its status, headers (names in lower case) and body. */
function parseHttp(text: string): { status: number; headers: Record<string, string>; body: string } {
  const [head = '', ...rest] = text.replace(/\r\n/g, '\n').split('\n\n');
  const [statusLine = '', ...headerLines] = head.split('\n');
  const headers: Record<string, string> = {};
  for (const line of headerLines) {
    const colon = line.indexOf(':');
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { status: Number(statusLine.split(' ')[1]), headers, body: rest.join('\n\n').trim() };
}

describe('the README curl commands, run as written against the example gateway', () => {
  let gateway: RunningGateway;
  const env: Record<string, string> = {};

  beforeAll(async () => {
    // The README shows the in-memory store's ids, so the test uses it even when REDIS_URL is set.
    gateway = await startGateway({ port: 0, store: new MemoryKeyStore(), log: () => {} });
    env.MODELSWITCH_BILLING_KEY = gateway.billingKey;
  });
  afterAll(() => gateway.close());

  it('show every route of the API at least once', () => {
    const routes = readmeSteps().map(({ command }) => {
      const method = /-X (\w+)/.exec(command)?.[1] ?? (command.includes(' -d ') ? 'POST' : 'GET');
      const path = /http:\/\/localhost:3000(\/[^\s"'?]*)/.exec(command)?.[1] ?? '';
      return `${method} ${path.replace(/\/keys\/\d+(\/rotate)?$/, '/keys/:id$1').replace(/\/models\/[^/]+$/, '/models/:id')}`;
    });
    expect(new Set(routes)).toEqual(
      new Set([
        'GET /api/keys',
        'POST /api/keys',
        'GET /api/keys/:id',
        'PUT /api/keys/:id',
        'PATCH /api/keys/:id',
        'DELETE /api/keys/:id',
        'POST /api/keys/:id/rotate',
        'GET /api/account',
        'GET /api/transactions',
        'GET /api/usage',
        'GET /v1/auth/key',
        'GET /v1/generation',
        'GET /v1/models',
        'GET /v1/models/:id',
        'POST /v1/chat/completions',
        'POST /v1/embeddings',
        'GET /v2/chat',
      ]),
    );
  });

  it('answer every command as documented, in order', async () => {
    for (const step of readmeSteps()) {
      const command = `${step.command.replaceAll('http://localhost:3000', gateway.url)} -sS -w '\\n%{http_code}'`;
      const { stdout } = await run('bash', ['-c', command], { env: { ...process.env, ...env } });
      const lines = stdout.trimEnd().split('\n');
      const status = Number(lines.pop());
      const output = lines.join('\n');
      const { expected } = step;
      if (expected.kind === 'http') {
        const shown = parseHttp(expected.text);
        const answer = parseHttp(output);
        expect(answer.status, step.command).toBe(shown.status);
        for (const [name, value] of Object.entries(shown.headers)) expect(answer.headers[name], `${step.command}\n${name}`).toBe(value);
        expect(JSON.parse(answer.body), step.command).toEqual(JSON.parse(shown.body));
        continue;
      }
      expect(status, `${step.command}\n${output}`).toBeGreaterThanOrEqual(200);
      expect(status, `${step.command}\n${output}`).toBeLessThan(300);
      if (expected.kind === 'json') expectSameShape(JSON.parse(output), expected.body);
      if (expected.kind === 'text') {
        const nonEmpty = (text: string) => text.split('\n').filter((line) => line.trim() !== '');
        expectLinesLike(nonEmpty(output), nonEmpty(expected.text), step.command);
      }
      const parsed = output.startsWith('{')
        ? (JSON.parse(output) as { key?: string; transactions?: Array<{ requestId: string | null }> })
        : {};
      if (parsed.key?.startsWith('ms-')) env.MODELSWITCH_API_KEY = parsed.key;
      // What the README tells the reader to export after a page of transactions: its newest request id.
      const requestId = parsed.transactions?.[0]?.requestId;
      if (requestId) env.REQUEST_ID = requestId;
    }
  });
});
