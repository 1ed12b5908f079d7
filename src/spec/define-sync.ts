import type { SyncSpecInput } from './schema.ts';

/**
 * Marks a spec file's default export. It returns the spec unchanged: validation happens when
 * `syncctl` loads the file, so every error can name the file and the path inside it.
 */
export function defineSync<const T extends SyncSpecInput>(spec: T): T {
  return spec;
}
