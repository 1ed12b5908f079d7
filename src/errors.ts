/**
 * One error base class for everything syncctl reports to a person. `code` is stable (tests and
 * scripts compare it); `details` carries the structured facts; the CLI maps codes to exit statuses.
 */
export type ErrorCode =
  | 'SPEC_INVALID'        // a spec file does not validate (exit 2)
  | 'SPEC_LOAD_FAILED'    // a spec file could not be imported (exit 2)
  | 'ENV_MISSING'         // env('X') names an unset variable (exit 2)
  | 'CATALOG_MISMATCH'    // a spec does not fit the live databases (exit 2)
  | 'PREFLIGHT_FAILED'    // a server cannot host the sync as configured (exit 2)
  | 'DESTROY_REFUSED'     // destructive changes without --allow-destroy (exit 2)
  | 'PLAN_PENDING'        // the databases do not match the spec: run apply (exit 2)
  | 'CONFIRMATION_REQUIRED' // a bulk action asked for confirmation and got none (no terminal, no --yes) (exit 2)
  | 'CONNECTION_FAILED'   // a database could not be reached (exit 1)
  | 'APPLY_FAILED'        // a change failed while applying (exit 1)
  | 'TABLE_STATE_CHANGED' // a paused table's copy began while its changes were being dropped: the worker starts over
  | 'STAGING_REJECTED'    // the target rejected a staged value: the worker stages that table as text and starts over (exit 1 if it escapes)
  | 'INTERNAL';           // a bug (exit 1)

export interface Problem {
  /** File the problem is in, when it comes from a spec file. */
  readonly file?: string;
  /** Dotted path inside the spec, e.g. `tables.users.conflict.column`. */
  readonly path?: string;
  readonly message: string;
}

export class SyncctlError extends Error {
  readonly code: ErrorCode;
  readonly problems: readonly Problem[];
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: ErrorCode, message: string, options: { problems?: readonly Problem[]; details?: Record<string, unknown>; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'SyncctlError';
    this.code = code;
    this.problems = options.problems ?? [];
    this.details = options.details ?? {};
  }
}

/** Exit statuses: 0 ok, 1 runtime failure, 2 invalid input or pending changes. */
export function exitStatusFor(error: unknown): 1 | 2 {
  if (!(error instanceof SyncctlError)) return 1;
  switch (error.code) {
    case 'SPEC_INVALID':
    case 'SPEC_LOAD_FAILED':
    case 'ENV_MISSING':
    case 'CATALOG_MISMATCH':
    case 'PREFLIGHT_FAILED':
    case 'DESTROY_REFUSED':
    case 'PLAN_PENDING':
    case 'CONFIRMATION_REQUIRED':
      return 2;
    default:
      return 1;
  }
}

/** One line per problem: `file: path: message`. */
export function formatProblem(problem: Problem): string {
  return [problem.file, problem.path, problem.message].filter((part) => part !== undefined && part !== '').join(': ');
}
