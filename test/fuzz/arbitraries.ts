import { METHODS } from 'node:http';
import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { generateApiKey } from '../../src/index.js';
import type { FuzzRequest } from './http.js';

/**
 * Generators of hostile HTTP requests. JSON is generated as text (not values), so bodies can hold
 * what `JSON.stringify` never writes: numbers past the double range (`1e400`), duplicate and
 * `__proto__` members, lone surrogates, nesting past the depth limit.
 */

/** Numbers at the edges, as JSON text: past the double range, -0, subnormal, past 2^53, huge integers. */
export const EDGE_NUMBERS = [
  '0',
  '-0',
  '1',
  '-1',
  '0.5',
  '100',
  '1e400',
  '-1e400',
  '1e-400',
  '5e-324',
  '1.7976931348623157e308',
  '-1.7976931348623157e308',
  '9007199254740991',
  '9007199254740993',
  '-9007199254740993',
  '123456789012345678901234567890',
  '1e21',
  '1E2',
  '2.5e-7',
  '4294967296',
  '1000000000001',
  '0.1',
  '1.0000000000000002',
];

/** Strings that trip text handling: controls, invisible and bidi characters, lone surrogates, long ones. */
export const EDGE_STRINGS = [
  '',
  ' ',
  '\u0000',
  '\u0085',
  '\u009b31m',
  '\u200b',
  '\u202eevil',
  '\ud800',
  '\udfff',
  '👨‍👩‍👧',
  'Zürich',
  '__proto__',
  'constructor',
  'toString',
  'a'.repeat(101),
  'x'.repeat(5000),
  '2027-01-01T00:00:00Z',
  '2000-01-01T00:00:00Z',
  'not a date',
  '60s',
  '0s',
  '7d',
  '8d',
  '1h',
  'daily',
  'weekly',
  'monthly',
  'null',
  '<script>alert(1)</script>',
  '%00',
  '../../etc/passwd',
];

/** Member names every body may carry besides a route's own fields. */
const HOSTILE_MEMBERS = [
  '__proto__',
  'constructor',
  'prototype',
  'hasOwnProperty',
  'toJSON',
  'valueOf',
  'id',
  'accountId',
  'usage',
  'type',
  'key',
  'hash',
];

const anyString = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...EDGE_STRINGS) },
  { weight: 2, arbitrary: fc.string({ maxLength: 20 }) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 20 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 20 }) },
);

/** Well-formed keys no store holds (made once: a replayed seed picks the same kind of key). */
const UNKNOWN_KEYS = [generateApiKey('proxy').value, generateApiKey('billing').value];

/** Keys and key-like text: each a value a client might paste where it does not belong. */
export function keyText(known: readonly string[]): fc.Arbitrary<string> {
  const key = fc.constantFrom(...known, ...UNKNOWN_KEYS);
  return fc.oneof(
    key,
    key.map((k) => `x${k}y`),
    key.map((k) => k.slice(0, 30)),
    key.map((k) => `${k.slice(0, -1)}${k.endsWith('A') ? 'B' : 'A'}`),
    key.map((k) => k.replace('-', '%2D')),
    key.map((k) => encodeURIComponent(`${k} `)),
  );
}

export function jsonString(known: readonly string[]): fc.Arbitrary<string> {
  return fc.oneof({ weight: 4, arbitrary: anyString }, { weight: 1, arbitrary: keyText(known) }).map((s) => JSON.stringify(s));
}

export const jsonNumber: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...EDGE_NUMBERS) },
  { weight: 1, arbitrary: fc.integer().map(String) },
  { weight: 1, arbitrary: fc.double({ noNaN: true, noDefaultInfinity: true }).map((n) => JSON.stringify(n)) },
);

/** A member name: a route's field, a hostile one, any string, or a key. */
function memberName(fields: readonly string[], known: readonly string[]): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 3, arbitrary: fields.length > 0 ? fc.constantFrom(...fields) : anyString },
    { weight: 2, arbitrary: fc.constantFrom(...HOSTILE_MEMBERS) },
    { weight: 1, arbitrary: anyString },
    { weight: 1, arbitrary: keyText(known) },
  );
}

