import { DEFAULT_PROXY_BYTES_PER_PROMPT_TOKEN } from '../defaults.js';

/** A tokenizer encoding of OpenAI's models that the proxy can load. */
export type EncodingName = 'o200k_base' | 'cl100k_base';

/** What the proxy needs of a tokenizer: the token count of a text, special tokens counted as plain text. */
export interface Tokenizer {
  countTokens(text: string): number;
}

/**
 * OpenAI's model families by the encoding their tokenizer uses (a leading `openai/`, as some
 * routers write it, is allowed). Other models have no known tokenizer: their prompt is estimated
 * by the byte rule.
 */
const FAMILIES: ReadonlyArray<readonly [RegExp, EncodingName]> = [
  [/^(?:openai\/)?(?:gpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|gpt-oss|chatgpt-|o[134](?:-|$)|codex-|computer-use|omni-moderation)/, 'o200k_base'],
  [/^(?:openai\/)?(?:gpt-4|gpt-3\.5|text-embedding-3|text-embedding-ada-002|davinci-002|babbage-002)/, 'cl100k_base'],
];

/**
 * The tokenizer encoding of an OpenAI model, or `undefined` for a model of another family.
 *
 * @example
 * ```ts
 * encodingOf('gpt-4o-mini'); // 'o200k_base'
 * encodingOf('llama3.1'); // undefined
 * ```
 */
export function encodingOf(model: string): EncodingName | undefined {
  for (const [pattern, encoding] of FAMILIES) if (pattern.test(model)) return encoding;
  return undefined;
}

/** The tokenizers loaded so far, and the loads under way: each encoding is imported once, on first use. */
const loaded = new Map<EncodingName, Tokenizer>();
const loading = new Map<EncodingName, Promise<Tokenizer | undefined>>();
/** Counting special tokens (`<|endoftext|>`) as plain text, as a provider does with user text, instead of throwing. */
const PLAIN_TEXT = { disallowedSpecial: new Set<string>() };

/** The tokenizer of `encoding` if it is loaded already, without loading it. */
export function loadedTokenizer(encoding: EncodingName): Tokenizer | undefined {
  return loaded.get(encoding);
}

/**
 * Loads the tokenizer of `encoding` (`gpt-tokenizer`, pure JavaScript, its ranks shipped in the
 * package: no download). Imported on first use only, so start-up and the authentication path pay
 * nothing; a second call shares the first load. Resolves `undefined` if the package cannot be
 * loaded (the byte rule is used then).
 */
export function loadTokenizer(encoding: EncodingName): Promise<Tokenizer | undefined> {
  const ready = loaded.get(encoding);
  if (ready !== undefined) return Promise.resolve(ready);
  let pending = loading.get(encoding);
  if (pending === undefined) {
    const load = encoding === 'o200k_base' ? import('gpt-tokenizer/encoding/o200k_base') : import('gpt-tokenizer/encoding/cl100k_base');
    pending = load.then(
      (module) => {
        const api = module.default;
        const tokenizer: Tokenizer = { countTokens: (text) => api.countTokens(text, PLAIN_TEXT) };
        loaded.set(encoding, tokenizer);
        return tokenizer;
      },
      () => undefined,
    );
    loading.set(encoding, pending);
  }
  return pending;
}

/** Tokens the chat format adds around each message (OpenAI documents 3, and 4 for older models): counted as 4. */
export const MESSAGE_OVERHEAD_TOKENS = 4;
/** Tokens every request adds: the priming of the assistant's reply (3), with room to spare. */
export const REQUEST_OVERHEAD_TOKENS = 8;
/** Tokens each tool or function definition adds beyond its own text (the namespace OpenAI renders tools into). */
export const TOOL_OVERHEAD_TOKENS = 12;
/**
 * Prompt tokens one image part is reserved, by model: OpenAI bills an image by its size, which the
 * body does not show (a URL), so the largest an image can cost is reserved. `gpt-4o-mini` counts
 * 2,833 + 5,667 per 512 px tile, at most 8 tiles: 48,169. Every other OpenAI model costs less
 * (tiles: 85 + 170 × 8 = 1,445; 32 px patches: at most 1,536 × 2.46 = 3,779).
 */
export const IMAGE_PART_TOKENS: ReadonlyArray<readonly [RegExp, number]> = [
  [/^(?:openai\/)?gpt-4o-mini/, 48_169],
  [/./, 3_779],
];
/** Content parts that are images: their data or URL is not text, and is replaced by {@link IMAGE_PART_TOKENS}. */
const IMAGE_PART_TYPES = new Set(['image_url', 'input_image']);
/** Fields whose array items are messages (chat `messages`, Responses `input`): each adds {@link MESSAGE_OVERHEAD_TOKENS}. */
const MESSAGE_LISTS = new Set(['messages', 'input']);
/** Fields whose array items are tool definitions: each adds {@link TOOL_OVERHEAD_TOKENS}. */
const TOOL_LISTS = new Set(['tools', 'functions']);

