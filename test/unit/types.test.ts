import express from 'express';
import request from 'supertest';
import { describe, expect, expectTypeOf, it } from 'vitest';
import { type AccountRecord, type AuthenticatedKey, MemoryKeyStore, type ModelSwitchContext, modelSwitchAuth } from '../../src/index.js';
import { fastHasher, seedAccount } from '../helpers.js';

describe('req.modelSwitch for TypeScript users', () => {
  it("is typed on Express's Request and holds the verified key and account", async () => {
    const store = new MemoryKeyStore();
    const hasher = fastHasher();
    const seeded = await seedAccount(store, { hasher });
    const app = express();
    app.use('/v1', modelSwitchAuth(store, { hasher }));
    app.get('/v1/me', (req, res) => {
      expectTypeOf(req.modelSwitch).toEqualTypeOf<ModelSwitchContext | undefined>();
      const context = req.modelSwitch;
      if (!context) throw new Error('modelSwitchAuth runs first');
      expectTypeOf(context.key).toEqualTypeOf<AuthenticatedKey>();
      expectTypeOf(context.account).toEqualTypeOf<AccountRecord>();
      res.json({ name: context.key.name, account: context.account.id, hasHash: 'hash' in context.key });
    });
    const response = await request(app).get('/v1/me').set('Authorization', `Bearer ${seeded.proxyKey}`);
    expect(response.body).toEqual({ name: 'My Production Key', account: seeded.account.id, hasHash: false });
  });
});