function objectText(entries: Array<[string, string]>): string {
  return `{${entries.map(([name, value]) => `${JSON.stringify(name)}:${value}`).join(',')}}`;
}

/** Any JSON value as text, a few levels deep. */
export function jsonValue(known: readonly string[], fields: readonly string[] = []): fc.Arbitrary<string> {
  const { value } = fc.letrec<{ value: string }>((tie) => ({
    value: fc.oneof(
      { depthSize: 'small', withCrossShrink: true },
      fc.constantFrom('null', 'true', 'false'),
      jsonNumber,
      jsonString(known),
      fc.array(tie('value'), { maxLength: 4 }).map((items) => `[${items.join(',')}]`),
      fc.array(fc.tuple(memberName(fields, known), tie('value')), { maxLength: 4 }).map(objectText),
    ),
  }));
  return value;
}

/** Nesting around and far past the parser's depth limit (64), and very wide arrays and objects. */
export const deepOrWide: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(62, 63, 64, 65, 66, 200, 5000).map((depth) => `${'['.repeat(depth)}1${']'.repeat(depth)}`),
  fc.constantFrom(63, 64, 65, 1000).map((depth) => `{"model":"mock-model","name":"n",${'"a":{'.repeat(depth)}"b":1${'}'.repeat(depth)}}`),
  fc.constantFrom(64, 65, 3000).map((depth) => `${'['.repeat(depth)}`),
  fc.integer({ min: 100, max: 3000 }).map((width) => `[${Array.from({ length: width }, (_, i) => i).join(',')}]`),
  fc
    .integer({ min: 100, max: 1500 })
    .map((width) => objectText(Array.from({ length: width }, (_, i) => [i % 7 === 0 ? '__proto__' : `k${i % 50}`, String(i)]))),
);

/**
 * A route's JSON object: a few of its fields (`usual` ones most often), each from its own generator
 * or any JSON value, sometimes with members of any name.
 */
export function routeObject(
  fields: Record<string, fc.Arbitrary<string>>,
  known: readonly string[],
  usual: readonly string[] = [],
): fc.Arbitrary<string> {
  const names = Object.keys(fields);
  const fieldValue = (name: string) =>
    fc.oneof({ weight: 4, arbitrary: fields[name] as fc.Arbitrary<string> }, { weight: 1, arbitrary: jsonValue(known) });
  const chosen = fc
    .tuple(fc.subarray(names, { maxLength: Math.min(3, names.length) }), fc.subarray([...usual]), fc.integer({ min: 0, max: 3 }))
    .map(([some, wanted, dropUsual]) => [...new Set([...(dropUsual === 0 ? [] : wanted), ...some])])
    .chain((picked) => fc.tuple(...picked.map((name) => fieldValue(name).map((value): [string, string] => [name, value]))));
  const extra = fc.oneof(
    { weight: 3, arbitrary: fc.constant([] as Array<[string, string]>) },
    { weight: 1, arbitrary: fc.array(fc.tuple(memberName(names, known), jsonValue(known, names)), { minLength: 1, maxLength: 2 }) },
  );
  return fc
    .tuple(chosen, extra, fc.boolean())
    .map(([mine, more, extraFirst]) => objectText(extraFirst ? [...more, ...mine] : [...mine, ...more]));
}

/** A body: none, a route's object, any JSON, deep or wide JSON, broken JSON, or raw bytes. */
export function body(routeBody: fc.Arbitrary<string>, known: readonly string[]): fc.Arbitrary<Buffer | undefined> {
  return fc.oneof(
    { weight: 2, arbitrary: fc.constant(undefined) },
    { weight: 10, arbitrary: routeBody.map((text) => Buffer.from(text)) },
    { weight: 2, arbitrary: jsonValue(known).map((text) => Buffer.from(text)) },
    { weight: 1, arbitrary: deepOrWide.map((text) => Buffer.from(text)) },
    {
      weight: 1,
      arbitrary: fc.tuple(routeBody, fc.nat()).map(([text, cut]) => Buffer.from(text.slice(0, cut % (text.length + 1)))),
    },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }).map((bytes) => Buffer.from(bytes)) },
    { weight: 1, arbitrary: routeBody.map((text) => Buffer.from(text, 'utf16le')) },
  );
}

