/**
 * A seeded source workload for the differential suite (test/e2e/differential.test.ts): random but
 * valid source transactions as SQL text, over a schema this file also provides. The oracle is the
 * source itself: whatever it committed, the target must hold (mapped).
 *
 * Reproducible: every choice comes from a hand-written PRNG (mulberry32) seeded by `seed`, and
 * every value is derived from it (large values are md5 chains of a drawn salt, never random()),
 * so one seed gives one SQL sequence and, applied in order from the same initial rows, the same
 * source rows. The generator keeps a model of the ids that exist, with an undo journal for
 * savepoints, ROLLBACK and a transaction the source rejects, and writes only to rows it knows
 * exist: the source accepts every transaction unless the model is wrong.
 *
 * Ops pick the row the previous op of the same transaction touched half of the time, so one
 * source transaction often changes one key several times (and across savepoints).
 */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class Rng {
  private readonly draw: () => number;
  constructor(seed: number) { this.draw = mulberry32(seed); }
  float(): number { return this.draw(); }
  int(min: number, max: number): number { return min + Math.floor(this.draw() * (max - min + 1)); }
  chance(p: number): boolean { return this.draw() < p; }
  pick<T>(items: readonly T[]): T { return items[this.int(0, items.length - 1)]!; }
}

type Undo = () => void;

/** Ids with O(1) random pick; every change is journaled so that it can be undone. */
class IdSet {
  readonly ids: number[] = [];
  private readonly at = new Map<number, number>();
  private readonly journal: Undo[];
  constructor(journal: Undo[]) { this.journal = journal; }
  get size(): number { return this.ids.length; }
  has(id: number): boolean { return this.at.has(id); }
  pick(rng: Rng): number { return this.ids[rng.int(0, this.ids.length - 1)]!; }
  add(id: number, log = true): void {
    this.at.set(id, this.ids.length);
    this.ids.push(id);
    if (log) this.journal.push(() => this.remove(id, false));
  }
  remove(id: number, log = true): void {
    const i = this.at.get(id)!;
    const last = this.ids.pop()!;
    this.at.delete(id);
    if (last !== id) { this.ids[i] = last; this.at.set(last, i); }
    if (log) this.journal.push(() => this.add(id, false));
  }
}

/** The ids the source holds, who references whom, and the emails in use. */
class Model {
  readonly journal: Undo[] = [];
  readonly parents = new IdSet(this.journal);
  readonly children = new IdSet(this.journal);
  readonly docs = new IdSet(this.journal);
  readonly accounts = new IdSet(this.journal);
  readonly parentOf = new Map<number, number>();
  readonly kids = new Map<number, IdSet>();
  readonly emailOf = new Map<number, string>();

  undoTo(mark: number): void { while (this.journal.length > mark) this.journal.pop()!(); }
  set<K, V>(map: Map<K, V>, key: K, value: V | undefined): void {
    const [had, old] = [map.has(key), map.get(key)];
    if (value === undefined) map.delete(key); else map.set(key, value);
    this.journal.push(() => { if (had) map.set(key, old as V); else map.delete(key); });
  }
  addParent(p: number): void { this.parents.add(p); this.set(this.kids, p, new IdSet(this.journal)); }
  dropParent(p: number): void {
    if (this.kids.get(p)!.size > 0) throw new Error(`workload model: parent ${p} still has children`);
    this.parents.remove(p);
    this.set(this.kids, p, undefined);
  }
  addChild(c: number, p: number): void { this.children.add(c); this.set(this.parentOf, c, p); this.kids.get(p)!.add(c); }
  dropChild(c: number): void { this.kids.get(this.parentOf.get(c)!)!.remove(c); this.children.remove(c); this.set(this.parentOf, c, undefined); }
  addAccount(a: number, email: string): void { this.accounts.add(a); this.set(this.emailOf, a, email); }
  dropAccount(a: number): void { this.accounts.remove(a); this.set(this.emailOf, a, undefined); }
}

type Kind = 'parent' | 'child' | 'doc' | 'account';

