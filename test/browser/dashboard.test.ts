import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { type Browser, type BrowserContext, type Page, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryKeyStore, limitPeriod } from '../../src/index.js';
import { buildDashboardAssets } from '../../scripts/build-dashboard.js';
import { fastHasher, seedAccount } from '../helpers.js';
import { startDashboardApp } from '../dashboard/dashboard-app.js';

/**
 * The dashboard driven by a real browser: Debian's chromium through playwright-core (no browser
 * download). Skipped with a visible reason when /usr/bin/chromium is missing, except under CI=true,
 * where .ci/run installs it and a missing browser fails the run.
 */
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'];
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
/**
 * Where the screenshots go: reports/dashboard (ignored by git) on every run; docs/ (the README's
 * pictures) with UPDATE_DASHBOARD_SCREENSHOTS=1 (`npm run docs:screenshots`), so a test run never
 * dirties the repository.
 */
const SCREENSHOTS = process.env.UPDATE_DASHBOARD_SCREENSHOTS === '1' ? join(ROOT, 'docs') : join(ROOT, 'reports', 'dashboard');
const skipReason = existsSync(CHROMIUM)
  ? undefined
  : `${CHROMIUM} not found: skipping the dashboard browser tests (apt-get install -y chromium, or set CHROMIUM_PATH)`;
if (skipReason !== undefined) {
  if (process.env.CI === 'true') throw new Error(`${CHROMIUM} must exist when CI=true: the browser tests cannot be skipped in CI`);
  console.warn(skipReason);
}

const hasher = fastHasher();
const AXE_SOURCE = readFileSync(join(ROOT, 'node_modules', 'axe-core', 'axe.min.js'), 'utf8');

interface AxeViolation {
  id: string;
  impact: string | null;
  help: string;
  nodes: Array<{ target: string[] }>;
}

/** axe-core on the page as it is now: the serious and critical violations (none expected). */
async function seriousViolations(page: Page): Promise<string[]> {
  // Evaluated over the DevTools protocol, which the page's CSP does not govern (it forbids inline scripts).
  await page.evaluate(AXE_SOURCE);
  const violations = (await page.evaluate(
    'axe.run(document, { resultTypes: ["violations"] }).then((r) => r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => ({ target: n.target })) })))',
  )) as AxeViolation[];
  return violations
    .filter((violation) => violation.impact === 'serious' || violation.impact === 'critical')
    .map(
      (violation) =>
        `${violation.impact} ${violation.id}: ${violation.help} (${violation.nodes.map((node) => node.target.join(' ')).join(', ')})`,
    );
}

async function authKey(origin: string, key: string): Promise<number> {
  return (await fetch(`${origin}/v1/auth/key`, { headers: { authorization: `Bearer ${key}` } })).status;
}