/** Header values Node's client will send: tab, printable ASCII and Latin-1. */
const headerValue = fc.oneof(
  fc.constantFrom('', '0', '-1', '1e400', 'null', 'gzip', 'application/json', '*/*', '127.0.0.1, 10.0.0.1'),
  fc.string({ unit: fc.constantFrom('a', 'Z', '9', ' ', '\t', ',', ';', '=', '"', '%', '\u00e9', '\u00ff', '\u0080'), maxLength: 30 }),
);

/** Headers a request may carry: a Content-Type, a Content-Encoding, and a few others. */
export function headers(known: readonly string[]): fc.Arbitrary<Array<[string, string]>> {
  const contentType = fc.option(
    fc.constantFrom(
      'application/json',
      'application/json; charset=utf-8',
      'application/json; charset=utf-16le',
      'application/json; charset=latin1',
      'APPLICATION/JSON',
      'text/plain',
      'application/x-www-form-urlencoded',
      'multipart/form-data; boundary=x',
      'application/vnd.api+json',
      '',
    ),
    { freq: 5 },
  );
  const extra = fc.array(
    fc.tuple(
      fc.constantFrom(
        'x-request-id',
        'x-forwarded-for',
        'x-forwarded-proto',
        'x-http-method-override',
        'accept',
        'accept-encoding',
        'origin',
        'cookie',
        'openai-organization',
        'x-api-key',
        'expect-ct',
        'range',
        'if-none-match',
      ),
      fc.oneof(headerValue, keyText(known)),
    ),
    { maxLength: 3 },
  );
  return fc
    .tuple(contentType, extra)
    .map(([type, rest]) => [...(type === null ? [] : [['content-type', type] as [string, string]]), ...rest]);
}

/**
 * The Content-Encoding of the body and what it does to it: none, a real gzip of it, a coding
 * claimed over plain bytes, or one this package does not undo.
 */
export const encoding: fc.Arbitrary<{ header: string | undefined; encode: (body: Buffer) => Buffer }> = fc.oneof(
  { weight: 8, arbitrary: fc.constant({ header: undefined, encode: (b: Buffer) => b }) },
  { weight: 1, arbitrary: fc.constant({ header: 'gzip', encode: (b: Buffer) => gzipSync(b) }) },
  {
    weight: 1,
    arbitrary: fc.constantFrom('gzip', 'deflate', 'br', 'identity', 'compress', 'gzip, gzip', 'x-gzip', 'GZIP', '').map((header) => ({
      header,
      encode: (b: Buffer) => b,
    })),
  },
);