/** Source tables; the identity target has the same DDL (the same FK, primary and unique keys). */
export const SOURCE_DDL = `
  CREATE TABLE parent (id int PRIMARY KEY, name text NOT NULL, score int NOT NULL);
  CREATE TABLE child (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES parent (id), label text NOT NULL, qty int NOT NULL);
  CREATE INDEX child_parent_id ON child (parent_id);
  CREATE TABLE doc (id int PRIMARY KEY, status text NOT NULL, rev int NOT NULL, body text);
  CREATE TABLE account (id int PRIMARY KEY, email text NOT NULL UNIQUE, name text NOT NULL, active boolean NOT NULL);`;

export type Variant = 'identity' | 'mapped';

/** Per variant: the target DDL and the body of the spec's `tables: { … }`. */
export const VARIANTS: Record<Variant, { readonly targetDdl: string; readonly tables: string }> = {
  identity: {
    targetDdl: SOURCE_DDL,
    tables: `    parent: { from: 'public.parent', to: 'public.parent', key: ['id'], columns: { id: sql\`id\`, name: sql\`name\`, score: sql\`score\` } },
    child: {
      from: 'public.child', to: 'public.child', key: ['id'],
      columns: { id: sql\`id\`, parent_id: sql\`parent_id\`, label: sql\`label\`, qty: sql\`qty\` },
    },
    doc: { from: 'public.doc', to: 'public.doc', key: ['id'], columns: { id: sql\`id\`, status: sql\`status\`, rev: sql\`rev\`, body: sql\`body\` } },
    account: {
      from: 'public.account', to: 'public.account', key: ['id'],
      columns: { id: sql\`id\`, email: sql\`email\`, name: sql\`name\`, active: sql\`active\` },
    },`,
  },
  // Renamed columns, expressions, two row filters (doc: a publication filter, its identity being
  // full; account: evaluated by the worker) and a natural key (email) instead of the source id.
  // The source id stays unique on the target, as on the source.
  mapped: {
    targetDdl: `
  CREATE TABLE parent_m (pid int PRIMARY KEY, title text NOT NULL, band text NOT NULL);
  CREATE TABLE child_m (cid int PRIMARY KEY, parent_pid int NOT NULL REFERENCES parent_m (pid), descr text NOT NULL, qty int NOT NULL);
  CREATE INDEX child_m_parent_pid ON child_m (parent_pid);
  CREATE TABLE doc_m (id int PRIMARY KEY, state text NOT NULL, rev int NOT NULL, body_md5 text, body_len int, headline text);
  CREATE TABLE account_m (email text PRIMARY KEY, source_id int NOT NULL UNIQUE, display text NOT NULL);`,
    tables: `    parent: {
      from: 'public.parent', to: 'public.parent_m', key: ['pid'],
      columns: { pid: sql\`id\`, title: sql\`upper(name)\`, band: sql\`CASE WHEN score >= 50 THEN 'high' ELSE 'low' END\` },
    },
    child: {
      from: 'public.child', to: 'public.child_m', key: ['cid'],
      columns: { cid: sql\`id\`, parent_pid: sql\`parent_id\`, descr: sql\`concat(left(label, 24), ' x', qty)\`, qty: sql\`qty\` },
    },
    doc: {
      from: 'public.doc', to: 'public.doc_m', key: ['id'], where: sql\`status <> 'archived'\`, replicaIdentity: 'full',
      columns: {
        id: sql\`id\`, state: sql\`CASE status WHEN 'draft' THEN 'D' WHEN 'review' THEN 'R' ELSE 'P' END\`, rev: sql\`rev\`,
        body_md5: sql\`md5(body)\`, body_len: sql\`length(body)\`, headline: sql\`status || ':' || left(body, 8)\`,
      },
    },
    account: {
      from: 'public.account', to: 'public.account_m', key: ['email'], where: sql\`active\`,
      columns: { email: sql\`email\`, source_id: sql\`id\`, display: sql\`concat(name, ' <', email, '>')\` },
    },`,
  },
};

