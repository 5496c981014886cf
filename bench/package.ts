/**
 * What the benchmark measures: the package as users install it, the built `dist/` (npm run bench
 * builds it first), not the TypeScript sources run through tsx, whose transform adds work to every
 * closure. Types come from the sources, which the build is made from.
 */
const api = (await import(new URL('../dist/index.js', import.meta.url).href)) as typeof import('../src/index.js');
const testing = (await import(new URL('../dist/testing/index.js', import.meta.url).href)) as typeof import('../src/testing/index.js');

export const { createAccount, issueKey, KeyHasher, KeyvKeyStore, MemoryKeyStore, modelSwitchAuth, proxyRouter } = api;
export const { sampleKeyRecord } = testing;
