import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { execa } from 'execa';
import { parse } from 'yaml';
import { repoRoot } from '../helpers/paths.js';
import { tempDir } from '../helpers/setup.js';

// docker-compose v1's `config` validates a compose file against the compose schema without a
// Docker daemon; it is the real parser, run on the real file.

const composeFile = join(repoRoot, 'docker-compose.temporal.yml');

interface Service {
  image: string;
  healthcheck?: unknown;
  depends_on?: Record<string, { condition: string }>;
  volumes?: string[];
  restart?: string;
}

describe('docker-compose.temporal.yml', () => {
  test('is valid for a real compose parser, and the parser rejects a broken copy', async () => {
    await execa('docker-compose', ['-f', composeFile, 'config', '-q']);
    const dir = await tempDir('compose');
    const broken = join(dir, 'broken.yml');
    await writeFile(broken, (await readFile(composeFile, 'utf8')).replace('service_completed_successfully', 'service_done'));
    const r = await execa('docker-compose', ['-f', broken, 'config', '-q'], { reject: false });
    assert.notEqual(r.exitCode, 0);
  });

  test('has the production shape: PostgreSQL on a named volume, schema setup, server, namespace, UI', async () => {
    const { stdout } = await execa('docker-compose', ['-f', composeFile, 'config']);
    const config = parse(stdout) as { services: Record<string, Service>; volumes: Record<string, unknown> };
    const s = config.services;
    assert.deepEqual(Object.keys(s).sort(), ['postgresql', 'temporal', 'temporal-namespace', 'temporal-schema', 'temporal-ui']);
    for (const [name, service] of Object.entries(s)) {
      assert.match(service.image, /^[\w./-]+:\d[\w.-]*$/, `${name} pins a version tag`);
      assert.doesNotMatch(service.image, /auto-setup/, `${name} does not use the deprecated auto-setup image`);
    }
    assert.match(s.temporal!.image, /^temporalio\/server:/);
    assert.match(s['temporal-schema']!.image, /^temporalio\/admin-tools:/);
    assert.match(s['temporal-ui']!.image, /^temporalio\/ui:/);
    for (const name of ['postgresql', 'temporal', 'temporal-ui']) assert.ok(s[name]!.healthcheck, `${name} has a health check`);
    assert.ok(Object.keys(config.volumes).includes('temporal-postgres'));
    assert.ok(s.postgresql!.volumes?.some((v) => v.startsWith('temporal-postgres:/var/lib/postgresql/data')));
    assert.equal(s['temporal-schema']!.depends_on?.postgresql?.condition, 'service_healthy');
    assert.equal(s.temporal!.depends_on?.['temporal-schema']?.condition, 'service_completed_successfully');
    assert.equal(s['temporal-namespace']!.depends_on?.temporal?.condition, 'service_healthy');
  });
});
