/**
 * Diagnostics only (bench/worker-memory.ts --probe): loaded into the worker with `node --import`,
 * it samples the process's memory every 50 ms and appends one JSON line per sample to the file
 * MEMORY_PROBE_OUT names: RSS, the V8 heap (used, committed, per space), external and
 * ArrayBuffer memory. It changes no V8 setting; its own allocations are a few hundred bytes a sample.
 */
import { appendFileSync } from 'node:fs';
import v8 from 'node:v8';

const out = process.env['MEMORY_PROBE_OUT'];
if (out) {
  const mb = (n: number) => Math.round(n / 104857.6) / 10;
  const t0 = performance.now();
  const timer = setInterval(() => {
    const m = process.memoryUsage();
    const spaces: Record<string, [number, number]> = {};
    for (const s of v8.getHeapSpaceStatistics()) spaces[s.space_name.replace('_space', '')] = [mb(s.space_used_size), mb(s.physical_space_size)];
    appendFileSync(out, `${JSON.stringify({
      t: Math.round(performance.now() - t0), rss: mb(m.rss), heapUsed: mb(m.heapUsed), heapTotal: mb(m.heapTotal),
      external: mb(m.external), arrayBuffers: mb(m.arrayBuffers), spaces,
    })}\n`);
  }, 50);
  timer.unref();
}

// MEMORY_PROBE_ALLOC_PROFILE=<file>: V8's sampling heap profiler, keeping the samples of objects
// the garbage collector has freed too (so it shows what allocates, not what is live), written
// as a .heapprofile (Chrome DevTools' format) when the worker gets SIGTERM. With
// MEMORY_PROBE_ALLOC_SURVIVORS=1, objects freed by a scavenge are left out: what remains was
// promoted to the old generation (or is still live).
const allocProfile = process.env['MEMORY_PROBE_ALLOC_PROFILE'];
if (allocProfile) {
  const { Session } = await import('node:inspector');
  const { writeFileSync } = await import('node:fs');
  const session = new Session();
  session.connect();
  session.post('HeapProfiler.enable');
  session.post('HeapProfiler.startSampling', {
    samplingInterval: Number(process.env['MEMORY_PROBE_ALLOC_INTERVAL'] ?? 4096),
    includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: process.env['MEMORY_PROBE_ALLOC_SURVIVORS'] !== '1',
  });
  process.on('SIGTERM', () => {
    session.post('HeapProfiler.stopSampling', (error, result) => {
      if (!error) writeFileSync(allocProfile, JSON.stringify(result.profile));
    });
  });
}