/**
 * A piece of text (between two cut points, see {@link countTextTokens}) longer than this many
 * characters is counted one token per UTF-8 byte instead of being tokenized: byte-pair encoding
 * costs more than linear time in the length of a piece without spaces (a long CJK run, base64), and
 * a byte-level BPE token is at least one byte, so the count stays an upper bound.
 */
export const MAX_TOKENIZED_PIECE = 256;
/**
 * Characters of one request tokenized at most; the rest is counted one token per UTF-8 byte (an
 * upper bound, about 4 times the real count of English). Bounds the CPU time one request can make
 * the gateway spend before it is reserved (tokenizing runs at some 0.1–10 MB/s depending on the text).
 */
export const MAX_TOKENIZED_CHARS = 65_536;
/** Characters tokenized in one call; the asynchronous count lets other requests run between two. */
const CHUNK_CHARS = 4096;

/** Whether a UTF-16 code unit is `\s` (the tokenizers' pre-split uses the same class). */
function isSpace(code: number): boolean {
  return (
    code === 0x20 ||
    (code >= 0x09 && code <= 0x0d) ||
    code === 0xa0 ||
    code === 0x1680 ||
    (code >= 0x2000 && code <= 0x200a) ||
    code === 0x2028 ||
    code === 0x2029 ||
    code === 0x202f ||
    code === 0x205f ||
    code === 0x3000 ||
    code === 0xfeff
  );
}

/** One request's count: the tokenizer (if any) and how many characters it may still tokenize. */
interface CountState {
  readonly tokenizer: Tokenizer | undefined;
  charsLeft: number;
}

/**
 * Counts `text` as its tokens under `state.tokenizer`, or at most that: the text is cut before a
 * space that stands between two non-space characters. The tokenizers' pre-split never joins text
 * across such a space (every piece it makes is letters, digits, punctuation or whitespace, and the
 * space begins the next piece), so the count of the whole is the sum of the counts of the parts.
 * Parts longer than {@link MAX_TOKENIZED_PIECE}, and parts past the request's
 * {@link MAX_TOKENIZED_CHARS}, count one token per UTF-8 byte. A generator: it yields after each
 * chunk it tokenized, so an asynchronous caller can let other work run.
 */
export function* countTextTokens(text: string, state: CountState): Generator<void, number> {
  const { tokenizer } = state;
  if (tokenizer === undefined || state.charsLeft <= 0) return Buffer.byteLength(text);
  let total = 0;
  let chunkStart = 0;
  let pieceStart = 0;
  const flush = (end: number) => {
    if (end > chunkStart) {
      const chunk = text.slice(chunkStart, end);
      if (state.charsLeft >= chunk.length) {
        total += tokenizer.countTokens(chunk);
        state.charsLeft -= chunk.length;
      } else {
        total += Buffer.byteLength(chunk);
      }
    }
    chunkStart = end;
  };
  for (let i = 1; i <= text.length; i++) {
    const cut =
      i === text.length || (text.charCodeAt(i) === 0x20 && !isSpace(text.charCodeAt(i - 1)) && !isSpace(text.charCodeAt(i + 1) || 0x20));
    if (!cut) continue;
    if (i - pieceStart > MAX_TOKENIZED_PIECE) {
      flush(pieceStart);
      total += Buffer.byteLength(text.slice(pieceStart, i));
      chunkStart = i;
    } else if (i - chunkStart >= CHUNK_CHARS) {
      flush(i);
      yield;
    }
    pieceStart = i;
  }
  flush(text.length);
  return total;
}

/** The image allowance of `model` (see {@link IMAGE_PART_TOKENS}). */
function imageTokens(model: string): number {
  for (const [pattern, tokens] of IMAGE_PART_TOKENS) if (pattern.test(model)) return tokens;
  return 0;
}

/**
 * An upper bound of the prompt tokens of a request body for an OpenAI model: every string in the
 * body (message contents, names, tool definitions, JSON schemas, object keys too) counted with the
 * model's tokenizer, every number and boolean as one token, plus the chat format's overhead per
 * message, per tool and per request, and an image's largest cost per image part. Counting keys and
 * parameters that never reach the prompt makes it a little high, never low. A generator, like
 * {@link countTextTokens}.
 */
