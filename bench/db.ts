/** A thin client for the harness's own SQL (autocommit: no snapshot is ever held open between statements). */
import pg from 'pg';

export const BENCH_APP = 'syncctl-bench';

export class Db {
  readonly client: pg.Client;
  readonly label: string;

  private constructor(client: pg.Client, label: string) {
    this.client = client;
    this.label = label;
  }

  static async open(url: string, label: string, applicationName = BENCH_APP): Promise<Db> {
    const client = new pg.Client({ connectionString: url, application_name: applicationName });
    client.on('error', () => {});
    await client.connect();
    return new Db(client, label);
  }

  async rows<T extends pg.QueryResultRow = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]> {
    try {
      return (await this.client.query<T>(sql, params)).rows;
    } catch (error) {
      const e = error as Error;
      e.message = `${this.label}: ${e.message}\n  in: ${sql.replace(/\s+/g, ' ').slice(0, 300)}`;
      throw e;
    }
  }

  async exec(sql: string, params?: unknown[]): Promise<void> {
    await this.rows(sql, params);
  }

  /** The first column of the first row, as a string (null when there is no row or it is NULL). */
  async value(sql: string, params?: unknown[]): Promise<string | null> {
    const result = await this.client.query({ text: sql, values: params, rowMode: 'array' }).catch((error: Error) => {
      error.message = `${this.label}: ${error.message}\n  in: ${sql.replace(/\s+/g, ' ').slice(0, 300)}`;
      throw error;
    });
    const v = (result.rows[0] as unknown[] | undefined)?.[0];
    return v === null || v === undefined ? null : String(v);
  }

  async number(sql: string, params?: unknown[]): Promise<number> {
    const v = await this.value(sql, params);
    if (v === null) throw new Error(`${this.label}: expected a number from ${sql}`);
    return Number(v);
  }

  async close(): Promise<void> {
    await this.client.end().catch(() => {});
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Wall-clock seconds (same clock as the servers' clock_timestamp(): one machine). */
export function now(): number {
  return (performance.timeOrigin + performance.now()) / 1000;
}