/** Methods Node's parser accepts (CONNECT switches protocols and is left out), the usual ones most often. */
export const method: fc.Arbitrary<string> = fc.oneof(
  { weight: 16, arbitrary: fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE') },
  { weight: 1, arbitrary: fc.constantFrom('HEAD', 'OPTIONS') },
  { weight: 1, arbitrary: fc.constantFrom(...METHODS.filter((m) => m !== 'CONNECT')) },
);

/**
 * The Authorization header: mostly `Bearer` and the route's own kind of key (`primary`), else any
 * key of the world, a broken one, another scheme, or none.
 */
export function authorization(primary: string, keys: readonly string[]): fc.Arbitrary<string | undefined> {
  const key = fc.constantFrom(...keys);
  return fc.oneof(
    { weight: 16, arbitrary: fc.constant(`Bearer ${primary}`) },
    { weight: 4, arbitrary: key.map((k) => `Bearer ${k}`) },
    { weight: 1, arbitrary: fc.constant(undefined) },
    {
      weight: 2,
      arbitrary: fc
        .tuple(fc.constantFrom('Bearer ', 'bearer ', 'BEARER ', 'Bearer  ', 'Bearer\t', 'Basic ', 'Token ', ''), keyText(keys))
        .map(([scheme, k]) => `${scheme}${k}`),
    },
    { weight: 1, arbitrary: fc.tuple(key, headerValue).map(([k, junk]) => `Bearer ${k}${junk}`) },
    { weight: 1, arbitrary: headerValue },
  );
}

/** A query string: route parameters and hostile ones, with edge values, keys and broken escapes. */
export function query(names: readonly string[], known: readonly string[]): fc.Arbitrary<string> {
  const name = fc.oneof(
    { weight: 6, arbitrary: names.length > 0 ? fc.constantFrom(...names) : fc.constant('x') },
    { weight: 1, arbitrary: fc.constantFrom('__proto__', 'constructor', '', 'limit[]', 'a[b]') },
    { weight: 1, arbitrary: keyText(known) },
  );
  const value = fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(...EDGE_NUMBERS) },
    {
      weight: 3,
      arbitrary: fc.constantFrom(
        '',
        'day',
        'key,model',
        'day,day',
        '2026-11-22',
        '2026-02-30',
        '1999-01-01',
        'usage',
        'credit',
        '%',
        '%zz',
        '%E0%A4',
      ),
    },
    { weight: 2, arbitrary: anyString.map(percentEncode) },
    { weight: 1, arbitrary: keyText(known) },
  );
  const pairs = fc
    .array(fc.tuple(name, fc.option(value)), { minLength: 1, maxLength: 2 })
    .map((all) => `?${all.map(([n, v]) => (v === null ? n : `${n}=${v}`)).join('&')}`);
  return fc.oneof({ weight: 3, arbitrary: fc.constant('') }, { weight: 2, arbitrary: pairs });
}

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/** Percent-encodes any string; a lone surrogate (which has no UTF-8) becomes the bytes of one (`%ED%A0%80`), invalid UTF-8. */
export function percentEncode(text: string): string {
  return text
    .split(LONE_SURROGATE)
    .map((part) => encodeURIComponent(part))
    .join('%ED%A0%80');
}

/** A path segment from any text: percent-encoded (Node refuses raw non-ASCII before any middleware), or a broken escape. */
export const segment: fc.Arbitrary<string> = fc.oneof(
  anyString.map(percentEncode),
  fc.constantFrom('%', '%zz', '%E0%A4', '%2F', '%2e%2e', '..', '.', '', '%C3%A9', '%00', ';', 'a;b=c'),
);

/** Ids as text: real ones, and every way an id can be wrong. */
export function idText(ids: () => readonly number[]): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 4, arbitrary: fc.nat(1000).map((i) => String(ids()[i % Math.max(1, ids().length)] ?? 1)) },
    {
      weight: 2,
      arbitrary: fc.constantFrom(
        '0',
        '-1',
        '1.5',
        '1e3',
        '01',
        '0x10',
        '9007199254740993',
        '99999999999999999999',
        '%31',
        '1%20',
        '+1',
        'Infinity',
        'NaN',
      ),
    },
    { weight: 1, arbitrary: segment },
  );
}

/** Completes a request from its parts; the encoding applies to the body and names itself in a header. */
export function request(parts: {
  /** The path (with its query) and the method. */
  route: fc.Arbitrary<{ path: string; method: string }>;
  authorization: fc.Arbitrary<string | undefined>;
  headers: fc.Arbitrary<Array<[string, string]>>;
  body: fc.Arbitrary<Buffer | undefined>;
}): fc.Arbitrary<FuzzRequest> {
  return fc
    .record({
      route: parts.route,
      authorization: parts.authorization,
      headers: parts.headers,
      body: parts.body,
      encoding,
      chunked: fc.integer({ min: 0, max: 9 }).map((n) => n < 3),
    })
    .map(({ route: { method, path }, authorization, headers, body, encoding, chunked }) => {
      const all: Array<[string, string]> = [
        ...(authorization === undefined ? [] : [['authorization', authorization] as [string, string]]),
        ...headers,
      ];
      if (body !== undefined && encoding.header !== undefined) all.push(['content-encoding', encoding.header]);
      return { method, path, headers: all, body: body === undefined ? undefined : encoding.encode(body), chunked };
    });
}
