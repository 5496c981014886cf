// The dashboard page: plain DOM, no framework (three pages of forms and tables do not need one).
// Every URL is relative to the page (/dashboard/ or wherever the host mounted the router). The full
// key value only ever lives in the shown-once dialog's DOM and is dropped when it closes: never in a
// URL, storage, a cookie or the console.

import type { PublicKey } from '../../keys/public-key.js';
import type { PublicLedgerEntry } from '../../keys/public-ledger-entry.js';

interface Session {
  kind: 'billing-key' | 'identify';
  accountId: string;
  subject: string;
  keyId: number | null;
  expiresAt: string | null;
  csrfToken: string;
}

/** A key as the dashboard's `api/keys` answers it: the management API's fields plus its type and rotation deadline. */
type DashboardKey = PublicKey & { type: 'proxy' | 'billing'; previousKeyExpiresAt: string | null };

/** A ledger entry as the dashboard's `api/transactions` answers it: the management API's own shape. */
type Transaction = PublicLedgerEntry;

/** A group of `api/usage?group_by=day,model`. */
interface UsageRow {
  date: string;
  model: string;
  requests: number;
  promptTokens: number;
  completionTokens: number;
  cost: number;
}

class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly code: string,
  ) {
    super(message);
  }
}

type Child = Node | string | null | undefined | false;
type Attributes = Record<string, string | boolean | ((event: Event) => void) | undefined>;

/** Makes an element: attributes (`on…` become listeners, `true` a bare attribute) and children. */
function h<K extends keyof HTMLElementTagNameMap>(tag: K, attributes: Attributes = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === false) continue;
    if (typeof value === 'function') element.addEventListener(name.slice(2), value);
    else if (value === true) element.setAttribute(name, '');
    else element.setAttribute(name, value);
  }
  for (const child of children) if (child !== null && child !== undefined && child !== false) element.append(child);
  return element;
}

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag: string, attributes: Record<string, string | number>, ...children: Node[]): SVGElement {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  element.append(...children);
  return element;
}

let session: Session | null = null;
const root = document.getElementById('app') as HTMLElement;

