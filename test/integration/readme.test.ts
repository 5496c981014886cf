import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningGateway, startGateway } from '../../examples/gateway.js';
import { MemoryKeyStore } from '../../src/index.js';

const run = promisify(execFile);

interface Step {
  command: string;
  expected: unknown;
}

/** The curl commands of the README's "Try it with curl" section, each with the JSON shown after it. */
function readmeSteps(): Step[] {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const start = readme.indexOf('## Try it with curl');
  const section = readme.slice(start, readme.indexOf('\n## ', start + 1));
  const blocks = [...section.matchAll(/```(bash|json)\n([\s\S]*?)```/g)].map((m) => ({ language: m[1], text: m[2] as string }));
  const steps: Step[] = [];
  for (const [index, block] of blocks.entries()) {
    if (block.language !== 'bash' || !block.text.includes('curl ')) continue;
    const next = blocks[index + 1];
    steps.push({ command: block.text.trim(), expected: next?.language === 'json' ? JSON.parse(next.text) : undefined });
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

describe('the README curl commands, run as written against the example gateway', () => {
  let gateway: RunningGateway;
  const env: Record<string, string> = {};

  beforeAll(async () => {
    // The README shows the in-memory store's ids, so the test uses it even when REDIS_URL is set.
    gateway = await startGateway({ port: 0, store: new MemoryKeyStore(), log: () => {} });
    env.MODELSWITCH_BILLING_KEY = gateway.billingKey;
  });
  afterAll(() => gateway.close());

  it('has the documented commands', () => {
    expect(readmeSteps().length).toBeGreaterThanOrEqual(6);
  });

  it('answers every command as documented, in order', async () => {
    for (const step of readmeSteps()) {
      const command = `${step.command.replaceAll('http://localhost:3000', gateway.url)} -sS -w '\\n%{http_code}'`;
      const { stdout } = await run('bash', ['-c', command], { env: { ...process.env, ...env } });
      const lines = stdout.trimEnd().split('\n');
      const status = Number(lines.pop());
      const body = lines.join('\n');
      expect(status, step.command).toBeGreaterThanOrEqual(200);
      expect(status, `${step.command}\n${body}`).toBeLessThan(300);
      if (step.expected !== undefined) expectSameShape(JSON.parse(body), step.expected);
      const parsed = body.startsWith('{') ? (JSON.parse(body) as { key?: string }) : {};
      if (parsed.key?.startsWith('ms-')) env.MODELSWITCH_API_KEY = parsed.key;
    }
  });
});