const STATUSES = ['draft', 'review', 'published', 'archived'] as const;
type Op = readonly [name: string, weight: number, sql: () => string | undefined];

export class Workload {
  readonly seed: number;
  readonly transactions: number;
  /** Indexes of the large transactions (20k-36k rows, streamed while in progress). */
  readonly bulkAt: readonly number[];
  /** How often each op was generated (including those rolled back). */
  readonly counts = new Map<string, number>();
  private readonly rng: Rng;
  private readonly m = new Model();
  private readonly next = { parent: 1, child: 1, doc: 1, account: 1, email: 1, salt: 1 };
  private recent = new Map<Kind, number>();
  private bulkRange: { lo: number; hi: number } | undefined;
  private index = 0;

  constructor(seed: number, transactions: number) {
    this.seed = seed;
    this.transactions = transactions;
    this.rng = new Rng(seed);
    const at = (from: number, to: number) => this.rng.int(Math.floor(transactions * from), Math.floor(transactions * to));
    this.bulkAt = transactions >= 10 ? [at(0.15, 0.4), at(0.55, 0.85)] : [];
  }

  /** Source DDL and the initial rows (copied by apply before the stream starts). */
  setupSql(): string {
    const [parents, children, docs, accounts] = [20, 80, 12, 30];
    for (let p = 1; p <= parents; p++) this.m.addParent(p);
    for (let c = 1; c <= children; c++) this.m.addChild(c, ((c - 1) % parents) + 1);
    for (let d = 1; d <= docs; d++) this.m.docs.add(d);
    for (let a = 1; a <= accounts; a++) this.m.addAccount(a, `u${a}@example.com`);
    Object.assign(this.next, { parent: parents + 1, child: children + 1, doc: docs + 1, account: accounts + 1, email: accounts + 1 });
    this.m.journal.length = 0;
    return `${SOURCE_DDL}
      INSERT INTO parent SELECT g, 'parent ' || g, g * 7 % 100 FROM generate_series(1, ${parents}) g;
      INSERT INTO child SELECT g, (g - 1) % ${parents} + 1, 'child ' || g, g % 10 FROM generate_series(1, ${children}) g;
      INSERT INTO doc SELECT d, 'draft', 1, (SELECT string_agg(md5('init ${this.seed} ' || d || ' ' || g), '') FROM generate_series(1, 200) g)
        FROM generate_series(1, ${docs}) d;
      INSERT INTO account SELECT g, 'u' || g || '@example.com', 'name ' || g, g % 3 <> 0 FROM generate_series(1, ${accounts}) g;`;
  }

  /** The next source transaction: one query string, BEGIN … COMMIT/ROLLBACK or one implicit transaction. */
  nextTransaction(): string {
    this.m.journal.length = 0;   // the previous one committed, or rejected() undid it
    this.recent = new Map();
    const i = this.index++;
    if (this.bulkAt.includes(i)) return this.bulk();
    if (this.rng.chance(0.02)) return `BEGIN;\n${this.truncate()}\nCOMMIT;`;
    const ops = this.rng.pick([1, 1, 1, 2, 2, 3, 4]);
    if (ops === 1 && this.rng.chance(0.3)) return this.op();
    const parts = ['BEGIN;'];
    for (let k = 0; k < ops; k++) parts.push(this.maybeInSavepoint(k));
    if (this.rng.chance(0.05)) parts.push(this.rollback('rolled back')); else parts.push('COMMIT;');
    return parts.join('\n');
  }

  /** The source rejected the transaction just generated: forget its changes. */
  rejected(): void { this.m.undoTo(0); }

  opNames(): string[] { return this.ops.map(([name]) => name); }

  private count(name: string): void { this.counts.set(name, (this.counts.get(name) ?? 0) + 1); }

  private rollback(name: string): string { this.m.undoTo(0); this.count(name); return 'ROLLBACK;'; }

