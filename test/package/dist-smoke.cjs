// Loads the built CommonJS and ESM entry points and verifies a key end to end with each, so a
// packaging mistake (a missing export, an ESM-only dependency under require) fails CI. Each also
// proxies one request for an OpenAI model, which loads the tokenizer (a dynamic import) from the build.
// Then the PostgreSQL entry: both builds load and check their options; with DATABASE_URL set, each
// migrates a schema of its own and round-trips an account. Last, the package as installed without its
// optional peer dependency pg: the main entries load, the PostgreSQL entry says `npm install pg`.
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const http = require('node:http');
const { randomBytes } = require('node:crypto');
const { cpSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync, mkdirSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join, resolve } = require('node:path');
const { pathToFileURL } = require('node:url');

const ROOT = resolve(__dirname, '../..');

/** Serves one chat completion through the built proxyRouter; answers what the upstream received. */
async function proxyOnce(api) {
  let received;
  const upstream = http.createServer((req, res) => {
    let body = '';
    req.on('data', (chunk) => {
      body += chunk;
    });
    req.on('end', () => {
      received = JSON.parse(body);
      const text = JSON.stringify({ usage: { prompt_tokens: 9, completion_tokens: 1 } });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    });
  });
  await new Promise((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  const store = new api.MemoryKeyStore();
  const hasher = new api.KeyHasher({ scrypt: { logN: 10 } });
  const account = await api.createAccount(store, { balance: 1 });
  const issued = await api.issueKey(store, { accountId: account.id, type: 'proxy', name: 'smoke' }, { hasher });
  const proxy = api.proxyRouter(store, {
    upstreams: [{ name: 'smoke', target: `http://127.0.0.1:${upstream.address().port}/v1`, models: ['gpt-4o-mini'] }],
    pricing: { 'gpt-4o-mini': { inputPerMillion: 1, outputPerMillion: 1 } },
    hasher,
  });
  const server = http.createServer((req, res) => proxy(req, res, () => res.end()));
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const res = await fetch(`http://127.0.0.1:${server.address().port}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${issued.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'Hello' }] }),
    });
    await res.text();
    return { status: res.status, received };
  } finally {
    server.close();
    upstream.close();
  }
}

async function check(label, api, testing) {
  const hasher = new api.KeyHasher({ scrypt: { logN: 10 } });
  const key = api.generateApiKey('proxy');
  assert.equal(await hasher.verify(key.value, await hasher.hash(key.value)), true, `${label}: verify`);
  for (const name of ['modelSwitchAuth', 'keysRouter', 'keyInfoRoute', 'MemoryKeyStore', 'createAccount', 'issueKey']) {
    assert.equal(typeof api[name], 'function', `${label}: ${name} is exported`);
  }
  assert.equal(typeof testing.keyStoreSuite, 'function', `${label}: keyStoreSuite is exported`);
  const proxied = await proxyOnce(api);
  assert.equal(proxied.status, 200, `${label}: proxied`);
  assert.equal(proxied.received.max_completion_tokens, 4096, `${label}: the reserved cap was sent`);
  console.log(`${label} build: ok`);
}

async function checkPostgres(label, postgres) {
  assert.equal(typeof postgres.PostgresKeyStore, 'function', `${label}: PostgresKeyStore is exported`);
  assert.throws(
    () => new postgres.PostgresKeyStore({ connectionString: 'postgres://localhost/db', schema: 'Bad-Name' }),
    (error) => error.name === 'ConfigurationError' && error.code === 'ERR_MS_OPTION' && /schema must be/.test(error.message),
    `${label}: a bad schema name is a ConfigurationError`,
  );
  const url = process.env.DATABASE_URL;
  if (!url) {
    console.log(`${label} PostgreSQL entry: ok (DATABASE_URL not set: no round trip)`);
    return;
  }
  const schema = `ms_smoke_${randomBytes(6).toString('hex')}`;
  const store = new postgres.PostgresKeyStore({ connectionString: url, schema });
  try {
    assert.equal((await store.migrate()).applied.length > 0, true, `${label}: migrate applies the steps`);
    const account = { id: `smoke_${schema}`, balance: 0, reserved: 0, isFreeTier: false, createdAt: 1_700_000_000_000 };
    await store.createAccount(account);
    assert.deepEqual(await store.getAccount(account.id), account, `${label}: an account round-trips`);
  } finally {
    await store.close();
    const pg = require('pg');
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await client.end();
  }
  console.log(`${label} PostgreSQL entry: ok (migrated and round-tripped an account)`);
}

/**
 * A copy of the package in a temp directory whose node_modules links every dependency of this
 * repository except pg, as an app that did not install the optional peer dependency has it.
 */
function installWithoutPg() {
  const dir = mkdtempSync(join(tmpdir(), 'ms-no-pg-'));
  const app = join(dir, 'node_modules', 'modelswitch-keys');
  mkdirSync(app, { recursive: true });
  cpSync(join(ROOT, 'dist'), join(app, 'dist'), { recursive: true });
  cpSync(join(ROOT, 'package.json'), join(app, 'package.json'));
  for (const name of readdirSync(join(ROOT, 'node_modules'))) {
    if (name === 'pg' || name.startsWith('.')) continue;
    symlinkSync(join(ROOT, 'node_modules', name), join(dir, 'node_modules', name));
  }
  writeFileSync(join(dir, 'package.json'), '{"name":"app-without-pg","private":true}');
  return { dir, app };
}

async function checkWithoutPg() {
  const { dir, app } = installWithoutPg();
  try {
    const isMissingPg = (error) =>
      error.name === 'ConfigurationError' && error.code === 'ERR_MS_STORE' && error.message.includes('npm install pg');
    require(join(app, 'dist/index.cjs'));
    await import(pathToFileURL(join(app, 'dist/index.js')).href);
    assert.throws(() => require(join(app, 'dist/postgres/index.cjs')), isMissingPg, 'CommonJS without pg: clear error');
    await assert.rejects(import(pathToFileURL(join(app, 'dist/postgres/index.js')).href), isMissingPg, 'ESM without pg: clear error');
    // The bin as package.json names it, from the installed copy: it runs without pg, and a
    // postgres:// store says to install it (exit code 2, one line).
    const bin = join(app, require(join(app, 'package.json')).bin['modelswitch-keys']);
    const help = spawnSync(process.execPath, [bin, '--help'], { encoding: 'utf8' });
    assert.equal(help.status, 0, `bin --help: ${help.stderr}`);
    assert.match(help.stdout, /^Usage: modelswitch-keys COMMAND/, 'bin --help prints the usage');
    const noPg = spawnSync(process.execPath, [bin, 'migrate', '--store', 'postgres://127.0.0.1:1/x'], { encoding: 'utf8' });
    assert.equal(noPg.status, 2, 'bin on PostgreSQL without pg: exit code 2');
    assert.match(
      noPg.stderr,
      /^modelswitch-keys: [^\n]*npm install pg[^\n]*\n$/,
      'bin on PostgreSQL without pg: one line saying npm install pg',
    );
    console.log('without pg: the main entries load, modelswitch-keys/postgres says npm install pg, the bin runs: ok');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

(async () => {
  await check('CommonJS', require('../../dist/index.cjs'), require('../../dist/testing/index.cjs'));
  await check('ESM', await import('../../dist/index.js'), await import('../../dist/testing/index.js'));
  await checkPostgres('CommonJS', require('../../dist/postgres/index.cjs'));
  await checkPostgres('ESM', await import('../../dist/postgres/index.js'));
  await checkWithoutPg();
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
