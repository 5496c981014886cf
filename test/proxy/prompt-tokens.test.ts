import { computeChatCompletionTokenCount } from 'gpt-tokenizer/esm/functionCalling';
import cl100k from 'gpt-tokenizer/encoding/cl100k_base';
import o200k from 'gpt-tokenizer/encoding/o200k_base';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  IMAGE_PART_TOKENS,
  MAX_TOKENIZED_CHARS,
  MAX_TOKENIZED_PIECE,
  MESSAGE_OVERHEAD_TOKENS,
  type Tokenizer,
  countBodyTokens,
  countPromptTokens,
  countTextTokens,
  encodingOf,
  estimatePromptTokensByModel,
  loadTokenizer,
  loadedTokenizer,
} from '../../src/proxy/prompt-tokens.js';

const PLAIN = { disallowedSpecial: new Set<string>() };
/** The tokenizer's own count of a text, special tokens as plain text (as a provider counts user text). */
const exact = (text: string) => o200k.countTokens(text, PLAIN);

function run(count: Generator<void, number>): number {
  for (;;) {
    const step = count.next();
    if (step.done) return step.value;
  }
}

function counted(text: string, tokenizer: Tokenizer | undefined = { countTokens: exact }, charsLeft = MAX_TOKENIZED_CHARS): number {
  return run(countTextTokens(text, { tokenizer, charsLeft }));
}

const UNICODE_TEXTS = [
  'Say hello',
  'The quick brown fox jumps over the lazy dog.  Twice  spaced,\ttabbed\nand\r\nnew-lined text.',
  'Ünïcödé àccents, Ελληνικά, русский текст, עברית, العربية, हिन्दी',
  '日本語のテキストを書く。中文的句子，还有标点。한국어 문장도 있습니다.',
  'Emoji 🙂🚀👨‍👩‍👧‍👦 🏳️‍🌈 and flags 🇫🇷🇯🇵, math 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 and 𝟙𝟚𝟛',
  'Code: function add(a, b) { return a + b; } // comment\n\tconst x = [1, 2, 3].map((n) => n ** 2);',
  'Special tokens as text: <|endoftext|> <|im_start|>user<|im_sep|>',
  'Numbers 1234567890 3.14159 -42 1e10 and 00000000000000000000',
  ' leading space, trailing space ',
  'a b c d e f g h i j k l m n o p q r s t u v w x y z',
];

describe('countTextTokens', () => {
  it.each(UNICODE_TEXTS)('counts exactly what the tokenizer counts when every piece is tokenized: %s', (text) => {
    expect(counted(text)).toBe(exact(text));
  });

  it('counts a long prompt made of many pieces exactly, however it is cut into chunks', () => {
    const text = UNICODE_TEXTS.join(' ').repeat(40);
    expect(text.length).toBeLessThan(MAX_TOKENIZED_CHARS);
    expect(counted(text)).toBe(exact(text));
  });

  it('counts a piece longer than MAX_TOKENIZED_PIECE one token per UTF-8 byte: never below the real count', () => {
    const base64 = Buffer.from('x'.repeat(3000)).toString('base64');
    const cjk = '日本語のテキストを書く'.repeat(40);
    for (const piece of [base64, cjk, 'a'.repeat(MAX_TOKENIZED_PIECE + 1)]) {
      expect(counted(piece)).toBe(Buffer.byteLength(piece));
      expect(counted(piece)).toBeGreaterThanOrEqual(exact(piece));
    }
    const mixed = `Before ${base64} after`;
    expect(counted(mixed)).toBe(exact('Before') + Buffer.byteLength(` ${base64}`) + exact(' after'));
  });

  it('counts one token per UTF-8 byte without a tokenizer, and past the request budget', () => {
    const text = 'word '.repeat(1000).trim();
    expect(run(countTextTokens(text, { tokenizer: undefined, charsLeft: MAX_TOKENIZED_CHARS }))).toBe(Buffer.byteLength(text));
    expect(counted(text, { countTokens: exact }, 0)).toBe(Buffer.byteLength(text));
    const partly = counted(text, { countTokens: exact }, 4096);
    expect(partly).toBeGreaterThan(exact(text));
    expect(partly).toBeLessThan(Buffer.byteLength(text));
  });
});