  private maybeInSavepoint(k: number, sql: () => string = () => this.op(), rollback = 0.1, release = 0.05): string {
    const r = this.rng.float();
    if (r >= rollback + release) return sql();
    const mark = this.m.journal.length;
    const body = sql();
    if (r >= rollback) { this.count('savepoint released'); return `SAVEPOINT s${k};\n${body}\nRELEASE SAVEPOINT s${k};`; }
    this.m.undoTo(mark);
    this.count('savepoint rolled back');
    return `SAVEPOINT s${k};\n${body}\nROLLBACK TO SAVEPOINT s${k};`;
  }

  /** One op: a few statements, valid given the model, which follows them. */
  private op(): string {
    const total = this.ops.reduce((sum, [, w]) => sum + w, 0);
    for (let attempt = 0; attempt < 20; attempt++) {
      let r = this.rng.float() * total;
      const [name, , sql] = this.ops.find(([, w]) => (r -= w) < 0) ?? this.ops.at(-1)!;
      const text = sql();
      if (text !== undefined) { this.count(name); return text; }
    }
    return this.insertParent();
  }

  private readonly ops: readonly Op[] = [
    ['parent insert', 3, () => this.insertParent()],
    ['parent insert with children', 3, () => { const p = this.next.parent; return [this.insertParent(), this.insertChild(p), this.insertChild(p)].join('\n'); }],
    ['parent update', 3, () => this.with('parent', (p) => `UPDATE parent SET name = 'p${p}-${this.rng.int(0, 999)}', score = ${this.rng.int(0, 99)} WHERE id = ${p};`)],
    ['parent key change (childless)', 2, () => {
      const p = this.childless();
      const [pre, from] = p === undefined ? [this.insertParent(), this.next.parent - 1] : ['', p];
      const to = this.fresh('parent');
      this.m.dropParent(from);
      this.m.addParent(to);
      return `${pre}\nUPDATE parent SET id = ${to} WHERE id = ${from};`;
    }],
    ['parent delete and reinsert same id', 1, () => {
      const p = this.childless();
      return p === undefined ? undefined : `DELETE FROM parent WHERE id = ${p};\nINSERT INTO parent VALUES (${p}, 'again ${this.rng.int(0, 999)}', ${this.rng.int(0, 99)});`;
    }],
    ['child insert', 4, () => this.with('parent', (p) => this.insertChild(p))],
    ['child re-parent', 4, () => this.with('child', (c) => this.with('parent', (p) => this.reparent(`id = ${c}`, [c], p)))],
    ['child updated three times', 2, () => this.with('child', (c) => this.with('parent', (p) =>
      `UPDATE child SET qty = qty + 1 WHERE id = ${c};\n${this.reparent(`id = ${c}`, [c], p)}\nUPDATE child SET label = 'twice ${this.rng.int(0, 999)}' WHERE id = ${c};`))],
    ['child key change', 2, () => this.with('child', (c) => {
      const to = this.fresh('child');
      this.m.addChild(to, this.m.parentOf.get(c)!);
      this.m.dropChild(c);
      return `UPDATE child SET id = ${to} WHERE id = ${c};`;
    })],
    ['children of a parent updated', 2, () => this.with('parent', (p) => `UPDATE child SET qty = qty * 2 + 1 WHERE parent_id = ${p};`)],
    ['child delete', 3, () => this.with('child', (c) => { this.m.dropChild(c); return `DELETE FROM child WHERE id = ${c};`; })],
    // The FK case: a new parent, the children moved to it, the old parent deleted, in one transaction.
    ['family moved to a new parent, old one deleted', 3, () => this.with('parent', (old) => {
      const fresh = this.next.parent;
      const insert = this.insertParent();
      return [insert, this.reparent(`parent_id = ${old}`, this.m.kids.get(old)!.ids, fresh), this.deleteParent(old)].join('\n');
    })],
    ['family moved to another parent, old one deleted', 2, () => this.with('parent', (old) => {
      const to = this.m.parents.pick(this.rng);
      return to === old ? undefined : `${this.reparent(`parent_id = ${old}`, this.m.kids.get(old)!.ids, to)}\n${this.deleteParent(old)}`;
    })],
    ['family deleted, children first', 2, () => this.with('parent', (p) => {
      for (const c of [...this.m.kids.get(p)!.ids]) this.m.dropChild(c);
      return `DELETE FROM child WHERE parent_id = ${p};\n${this.deleteParent(p)}`;
    })],
    ['family born and gone in one transaction', 1, () => {
      const p = this.next.parent;
      const [ip, ic, c] = [this.insertParent(), this.insertChild(p), this.next.child - 1];
      this.m.dropChild(c);
      return `${ip}\n${ic}\nDELETE FROM child WHERE id = ${c};\n${this.deleteParent(p)}`;
    }],
    ['doc insert', 3, () => this.insertDoc()],
    ['doc body rewrite', 3, () => this.with('doc', (d) => `UPDATE doc SET body = ${this.body()}, rev = rev + 1 WHERE id = ${d};`)],
    ['doc status only (TOAST unchanged)', 4, () => this.with('doc', (d) => this.status(d))],
    ['doc body then status', 3, () => this.with('doc', (d) => `UPDATE doc SET body = ${this.body()} WHERE id = ${d};\n${this.status(d)}`)],
    ['doc insert then status twice', 3, () => { const d = this.next.doc; return `${this.insertDoc()}\n${this.status(d)}\n${this.status(d)}`; }],
    ['doc key change (TOAST unchanged)', 2, () => this.with('doc', (d) => this.rekeyDoc(d))],
    ['doc body, key change, status', 2, () => this.with('doc', (d) => {
      const rewrite = `UPDATE doc SET body = ${this.body()}, rev = rev + 1 WHERE id = ${d};`;
      return `${rewrite}\n${this.rekeyDoc(d)}\n${this.status(this.next.doc - 1)}`;
    })],
    ['doc insert, key change, status', 2, () => { const d = this.next.doc; return `${this.insertDoc()}\n${this.rekeyDoc(d)}\n${this.status(this.next.doc - 1)}`; }],
    ['docs multi-row update', 2, () => this.with('doc', (d) => `UPDATE doc SET rev = rev + 1 WHERE id BETWEEN ${d} AND ${d + this.rng.int(1, 8)};`)],
    ['doc delete', 2, () => this.with('doc', (d) => { this.m.docs.remove(d); return `DELETE FROM doc WHERE id = ${d};`; })],
    ['doc delete and reinsert same id', 1, () => this.with('doc', (d) =>
      `DELETE FROM doc WHERE id = ${d};\nINSERT INTO doc VALUES (${d}, '${this.rng.pick(STATUSES)}', 1, ${this.body()});`)],
    ['account insert', 3, () => this.insertAccount(this.freshEmail())],
    // The unique case: A deleted and B inserted with A's email, in one transaction.
    ['account deleted, its email reused', 3, () => this.with('account', (a) => {
      const email = this.m.emailOf.get(a)!;
      this.m.dropAccount(a);
      return `DELETE FROM account WHERE id = ${a};\n${this.insertAccount(email)}`;
    })],
    ['account emails swapped via a temp value', 3, () => this.with('account', (a) => {
      const b = this.m.accounts.pick(this.rng);
      if (b === a) return undefined;
      const [ea, eb, tmp] = [this.m.emailOf.get(a)!, this.m.emailOf.get(b)!, this.freshEmail()];
      this.m.set(this.m.emailOf, a, eb);
      this.m.set(this.m.emailOf, b, ea);
      return `UPDATE account SET email = '${tmp}' WHERE id = ${a};\nUPDATE account SET email = '${ea}' WHERE id = ${b};\n` +
        `UPDATE account SET email = '${eb}', name = name || '~' WHERE id = ${a};`;
    })],
    ['account email handed on to a new account', 1, () => this.with('account', (a) => {
      const [email, fresh, b] = [this.m.emailOf.get(a)!, this.freshEmail(), this.next.account];
      this.m.set(this.m.emailOf, a, fresh);
      return `UPDATE account SET email = '${fresh}' WHERE id = ${a};\n${this.insertAccount(email)}\nUPDATE account SET active = true WHERE id = ${b};`;
    })],
    ['account update', 3, () => this.with('account', (a) => `UPDATE account SET name = 'n${this.rng.int(0, 999)}', active = ${this.rng.chance(0.7)} WHERE id = ${a};`)],
    ['account key change', 2, () => this.with('account', (a) => {
      const to = this.fresh('account');
      this.m.addAccount(to, this.m.emailOf.get(a)!);
      this.m.dropAccount(a);
      return `UPDATE account SET id = ${to} WHERE id = ${a};`;
    })],
    ['account email change', 2, () => this.with('account', (a) => { const e = this.freshEmail(); this.m.set(this.m.emailOf, a, e); return `UPDATE account SET email = '${e}' WHERE id = ${a};`; })],
    ['accounts multi-row toggle', 1, () => `UPDATE account SET active = NOT active WHERE id % ${this.rng.int(2, 5)} = ${this.rng.int(0, 1)};`],
    ['account delete', 2, () => this.with('account', (a) => { this.m.dropAccount(a); return `DELETE FROM account WHERE id = ${a};`; })],
  ];

