import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const PAGES = [
  'README.md',
  ...readdirSync(join(ROOT, 'docs'))
    .filter((name) => name.endsWith('.md'))
    .map((name) => `docs/${name}`),
];

/** The page without its code blocks and inline code: a link inside them is an example, not a link. */
function prose(page: string): string {
  return page.replace(/```[\s\S]*?```/g, '').replace(/`[^`\n]*`/g, '');
}

/** The anchors GitHub makes for a page's headings: lower case, punctuation dropped, spaces as hyphens, repeats numbered. */
function anchors(page: string): Set<string> {
  const seen = new Map<string, number>();
  const found = new Set<string>();
  for (const [, heading] of page.replace(/```[\s\S]*?```/g, '').matchAll(/^#{1,6} (.+)$/gm)) {
    const slug = (heading as string)
      .trim()
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/ /g, '-');
    const count = seen.get(slug) ?? 0;
    seen.set(slug, count + 1);
    found.add(count === 0 ? slug : `${slug}-${count}`);
  }
  return found;
}

/** Every relative link of a page (`[text](path#anchor)`, `(#anchor)`), as the page it points to and the anchor. */
function links(file: string): Array<{ link: string; target: string; anchor: string | null }> {
  const text = prose(readFileSync(join(ROOT, file), 'utf8'));
  return [...text.matchAll(/\]\(([^)\s]+)\)/g)]
    .map((match) => match[1] as string)
    .filter((link) => !/^[a-z]+:/i.test(link))
    .map((link) => {
      const [path = '', anchor] = link.split('#', 2);
      const target = path === '' ? file : normalize(relative(ROOT, join(ROOT, dirname(file), path)));
      return { link, target, anchor: anchor ?? null };
    });
}

describe('the links of README.md and docs/', () => {
  it.each(PAGES.map((page) => [page]))('%s: every relative link reaches a file, and every anchor a heading of it', (page) => {
    const broken: string[] = [];
    for (const { link, target, anchor } of links(page)) {
      if (!existsSync(join(ROOT, target))) broken.push(`${link}: no file ${target}`);
      else if (anchor !== null && target.endsWith('.md') && !anchors(readFileSync(join(ROOT, target), 'utf8')).has(anchor)) {
        broken.push(`${link}: no heading #${anchor} in ${target}`);
      }
    }
    expect(broken).toEqual([]);
  });

  it('reach every page of docs/ from the README, directly or through another page', () => {
    const reached = new Set<string>(['README.md']);
    const pending = ['README.md'];
    for (let page = pending.pop(); page !== undefined; page = pending.pop()) {
      for (const { target } of links(page)) {
        if (target.endsWith('.md') && !reached.has(target) && existsSync(join(ROOT, target))) {
          reached.add(target);
          pending.push(target);
        }
      }
    }
    expect(PAGES.filter((page) => !reached.has(page))).toEqual([]);
  });
});
