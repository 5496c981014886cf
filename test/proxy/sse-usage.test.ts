import { describe, expect, it } from 'vitest';
import { costOf, readUsage } from '../../src/proxy/pricing.js';
import { SseUsageScanner } from '../../src/proxy/sse-usage.js';

const content = 'data: {"choices":[{"index":0,"delta":{"content":"h\u00e9llo"}}],"usage":null}\n\n';
const usageChunk = 'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}\n\n';
const done = 'data: [DONE]\n\n';

function run(scanner: SseUsageScanner, pieces: Buffer[]): string {
  return Buffer.concat([...pieces.map((p) => scanner.push(p)), scanner.end()]).toString('utf8');
}

describe('SseUsageScanner', () => {
  it('reads usage and drops the usage-only chunk and the "usage":null it added, even when split mid-event and mid-character', () => {
    const whole = Buffer.from(content + usageChunk + done);
    const pieces: Buffer[] = [];
    for (let i = 0; i < whole.length; i += 7) pieces.push(whole.subarray(i, i + 7));
    const scanner = new SseUsageScanner(true);
    expect(run(scanner, pieces)).toBe(`data: {"choices":[{"index":0,"delta":{"content":"h\u00e9llo"}}]}\n\n${done}`);
    expect(scanner.usage).toEqual({ promptTokens: 3, completionTokens: 4, cachedPromptTokens: 0 });
  });

  it('passes everything through unchanged when the client asked for usage', () => {
    const scanner = new SseUsageScanner(false);
    const chunk = Buffer.from(content + usageChunk + done);
    expect(run(scanner, [chunk])).toBe(content + usageChunk + done);
    expect(scanner.usage?.completionTokens).toBe(4);
  });

  it('forwards an event-aligned chunk without usage as the very same buffer', () => {
    const scanner = new SseUsageScanner(true);
    const chunk = Buffer.from('data: {"choices":[]}\n\n');
    expect(scanner.push(chunk)).toBe(chunk);
  });

  it('reads the usage of a Responses API response.completed event', () => {
    const scanner = new SseUsageScanner(true);
    const event =
      'event: response.completed\ndata: {"type":"response.completed","response":{"usage":{"input_tokens":5,"output_tokens":6,"input_tokens_details":{"cached_tokens":2}}}}\n\n';
    expect(run(scanner, [Buffer.from(event)])).toBe(event);
    expect(scanner.usage).toEqual({ promptTokens: 5, completionTokens: 6, cachedPromptTokens: 2 });
  });
});

describe('pricing', () => {
  it('prices cached prompt tokens at the cached rate', () => {
    const usage = readUsage({ prompt_tokens: 1000, completion_tokens: 500, prompt_tokens_details: { cached_tokens: 400 } });
    expect(usage).toEqual({ promptTokens: 1000, completionTokens: 500, cachedPromptTokens: 400 });
    expect(costOf({ inputPerMillion: 2, outputPerMillion: 8, cachedInputPerMillion: 0.5 }, usage as NonNullable<typeof usage>)).toBe(
      0.0054,
    );
  });

  it('reads no usage from null or an object without token counts', () => {
    expect(readUsage(null)).toBeUndefined();
    expect(readUsage({ foo: 1 })).toBeUndefined();
  });
});

describe('SseUsageScanner line ends', () => {
  it('ends events on lone CR line ends too, so such a stream is not held until its end', () => {
    const scanner = new SseUsageScanner(true);
    const first = scanner.push(Buffer.from('data: {"choices":[{"delta":{"content":"a"}}],"usage":null}\r\r'));
    expect(first.toString('utf8')).toBe('data: {"choices":[{"delta":{"content":"a"}}]}\r\r');
    scanner.push(Buffer.from('data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}\r\r'));
    expect(scanner.usage).toEqual({ promptTokens: 1, completionTokens: 2, cachedPromptTokens: 0 });
  });

  it('does not treat one CRLF as the end of an event', () => {
    const scanner = new SseUsageScanner(false);
    expect(scanner.push(Buffer.from('data: {"a":1}\r\n')).length).toBe(0);
    expect(scanner.push(Buffer.from('\r\n')).toString('utf8')).toBe('data: {"a":1}\r\n\r\n');
  });

  it('passes a partial event over 1 MiB through rather than holding it', () => {
    const scanner = new SseUsageScanner(false);
    const big = `data: ${'x'.repeat(1024 * 1024 + 1)}`;
    expect(scanner.push(Buffer.from(big)).length).toBe(big.length);
  });
});

describe('SseUsageScanner.answerId', () => {
  const chat = (id: string, text: string) => `data: {"id":"${id}","choices":[{"index":0,"delta":{"content":"${text}"}}]}\n\n`;

  it("reads the upstream's answer id from the first event, split anywhere, and keeps it", () => {
    const whole = Buffer.from(chat('chatcmpl-first', 'a') + chat('chatcmpl-other', 'b') + done);
    const scanner = new SseUsageScanner(true);
    const pieces: Buffer[] = [];
    for (let i = 0; i < whole.length; i += 5) pieces.push(whole.subarray(i, i + 5));
    expect(run(scanner, pieces)).toBe(whole.toString('utf8'));
    expect(scanner.answerId).toBe('chatcmpl-first');
  });

  it('reads the response id of a Responses API stream from response.created', () => {
    const scanner = new SseUsageScanner(true);
    scanner.push(
      Buffer.from('event: response.created\ndata: {"type":"response.created","response":{"id":"resp_42","status":"in_progress"}}\n\n'),
    );
    expect(scanner.answerId).toBe('resp_42');
  });

  it('reads only the first event with data: one without an id leaves it to the usage chunk', () => {
    const scanner = new SseUsageScanner(true);
    run(scanner, [Buffer.from(`: keep-alive\n\ndata: {"choices":[]}\n\n${chat('chatcmpl-late', 'x')}`)]);
    expect(scanner.answerId).toBeUndefined();
    const withUsage = new SseUsageScanner(true);
    run(withUsage, [Buffer.from(`data: {"choices":[]}\n\ndata: {"id":"chatcmpl-u","choices":[],"usage":{"prompt_tokens":1}}\n\n`)]);
    expect(withUsage.answerId).toBe('chatcmpl-u');
  });

  it('keeps no id that is not printable ASCII of 1–200 characters', () => {
    for (const id of ['', 'chat cmpl', 'x'.repeat(201), 'h\u00e9']) {
      const scanner = new SseUsageScanner(true);
      scanner.push(Buffer.from(`data: ${JSON.stringify({ id, choices: [] })}\n\n`));
      expect(scanner.answerId).toBeUndefined();
    }
  });
});
