import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The built files the page loads, by the name it asks for. */
const ASSET_TYPES: Readonly<Record<string, string>> = {
  'app.js': 'text/javascript; charset=utf-8',
  'app.css': 'text/css; charset=utf-8',
};

interface Asset {
  body: Buffer;
  etag: string;
  type: string;
}

/**
 * Where the built assets are: `dist/dashboard` beside the package's bundle (`dist/index.js` →
 * `dist/dashboard`), or, running from the sources (tsx, vitest), the repository's `dist/dashboard`
 * that `npm run build` writes.
 */
function defaultAssetsDirectory(): string | null {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [join(here, 'dashboard'), join(here, '..', '..', 'dist', 'dashboard')];
  return candidates.find((directory) => existsSync(join(directory, 'app.js'))) ?? null;
}

/** The dashboard's built JS and CSS, read once from disk and kept in memory. */
export class DashboardAssets {
  private readonly directory: string | null;
  private readonly loaded = new Map<string, Asset | null>();

  constructor(directory: string | null) {
    this.directory = directory ?? defaultAssetsDirectory();
  }

  /** Whether the built files were found (else the page says how to build them). */
  get available(): boolean {
    return this.get('app.js') !== null && this.get('app.css') !== null;
  }

  get(name: string): Asset | null {
    const type = ASSET_TYPES[name];
    if (type === undefined || this.directory === null) return null;
    let asset = this.loaded.get(name);
    if (asset === undefined) {
      try {
        const body = readFileSync(join(this.directory, name));
        asset = { body, type, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"` };
      } catch {
        asset = null;
      }
      this.loaded.set(name, asset);
    }
    return asset;
  }

  /** Answers an asset (304 when the browser has it); `false` when there is no such asset. */
  serve(name: string, ifNoneMatch: string | undefined, head: boolean, res: ServerResponse): boolean {
    const asset = this.get(name);
    if (asset === null) return false;
    res.setHeader('Content-Type', asset.type);
    res.setHeader('ETag', asset.etag);
    // Revalidated each time (cheap: a 304), so an upgrade of the package never serves stale code.
    res.setHeader('Cache-Control', 'no-cache');
    if (ifNoneMatch === asset.etag) {
      res.statusCode = 304;
      res.end();
      return true;
    }
    res.statusCode = 200;
    res.setHeader('Content-Length', asset.body.length);
    res.end(head ? undefined : asset.body);
    return true;
  }
}

/** The page: an empty shell that the script fills (no inline script or style, so the CSP can forbid both). */
export function pageHtml(assetsBuilt: boolean): string {
  const body = assetsBuilt
    ? '<main id="app" aria-live="polite"><p class="muted">Loading…</p></main>\n<noscript><p>The dashboard needs JavaScript.</p></noscript>'
    : '<main id="app"><h1>Dashboard assets missing</h1><p>The dashboard’s built files were not found. Run <code>npm run build</code> in the package, or set the <code>assetsDirectory</code> option.</p></main>';
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>ModelSwitch dashboard</title>
<link rel="stylesheet" href="assets/app.css">
<script src="assets/app.js" defer></script>
</head>
<body>
${body}
</body>
</html>
`;
}
