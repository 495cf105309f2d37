import type { Connection } from '@temporalio/client';
import { SearchAttributesError } from '../core/errors.js';
import { SEARCH_ATTRIBUTES } from '../core/ids.js';

// BackupKind and BackupOutcome, so `temporal workflow list --query 'BackupOutcome="failure"'` and
// the Web UI's filters work. Registered by every entry point that talks to a server (start,
// worker, schedules apply): a workflow that sets an unregistered attribute would be stuck.

const KEYWORD = 2; // temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD

/** Adds the search attributes the namespace lacks; returns the names added. */
export async function registerSearchAttributes(operatorService: Connection['operatorService'], namespace: string): Promise<string[]> {
  const existing = await operatorService.listSearchAttributes({ namespace });
  const known = new Set(Object.keys({ ...existing.customAttributes, ...existing.systemAttributes }));
  const missing = Object.values(SEARCH_ATTRIBUTES).filter((name) => !known.has(name));
  if (missing.length === 0) return [];
  try {
    await operatorService.addSearchAttributes({ namespace, searchAttributes: Object.fromEntries(missing.map((name) => [name, KEYWORD])) });
  } catch (err) {
    // Another process registered them first.
    if ((err as { code?: number }).code !== 6) throw new SearchAttributesError(`cannot register search attributes ${missing.join(', ')} in namespace ${namespace}: ${(err as Error).message.split('\n')[0]}; the workflows set them, so register them by hand (temporal operator search-attribute create) or use a namespace this client may change`);
  }
  return missing;
}