async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (session !== null && method !== 'GET') headers['X-CSRF-Token'] = session.csrfToken;
  let response: Response;
  try {
    response = await fetch(path, {
      method,
      headers,
      credentials: 'same-origin',
      cache: 'no-store',
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
  } catch {
    throw new ApiError('The gateway could not be reached. Check your connection and retry.', 0, 'network_error');
  }
  const text = await response.text();
  let payload: unknown = null;
  try {
    payload = text === '' ? null : JSON.parse(text);
  } catch {
    payload = null;
  }
  if (!response.ok) {
    const error = (payload as { error?: { message?: string; code?: string } } | null)?.error;
    const failure = new ApiError(error?.message ?? `The gateway answered ${response.status}`, response.status, error?.code ?? 'unknown');
    if (failure.code === 'session_required' && path !== 'api/session') {
      session = null;
      renderSignIn('Your session ended. Sign in again.');
    }
    throw failure;
  }
  return payload as T;
}

const money = new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD', minimumFractionDigits: 2, maximumFractionDigits: 6 });
function usd(value: number): string {
  return money.format(value);
}
function when(iso: string | null, never = '—'): string {
  if (iso === null) return never;
  const date = new Date(iso);
  return `${date.toISOString().slice(0, 10)} ${date.toISOString().slice(11, 16)} UTC`;
}

function message(kind: 'error' | 'info', text: string): HTMLElement {
  return h('p', kind === 'error' ? { class: 'message error', role: 'alert' } : { class: 'message', role: 'status' }, text);
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : 'Something went wrong';
}

// ---------------------------------------------------------------- dialogs

/** Opens a modal dialog (Escape closes it; focus returns to what opened it) and removes it once closed. */
function openDialog(
  title: string,
  build: (dialog: HTMLDialogElement, close: () => void) => Child[],
  onClose?: () => void,
): HTMLDialogElement {
  const opener = document.activeElement as HTMLElement | null;
  const titleId = `dialog-title-${Math.random().toString(36).slice(2)}`;
  const dialog = h('dialog', { 'aria-labelledby': titleId });
  const close = () => dialog.close();
  dialog.append(h('h2', { id: titleId }, title), ...build(dialog, close).filter((child): child is Node | string => Boolean(child)));
  dialog.addEventListener('close', () => {
    onClose?.();
    dialog.remove();
    opener?.focus();
  });
  document.body.append(dialog);
  dialog.showModal();
  return dialog;
}

function field(label: string, input: HTMLInputElement | HTMLSelectElement, hint?: string): HTMLElement {
  const id = `field-${Math.random().toString(36).slice(2)}`;
  input.id = id;
  const hintId = hint === undefined ? undefined : `${id}-hint`;
  if (hintId !== undefined) input.setAttribute('aria-describedby', hintId);
  return h('div', { class: 'field' }, h('label', { for: id }, label), input, hint === undefined ? null : h('small', { id: hintId }, hint));
}

/** The shown-once dialog: the key, a Copy button and the docs' warning. Closing it drops the key from the page. */
function showKeyOnce(key: string, title: string, after: () => void): void {
  let value: HTMLInputElement | null = null;
  openDialog(
    title,
    (_dialog, close) => {
      value = h('input', { type: 'text', readonly: true, class: 'key-value', autocomplete: 'off', spellcheck: 'false' });
      value.value = key;
      const status = h('p', { class: 'message', role: 'status' });
      const copy = h(
        'button',
        {
          type: 'button',
          onclick: async () => {
            try {
              await navigator.clipboard.writeText(value?.value ?? '');
              status.textContent = 'Copied to the clipboard.';
            } catch {
              value?.select();
              status.textContent = 'Select the key and copy it with Ctrl+C (or ⌘C).';
            }
          },
        },
        'Copy',
      );
      return [
        h('p', { class: 'warning' }, 'Copy the full key value — it’s only shown once. Store it somewhere safe before closing the dialog.'),
        field('Your new key', value),
        status,
        h('div', { class: 'actions' }, copy, h('button', { type: 'button', class: 'secondary', onclick: close }, 'Close')),
      ];
    },
    () => {
      if (value !== null) {
        value.value = '';
        value.remove();
      }
      value = null;
      after();
    },
  );
}

function confirmDialog(title: string, text: string, action: string, run: () => Promise<void>, danger = false): void {
  openDialog(title, (_dialog, close) => {
    const error = h('div');
    const button = h(
      'button',
      { type: 'button', class: danger ? 'danger' : undefined, onclick: () => runThenClose(run, button, error, close) },
      action,
    );
    return [h('p', {}, text), error, actionsRow(button, close)];
  });
}

/** A dialog with a form: `submit` returns to close it, throws to show the error in it. */
function formDialog(title: string, fields: HTMLElement[], submitLabel: string, submit: () => Promise<void>): void {
  openDialog(title, (_dialog, close) => {
    const error = h('div');
    const button = h('button', { type: 'submit' }, submitLabel);
    const form = h(
      'form',
      {
        novalidate: true,
        onsubmit: (event: Event) => {
          event.preventDefault();
          return runThenClose(submit, button, error, close);
        },
      },
      ...fields,
      error,
      actionsRow(button, close),
    );
    return [form];
  });
}

/** A dialog's action: `button` disabled while `run` runs; closes the dialog when it returns, shows its error in `error` when it throws. */
async function runThenClose(run: () => Promise<void>, button: HTMLButtonElement, error: HTMLElement, close: () => void): Promise<void> {
  button.disabled = true;
  try {
    await run();
    close();
  } catch (failure) {
    error.replaceChildren(message('error', errorText(failure)));
    button.disabled = false;
  }
}

/** A dialog's buttons: its action, then Cancel. */
function actionsRow(button: HTMLButtonElement, close: () => void): HTMLElement {
  return h('div', { class: 'actions' }, button, h('button', { type: 'button', class: 'secondary', onclick: close }, 'Cancel'));
}

// ---------------------------------------------------------------- sign-in and layout

function renderSignIn(notice?: string): void {
  const key = h('input', { type: 'password', name: 'key', autocomplete: 'off', spellcheck: 'false', required: true });
  const error = h('div');
  const button = h('button', { type: 'submit' }, 'Sign in');
  const form = h(
    'form',
    {
      class: 'card sign-in',
      onsubmit: async (event: Event) => {
        event.preventDefault();
        button.disabled = true;
        try {
          const value = key.value.trim();
          session = await api<Session>('POST', 'api/session', { key: value });
          key.value = '';
          if (location.hash === '') location.hash = '#/keys';
          renderPage();
        } catch (failure) {
          key.value = '';
          error.replaceChildren(message('error', errorText(failure)));
          button.disabled = false;
          key.focus();
        }
      },
    },
    h('h1', {}, 'ModelSwitch dashboard'),
    notice === undefined ? null : message('info', notice),
    field('Billing key', key, 'Paste a billing key (mk-…). It is exchanged for a session at once and not kept in the browser.'),
    error,
    button,
  );
  document.title = 'Sign in · ModelSwitch dashboard';
  root.replaceChildren(form);
  key.focus();
}

const PAGES = [
  { hash: '#/keys', title: 'API Keys' },
  { hash: '#/billing-keys', title: 'Billing Keys' },
  { hash: '#/billing', title: 'Billing' },
] as const;

function layout(title: string, ...content: Child[]): void {
  const current = PAGES.find((page) => page.hash === location.hash)?.hash ?? '#/keys';
  const nav = h(
    'nav',
    { 'aria-label': 'Dashboard' },
    h(
      'ul',
      {},
      ...PAGES.map((page) =>
        h('li', {}, h('a', { href: page.hash, 'aria-current': page.hash === current ? 'page' : undefined }, page.title)),
      ),
    ),
  );
  const signOut = h(
    'button',
    {
      type: 'button',
      class: 'secondary',
      onclick: async () => {
        try {
          await api('DELETE', 'api/session');
        } finally {
          session = null;
          renderSignIn('You are signed out.');
        }
      },
    },
    'Sign out',
  );
  const header = h(
    'header',
    {},
    h('span', { class: 'brand' }, 'ModelSwitch'),
    nav,
    h('div', { class: 'who' }, h('span', {}, session?.subject ?? ''), session?.kind === 'billing-key' ? signOut : null),
  );
  document.title = `${title} · ModelSwitch dashboard`;
  root.replaceChildren(header, h('div', { class: 'content' }, h('h1', { tabindex: '-1' }, title), ...content));
}

// ---------------------------------------------------------------- API Keys and Billing Keys

function keyForm(type: 'proxy' | 'billing') {
  const name = h('input', { type: 'text', maxlength: '100', required: true, autocomplete: 'off' });
  const expires = h('input', { type: 'date' });
  const limit = h('input', { type: 'number', min: '0', step: '0.01', inputmode: 'decimal' });
  const reset = h(
    'select',
    {},
    h('option', { value: '' }, 'Never (lifetime)'),
    h('option', { value: 'daily' }, 'Daily'),
    h('option', { value: 'weekly' }, 'Weekly'),
    h('option', { value: 'monthly' }, 'Monthly'),
  );
  const requests = h('input', { type: 'number', min: '1', step: '1', inputmode: 'numeric' });
  const interval = h('input', { type: 'text', placeholder: '10s', autocomplete: 'off' });
  const models = h('input', { type: 'text', placeholder: 'gpt-4o-mini, claude-*', autocomplete: 'off' });
  const fields = [
    field('Name', name),
    field('Expires (optional)', expires, 'The key stops working at midnight UTC of this day.'),
    field('Spend limit in USD (optional)', limit),
    field('Limit resets', reset),
    field('Rate limit: requests (optional)', requests),
    field('Rate limit: per interval', interval, 'Like 10s, 1m, 1h or 1d.'),
    type === 'proxy'
      ? field('Allowed models (optional)', models, 'Comma-separated; a name ending in * allows every model it starts.')
      : null,
  ].filter((element): element is HTMLElement => element !== null);
  const body = () => {
    const payload: Record<string, unknown> = { type, name: name.value };
    if (expires.value !== '') payload.expires_at = expires.value;
    if (limit.value !== '') payload.limit = Number(limit.value);
    if (reset.value !== '') payload.limit_reset = reset.value;
    if (requests.value !== '' || interval.value !== '')
      payload.rate_limit = { requests: Number(requests.value), interval: interval.value || '10s' };
    const names = models.value
      .split(',')
      .map((model) => model.trim())
      .filter(Boolean);
    if (type === 'proxy' && names.length > 0) payload.models = names;
    return payload;
  };
  return { fields, body, name };
}

async function renderKeys(type: 'proxy' | 'billing'): Promise<void> {
  const title = type === 'proxy' ? 'API Keys' : 'Billing Keys';
  const list = h('div', { 'aria-busy': 'true' }, h('p', { class: 'muted' }, 'Loading…'));
  const create = h(
    'button',
    {
      type: 'button',
      onclick: () => {
        const form = keyForm(type);
        formDialog(`Create ${type === 'proxy' ? 'API' : 'billing'} key`, form.fields, 'Create key', async () => {
          const created = await api<DashboardKey & { key: string }>('POST', 'api/keys', form.body());
          // The dialog closes first; the shown-once dialog opens over the list.
          setTimeout(() => showKeyOnce(created.key, 'Your new key', () => void load()), 0);
        });
      },
    },
    'Create key',
  );
  const intro =
    type === 'proxy'
      ? 'Proxy keys (ms-) authenticate inference requests (/v1).'
      : 'Billing keys (mk-) sign in here and call the key management API (/api). Keep them on servers.';
  layout(title, h('div', { class: 'toolbar' }, h('p', { class: 'muted' }, intro), create), list);

  async function load(): Promise<void> {
    list.setAttribute('aria-busy', 'true');
    try {
      const { keys, signedInKeyId } = await api<{ keys: DashboardKey[]; signedInKeyId: number | null }>('GET', `api/keys?type=${type}`);
      list.replaceChildren(
        keys.length === 0
          ? h('p', { class: 'empty' }, `No ${type === 'proxy' ? 'API' : 'billing'} keys yet. Create one to get started.`)
          : keyTable(keys, signedInKeyId),
      );
    } catch (failure) {
      list.replaceChildren(message('error', errorText(failure)));
    } finally {
      list.setAttribute('aria-busy', 'false');
    }
  }

  function keyTable(keys: DashboardKey[], signedInKeyId: number | null): HTMLElement {
    const head = ['Name', 'Prefix', 'Status', 'Created', 'Expires', 'Last used', 'Usage / limit', 'Actions'];
    return h(
      'table',
      { class: 'keys' },
      h('caption', { class: 'visually-hidden' }, title),
      h('thead', {}, h('tr', {}, ...head.map((text) => h('th', { scope: 'col' }, text)))),
      h('tbody', {}, ...keys.map((key) => keyRow(key, key.id === signedInKeyId))),
    );
  }

  function keyRow(key: DashboardKey, signedIn: boolean): HTMLElement {
    const cell = (label: string, ...content: Child[]) => h('td', { 'data-label': label }, ...content);
    const status = key.active ? h('span', { class: 'badge ok' }, 'Active') : h('span', { class: 'badge off' }, 'Inactive');
    const limit = key.limit === null ? 'no limit' : `${usd(key.limit)}${key.limitReset ? ` ${key.limitReset}` : ''}`;
    const action = (label: string, run: () => void, danger = false) =>
      h(
        'button',
        { type: 'button', class: danger ? 'small danger' : 'small secondary', 'aria-label': `${label} ${key.name}`, onclick: run },
        label,
      );
    return h(
      'tr',
      { 'data-key-id': String(key.id) },
      cell('Name', h('strong', {}, key.name), signedIn ? h('small', { class: 'muted' }, ' (this session)') : null),
      cell('Prefix', h('code', {}, `${key.prefix}…`)),
      cell('Status', status),
      cell('Created', when(key.createdAt)),
      cell('Expires', when(key.expiresAt, 'Never')),
      cell('Last used', when(key.lastUsedAt, 'Never')),
      cell('Usage / limit', `${usd(key.usage)} / ${limit}`),
      cell(
        'Actions',
        h(
          'div',
          { class: 'row-actions' },
          action('Rename', () => {
            const name = h('input', { type: 'text', maxlength: '100', required: true, autocomplete: 'off' });
            name.value = key.name;
            formDialog(`Rename ${key.name}`, [field('Name', name)], 'Save', async () => {
              await api('PATCH', `api/keys/${key.id}`, { name: name.value });
              await load();
            });
          }),
          action(key.active ? 'Deactivate' : 'Reactivate', () => {
            const next = !key.active;
            confirmDialog(
              `${next ? 'Reactivate' : 'Deactivate'} ${key.name}?`,
              next ? 'Requests with this key will work again.' : 'Requests with this key will be refused (403) until you reactivate it.',
              next ? 'Reactivate' : 'Deactivate',
              async () => {
                await api('PATCH', `api/keys/${key.id}`, { active: next });
                await load();
              },
            );
          }),
          action('Rotate', () => {
            const grace = h(
              'select',
              {},
              h('option', { value: '0s' }, 'End it now'),
              h('option', { value: '1h' }, '1 hour'),
              h('option', { value: '1d' }, '1 day'),
              h('option', { value: '7d' }, '7 days'),
            );
            formDialog(
              `Rotate ${key.name}`,
              [h('p', {}, 'A new secret for this key: same name, limits and usage.'), field('The current secret keeps working for', grace)],
              'Rotate',
              async () => {
                const rotated = await api<DashboardKey & { key: string }>('POST', `api/keys/${key.id}/rotate`, {
                  grace_period: grace.value,
                });
                setTimeout(() => showKeyOnce(rotated.key, 'Your rotated key', () => void load()), 0);
              },
            );
          }),
          action(
            'Delete',
            () =>
              confirmDialog(
                `Delete ${key.name}?`,
                `Requests with ${key.prefix}… will be refused (401) at once. This cannot be undone.`,
                'Delete key',
                async () => {
                  await api('DELETE', `api/keys/${key.id}`);
                  await load();
                },
                true,
              ),
            true,
          ),
        ),
      ),
    );
  }

  await load();
}

// ---------------------------------------------------------------- Billing

const CHART_COLORS = 8;

function spendChart(rows: UsageRow[], from: string, to: string): HTMLElement {
  const days: string[] = [];
  for (let time = Date.parse(`${from}T00:00:00Z`); time <= Date.parse(`${to}T00:00:00Z`); time += 86_400_000) {
    days.push(new Date(time).toISOString().slice(0, 10));
  }
  const models = [...new Set(rows.map((row) => row.model))].sort();
  const cost = new Map<string, number>();
  for (const row of rows) cost.set(`${row.date}|${row.model}`, (cost.get(`${row.date}|${row.model}`) ?? 0) + row.cost);
  const totals = days.map((day) => models.reduce((sum, model) => sum + (cost.get(`${day}|${model}`) ?? 0), 0));
  const max = Math.max(...totals, 0);
  const width = 600;
  const height = 200;
  const barWidth = width / days.length;
  const bars: Node[] = [];
  days.forEach((day, index) => {
    let y = height;
    models.forEach((model, modelIndex) => {
      const value = cost.get(`${day}|${model}`) ?? 0;
      if (value <= 0 || max === 0) return;
      const barHeight = (value / max) * (height - 10);
      y -= barHeight;
      bars.push(
        svg(
          'rect',
          { x: index * barWidth + 1, y, width: Math.max(1, barWidth - 2), height: barHeight, class: `series-${modelIndex % CHART_COLORS}` },
          svg('title', {}, document.createTextNode(`${day} ${model}: ${usd(value)}`)),
        ),
      );
    });
  });
  const chart = svg(
    'svg',
    { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': `Daily spend by model from ${from} to ${to}; highest day ${usd(max)}` },
    svg('line', { x1: 0, y1: height, x2: width, y2: height, class: 'axis' }),
    ...bars,
  );
  const legend = h(
    'ul',
    { class: 'legend' },
    ...models.map((model, index) =>
      h('li', {}, h('span', { class: `swatch series-${index % CHART_COLORS}`, 'aria-hidden': 'true' }), model),
    ),
  );
  return h(
    'figure',
    { class: 'chart' },
    chart,
    h('figcaption', {}, models.length === 0 ? 'No spend in the last 30 days.' : `Daily spend by model, ${from} to ${to} (UTC).`),
    legend,
  );
}

async function renderBilling(): Promise<void> {
  const summary = h('div', { class: 'cards', 'aria-busy': 'true' }, h('p', { class: 'muted' }, 'Loading…'));
  const chart = h('div');
  const table = h('div');
  const exportLink = h('a', { href: 'api/transactions.csv', download: 'transactions.csv', class: 'button secondary' }, 'Export CSV');
  layout(
    'Billing',
    summary,
    h('h2', {}, 'Spend, last 30 days'),
    chart,
    h('div', { class: 'toolbar' }, h('h2', {}, 'Transactions'), exportLink),
    table,
  );
  // The last 30 UTC days, today included: what /api/usage answers by default.
  const to = new Date().toISOString().slice(0, 10);
  const from = new Date(Date.parse(`${to}T00:00:00Z`) - 29 * 86_400_000).toISOString().slice(0, 10);
  const card = (label: string, value: string, id: string) =>
    h('div', { class: 'card stat' }, h('span', { class: 'muted' }, label), h('strong', { 'data-stat': id }, value));
  try {
    const [account, usage] = await Promise.all([
      api<{ balance: number; reserved: number; available: number }>('GET', 'api/account'),
      api<{ usage: UsageRow[]; total: { requests: number; cost: number } }>('GET', `api/usage?from=${from}&to=${to}&group_by=day,model`),
    ]);
    summary.replaceChildren(
      card('Balance', usd(account.balance), 'balance'),
      card('Reserved', usd(account.reserved), 'reserved'),
      card('Available', usd(account.available), 'available'),
      card('Spent, last 30 days', usd(usage.total.cost), 'spent'),
      card('Requests, last 30 days', String(usage.total.requests), 'requests'),
    );
    chart.replaceChildren(spendChart(usage.usage, from, to));
  } catch (failure) {
    summary.replaceChildren(message('error', errorText(failure)));
  } finally {
    summary.setAttribute('aria-busy', 'false');
  }
  // Paging: `before` cursors of the pages seen, so Newer goes back.
  const cursors: Array<number | undefined> = [undefined];
  async function page(index: number): Promise<void> {
    table.setAttribute('aria-busy', 'true');
    try {
      const before = cursors[index];
      const result = await api<{ transactions: Transaction[]; has_more: boolean }>(
        'GET',
        `api/transactions?limit=20${before === undefined ? '' : `&before=${before}`}`,
      );
      const last = result.transactions[result.transactions.length - 1];
      if (result.has_more && last !== undefined) cursors[index + 1] = last.id;
      const rows = result.transactions.map((entry) =>
        h(
          'tr',
          {},
          h('td', { 'data-label': 'Date' }, when(entry.createdAt)),
          h('td', { 'data-label': 'Type' }, entry.type),
          h('td', { 'data-label': 'Amount', class: entry.amount < 0 ? 'num negative' : 'num' }, usd(entry.amount)),
          h('td', { 'data-label': 'Balance after', class: 'num' }, usd(entry.balanceAfter)),
          h('td', { 'data-label': 'Key' }, entry.keyId === null ? '—' : String(entry.keyId)),
          h('td', { 'data-label': 'Model' }, entry.model ?? '—'),
          h(
            'td',
            { 'data-label': 'Tokens', class: 'num' },
            entry.promptTokens === null ? '—' : `${entry.promptTokens} + ${entry.completionTokens ?? 0}`,
          ),
          h('td', { 'data-label': 'Reference' }, entry.reference ?? entry.requestId ?? '—'),
        ),
      );
      const pager = h(
        'div',
        { class: 'pager' },
        h('button', { type: 'button', class: 'secondary', disabled: index === 0, onclick: () => void page(index - 1) }, 'Newer'),
        h('span', { class: 'muted' }, `Page ${index + 1}`),
        h('button', { type: 'button', class: 'secondary', disabled: !result.has_more, onclick: () => void page(index + 1) }, 'Older'),
      );
      table.replaceChildren(
        result.transactions.length === 0
          ? h('p', { class: 'empty' }, 'No transactions yet.')
          : h(
              'table',
              { class: 'transactions' },
              h('caption', { class: 'visually-hidden' }, 'Transactions, newest first'),
              h(
                'thead',
                {},
                h(
                  'tr',
                  {},
                  ...['Date', 'Type', 'Amount', 'Balance after', 'Key', 'Model', 'Tokens', 'Reference'].map((text) =>
                    h('th', { scope: 'col' }, text),
                  ),
                ),
              ),
              h('tbody', {}, ...rows),
            ),
        result.transactions.length === 0 && index === 0 ? '' : pager,
      );
    } catch (failure) {
      table.replaceChildren(message('error', errorText(failure)));
    } finally {
      table.setAttribute('aria-busy', 'false');
    }
  }
  await page(0);
}

// ---------------------------------------------------------------- start

function renderPage(): void {
  if (session === null) {
    renderSignIn();
    return;
  }
  const hash = location.hash;
  if (hash === '#/billing') void renderBilling();
  else if (hash === '#/billing-keys') void renderKeys('billing');
  else void renderKeys('proxy');
  (root.querySelector('h1') as HTMLElement | null)?.focus();
}

window.addEventListener('hashchange', renderPage);

async function start(): Promise<void> {
  try {
    session = await api<Session>('GET', 'api/session');
  } catch (failure) {
    session = null;
    if (failure instanceof ApiError && failure.code !== 'session_required') {
      root.replaceChildren(message('error', errorText(failure)));
      return;
    }
  }
  renderPage();
}

void start();