/** Realistic request bodies, from a short chat to tools, images, unicode and the other APIs. */
const CHATS: Array<[string, Record<string, unknown>]> = [
  ['a one-line chat', { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'Say hello' }] }],
  [
    'a conversation with a system prompt and names',
    {
      model: 'gpt-4o',
      messages: [
        { role: 'system', content: 'You are a helpful assistant. Answer in one sentence.' },
        { role: 'user', name: 'alice', content: 'What is the capital of France?' },
        { role: 'assistant', content: 'The capital of France is Paris.' },
        { role: 'user', content: UNICODE_TEXTS.join('\n') },
      ],
      temperature: 0.2,
    },
  ],
  [
    'tool definitions, a tool call and its result',
    {
      model: 'gpt-4.1-mini',
      messages: [
        { role: 'user', content: 'What is the weather in Tōkyō and in Zürich?' },
        {
          role: 'assistant',
          content: null,
          tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Tōkyō","unit":"c"}' } }],
        },
        { role: 'tool', tool_call_id: 'call_1', content: '{"temperature":21,"sky":"clear ☀️"}' },
      ],
      tools: [
        {
          type: 'function',
          function: {
            name: 'get_weather',
            description: 'Get the current weather of a city',
            parameters: {
              type: 'object',
              properties: {
                city: { type: 'string', description: 'The city, e.g. Paris' },
                unit: { type: 'string', enum: ['c', 'f'], description: 'Temperature unit' },
              },
              required: ['city'],
            },
          },
        },
      ],
    },
  ],
  [
    'content parts with an image',
    {
      model: 'gpt-4o-mini',
      messages: [
        {
          role: 'user',
          content: [
            { type: 'text', text: 'What is in this picture? Décrivez-la en français.' },
            { type: 'image_url', image_url: { url: `data:image/png;base64,${'iVBORw0KGgo'.repeat(500)}`, detail: 'high' } },
          ],
        },
      ],
    },
  ],
];

/** The prompt as OpenAI's chat format renders it, counted by gpt-tokenizer: text parts joined, images left out. */
function chatTokens(body: Record<string, unknown>, encoding: typeof o200k): number {
  const messages = (body.messages as Array<Record<string, unknown>>).map((message) => {
    const content = Array.isArray(message.content)
      ? (message.content as Array<Record<string, unknown>>)
          .filter((part) => part.type === 'text')
          .map((part) => part.text)
          .join('\n')
      : String(message.content ?? JSON.stringify(message.tool_calls ?? ''));
    return { role: message.role as 'user', content, ...(typeof message.name === 'string' ? { name: message.name } : {}) };
  });
  const chatml = encoding.encodeChat(messages, 'gpt-4o', PLAIN).length;
  const tools = (body.tools as Array<{ function: Record<string, unknown> }> | undefined)?.map((tool) => tool.function);
  const withFunctions = computeChatCompletionTokenCount({ messages, ...(tools ? { functions: tools as never } : {}) }, (text) =>
    encoding.countTokens(text, PLAIN),
  );
  return Math.max(chatml, withFunctions);
}

