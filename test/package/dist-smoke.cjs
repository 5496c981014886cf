// Loads the built CommonJS and ESM entry points and verifies a key end to end with each, so a
// packaging mistake (a missing export, an ESM-only dependency under require) fails CI. Each also
// proxies one request for an OpenAI model, which loads the tokenizer (a dynamic import) from the build.
const assert = require('node:assert/strict');
const http = require('node:http');

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

(async () => {
  await check('CommonJS', require('../../dist/index.cjs'), require('../../dist/testing/index.cjs'));
  await check('ESM', await import('../../dist/index.js'), await import('../../dist/testing/index.js'));
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
