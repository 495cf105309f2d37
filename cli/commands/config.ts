import type { Command } from 'commander';
import { resolve } from 'node:path';
import { stringify as toYaml } from 'yaml';
import { redactConfig } from '../../config/config.js';
import { configFileOf, configOf } from '../context.js';

/** `config`: the config as the CLI and the worker read it, defaults applied and secrets redacted. */
export function registerConfig(program: Command): void {
  program
    .command('config')
    .description('Validate the config and print it with defaults applied (secrets redacted), as YAML; says which file was loaded')
    .option('--json', 'print as JSON (which file was loaded goes to stderr)')
    .action((opts: { json?: boolean }, cmd: Command) => {
      const config = redactConfig(configOf(cmd));
      const file = configFileOf(cmd);
      const source = `config: ${file ? `${resolve(file)} (valid)` : 'no file, defaults (and IMMICH_BACKUP_* variables)'}\n`;
      if (opts.json) {
        process.stderr.write(source);
        return void process.stdout.write(JSON.stringify(config, null, 2) + '\n');
      }
      process.stdout.write(`${source}${toYaml(config)}`);
    });
}