export function* countBodyTokens(body: Readonly<Record<string, unknown>>, model: string, state: CountState): Generator<void, number> {
  let total = REQUEST_OVERHEAD_TOKENS;
  const image = imageTokens(model);
  // Iterative, not recursive: the body's depth is bounded by the reader, but no stack is needed at all.
  const pending: unknown[] = [body];
  while (pending.length > 0) {
    const value = pending.pop();
    if (typeof value === 'string') {
      total += yield* countTextTokens(value, state);
    } else if (typeof value === 'number' || typeof value === 'boolean') {
      total += 1;
    } else if (Array.isArray(value)) {
      for (const item of value) pending.push(item);
    } else if (typeof value === 'object' && value !== null) {
      const record = value as Record<string, unknown>;
      if (typeof record.type === 'string' && IMAGE_PART_TYPES.has(record.type)) {
        total += image;
        continue;
      }
      for (const [key, field] of Object.entries(record)) {
        total += yield* countTextTokens(key, state);
        if (value === body && Array.isArray(field)) {
          if (MESSAGE_LISTS.has(key)) total += field.length * MESSAGE_OVERHEAD_TOKENS;
          if (TOOL_LISTS.has(key)) total += field.length * TOOL_OVERHEAD_TOKENS;
        }
        pending.push(field);
      }
    }
  }
  return total;
}

/** Runs a counting generator to its end at once. */
function runNow(count: Generator<void, number>): number {
  for (;;) {
    const step = count.next();
    if (step.done) return step.value;
  }
}

/** Runs a counting generator, letting other callbacks run (`setImmediate`) after each chunk it tokenized. */
async function runInTurns(count: Generator<void, number>): Promise<number> {
  for (;;) {
    const step = count.next();
    if (step.done) return step.value;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

/**
 * The byte rule: one token per {@link DEFAULT_PROXY_BYTES_PER_PROMPT_TOKEN} bytes of the body sent
 * upstream, rounded up (a generous bound for English text and JSON, not for every script). The
 * default estimate of models without a known tokenizer.
 *
 * @example
 * ```ts
 * estimatePromptTokensFromBytes({ model: 'llama3.1' }, 26); // 7
 * ```
 */
export function estimatePromptTokensFromBytes(_body: Readonly<Record<string, unknown>>, bodyBytes: number): number {
  return Math.ceil(bodyBytes / DEFAULT_PROXY_BYTES_PER_PROMPT_TOKEN);
}

function modelOf(body: Readonly<Record<string, unknown>>): string {
  return typeof body.model === 'string' ? body.model : '';
}

/**
 * The default `estimatePromptTokens` of `proxyRouter`. For an OpenAI model (see
 * {@link encodingOf}) an upper bound from its tokenizer (see {@link countBodyTokens}): `proxyRouter`
 * loads the tokenizer and counts asynchronously before it calls this, so this synchronous form
 * only runs when called directly, and then counts with the tokenizer if it is loaded already, or
 * one token per UTF-8 byte of each string (a higher bound) if not. Any other model: one token per
 * {@link DEFAULT_PROXY_BYTES_PER_PROMPT_TOKEN} bytes of the body sent upstream, rounded up.
 *
 * @example
 * ```ts
 * estimatePromptTokensByModel({ model: 'llama3.1', prompt: 'Hi' }, 34); // 9
 * ```
 */
export function estimatePromptTokensByModel(body: Readonly<Record<string, unknown>>, bodyBytes: number): number {
  const model = modelOf(body);
  const encoding = encodingOf(model);
  if (encoding === undefined) return estimatePromptTokensFromBytes(body, bodyBytes);
  return runNow(countBodyTokens(body, model, { tokenizer: loadedTokenizer(encoding), charsLeft: MAX_TOKENIZED_CHARS }));
}

/**
 * The asynchronous form of {@link estimatePromptTokensByModel} for OpenAI models, which
 * `proxyRouter` awaits before it prepares a request: loads the model's tokenizer on first use and
 * counts in turns of {@link CHUNK_CHARS} characters, so a large prompt does not hold other requests
 * up. `undefined` for a body without a string `model` (refused next) or a model of no known family
 * (estimated by the byte rule when the request is prepared).
 */
export async function countPromptTokens(body: unknown): Promise<number | undefined> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return undefined;
  const record = body as Readonly<Record<string, unknown>>;
  if (typeof record.model !== 'string') return undefined;
  const encoding = encodingOf(record.model);
  if (encoding === undefined) return undefined;
  const tokenizer = loadedTokenizer(encoding) ?? (await loadTokenizer(encoding));
  return runInTurns(countBodyTokens(record, record.model, { tokenizer, charsLeft: MAX_TOKENIZED_CHARS }));
}
