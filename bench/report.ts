import { readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';

/** One line of the results table. */
export interface Figure {
  scenario: string;
  measure: string;
  value: number | string;
  unit: string;
  /** The issue's target, in words (e.g. '>= 0.95'), when there is one. */
  target?: string;
  /** Whether the target is met; absent when there is no target. */
  pass?: boolean;
}

/** Collects figures, skipped scenarios and raw data; prints the table and writes bench-results.json. */
export class Report {
  readonly figures: Figure[] = [];
  readonly skipped: Array<{ scenario: string; reason: string }> = [];
  readonly raw: Record<string, unknown> = {};

  add(figure: Figure): void {
    this.figures.push(figure);
    const value = typeof figure.value === 'number' ? format(figure.value) : figure.value;
    const verdict = figure.pass === undefined ? '' : figure.pass ? '  ok' : '  MISSED';
    console.log(`  ${figure.measure}: ${value} ${figure.unit}${figure.target ? ` (target ${figure.target})` : ''}${verdict}`);
  }

  /** A ratio with a minimum target. */
  ratio(scenario: string, measure: string, value: number, minimum: number | null): void {
    this.add({
      scenario,
      measure,
      value: round(value, 3),
      unit: '×',
      ...(minimum === null ? {} : { target: `>= ${minimum}`, pass: value >= minimum }),
    });
  }

  skip(scenario: string, reason: string): void {
    this.skipped.push({ scenario, reason });
    console.log(`  skipped: ${reason}`);
  }

  table(): string {
    const rows = [
      ['Scenario', 'Measure', 'Value', 'Target', 'Met'],
      ...this.figures.map((f) => [
        f.scenario,
        f.measure,
        `${typeof f.value === 'number' ? format(f.value) : f.value} ${f.unit}`.trim(),
        f.target ?? '',
        f.pass === undefined ? '' : f.pass ? 'yes' : 'NO',
      ]),
      ...this.skipped.map((s) => [s.scenario, 'skipped', s.reason, '', '']),
    ];
    const widths = (rows[0] as string[]).map((_, column) => Math.max(...rows.map((row) => (row[column] ?? '').length)));
    return rows
      .map((row, index) => {
        const line = row.map((cell, column) => cell.padEnd(widths[column] ?? 0)).join(' | ');
        return index === 0 ? `${line}\n${widths.map((w) => '-'.repeat(w)).join('-|-')}` : line;
      })
      .join('\n');
  }

  /** The figures and skipped scenarios as a Markdown table, misses in bold. */
  markdown(): string {
    const cell = (text: string) => text.replaceAll('|', '\\|');
    const rows = [
      '| Scenario | Measure | Value | Target | Met |',
      '|---|---|---|---|---|',
      ...this.figures.map((f) => {
        const value = `${typeof f.value === 'number' ? format(f.value) : f.value} ${f.unit}`.trim();
        const met = f.pass === undefined ? '' : f.pass ? 'yes' : '**no**';
        return `| ${cell(f.scenario)} | ${cell(f.measure)} | ${f.pass === false ? `**${cell(value)}**` : cell(value)} | ${cell(f.target ?? '')} | ${met} |`;
      }),
      ...this.skipped.map((s) => `| ${cell(s.scenario)} | skipped | ${cell(s.reason)} | | |`),
    ];
    return rows.join('\n');
  }

  /**
   * Replaces what lies between `<!-- bench:<section> -->` and `<!-- /bench:<section> -->` in the
   * Markdown file `path` with the command, Node version, CPU, date and this run's table.
   */
  writeDocs(path: string, section: string, run: { command: string; elapsedS: number }): void {
    const begin = `<!-- bench:${section} -->`;
    const end = `<!-- /bench:${section} -->`;
    const text = readFileSync(path, 'utf8');
    const from = text.indexOf(begin);
    const to = text.indexOf(end);
    if (from < 0 || to < from) throw new Error(`${path} has no ${begin} … ${end} section to write`);
    const cpu = cpus();
    const heading = [
      `\`${run.command}\` on Node ${process.version}, ${cpu[0]?.model.trim() ?? 'unknown CPU'} (${cpu.length} cores),`,
      `${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC; the run took ${round(run.elapsedS / 60, 1)} minutes.`,
    ].join(' ');
    writeFileSync(path, `${text.slice(0, from + begin.length)}\n${heading}\n\n${this.markdown()}\n${text.slice(to)}`);
  }

  write(path: string, context: Record<string, unknown>): void {
    const document = {
      date: new Date().toISOString(),
      node: process.version,
      cpu: cpus()[0]?.model ?? 'unknown',
      cpuCount: cpus().length,
      ...context,
      figures: this.figures,
      skipped: this.skipped,
      raw: this.raw,
    };
    writeFileSync(path, `${JSON.stringify(document, null, 2)}\n`);
  }
}

export function round(value: number, digits = 2): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

function format(value: number): string {
  if (!Number.isFinite(value)) return String(value);
  if (Math.abs(value) >= 1000) return Math.round(value).toLocaleString('en-US');
  return String(round(value, 3));
}
