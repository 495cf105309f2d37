import { createInterface } from 'node:readline';
import type { Config } from '../../config/config.js';
import { AuditReaderError, ConfigError } from '../../core/errors.js';
import { libraryRelativePath } from '../../core/library-layout.js';
import { postgresCommand } from '../postgres/command.js';
import { awaitCommand, startCommand } from '../commands/run-command.js';
import type { PostgresTarget } from '../../core/types.js';

// Immich's own record of its originals, read from the live database (through the same container
// or host runtime as the dumps): each asset's path as the container sees it and its checksum.
// Streamed in pages by id, so memory stays flat however large the library.

export interface ImmichAsset {
  id: string;
  /** asset."originalPath", as Immich's container sees it. */
  originalPath: string;
  /** The path relative to library.source; undefined outside library.containerPaths (an external library). */
  relativePath: string | undefined;
  /** Hex of asset.checksum. */
  checksum: string;
  /** sha1: the file's SHA-1, checkable; sha1-path (external libraries): a hash of the path, not of the content. */
  algorithm: 'sha1' | 'sha1-path' | 'other';
}

/** The asset table's name and whether it has "checksumAlgorithm" (Immich 2.x: asset; older: assets, no algorithm column). */
export interface AssetSchema {
  table: string;
  hasAlgorithm: boolean;
  hasLibraryId: boolean;
}

const SCHEMA_QUERY = `SELECT c.relname, bool_or(a.attname = 'checksumAlgorithm'), bool_or(a.attname = 'libraryId')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND c.relname IN ('asset', 'assets')
GROUP BY c.relname ORDER BY c.relname = 'asset' DESC LIMIT 1`;

const psqlArgs = (user: string, database: string, sql: string) => ['-X', '-q', '-A', '-t', '-F', '\t', '-v', 'ON_ERROR_STOP=1', '-U', user, '-d', database, '-c', sql];

/** Which of Immich's schemas the live database has; AssetTableMissing when neither table exists. */
export async function assetSchema(config: Config, target: PostgresTarget): Promise<AssetSchema> {
  const cmd = postgresCommand(config, target, 'psql', psqlArgs(config.postgres.user, config.immich.database, SCHEMA_QUERY));
  const child = startCommand(cmd.file, cmd.args, { label: 'psql (asset table)', env: cmd.env });
  const out = String((await awaitCommand(child, 'psql (asset table)')).stdout ?? '').trim();
  const [table, algorithm, library] = out.split('\t');
  if (table !== 'asset' && table !== 'assets') throw new ConfigError(`Immich's database ${config.immich.database} has no asset table (expected asset or assets): is immich.database right?`);
  return { table, hasAlgorithm: algorithm === 't', hasLibraryId: library === 't' };
}

/** The page query: assets with id after `after` (uuid order), at most `limit`; only ids, paths and checksums. */
export function assetPageQuery(schema: AssetSchema, after: string | undefined, limit: number): string {
  const algorithm = schema.hasAlgorithm
    ? `"checksumAlgorithm"::text`
    : schema.hasLibraryId
      ? `CASE WHEN "libraryId" IS NULL THEN 'sha1' ELSE 'sha1-path' END`
      : `'sha1'`;
  // The uuid is validated before it is put in the query: it comes from our own earlier page.
  if (after !== undefined && !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(after)) throw new AuditReaderError(`expected an asset id (a uuid) to page from, found ${JSON.stringify(after)}`);
  const where = after ? `WHERE id > '${after}'::uuid` : '';
  return `COPY (SELECT id, encode(convert_to("originalPath", 'UTF8'), 'base64'), encode(checksum, 'hex'), ${algorithm} FROM public.${schema.table} ${where} ORDER BY id LIMIT ${Math.floor(limit)}) TO STDOUT`;
}

/**
 * Reads one page of assets (id order, after `after`), calling `onAsset` for each as it streams in.
 * Returns how many were read and the last id (the position to go on from).
 */
export async function readAssetPage(
  config: Config,
  target: PostgresTarget,
  schema: AssetSchema,
  page: { after?: string | undefined; limit: number },
  onAsset: (asset: ImmichAsset) => void | Promise<void>,
): Promise<{ count: number; last: string | undefined }> {
  const sql = assetPageQuery(schema, page.after, page.limit);
  const cmd = postgresCommand(config, target, 'psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-U', config.postgres.user, '-d', config.immich.database, '-c', sql]);
  const child = startCommand(cmd.file, cmd.args, { label: 'psql (assets)', env: cmd.env, stdout: 'stream' });
  let count = 0;
  let last: string | undefined;
  try {
    const lines = createInterface({ input: child.stdout!, crlfDelay: Infinity });
    for await (const line of lines) {
      if (!line) continue;
      const [id, path64, checksum, algorithm] = line.split('\t');
      if (!id || path64 === undefined || checksum === undefined) continue;
      // base64 keeps tabs, newlines and backslashes in a path from breaking COPY's text format.
      const originalPath = Buffer.from(path64.replace(/\\n/g, ''), 'base64').toString('utf8');
      count++;
      last = id;
      await onAsset({
        id,
        originalPath,
        relativePath: libraryRelativePath(originalPath, config.library.containerPaths),
        checksum,
        algorithm: algorithm === 'sha1' || algorithm === 'sha1-path' ? algorithm : 'other',
      });
    }
  } catch (err) {
    child.kill();
    await child.catch(() => undefined);
    throw err;
  }
  await awaitCommand(child, 'psql (assets)');
  return { count, last };
}
