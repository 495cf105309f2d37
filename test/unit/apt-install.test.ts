import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { execa } from 'execa';
import { fixture, repoRoot } from '../helpers/paths.js';
import { tempDir } from '../helpers/setup.js';

// scripts/setup.sh's apt step (scripts/apt-install.sh), run by bash as setup.sh runs it, with
// test doubles for apt-get, pg_lsclusters and pg_ctlcluster first on PATH (test/fixtures/apt-host):
// nothing can install Debian packages or stop the host's clusters in a test.

const IMMICH_CLUSTER = '15 immich 5432 online postgres /var/lib/postgresql/15/immich /var/log/postgresql/postgresql-15-immich.log\n';

async function aptInstall(clusters: string, ...packages: string[]): Promise<string[]> {
  const dir = await tempDir('apt-host');
  const log = join(dir, 'calls.log');
  await writeFile(join(dir, 'clusters'), clusters);
  await writeFile(log, '');
  await execa('bash', ['-c', 'set -euo pipefail; source scripts/apt-install.sh; apt_install "$@"', 'setup.sh', ...packages], {
    cwd: repoRoot,
    env: { PATH: `${fixture('apt-host')}:${process.env.PATH}`, FIXTURE_APT_LOG: log, FIXTURE_CLUSTERS: join(dir, 'clusters') },
  });
  return (await readFile(log, 'utf8')).split('\n').filter((l) => l.startsWith('pg_ctlcluster') || l.startsWith('apt-get install'));
}

describe('scripts/setup.sh installing OS packages', () => {
  test('stops only the cluster the postgresql package created, never one that ran before (Immich\'s own database on a host without Docker)', async () => {
    assert.deepEqual(await aptInstall(IMMICH_CLUSTER, 'postgresql', 'rsync'), [
      'apt-get install -y -qq --no-install-recommends postgresql rsync',
      'pg_ctlcluster 16 main stop',
    ]);
  });

  test('stops no cluster when the install created none, though clusters run', async () => {
    const debians = '16 main 5433 online postgres /var/lib/postgresql/16/main /var/log/postgresql/postgresql-16-main.log\n';
    assert.deepEqual(await aptInstall(IMMICH_CLUSTER + debians, 'postgresql', 'chromium'), ['apt-get install -y -qq --no-install-recommends postgresql chromium']);
  });
});