  /** `fn` on a row of `kind`: half of the time the one this transaction touched last; undefined if none. */
  private with(kind: Kind, fn: (id: number) => string | undefined): string | undefined {
    const set = { parent: this.m.parents, child: this.m.children, doc: this.m.docs, account: this.m.accounts }[kind];
    if (set.size === 0) return undefined;
    const last = this.recent.get(kind);
    const id = last !== undefined && set.has(last) && this.rng.chance(0.5) ? last : set.pick(this.rng);
    this.recent.set(kind, id);
    return fn(id);
  }

  /** A parent without children, searched from a random start. */
  private childless(): number | undefined {
    const ids = this.m.parents.ids;
    const start = ids.length > 0 ? this.rng.int(0, ids.length - 1) : 0;
    for (let k = 0; k < ids.length; k++) if (this.m.kids.get(ids[(start + k) % ids.length]!)!.size === 0) return ids[(start + k) % ids.length];
    return undefined;
  }

  /** A new id of `kind`, which the ops of this transaction then prefer. */
  private fresh(kind: Kind): number { const id = this.next[kind]++; this.recent.set(kind, id); return id; }

  private insertParent(): string { const p = this.fresh('parent'); this.m.addParent(p); return `INSERT INTO parent VALUES (${p}, 'p${p}', ${this.rng.int(0, 99)});`; }

