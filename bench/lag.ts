/**
 * Replication lag during live load, measured in time.
 *
 * Two samplers run for the whole window:
 *  - on the SOURCE, every ~5 ms: (clock_timestamp(), pg_current_wal_flush_lsn()), i.e. when the
 *    source had durably written how much WAL;
 *  - on the TARGET, every 100 ms: (clock_timestamp(), the contestant's applied position A):
 *    the end LSN of the last source commit it has applied (native: the subscription origin's
 *    remote_lsn; syncctl: syncctl.checkpoints.commit_lsn).
 * lag(t) = t - (the moment the source's flush position first passed A(t)); 0 when the source had
 * flushed nothing beyond A(t) at its last sample before t. This is the age of the oldest change
 * the target does not have yet, measured conservatively from the first flushed WAL byte after
 * the applied commit (so it includes the few-ms run time of the next transaction), to within the
 * source sampling interval (linear interpolation between two source samples). Both servers run
 * on this machine, so their clocks are the same clock.
 *
 * A third sampler reads pg_stat_replication.replay_lag of the contestant's walsender every 100 ms
 * (the server's own estimate; a native subscriber reports "applied" = received, so this is
 * informational only).
 */
import type { Db } from './db.ts';

const SOURCE_SAMPLE_MS = 5;
const TARGET_SAMPLE_MS = 100;

export interface LagSamples {
  /** [server time s, flush LSN as number] */
  readonly source: [number, number][];
  /** [server time s, applied LSN as number] */
  readonly target: [number, number][];
  /** [server time s, replay_lag s | null] */
  readonly replay: [number, number | null][];
}

export class LagProbe {
  private running = true;
  private readonly loops: Promise<void>[] = [];
  readonly samples: LagSamples = { source: [], target: [], replay: [] };

  constructor(srcDense: Db, srcReplay: Db, tgt: Db, appliedSql: string, walsenderApp: string) {
    this.loops.push(this.loop(SOURCE_SAMPLE_MS, async () => {
      const r = await srcDense.client.query({
        text: `SELECT extract(epoch from clock_timestamp())::float8, (pg_current_wal_flush_lsn() - '0/0')::float8`, rowMode: 'array',
      });
      const row = r.rows[0] as [number, number];
      this.samples.source.push([Number(row[0]), Number(row[1])]);
    }));
    this.loops.push(this.loop(TARGET_SAMPLE_MS, async () => {
      const r = await tgt.client.query({ text: appliedSql, rowMode: 'array' });
      const row = r.rows[0] as [number, number];
      this.samples.target.push([Number(row[0]), Number(row[1])]);
    }));
    this.loops.push(this.loop(TARGET_SAMPLE_MS, async () => {
      const r = await srcReplay.client.query({
        text: `SELECT extract(epoch from clock_timestamp())::float8,
                      (SELECT extract(epoch from replay_lag)::float8 FROM pg_stat_replication WHERE application_name = $1 LIMIT 1)`,
        values: [walsenderApp], rowMode: 'array',
      });
      const row = r.rows[0] as [number, number | null];
      this.samples.replay.push([Number(row[0]), row[1] === null ? null : Number(row[1])]);
    }));
  }

  /** The first sampling error, if any (sampling stops at it; stop() rethrows it). */
  private failure: unknown;

  private async loop(intervalMs: number, sample: () => Promise<void>): Promise<void> {
    let next = performance.now();
    while (this.running) {
      try {
        await sample();
      } catch (error) {
        this.failure ??= error;
        return;
      }
      next += intervalMs;
      const wait = next - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      else next = performance.now();
    }
  }

  async stop(): Promise<LagSamples> {
    this.running = false;
    await Promise.all(this.loops);
    if (this.failure) throw this.failure;
    return this.samples;
  }
}

/** Time lag (seconds) at every target sample inside [from, to]. */
export function timeLags(samples: LagSamples, from: number, to: number): number[] {
  const src = samples.source;
  const lags: number[] = [];
  for (const [t, applied] of samples.target) {
    if (t < from || t > to) continue;
    // Last source sample at or before t.
    let hi = upperBound(src, t) - 1;
    if (hi < 0) continue;
    if (src[hi]![1] <= applied) {
      lags.push(0);
      continue;
    }
    // First source sample whose flush position is beyond `applied` (positions are monotone).
    let lo = 0;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (src[mid]![1] > applied) hi = mid;
      else lo = mid + 1;
    }
    if (lo === 0) continue; // passed before sampling began: unknown
    const [t1, w1] = src[lo - 1]!;
    const [t2, w2] = src[lo]!;
    const crossed = w2 === w1 ? t2 : t1 + ((applied - w1) / (w2 - w1)) * (t2 - t1);
    lags.push(Math.max(0, t - crossed));
  }
  return lags;
}

function upperBound(src: readonly [number, number][], t: number): number {
  let lo = 0;
  let hi = src.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (src[mid]![0] <= t) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
