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

describe('SseUsageScanner at its edges', () => {
  const usage = (prompt: number, completion: number) => `"usage":{"prompt_tokens":${prompt},"completion_tokens":${completion}}`;
  const text = (buffer: Buffer) => buffer.toString('utf8');

  it('holds a partial event of exactly 1 MiB, passes one byte more through, and starts afresh after it', () => {
    const scanner = new SseUsageScanner(false);
    expect(scanner.push(Buffer.from('x'.repeat(1024 * 1024))).length).toBe(0);
    expect(scanner.push(Buffer.from('x')).length).toBe(1024 * 1024 + 1);
    expect(text(scanner.push(Buffer.from('y\n\n')))).toBe('y\n\n');
  });

  it('sends the complete events of a chunk and holds the rest, with or without usage in them', () => {
    for (const strip of [false, true]) {
      const scanner = new SseUsageScanner(strip);
      expect(text(scanner.push(Buffer.from('data: {"a":1}\n\ndata: {"b"')))).toBe('data: {"a":1}\n\n');
      expect(text(scanner.push(Buffer.from(`:2}\n\ndata: {"choices":[{"index":0}],${usage(1, 2)}}\n\ndata: {"c"`)))).toBe(
        `data: {"b":2}\n\ndata: {"choices":[{"index":0}],${usage(1, 2)}}\n\n`,
      );
      expect(text(scanner.end())).toBe('data: {"c"');
      expect(text(scanner.end())).toBe('');
      expect(scanner.usage).toEqual({ promptTokens: 1, completionTokens: 2, cachedPromptTokens: 0 });
    }
  });

  it('forwards an event-aligned chunk it did not change as the very same buffer, usage or not', () => {
    const chunk = Buffer.from(`data: {"choices":[],${usage(1, 2)}}\n\n`);
    expect(new SseUsageScanner(false).push(chunk)).toBe(chunk);
    // Not when part of an event is left over: the complete events go, the rest waits.
    expect(text(new SseUsageScanner(false).push(Buffer.from(`${chunk}data: {"c"`)))).toBe(chunk.toString('utf8'));
  });

  it('keeps a usage chunk that also carries choices, and any event whose usage has no token counts', () => {
    const scanner = new SseUsageScanner(true);
    const withChoices = `data: {"choices":[{"index":0,"delta":{}}],${usage(3, 4)}}\n\n`;
    const empty = 'data: {"choices":[],"usage":{}}\n\n';
    const comment = `: {${usage(5, 6)}}\n\n`;
    const nullResponse = 'data: {"usage":{},"response":null}\n\n';
    const broken = 'data: {"usage":{"prompt_tokens":\n\n';
    expect(text(scanner.push(Buffer.from(withChoices + empty + comment + nullResponse + broken)))).toBe(
      withChoices + empty + comment + nullResponse + broken,
    );
    expect(scanner.usage).toEqual({ promptTokens: 3, completionTokens: 4, cachedPromptTokens: 0 });
  });

  it('reads usage and strips the "usage":null it added when the JSON has spaces around its colons and braces', () => {
    // Python's json.dumps writes ", " and ": "; the spaces before a colon or a brace are legal JSON too.
    const content = 'data: {"choices": [{"index": 0, "delta": {"content": "a"}}], "usage": null}\n\n';
    const spaced = 'data: {"choices": [{"index": 0, "delta": {"content": "b"}}] , "usage" : null }\n\n';
    const usageOnly = 'data: {"choices": [], "usage" : {"prompt_tokens": 3, "completion_tokens": 4}}\n\n';
    const scanner = new SseUsageScanner(true);
    expect(text(scanner.push(Buffer.from(content + spaced + usageOnly + done)))).toBe(
      `data: {"choices": [{"index": 0, "delta": {"content": "a"}}]}\n\ndata: {"choices": [{"index": 0, "delta": {"content": "b"}}] }\n\n${done}`,
    );
    expect(scanner.usage).toEqual({ promptTokens: 3, completionTokens: 4, cachedPromptTokens: 0 });
    const pythonUsage = new SseUsageScanner(true);
    expect(text(pythonUsage.push(Buffer.from('data: {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 6}}\n\n')))).toBe(
      '',
    );
    expect(pythonUsage.usage).toEqual({ promptTokens: 5, completionTokens: 6, cachedPromptTokens: 0 });
  });

  it('reads data lines without a space after the colon, joined by a line feed as the SSE spec says', () => {
    const scanner = new SseUsageScanner(true);
    expect(text(scanner.push(Buffer.from(`data:{"choices":[],${usage(1, 2)}}\n\n`)))).toBe('');
    expect(scanner.usage).toEqual({ promptTokens: 1, completionTokens: 2, cachedPromptTokens: 0 });
    // A number split across two data lines is two tokens with a line feed between them: no JSON, no usage.
    const split = `data: {"choices":[],"usage":{"prompt_tokens":1\ndata: 2,"completion_tokens":3}}\n\n`;
    expect(text(scanner.push(Buffer.from(split)))).toBe(split);
    const joined = `data: {"choices":[],"usage":{"prompt_tokens":10,\ndata: "completion_tokens":3}}\n\n`;
    expect(text(scanner.push(Buffer.from(joined)))).toBe('');
    expect(scanner.usage).toEqual({ promptTokens: 10, completionTokens: 3, cachedPromptTokens: 0 });
  });

  it('reads the answer id from the first event with data in a chunk of several, past comments and empty data', () => {
    const first = new SseUsageScanner(true);
    first.push(Buffer.from('data: {"id":"chatcmpl-1","choices":[]}\n\ndata: {"id":"chatcmpl-2","choices":[]}\n\n'));
    expect(first.answerId).toBe('chatcmpl-1');
    const afterComment = new SseUsageScanner(true);
    afterComment.push(Buffer.from(': keep-alive\n\ndata:\n\ndata: {"id":"chatcmpl-3","response":null,"choices":[]}\n\n'));
    expect(afterComment.answerId).toBe('chatcmpl-3');
  });

  it('reads the answer id from the first event with data only, even when it is not JSON or not an object', () => {
    for (const data of ['hello', 'null', '[DONE]', '{"choices":[]}']) {
      const scanner = new SseUsageScanner(true);
      expect(text(scanner.push(Buffer.from(`data: ${data}\n\n`)))).toBe(`data: ${data}\n\n`);
      scanner.push(Buffer.from('data: {"id":"chatcmpl-late","choices":[]}\n\n'));
      expect(scanner.answerId, data).toBeUndefined();
    }
  });

  it('reads nothing but usage from a partial event left at the end of the stream', () => {
    const scanner = new SseUsageScanner(true);
    expect(text(scanner.push(Buffer.from('data: {"id":"chatcmpl-1","choices":[]}')))).toBe('');
    expect(text(scanner.end())).toBe('data: {"id":"chatcmpl-1","choices":[]}');
    expect({ answerId: scanner.answerId, usage: scanner.usage }).toEqual({ answerId: undefined, usage: undefined });
  });
});