  private insertChild(p: number): string { const c = this.fresh('child'); this.m.addChild(c, p); return `INSERT INTO child VALUES (${c}, ${p}, 'c${c}', ${this.rng.int(0, 9)});`; }

  private reparent(where: string, children: readonly number[], to: number): string {
    for (const c of [...children]) { this.m.dropChild(c); this.m.addChild(c, to); }
    return `UPDATE child SET parent_id = ${to} WHERE ${where};`;
  }

  private deleteParent(p: number): string { this.m.dropParent(p); return `DELETE FROM parent WHERE id = ${p};`; }

  /** Mostly 4-20 kB of md5 hex: too big to stay inline, and pglz gains too little on it to compress it. */
  private body(): string {
    const r = this.rng.float();
    if (r < 0.05) return 'NULL';
    if (r < 0.15) return `'small ${this.rng.int(0, 99_999)}'`;
    return `(SELECT string_agg(md5('${this.seed}/${this.next.salt++}/' || g), '') FROM generate_series(1, ${this.rng.int(128, 640)}) g)`;
  }

  private insertDoc(): string { const d = this.fresh('doc'); this.m.docs.add(d); return `INSERT INTO doc VALUES (${d}, '${this.rng.pick(STATUSES)}', 1, ${this.body()});`; }

  private status(d: number): string { return `UPDATE doc SET status = '${this.rng.pick(STATUSES)}' WHERE id = ${d};`; }

