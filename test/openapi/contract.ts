import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormatsPlugin from 'ajv-formats';
import { type JsonObject, type JsonValue, type OpenApiDocument, openApiDocument } from '../../src/management/openapi.js';

/**
 * Operations the document describes from the contract (DESIGN.md) that `main` does not answer yet:
 * their answers are not checked, and `test/openapi/document.test.ts` fails as soon as one of them is
 * answered, so it is taken off this list (and its schema tightened) in the same change. It must be
 * empty once every route of the contract has landed.
 */
export const NOT_ANSWERED_YET: ReadonlySet<string> = new Set([]);

/** One answer of a server under test, as the recorder saw it. */
export interface RecordedAnswer {
  method: string;
  /** The request URL as it arrived (path and query). */
  url: string;
  status: number;
  headers: Record<string, string>;
  /** The body, decoded; `undefined` when it was not kept (a stream, too large, or cut off). */
  body: Buffer | undefined;
  /** Whether the answer is an upstream's, passed through by the proxy (its body is the upstream's own). */
  passthrough: boolean;
}

/** `ajv-formats` is CommonJS: its plugin is the module itself. */
const addFormats = addFormatsPlugin as unknown as (ajv: Ajv2020) => Ajv2020;

const SCHEMA_BASE = 'https://modelswitch-keys.invalid/components/schemas/';

/** The document, its path templates as regular expressions, and compiled validators, made once per test file. */
class Contract {
  readonly document: OpenApiDocument = openApiDocument();
  private readonly ajv = new Ajv2020({ strict: true, strictTypes: false, allErrors: true });
  private readonly validators = new WeakMap<object, ValidateFunction>();
  readonly templates: { template: string; pattern: RegExp }[];

  constructor() {
    addFormats(this.ajv);
    this.ajv.addKeyword({ keyword: 'example' });
    const schemas = (this.document.components.schemas ?? {}) as JsonObject;
    for (const [name, schema] of Object.entries(schemas)) {
      this.ajv.addSchema({ ...(withAbsoluteRefs(schema) as JsonObject), $id: SCHEMA_BASE + name });
    }
    this.templates = Object.keys(this.document.paths).map((template) => ({
      template,
      pattern: new RegExp(`^${template.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\{[^}]+\}/g, '[^/]+')}$`),
    }));
  }

  /** The compiled validator of one schema object of the document. */
  validator(schema: JsonObject): ValidateFunction {
    let validate = this.validators.get(schema);
    if (validate === undefined) {
      validate = this.ajv.compile(withAbsoluteRefs(schema) as JsonObject);
      this.validators.set(schema, validate);
    }
    return validate;
  }

  errorsOf(validate: ValidateFunction): string {
    return this.ajv.errorsText(validate.errors, { dataVar: 'body' });
  }