describe.skipIf(skipReason !== undefined)('the dashboard in chromium', { timeout: 60_000 }, () => {
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let store: MemoryKeyStore;
  let origin: string;
  let billingKey: string;
  let accountId: string;
  let closeApp: () => Promise<void>;
  let otherSite: Server;
  const cspViolations: string[] = [];

  beforeAll(async () => {
    await buildDashboardAssets();
    mkdirSync(SCREENSHOTS, { recursive: true });
    store = new MemoryKeyStore();
    const seeded = await seedAccount(store, { hasher, balance: 25 });
    billingKey = seeded.billingKey;
    accountId = seeded.account.id;
    // Some spend to chart: three settled requests over two days and two models.
    const now = Date.now();
    for (const [index, [model, cost, daysAgo]] of (
      [
        ['gpt-4o-mini', 0.42, 1],
        ['claude-3-5-haiku', 1.1, 1],
        ['gpt-4o-mini', 0.73, 0],
      ] as const
    ).entries()) {
      const at = now - daysAgo * 86_400_000;
      const period = limitPeriod(null, at);
      const hold = await store.reserveSpend({ keyId: seeded.proxyKeyId, accountId, amount: cost, period, now: at, expiresAt: at + 60_000 });
      if (!hold.ok) throw new Error(`reservation refused: ${hold.reason}`);
      await store.settleSpend({
        keyId: seeded.proxyKeyId,
        accountId,
        holdId: hold.holdId,
        cost,
        period,
        now: at,
        usage: { model, promptTokens: 1000 + index, completionTokens: 200, requestId: `req_seed_${index}`, upstreamId: null },
      });
    }
    const app = await startDashboardApp('express5', store, { hasher });
    origin = app.origin;
    closeApp = app.close;
    // Another origin whose page posts to the dashboard (a cross-site request forgery attempt).
    otherSite = createServer((_req, res) => {
      res.setHeader('Content-Type', 'text/html');
      res.end(
        `<form method="POST" action="${origin}/dashboard/api/keys" enctype="text/plain"><input name='{"name":"forged","x":"' value='"}'></form><script>document.forms[0].submit()</script>`,
      );
    });
    await new Promise<void>((done) => otherSite.listen(0, '127.0.0.1', () => done()));
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_FLAGS });
    context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
    page = await context.newPage();
    page.on('console', (message) => {
      if (/Content Security Policy/i.test(message.text())) cspViolations.push(message.text());
    });
  });

  afterAll(async () => {
    await browser?.close();
    await closeApp?.();
    await new Promise<void>((done) => (otherSite ? otherSite.close(() => done()) : done()));
  });

  it('ships its JS and CSS in under 60 KB gzipped', () => {
    const sizes = ['app.js', 'app.css'].map((name) => gzipSync(readFileSync(join(ROOT, 'dist', 'dashboard', name))).length);
    expect(sizes.reduce((sum, size) => sum + size, 0)).toBeLessThan(60 * 1024);
  });

  it('signs in with the billing key, which appears nowhere afterwards', async () => {
    await page.goto(`${origin}/dashboard`);
    expect(page.url()).toBe(`${origin}/dashboard/`);
    // The key field has the focus once the page has asked for its session: type, then Enter.
    await page.getByLabel('Billing key').waitFor();
    await page.waitForLoadState('networkidle');
    await page.keyboard.type(billingKey);
    expect(await seriousViolations(page)).toEqual([]);
    await page.screenshot({ path: join(SCREENSHOTS, 'dashboard-sign-in.png') });
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { level: 1, name: 'API Keys' }).waitFor();
    expect(page.url()).toBe(`${origin}/dashboard/#/keys`);
    expect(await page.content()).not.toContain(billingKey);
    const cookies = await context.cookies();
    expect(cookies.map((cookie) => [cookie.name, cookie.httpOnly, cookie.sameSite, cookie.path])).toEqual([
      ['modelswitch_session', true, 'Strict', '/dashboard'],
    ]);
    expect(JSON.stringify(cookies)).not.toContain(billingKey);
  });

  it('creates a key by keyboard alone, shown once with the docs warning; it works on /v1 and is gone once the dialog closes', async () => {
    // Keyboard only: Enter on the button, type into the focused field, Enter submits, Escape closes.
    await page.getByRole('button', { name: 'Create key' }).focus();
    await page.keyboard.press('Enter');
    const form = page.getByRole('dialog', { name: 'Create API key' });
    await form.waitFor();
    expect(await form.getByLabel('Name').evaluate((input) => input === input.ownerDocument.activeElement)).toBe(true);
    await page.keyboard.type('Browser test key');
    expect(await seriousViolations(page)).toEqual([]);
    await page.keyboard.press('Enter');
    const shown = page.getByRole('dialog', { name: 'Your new key' });
    await shown.waitFor();
    await expect(
      shown.getByText('Copy the full key value — it’s only shown once. Store it somewhere safe before closing the dialog.').count(),
    ).resolves.toBe(1);
    const key = await shown.getByLabel('Your new key').inputValue();
    expect(key).toMatch(/^ms-[0-9A-Za-z]{38}$/);
    expect(await seriousViolations(page)).toEqual([]);
    expect(await authKey(origin, key)).toBe(200);
    await page.keyboard.press('Escape');
    await shown.waitFor({ state: 'detached' });
    await page.getByRole('cell', { name: 'Browser test key', exact: true }).waitFor();
    // Focus went back to the button that opened the first dialog.
    expect(await page.evaluate<string>('document.activeElement.textContent')).toBe('Create key');
    const storage = await page.evaluate<string>(
      'JSON.stringify([{ ...localStorage }, { ...sessionStorage }, document.cookie, location.href])',
    );
    expect(storage).not.toContain(key);
    expect(await page.content()).not.toContain(key);
    expect(await page.evaluate<string>('document.body.innerText')).not.toContain(key);
    expect(JSON.stringify(await context.cookies())).not.toContain(key);
    expect(JSON.stringify(await context.storageState())).not.toContain(key);
    (globalThis as { createdKey?: string }).createdKey = key;
  });

  it('renames, deactivates (403), reactivates, rotates (old secret 401) and deletes (401) the key', async () => {
    const key = (globalThis as { createdKey?: string }).createdKey as string;
    await page.getByRole('button', { name: 'Rename Browser test key' }).click();
    const rename = page.getByRole('dialog', { name: 'Rename Browser test key' });
    await rename.getByLabel('Name').fill('Renamed key');
    await rename.getByRole('button', { name: 'Save' }).click();
    await page.getByRole('cell', { name: 'Renamed key', exact: true }).waitFor();

    await page.getByRole('button', { name: 'Deactivate Renamed key' }).click();
    await page.getByRole('dialog', { name: 'Deactivate Renamed key?' }).getByRole('button', { name: 'Deactivate' }).click();
    await page.getByRole('button', { name: 'Reactivate Renamed key' }).waitFor();
    expect(await authKey(origin, key)).toBe(403);
    await page.getByRole('button', { name: 'Reactivate Renamed key' }).click();
    await page.getByRole('dialog', { name: 'Reactivate Renamed key?' }).getByRole('button', { name: 'Reactivate' }).click();
    await page.getByRole('button', { name: 'Deactivate Renamed key' }).waitFor();
    expect(await authKey(origin, key)).toBe(200);

    await page.getByRole('button', { name: 'Rotate Renamed key' }).click();
    await page.getByRole('dialog', { name: 'Rotate Renamed key' }).getByRole('button', { name: 'Rotate' }).click();
    const shown = page.getByRole('dialog', { name: 'Your rotated key' });
    const rotated = await shown.getByLabel('Your new key').inputValue();
    expect(rotated).toMatch(/^ms-[0-9A-Za-z]{38}$/);
    expect(rotated).not.toBe(key);
    expect(await authKey(origin, rotated)).toBe(200);
    expect(await authKey(origin, key)).toBe(401);
    await shown.getByRole('button', { name: 'Close' }).click();
    await shown.waitFor({ state: 'detached' });
    expect(await page.content()).not.toContain(rotated);
    await page.screenshot({ path: join(SCREENSHOTS, 'dashboard-api-keys.png') });

    await page.getByRole('button', { name: 'Delete Renamed key' }).click();
    const confirm = page.getByRole('dialog', { name: 'Delete Renamed key?' });
    expect(await seriousViolations(page)).toEqual([]);
    await confirm.getByRole('button', { name: 'Delete key' }).click();
    await page.getByRole('cell', { name: 'Renamed key', exact: true }).waitFor({ state: 'detached' });
    expect(await authKey(origin, rotated)).toBe(401);
  });

  it('lists billing keys on the Billing Keys page', async () => {
    await page.getByRole('link', { name: 'Billing Keys' }).click();
    await page.getByRole('heading', { level: 1, name: 'Billing Keys' }).waitFor();
    await page
      .getByRole('cell', { name: /billing/ })
      .first()
      .waitFor();
    expect(await seriousViolations(page)).toEqual([]);
    await page.screenshot({ path: join(SCREENSHOTS, 'dashboard-billing-keys.png') });
  });

  it("shows the Billing page's balance, reserved, available and 30-day spend equal to /api/account and /api/usage", async () => {
    await page.getByRole('link', { name: 'Billing', exact: true }).click();
    await page.getByRole('heading', { level: 1, name: 'Billing' }).waitFor();
    await page.locator('[data-stat="balance"]').waitFor();
    await page.getByRole('table').waitFor();
    // What the management API answers the billing key: the page must show the same figures.
    const bearer = { authorization: `Bearer ${billingKey}` };
    const account = (await (await fetch(`${origin}/api/account`, { headers: bearer })).json()) as {
      balance: number;
      reserved: number;
      available: number;
    };
    const usage = (await (await fetch(`${origin}/api/usage`, { headers: bearer })).json()) as { total: { requests: number; cost: number } };
    const spent = usage.total.cost;
    const usd = (value: number) =>
      new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD', minimumFractionDigits: 2, maximumFractionDigits: 6 }).format(
        value,
      );
    expect(await page.locator('[data-stat="balance"]').textContent()).toBe(usd(account.balance));
    expect(await page.locator('[data-stat="reserved"]').textContent()).toBe(usd(account.reserved));
    expect(await page.locator('[data-stat="available"]').textContent()).toBe(usd(account.available));
    expect(await page.locator('[data-stat="spent"]').textContent()).toBe(usd(spent));
    expect(await page.locator('[data-stat="requests"]').textContent()).toBe(String(usage.total.requests));
    expect(account.balance).toBeCloseTo(25 - 0.42 - 1.1 - 0.73, 10);
    expect(spent).toBeCloseTo(0.42 + 1.1 + 0.73, 10);
    expect(await page.locator('figure.chart rect').count()).toBe(3);
    expect(await page.locator('table.transactions tbody tr').count()).toBe(4);
    expect(await seriousViolations(page)).toEqual([]);
    await page.screenshot({ path: join(SCREENSHOTS, 'dashboard-billing.png'), fullPage: true });
    const csv = await page.evaluate(() => fetch('api/transactions.csv').then((response) => response.text()));
    expect(csv.trim().split('\r\n')).toHaveLength(5);
  });

  it('works at 390 px wide: no horizontal scrolling, no serious accessibility violation', async () => {
    const narrow = await context.newPage();
    await narrow.setViewportSize({ width: 390, height: 844 });
    for (const hash of ['#/keys', '#/billing']) {
      await narrow.goto(`${origin}/dashboard/${hash}`);
      await narrow.locator('h1').first().waitFor();
      await narrow
        .locator('[aria-busy="true"]')
        .first()
        .waitFor({ state: 'detached' })
        .catch(() => {});
      await narrow.waitForLoadState('networkidle');
      expect(await narrow.evaluate<number>('document.documentElement.scrollWidth')).toBeLessThanOrEqual(390);
      expect(await seriousViolations(narrow)).toEqual([]);
    }
    await narrow.goto(`${origin}/dashboard/#/keys`);
    await narrow.getByRole('heading', { level: 1, name: 'API Keys' }).waitFor();
    await narrow.waitForLoadState('networkidle');
    await narrow.screenshot({ path: join(SCREENSHOTS, 'dashboard-mobile.png'), fullPage: true });
    await narrow.close();
  });

  it('refuses a request without the CSRF token and a form posted from another origin (403 csrf_check_failed)', async () => {
    const noToken = await page.evaluate(() =>
      fetch('api/keys', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"name":"no token"}' }).then(
        async (response) => ({
          status: response.status,
          body: await response.json(),
        }),
      ),
    );
    expect(noToken).toEqual({
      status: 403,
      body: {
        error: {
          message: 'Missing or wrong CSRF token: reload the dashboard and try again',
          type: 'permission_error',
          code: 'csrf_check_failed',
        },
      },
    });
    const attacker = await context.newPage();
    await attacker.goto(`http://127.0.0.1:${(otherSite.address() as AddressInfo).port}/`);
    await attacker.waitForURL(`${origin}/dashboard/api/keys`);
    expect(JSON.parse((await attacker.locator('body').textContent()) ?? '')).toEqual({
      error: {
        message: 'Cross-origin request refused: state-changing requests must come from the dashboard page itself',
        type: 'permission_error',
        code: 'csrf_check_failed',
      },
    });
    await attacker.close();
    const keys = await store.listKeys(accountId, { type: 'proxy', limit: 100 });
    expect(keys.keys.map((key) => key.name)).not.toContain('forged');
  });

  it('signs out: back to the sign-in form, and the old cookie no longer works', async () => {
    const [cookie] = await context.cookies();
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByLabel('Billing key').waitFor();
    expect(await context.cookies()).toEqual([]);
    const replay = await fetch(`${origin}/dashboard/api/keys`, { headers: { cookie: `${cookie?.name}=${cookie?.value}` } });
    expect(replay.status).toBe(401);
    expect(cspViolations).toEqual([]);
  });
});
