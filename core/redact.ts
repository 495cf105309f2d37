// Credentials written into a URL (http://user:pass@host/…, a notification endpoint behind basic
// auth, a ping URL) must not leave the worker: not in logs, errors, heartbeats or results, which
// all end up in workflow history or on a terminal. Every exit runs its text through here.
// Pure module (no Node built-ins).

// scheme://userinfo@ where userinfo runs to the last @ before the host. It stops at whitespace,
// quotes and backslashes so that, run over a JSON log line, it never reaches across two strings.
const USERINFO = /\b([A-Za-z][A-Za-z0-9+.-]*:\/\/)[^\s/?#"'`<>\\]*@/g;

/** The text with the userinfo of every URL in it replaced: `scheme://user:pass@host` → `scheme://[redacted]@host`. */
export function redactSecrets(text: string): string {
  return text.replace(USERINFO, '$1[redacted]@');
}

/** A value (heartbeat details, a result) with every string in it redacted; other values as they are. */
export function redactDeep<T>(value: T): T {
  if (typeof value === 'string') return redactSecrets(value) as T;
  if (Array.isArray(value)) return value.map(redactDeep) as T;
  if (value && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redactDeep(v)])) as T;
  }
  return value;
}

/**
 * A URL with credentials, split for fetch (which refuses URLs that carry them, with an error that
 * quotes the URL): the URL without them, and the basic-auth header they stand for.
 */
export function splitCredentials(url: string): { url: string; headers: Record<string, string> } {
  const parsed = new URL(url);
  if (!parsed.username && !parsed.password) return { url, headers: {} };
  const pair = new TextEncoder().encode(`${decodeURIComponent(parsed.username)}:${decodeURIComponent(parsed.password)}`);
  parsed.username = '';
  parsed.password = '';
  return { url: parsed.href, headers: { authorization: `Basic ${btoa(String.fromCharCode(...pair))}` } };
}
