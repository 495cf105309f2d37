// Started by scripts/test.sh for the whole run: the servers the test files share. It makes the
// initdb'd PostgreSQL data directory each file's cluster is copied from (startPostgres) and starts
// one Temporal dev server the files use, each in a namespace of its own (startTestTemporal). Once
// both are ready it prints their `NAME=value` lines for test.sh to export, then runs until SIGTERM
// and stops the server. A file run alone, without test.sh, makes its own as before.
import { rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { temporalBinary } from './paths.js';
import { makePostgresTemplate, PG_TEMPLATE_ENV } from './postgres.js';
import { SHARED_TEMPORAL_ENV, startOwnTemporal } from './temporal.js';

const stopped = new Promise((resolve) => process.once('SIGTERM', resolve));
const [template, temporal] = await Promise.all([makePostgresTemplate(), startOwnTemporal(temporalBinary, false, 'default')]);
process.stdout.write(`${PG_TEMPLATE_ENV}=${template}\n${SHARED_TEMPORAL_ENV}=${temporal.address}\n`);
await stopped;
await Promise.all([temporal.stop(), rm(dirname(template), { recursive: true, force: true })]);
