import { StringDecoder } from 'node:string_decoder';
import { type TokenUsage, readUsage } from './pricing.js';
import { answerIdOf } from './request-id.js';
import { MAX_USAGE_NAME_LENGTH } from '../store/spend-rules.js';

/** Two line ends in a row end an event; the SSE spec allows CRLF, LF and a lone CR as line ends. */
const EVENT_END = /(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)/g;
/** A partial event longer than this is passed through as it is rather than held (no unbounded buffering). */
const MAX_PENDING = 1024 * 1024;
/** A usage object (not `null`) somewhere in an event. */
const USAGE_OBJECT = /"usage"\s*:\s*\{/;
/** `"usage":null` closing a chunk's top-level object: present on every chunk once `include_usage` is on. */
const TRAILING_NULL_USAGE = /,\s*"usage"\s*:\s*null\s*\}(?=[\r\n]|$)/g;

/**
 * Passes a `text/event-stream` through event by event while reading the token `usage` it reports
 * (the final chunk of a Chat Completions stream with `stream_options.include_usage`, or the
 * `response.completed` event of the Responses API). Only complete events are forwarded, so the
 * usage-only chunk the proxy asked for on the client's behalf can be dropped whole (with the
 * `"usage":null` it adds to every other chunk); nothing is held longer than the rest of an event
 * the upstream has not finished sending.
 */
export class SseUsageScanner {
  /** The last usage the stream reported, if any. */
  usage: TokenUsage | undefined;
  /**
   * The upstream's id of the answer (`chatcmpl-…`, or the Responses API's `response.id`), read from
   * the first event with data, so a stream cut off before its usage still has it.
   */
  answerId: string | undefined;
  /** Whether the first event with data was read for the answer id (it is read once: one JSON parse per stream). */
  private answerIdRead = false;
  private readonly decoder = new StringDecoder('utf8');
  private pending = '';

  /** @param stripUsageOnlyChunk drop the `{"choices":[],"usage":{…}}` chunk (the client did not ask for it) */
  constructor(private readonly stripUsageOnlyChunk: boolean) {}

  /** Takes an upstream chunk; returns the bytes to send to the client now (possibly empty). */
  push(chunk: Buffer): Buffer {
    const text = this.pending + this.decoder.write(chunk);
    let end = -1;
    EVENT_END.lastIndex = 0;
    for (let match = EVENT_END.exec(text); match !== null; match = EVENT_END.exec(text)) end = match.index + match[0].length;
    const hadPending = this.pending !== '';
    if (end < 0) {
      if (text.length > MAX_PENDING) {
        this.pending = '';
        return Buffer.from(text);
      }
      this.pending = text;
      return Buffer.alloc(0);
    }
    const complete = text.slice(0, end);
    this.pending = text.slice(end);
    if (!this.answerIdRead) this.readAnswerId(complete);
    // The common case: no usage in these events, so the upstream's bytes go out untouched.
    if (!complete.includes('"usage"')) return !hadPending && this.pending === '' ? chunk : Buffer.from(complete);
    const out = this.scan(complete);
    return !hadPending && this.pending === '' && out === complete ? chunk : Buffer.from(out);
  }

  /**
   * The end of the stream: whatever partial event is left (an upstream may close its last event
   * without the blank line) is read and goes out like a complete one, so a usage-only chunk the
   * client did not ask for is dropped here too.
   */
  end(): Buffer {
    const rest = this.pending + this.decoder.end();
    this.pending = '';
    return rest.includes('"usage"') ? Buffer.from(this.scanEvent(rest)) : Buffer.from(rest);
  }

  private scan(complete: string): string {
    let out = '';
    let start = 0;
    EVENT_END.lastIndex = 0;
    for (let match = EVENT_END.exec(complete); match !== null; match = EVENT_END.exec(complete)) {
      const stop = match.index + match[0].length;
      const event = complete.slice(start, stop);
      start = stop;
      out += event.includes('"usage"') ? this.scanEvent(event) : event;
    }
    return out;
  }

  /** One event that mentions usage, as it goes to the client: read, and stripped of what the proxy added. */
  private scanEvent(event: string): string {
    if (!USAGE_OBJECT.test(event)) return this.stripUsageOnlyChunk ? event.replace(TRAILING_NULL_USAGE, '}') : event;
    return this.readEvent(event) ? '' : event;
  }

  /** Reads the answer id from the first event with data among complete events (see `answerId`). */
  private readAnswerId(complete: string): void {
    let start = 0;
    EVENT_END.lastIndex = 0;
    for (let match = EVENT_END.exec(complete); match !== null; match = EVENT_END.exec(complete)) {
      const data = dataOf(complete.slice(start, match.index));
      start = match.index + match[0].length;
      if (data === '') continue;
      this.answerIdRead = true;
      const record = parseObject(data);
      if (record !== undefined) this.answerId ??= idOfEvent(record);
      return;
    }
  }

  /** Reads usage from one event; returns true when the event is the usage-only chunk to drop. */
  private readEvent(event: string): boolean {
    const record = parseObject(dataOf(event));
    if (record === undefined) return false;
    this.answerId ??= idOfEvent(record);
    const response = record.response as Record<string, unknown> | null | undefined;
    const usage = readUsage(record.usage) ?? (typeof response === 'object' && response !== null ? readUsage(response.usage) : undefined);
    if (usage === undefined) return false;
    this.usage = usage;
    return this.stripUsageOnlyChunk && Array.isArray(record.choices) && record.choices.length === 0;
  }
}

/** The data of one SSE event (its `data:` lines joined by line ends), or `''`. */
function dataOf(event: string): string {
  let data = '';
  for (const line of event.split(/\r?\n/)) {
    if (line.startsWith('data:')) data += (data === '' ? '' : '\n') + line.slice(line.startsWith('data: ') ? 6 : 5);
  }
  return data;
}

/** The JSON object an event's data holds, or `undefined`: also for `[DONE]` and empty data, which are no JSON. */
function parseObject(data: string): Record<string, unknown> | undefined {
  try {
    const payload: unknown = JSON.parse(data);
    return typeof payload === 'object' && payload !== null && !Array.isArray(payload) ? (payload as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** A chunk's `id`, or the `response.id` of a Responses API event. */
function idOfEvent(record: Record<string, unknown>): string | undefined {
  const response = record.response;
  const nested = typeof response === 'object' && response !== null ? (response as Record<string, unknown>).id : undefined;
  return answerIdOf(record.id, MAX_USAGE_NAME_LENGTH) ?? answerIdOf(nested, MAX_USAGE_NAME_LENGTH);
}
