import { execFile } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
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

const ROOT = new URL('../../', import.meta.url);
const README = readFileSync(new URL('README.md', ROOT), 'utf8');
/** The pages of docs/ that hold curl commands: each is run top to bottom against a fresh example gateway too. */
const DOCS_WITH_CURL = readdirSync(new URL('docs/', ROOT))
  .filter((name) => name.endsWith('.md'))
  .map((name) => `docs/${name}`)
  .filter((path) => steps(readFileSync(new URL(path, ROOT), 'utf8')).length > 0);

/**
 * Every curl command of a page, in the order a reader runs them, each with the block shown
 * after it. The whole page, not only its walkthrough: a curl command anywhere must work when
 * the page is run top to bottom.
 */
function steps(page: string): Step[] {
  const blocks = [...page.matchAll(/```(\w*)\n([\s\S]*?)```/g)].map((m) => ({ language: m[1] as string, text: m[2] as string }));
  const found: Step[] = [];
  for (const [index, block] of blocks.entries()) {
    if (!['bash', 'sh', 'shell'].includes(block.language) || !block.text.includes('curl ')) continue;
    const next = blocks[index + 1];
    let expected: Expected = { kind: 'none' };
    if (next?.language === 'json') expected = { kind: 'json', body: JSON.parse(next.text) };
    else if (next?.language === 'http') expected = { kind: 'http', text: next.text };
    else if (next?.language === 'text') expected = { kind: 'text', text: next.text };
    found.push({ command: block.text.trim(), expected });
  }
  return found;
}

function readmeSteps(): Step[] {
  return steps(README);
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

/** Runs a page's curl commands in order against `gateway`, checking each answer against the block shown after it. */
async function runSteps(page: Step[], gateway: RunningGateway): Promise<void> {
  const env: Record<string, string> = { MODELSWITCH_BILLING_KEY: gateway.billingKey };
  for (const step of page) {
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
}

/** A fresh example gateway on the in-memory store: the pages show its ids, so the tests use it even when REDIS_URL is set. */
function freshGateway(): Promise<RunningGateway> {
  return startGateway({ port: 0, store: new MemoryKeyStore(), log: () => {} });
}

describe('the README curl commands, run as written against the example gateway', () => {
  let gateway: RunningGateway;

  beforeAll(async () => {
    gateway = await freshGateway();
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
    await runSteps(readmeSteps(), gateway);
  });
});

describe('the curl commands of docs/, each page run as written against a fresh example gateway', () => {
  it('are found on the pages that show the API (clients, lifecycle)', () => {
    expect(DOCS_WITH_CURL).toEqual(expect.arrayContaining(['docs/clients.md', 'docs/lifecycle.md']));
  });

  it.each(DOCS_WITH_CURL.map((path) => [path]))('%s: every command answers as documented, in order', async (path) => {
    const gateway = await freshGateway();
    try {
      await runSteps(steps(readFileSync(new URL(path, ROOT), 'utf8')), gateway);
    } finally {
      await gateway.close();
    }
  });
});

/** The calls a graceful stop makes, in order: the README's snippet must make them as the example gateway does. */
const SHUTDOWN_STEPS = [
  'server.headersTimeout =',
  'server.requestTimeout =',
  'server.close(',
  'server.closeAllConnections()',
  'await closed',
  'await proxy.drain()',
  'await proxy.close()',
  'await store.close?.()',
  'if (stopping) return',
  "process.on('SIGINT'",
  "process.on('SIGTERM'",
];

describe("the README's shutdown snippet", () => {
  it('makes the calls the example gateway makes, in the same order', () => {
    const snippet = [...README.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1] as string).find((code) => code.includes('proxy.drain()'));
    expect(snippet, 'README.md has a ts block calling proxy.drain()').toBeDefined();
    const example = readFileSync(new URL('examples/gateway.ts', ROOT), 'utf8');
    for (const [name, text] of [
      ['README.md', snippet as string],
      ['examples/gateway.ts', example],
    ] as const) {
      // Each step searched for after the one before it: the steps in this order, whatever else the file does.
      const missing: string[] = [];
      let from = 0;
      for (const step of SHUTDOWN_STEPS) {
        const at = text.indexOf(step, from);
        if (at < 0) missing.push(step);
        else from = at + step.length;
      }
      expect(missing, `${name}: steps missing, or out of order`).toEqual([]);
    }
  });
});
