/**
 * Secrets never appear in logs, errors or metrics. Connection strings are the secrets syncctl
 * holds; these functions take passwords out of any text that might carry one.
 */

const URL_PASSWORD = /(postgres(?:ql)?:\/\/[^:/?#@\s]*:)([^@\s]*)(@)/gi;
const KEYWORD_PASSWORD = /(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s]+)/gi;

/** Replaces the password of every postgres URL and `password=` keyword in `text` with `***`. */
export function redactConnectionStrings(text: string): string {
  return text.replace(URL_PASSWORD, '$1***$3').replace(KEYWORD_PASSWORD, '$1***');
}

/** Removes known secret values (and their URL-encoded forms) from `text`, then any connection password. */
export function redactSecrets(text: string, secrets: Iterable<string>): string {
  let out = text;
  for (const secret of secrets) {
    if (secret.length < 3) continue;
    for (const form of new Set([secret, encodeURIComponent(secret)])) out = out.split(form).join('***');
  }
  return redactConnectionStrings(out);
}

/** The password inside a connection string, if it has one (URL or keyword/value form). */
export function passwordOf(connectionString: string): string | undefined {
  try {
    const url = new URL(connectionString);
    if (url.password) return decodeURIComponent(url.password);
  } catch {
    const match = /\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|[^\s]+)/i.exec(connectionString);
    if (match?.[1]) return match[1].replace(/^'|'$/g, '');
  }
  return undefined;
}

/** A connection string fit to show: host, port, database and user, no password. */
export function describeConnection(connectionString: string): string {
  try {
    const url = new URL(connectionString);
    const user = url.username ? `${decodeURIComponent(url.username)}@` : '';
    return `${user}${url.hostname}${url.port ? `:${url.port}` : ''}${url.pathname}`;
  } catch {
    return redactConnectionStrings(connectionString);
  }
}