  /** Follows a `$ref` inside the document. */
  resolve(value: JsonValue | undefined): JsonObject | undefined {
    if (!isObject(value)) return undefined;
    const target = value.$ref;
    if (typeof target !== 'string') return value;
    let node: JsonValue | undefined = this.document;
    for (const part of target.replace(/^#\//, '').split('/')) node = isObject(node) ? node[part] : undefined;
    return isObject(node) ? node : undefined;
  }
}

function isObject(value: JsonValue | undefined): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The schema with `#/components/schemas/X` refs made absolute, so each component compiles on its own. */
function withAbsoluteRefs(value: JsonValue): JsonValue {
  if (Array.isArray(value)) return value.map(withAbsoluteRefs);
  if (!isObject(value)) return value;
  const copy: JsonObject = {};
  for (const [name, item] of Object.entries(value)) {
    copy[name] = name === '$ref' && typeof item === 'string' ? item.replace('#/components/schemas/', SCHEMA_BASE) : withAbsoluteRefs(item);
  }
  return copy;
}

let contract: Contract | undefined;

/** The document and its validators (compiled on first use). */
export function theContract(): Contract {
  contract ??= new Contract();
  return contract;
}

/** The document's path template a request path falls under, e.g. `/api/keys/{id}` for `/api/keys/7`; `undefined` if none. */
export function templateOf(url: string): string | undefined {
  let path = url.split('?', 1)[0] as string;
  if (path.length > 1 && path.endsWith('/')) path = path.slice(0, -1);
  return theContract().templates.find(({ pattern }) => pattern.test(path))?.template;
}

/** Whether a path is one the proxy passes to an upstream (its operation has the `default` of a passed-through answer). */
export function isProxied(url: string): boolean {
  const template = templateOf(url);
  if (template === undefined) return false;
  const operation = theContract().resolve((theContract().document.paths[template] as JsonObject).post);
  return theContract().resolve(operation?.responses)?.default !== undefined;
}

/**
 * What is wrong with an answer according to the document: an undocumented status, a missing or
 * malformed header, a body of another content type or not matching its schema. Answers to paths
 * the document does not describe (the host's own routes) and to operations in
 * {@link NOT_ANSWERED_YET} are not checked; a passed-through upstream answer only for the
 * gateway's own headers.
 */
export function violationsOf(answer: RecordedAnswer): string[] {
  const template = templateOf(answer.url);
  if (template === undefined) return [];
  const method = answer.method === 'HEAD' ? 'GET' : answer.method;
  const where = `${answer.method} ${answer.url} → ${answer.status}`;
  if (NOT_ANSWERED_YET.has(`${method} ${template}`)) return [];
  const the = theContract();
  const pathItem = the.document.paths[template] as JsonObject;
  const operation = the.resolve(pathItem[method.toLowerCase()]);
  let response: JsonObject | undefined;
  if (operation === undefined) {
    // `pathItem.parameters` and the like are no operation either.
    // The package answers 405 on its own paths; anything else there is the host's (an OPTIONS handler, say).
    if (answer.status !== 405) return [];
    response = the.resolve({ $ref: '#/components/responses/MethodNotAllowed' });
    if (response === undefined) return [`${where}: the document has no MethodNotAllowed response`];
  } else {
    const responses = the.resolve(operation.responses) ?? {};
    if (answer.passthrough) {
      // The upstream's status and body; the gateway's own headers still count.
      return headerViolations(the.resolve(responses['200'] ?? responses.default), answer, where);
    }
    // On a proxied route (one with `default`: an upstream's answer passed through) the package writes
    // no success of its own: one that is not passed through is the host's, whose `paths` option left
    // the route to its own handler.
    if (responses.default !== undefined && answer.status < 300) return [];
    // `default` is an upstream's answer passed through: never one the package writes itself.
    response = the.resolve(responses[String(answer.status)]);
    if (response === undefined) return [`${where}: status ${answer.status} is not documented for ${method} ${template}`];
  }
  return [...headerViolations(response, answer, where), ...bodyViolations(response, answer, where)];
}

function headerViolations(response: JsonObject | undefined, answer: RecordedAnswer, where: string): string[] {
  const the = theContract();
  const found: string[] = [];
  const headers = the.resolve(response?.headers) ?? {};
  for (const [name, spec] of Object.entries(headers)) {
    const header = the.resolve(spec);
    if (header === undefined) continue;
    const value = answer.headers[name.toLowerCase()];
    if (value === undefined) {
      if (header.required === true) found.push(`${where}: header ${name} is missing`);
      continue;
    }
    const schema = the.resolve(header.schema);
    if (schema === undefined) continue;
    const validate = the.validator(schema);
    if (!validate(value)) found.push(`${where}: header ${name}: ${JSON.stringify(value)} ${the.errorsOf(validate).replace(/^body ?/, '')}`);
  }
  return found;
}

function bodyViolations(response: JsonObject, answer: RecordedAnswer, where: string): string[] {
  const the = theContract();
  const content = the.resolve(response.content);
  if (answer.method === 'HEAD' || answer.body === undefined) return [];
  if (content === undefined) return answer.body.length === 0 ? [] : [`${where}: a body where the document has none`];
  const mediaType = (answer.headers['content-type'] ?? '').split(';', 1)[0]?.trim().toLowerCase() ?? '';
  const media = the.resolve(content[mediaType]);
  if (media === undefined)
    return [`${where}: Content-Type ${JSON.stringify(mediaType)} is not documented (${Object.keys(content).join(', ')})`];
  const schema = the.resolve(media.schema);
  if (schema === undefined || mediaType !== 'application/json') return [];
  let parsed: unknown;
  try {
    parsed = JSON.parse(answer.body.toString('utf8'));
  } catch {
    return [`${where}: the body is not JSON: ${answer.body.toString('utf8').slice(0, 200)}`];
  }
  const validate = the.validator(schema);
  if (validate(parsed)) return [];
  return [`${where}: ${the.errorsOf(validate)}; body ${JSON.stringify(parsed).slice(0, 500)}`];
}