describe('countBodyTokens', () => {
  it.each(CHATS)("is never below the tokenizer's own count of the chat: %s", (_case, body) => {
    const estimate = run(
      countBodyTokens(body, body.model as string, { tokenizer: { countTokens: exact }, charsLeft: MAX_TOKENIZED_CHARS }),
    );
    expect(estimate).toBeGreaterThanOrEqual(chatTokens(body, o200k));
  });

  it('reserves the largest image cost per image part, not the tokens of its data', () => {
    const image = { type: 'image_url', image_url: { url: `data:image/png;base64,${'A'.repeat(100_000)}` } };
    const body = (model: string) => ({ model, messages: [{ role: 'user', content: [image, image] }] });
    const state = () => ({ tokenizer: { countTokens: exact }, charsLeft: MAX_TOKENIZED_CHARS });
    const text = run(countBodyTokens({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: [] }] }, 'gpt-4o-mini', state()));
    expect(run(countBodyTokens(body('gpt-4o-mini'), 'gpt-4o-mini', state())) - text).toBe(2 * 48_169);
    const other = run(countBodyTokens({ model: 'gpt-4.1', messages: [{ role: 'user', content: [] }] }, 'gpt-4.1', state()));
    expect(run(countBodyTokens(body('gpt-4.1'), 'gpt-4.1', state())) - other).toBe(2 * (IMAGE_PART_TOKENS[1]?.[1] ?? 0));
  });

  it('adds the per-message overhead for each message of a chat or of a Responses input', () => {
    const state = () => ({ tokenizer: { countTokens: exact }, charsLeft: MAX_TOKENIZED_CHARS });
    const one = run(countBodyTokens({ model: 'gpt-4o', input: [{ role: 'user', content: 'Hi' }] }, 'gpt-4o', state()));
    const two = run(
      countBodyTokens(
        {
          model: 'gpt-4o',
          input: [
            { role: 'user', content: 'Hi' },
            { role: 'user', content: 'Hi' },
          ],
        },
        'gpt-4o',
        state(),
      ),
    );
    // The second message: its overhead, its two keys and its two values.
    expect(two - one).toBe(MESSAGE_OVERHEAD_TOKENS + exact('role') + exact('content') + exact('user') + exact('Hi'));
  });

  it('counts token arrays (completions, embeddings) one token per number, and is never below them', () => {
    const tokens = Array.from({ length: 500 }, (_, i) => i);
    const estimate = run(
      countBodyTokens({ model: 'text-embedding-3-small', input: tokens }, 'text-embedding-3-small', {
        tokenizer: { countTokens: (text) => cl100k.countTokens(text, PLAIN) },
        charsLeft: MAX_TOKENIZED_CHARS,
      }),
    );
    expect(estimate).toBeGreaterThanOrEqual(500);
  });
});

describe('the default prompt estimate', () => {
  beforeAll(async () => {
    await loadTokenizer('o200k_base');
  });

  it('knows the tokenizer of OpenAI model families, and none of other models', () => {
    expect(
      [
        'gpt-4o-mini',
        'openai/gpt-4.1',
        'gpt-5-nano',
        'o3-mini',
        'o1',
        'gpt-4-turbo',
        'gpt-3.5-turbo',
        'text-embedding-3-small',
        'llama3.1',
        'claude-3-5-sonnet',
        'o3x',
      ].map(encodingOf),
    ).toEqual([
      'o200k_base',
      'o200k_base',
      'o200k_base',
      'o200k_base',
      'o200k_base',
      'cl100k_base',
      'cl100k_base',
      'cl100k_base',
      undefined,
      undefined,
      undefined,
    ]);
  });

  it('counts an OpenAI prompt with its tokenizer once it is loaded, asynchronously and synchronously alike', async () => {
    const body = CHATS[1]?.[1] as Record<string, unknown>;
    const bytes = Buffer.byteLength(JSON.stringify(body));
    const asynchronous = await countPromptTokens(body);
    expect(asynchronous).toBe(estimatePromptTokensByModel(body, bytes));
    expect(asynchronous).toBeGreaterThanOrEqual(chatTokens(body, o200k));
    // Far closer than the byte rule's one token per 4 bytes is to the truth for this unicode-heavy chat.
    expect(asynchronous).toBeLessThan(chatTokens(body, o200k) + 80);
  });

  it('counts with one token per byte of each string before the tokenizer is loaded: a higher bound', () => {
    const body = { model: 'gpt-3.5-turbo', messages: [{ role: 'user', content: 'Hello there' }] };
    expect(loadedTokenizer('cl100k_base')).toBeUndefined();
    const estimate = estimatePromptTokensByModel(body, 0);
    expect(estimate).toBeGreaterThanOrEqual(cl100k.encodeChat([{ role: 'user', content: 'Hello there' }], 'gpt-3.5-turbo').length);
  });

  it('estimates other models by the byte rule, and leaves them to it asynchronously', async () => {
    const body = { model: 'llama3.1', prompt: 'Hi' };
    expect(estimatePromptTokensByModel(body, 34)).toBe(9);
    expect(await countPromptTokens(body)).toBeUndefined();
    expect(await countPromptTokens([body])).toBeUndefined();
    expect(await countPromptTokens({ prompt: 'no model' })).toBeUndefined();
  });
});
