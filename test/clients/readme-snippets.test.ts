import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MOCK_ANSWER } from '../../examples/mock-upstream.js';
import { type ClientGateway, startClientGateway } from './example-gateway.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../../', import.meta.url));
/** The page of OpenAI client snippets the README links to ("Use it from your code"). */
const CLIENTS_PAGE = 'docs/clients.md';
/** Loading a client library takes seconds on a busy machine. */
const SNIPPET_TIMEOUT_MS = 60_000;

/** The TypeScript blocks of the clients page, in order. */
async function snippets(): Promise<string[]> {
  const page = await readFile(join(root, CLIENTS_PAGE), 'utf8');
  return [...page.matchAll(/```ts\n([\s\S]*?)```/g)].map((match) => match[1] as string);
}

/** What each snippet prints against the example's offline mock. */
const EXPECTED: Readonly<Record<string, string>> = {
  "from 'openai'": `${MOCK_ANSWER}\n${MOCK_ANSWER}\n1536\n`,
  "from '@ai-sdk/openai'": `${MOCK_ANSWER} 12\n${MOCK_ANSWER}\n1536\n`,
  "from '@langchain/openai'": `${MOCK_ANSWER}\n${MOCK_ANSWER}\n1536\n`,
};

describe(`the ${CLIENTS_PAGE} snippets (the README's "Use it from your code"), run as written against the example gateway`, () => {
  let g: ClientGateway;
  let dir: string;

  beforeAll(async () => {
    g = await startClientGateway();
    // Inside the repository, so the snippets' imports resolve to its node_modules.
    await mkdir(join(root, 'node_modules/.cache'), { recursive: true });
    dir = await mkdtemp(join(root, 'node_modules/.cache/readme-snippets-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
    await g.close();
  });

  it('has one snippet for each client', async () => {
    const imports = (await snippets()).map((code) => Object.keys(EXPECTED).filter((marker) => code.includes(marker)));
    expect(imports).toEqual(Object.keys(EXPECTED).map((marker) => [marker]));
  });

  for (const [index, marker] of Object.keys(EXPECTED).entries()) {
    it(
      `runs the ${marker.slice(6, -1)} snippet: it prints the mock's answers and a 1536-dimension embedding, and is charged`,
      async () => {
        const code = (await snippets())[index] as string;
        // Compiled by the project's TypeScript and run by Node: what tsx does, without its loader on
        // every module the client library imports (seconds per snippet).
        const { outputText } = ts.transpileModule(code, {
          compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
          reportDiagnostics: false,
        });
        const file = join(dir, `snippet-${index}.mjs`);
        await writeFile(file, outputText);
        const env = { ...process.env, MODELSWITCH_BASE_URL: g.baseURL, MODELSWITCH_API_KEY: g.apiKey, AI_SDK_LOG_WARNINGS: 'false' };
        const { result, cost } = await g.charged(() => run(process.execPath, [file], { env, timeout: SNIPPET_TIMEOUT_MS }));
        expect(result.stdout).toBe(EXPECTED[marker]);
        expect(cost).toBeGreaterThan(0);
      },
      SNIPPET_TIMEOUT_MS,
    );
  }
});
