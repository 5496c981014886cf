import { readFileSync } from 'node:fs';
import express from 'express';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { creditBalance } from '../../src/index.js';
import { isoTime } from '../../src/keys/public-key.js';
import { type Gateway, startGateway } from '../proxy/harness.js';

const README = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

/**
 * The README's payment-webhook handler, as JavaScript that takes what it imports (`express`,
 * `creditBalance`) and what it assumes the host has (`app`, `store`) as parameters.
 */
function webhookHandler(): (deps: {
  express: typeof express;
  creditBalance: typeof creditBalance;
  app: express.Express;
  store: Gateway['store'];
}) => void {
  const code = [...README.matchAll(/```ts\n([\s\S]*?)```/g)]
    .map((match) => match[1] as string)
    .find((block) => block.includes('creditBalance(') && block.includes('app.post('));
  if (!code) throw new Error('README.md shows no payment-webhook handler (a ts block with app.post and creditBalance)');
  const imports = [...code.matchAll(/^import (.+) from '([^']+)';$/gm)].map((match) => `${match[1]} from ${match[2]}`);
  // What the test hands the snippet: a new import would need a new parameter.
  expect(imports).toEqual(['express from express', '{ creditBalance } from modelswitch-keys']);
  const body = ts.transpileModule(code.replace(/^import .+;$/gm, ''), {
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
    reportDiagnostics: false,
  }).outputText;
  const run = new Function('express', 'creditBalance', 'app', 'store', body);
  return (deps) => run(deps.express, deps.creditBalance, deps.app, deps.store);
}

describe("the README's payment-webhook handler, run as written", () => {
  let g: Gateway;
  beforeAll(async () => {
    g = await startGateway({ api: true, balance: 10 });
    webhookHandler()({ express, creditBalance, app: g.app, store: g.store });
  });
  afterAll(() => g.close());

  const deliver = (event: object) =>
    fetch(`${g.url.replace(/\/v1$/, '')}/webhooks/payments`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(event),
    });
  const checkout = (id: string, accountId: string, cents: number) => ({
    id,
    type: 'checkout.session.completed',
    data: { object: { client_reference_id: accountId, amount_total: cents } },
  });
  const getJson = async (path: string) => {
    const res = await fetch(`${g.apiUrl}${path}`, { headers: { authorization: `Bearer ${g.billingKey}` } });
    return { status: res.status, body: await res.json() };
  };

  it('credits a payment once though its event arrives 20 times at once, refuses an unknown account, and ignores other events; the routes show the one top-up', async () => {
    const answers = await Promise.all(Array.from({ length: 20 }, () => deliver(checkout('evt_paid', g.account.id, 2500))));
    expect(answers.map((res) => res.status)).toEqual(Array.from({ length: 20 }, () => 200));
    expect((await deliver(checkout('evt_paid', g.account.id, 2500))).status).toBe(200);
    expect((await deliver(checkout('evt_nobody', 'acct_nobody', 2500))).status).toBe(404);
    expect((await deliver({ id: 'evt_other', type: 'invoice.created', data: { object: {} } })).status).toBe(200);

    const credit = (amount: number, balanceAfter: number, reference: string) => ({
      id: expect.any(Number),
      type: 'credit',
      amount,
      balanceAfter,
      keyId: null,
      model: null,
      promptTokens: null,
      completionTokens: null,
      requestId: null,
      reference,
      createdAt: expect.any(String),
    });
    expect(await getJson('/transactions')).toEqual({
      status: 200,
      body: { transactions: [credit(25, 35, 'evt_paid'), credit(10, 10, 'opening')], has_more: false },
    });
    expect(await getJson('/account')).toEqual({
      status: 200,
      body: { id: g.account.id, balance: 35, reserved: 0, available: 35, isFreeTier: false, createdAt: isoTime(g.account.createdAt) },
    });
  });
});
