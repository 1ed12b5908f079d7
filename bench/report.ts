/** Collected figures, the comparison table and bench/RESULTS.md. */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import type { ContestantName } from './contestants.ts';
import { max, median, min } from './stats.ts';

export type Better = 'higher' | 'lower' | 'none';

export interface AddOptions {
  /** Overrides the contestant names in the table for this row (e.g. pg_recvlogical). */
  readonly labels?: Partial<Record<ContestantName, string>>;
  /**
   * The native figure stands for native-parallel too (the initial copy: a subscription's
   * streaming option does not touch it), shown as "= native" with the same ratio.
   */
  readonly parallelIsNative?: boolean;
}

interface Metric extends AddOptions {
  readonly scenario: string;
  readonly metric: string;
  readonly unit: string;
  readonly better: Better;
  readonly values: Record<ContestantName, number[]>;
}

export class Results {
  private readonly metrics = new Map<string, Metric>();
  /** Column heading of the second native contestant ("native, streaming = parallel"). */
  private readonly parallelLabel: string;

  constructor(parallelLabel: string) {
    this.parallelLabel = parallelLabel;
  }

  add(scenario: string, metric: string, who: ContestantName, value: number, unit: string, better: Better, options: AddOptions = {}): void {
    const id = `${scenario}\u0000${metric}`;
    let m = this.metrics.get(id);
    if (!m) {
      m = { scenario, metric, unit, better, values: { native: [], 'native-parallel': [], syncctl: [] }, ...options };
      this.metrics.set(id, m);
    }
    m.values[who].push(value);
  }

  /** The median of one contestant's values of a metric (NaN when it has none). */
  median(scenario: string, metric: string, who: ContestantName): number {
    return median(this.metrics.get(`${scenario}\u0000${metric}`)?.values[who] ?? []);
  }

  toJSON(): unknown {
    return [...this.metrics.values()];
  }

  /**
   * The markdown table: median [min–max] per contestant and the ratio of syncctl to each native
   * contestant (> 1 = syncctl better). The native-parallel columns appear when it was measured.
   */
  table(): string {
    const metrics = [...this.metrics.values()];
    const withParallel = metrics.some((m) => m.values['native-parallel'].length > 0);
    const lines = withParallel
      ? [
        `| scenario | metric | native median [min–max] | ${this.parallelLabel}: median [min–max] | syncctl median [min–max] | ` +
          `ratio syncctl vs native (> 1 = syncctl better) | ratio syncctl vs ${this.parallelLabel} (> 1 = syncctl better) |`,
        '|---|---|---:|---:|---:|---:|---:|',
      ]
      : [
        '| scenario | metric | native median [min–max] | syncctl median [min–max] | ratio (> 1 = syncctl better) |',
        '|---|---|---:|---:|---:|',
      ];
    // By scenario letter, then in the order the figures were first recorded.
    const ordered = metrics.map((m, i) => ({ m, i }))
      .sort((a, b) => a.m.scenario.slice(0, 2).localeCompare(b.m.scenario.slice(0, 2)) || a.i - b.i).map(({ m }) => m);
    for (const m of ordered) {
      const cell = (who: ContestantName) => {
        if (who === 'native-parallel' && m.parallelIsNative) return m.values.native.length > 0 ? '= native (copy not streamed)' : '—';
        const v = m.values[who];
        if (v.length === 0) return '—';
        const prefix = m.labels?.[who] ? `${m.labels[who]}: ` : '';
        return `${prefix}${fmt(median(v), m.unit)} [${fmt(min(v), m.unit)}–${fmt(max(v), m.unit)}]`;
      };
      const unit = m.metric.includes(m.unit) ? '' : ` (${m.unit})`;
      const head = `| ${m.scenario} | ${m.metric}${unit}${arrow(m.better)} | ${cell('native')} | `;
      lines.push(withParallel
        ? `${head}${cell('native-parallel')} | ${cell('syncctl')} | ${ratio(m, 'native')} | ` +
          `${ratio(m, m.parallelIsNative ? 'native' : 'native-parallel')} |`
        : `${head}${cell('syncctl')} | ${ratio(m, 'native')} |`);
    }
    return lines.join('\n');
  }
}

function arrow(better: Better): string {
  return better === 'higher' ? ' ↑' : better === 'lower' ? ' ↓' : '';
}

/** syncctl against one native contestant, oriented so that > 1 = syncctl better. */
function ratio(m: Metric, against: 'native' | 'native-parallel'): string {
  if (m.better === 'none' || m.values[against].length === 0 || m.values.syncctl.length === 0) return '—';
  const n = median(m.values[against]);
  const s = median(m.values.syncctl);
  // A negative duration (native-parallel's apply starting before the source COMMIT) has no meaningful ratio.
  if (n < 0 || s < 0) return '—';
  const r = m.better === 'higher' ? s / n : n / s;
  if (!Number.isFinite(r)) return n === s ? '1.00' : (r > 0 ? '∞' : '—');
  return `**${r.toFixed(2)}×**`;
}

export function fmt(v: number, unit: string): string {
  if (!Number.isFinite(v)) return 'n/a';
  if (unit.endsWith('/s')) {
    if (Math.abs(v) >= 1e6) return `${(v / 1e6).toFixed(2)} M`;
    if (Math.abs(v) >= 1e4) return `${(v / 1e3).toFixed(0)} k`;
    if (Math.abs(v) >= 1e3) return `${(v / 1e3).toFixed(1)} k`;
    return v.toFixed(0);
  }
  if (unit === 's') return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
  if (unit === 'ms') return v >= 100 ? v.toFixed(0) : v.toFixed(1);
  if (unit === 'MB') return v.toFixed(0);
  return Number.isInteger(v) ? String(v) : v.toFixed(2);
}

/**
 * Replaces this section of RESULTS.md (one per mode, and one per mode and scenario set for ONLY
 * runs: config.ts's SECTION), or appends it; the rest of the file stays.
 */
export function writeResultsFile(file: string, key: string, section: string): void {
  const start = `<!-- bench:${key}:start -->`;
  const end = `<!-- bench:${key}:end -->`;
  const block = `${start}\n${section.trim()}\n${end}`;
  let text = existsSync(file) ? readFileSync(file, 'utf8') : '# syncctl benchmark results\n\n' +
    'Written by `npm run bench` (section "full") and `npm run bench:quick` (section "quick"); a run with ONLY naming other scenarios than the ' +
    'default writes its own section ("full-g" for `ONLY=g`); each run replaces its own section.\n' +
    'The method is described under "How each number is measured" in each section.\n';
  const i = text.indexOf(start);
  const j = text.indexOf(end);
  if (i >= 0 && j > i) text = text.slice(0, i) + block + text.slice(j + end.length);
  else {
    // The full run's section first.
    if (key === 'full') {
      const q = text.indexOf('<!-- bench:quick:start -->');
      text = q >= 0 ? `${text.slice(0, q)}${block}\n\n${text.slice(q)}` : `${text.trimEnd()}\n\n${block}\n`;
    } else text = `${text.trimEnd()}\n\n${block}\n`;
  }
  writeFileSync(file, text);
}
