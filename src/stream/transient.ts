import { SyncctlError } from '../errors.ts';

/**
 * Errors that say nothing about the rows: connection loss, and SQLSTATE classes 08 (connection),
 * 40 (serialization failure, deadlock), 53 (insufficient resources), 57 (operator intervention:
 * cancel, shutdown), 58 (system error), 55P03 (lock not available) and 55006 (object in use: the
 * slot, while the walsender of a process that lost the lead has not gone yet).
 */
export function isTransient(error: unknown): boolean {
  if (error instanceof SyncctlError) return error.code === 'CONNECTION_FAILED';
  const code = (error as { code?: string }).code ?? '';
  const message = error instanceof Error ? error.message : '';
  return ['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', '55P03', '55006'].includes(code) || /^(08|40|53|57|58)/.test(code) ||
    /Connection terminated|terminating connection|server closed the connection/i.test(message);
}