  private rekeyDoc(d: number): string { const to = this.fresh('doc'); this.m.docs.remove(d); this.m.docs.add(to); return `UPDATE doc SET id = ${to} WHERE id = ${d};`; }

  private freshEmail(): string { return `e${this.next.email++}-${this.rng.int(0, 99)}@example.com`; }

  private insertAccount(email: string): string {
    const a = this.fresh('account');
    this.m.addAccount(a, email);
    return `INSERT INTO account VALUES (${a}, '${email}', 'n${a}', ${this.rng.chance(0.75)});`;
  }

  /** TRUNCATE, then a few rows again in the same transaction. */
  private truncate(): string {
    const which = this.rng.int(0, 2);
    this.count(['truncate parent+child', 'truncate doc', 'truncate account'][which]!);
    if (which === 0) {
      for (const c of [...this.m.children.ids]) this.m.dropChild(c);
      for (const p of [...this.m.parents.ids]) this.m.dropParent(p);
      const refill = Array.from({ length: 5 }, () => { const p = this.next.parent; return `${this.insertParent()}\n${this.insertChild(p)}`; });
      return `TRUNCATE parent, child;\n${refill.join('\n')}`;
    }
    if (which === 1) {
      for (const d of [...this.m.docs.ids]) this.m.docs.remove(d);
      return `TRUNCATE doc;\n${this.insertDoc()}\n${this.insertDoc()}`;
    }
    for (const a of [...this.m.accounts.ids]) this.m.dropAccount(a);
    return `TRUNCATE account;\n${this.insertAccount(this.freshEmail())}\n${this.insertAccount(this.freshEmail())}`;
  }

  /**
   * One large transaction: 20k-36k child rows with 320-character labels, more than the walsender's
   * 8 MB of logical_decoding_work_mem, so it is streamed while in progress. Ordinary ops before
   * and after it; the big statement is sometimes inside a savepoint rolled back, and a fifth of
   * these transactions roll back whole.
   */
  private bulk(): string {
    // Generated in statement order: the model must see the changes in the order the source makes them.
    const parts = ['BEGIN;', this.op(), this.maybeInSavepoint(0)];
    const range = this.bulkRange;
    const live = range && this.m.children.ids.some((c) => c >= range.lo && c <= range.hi) ? range : undefined;
    parts.push(this.maybeInSavepoint(1, () => {
      if (!live) {
        const pre = this.m.parents.size === 0 ? `${this.insertParent()}\n` : '';
        const [n, lo] = [this.rng.int(20_000, 36_000), this.next.child];
        this.next.child += n;
        const ps = [...new Set(Array.from({ length: 40 }, () => this.m.parents.pick(this.rng)))];
        for (let g = 0; g < n; g++) this.m.addChild(lo + g, ps[g % ps.length]!);
        this.bulkRange = { lo, hi: lo + n - 1 };
        this.count('bulk insert');
        return `${pre}INSERT INTO child SELECT ${lo} + g, (ARRAY[${ps.join(',')}])[1 + g % ${ps.length}], ` +
          `repeat(md5('${this.seed}/${this.next.salt++}/' || g), 10), g % 97 FROM generate_series(0, ${n - 1}) g;`;
      }
      if (this.rng.chance(0.6)) {
        this.count('bulk update');
        return `UPDATE child SET qty = qty + 1, label = left(md5(label) || label, 320) WHERE id BETWEEN ${live.lo} AND ${live.hi};`;
      }
      for (const c of this.m.children.ids.filter((id) => id >= live.lo && id <= live.hi)) this.m.dropChild(c);
      this.count('bulk delete');
      return `DELETE FROM child WHERE id BETWEEN ${live.lo} AND ${live.hi};`;
    }, 0.25, 0.1));
    parts.push(this.maybeInSavepoint(2), this.op(), this.rng.chance(0.2) ? this.rollback('bulk rolled back') : 'COMMIT;');
    return parts.join('\n');
  }
}
