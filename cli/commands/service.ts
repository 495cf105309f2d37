import { Option, type Command } from 'commander';
import { realpath, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ConfigError } from '../../core/errors.js';
import { findTemporalBinary } from '../../temporal/dev-server.js';
import { configFileOf, configOf } from '../context.js';
import { SERVICE_ENV_FILE, SERVICE_NAME, serviceUnit, type ServiceMode } from '../service-unit.js';

/** The program's entry point, dist/cli/cli.js, which the unit runs: beside this folder, wherever the build puts both. */
const CLI_ENTRY = new URL('../cli.js', import.meta.url);

/** `install-service`: the systemd unit that keeps `start` or `worker` running across reboots. */
export function registerService(program: Command): void {
  program
    .command('install-service')
    .description(`Write the systemd unit ${SERVICE_NAME} that runs \`start\` (embedded dev server and worker) or \`worker\` (temporal.address set) as root across reboots, with this config; runs no systemctl`)
    .option('--unit-dir <dir>', 'where to write the unit', '/etc/systemd/system')
    .addOption(new Option('--mode <mode>', 'start: embedded dev server and worker; worker: the worker against temporal.address (default: worker when temporal.address is set, else start)').choices(['start', 'worker']))
    .option('--dry-run', 'print the unit instead of writing it')
    .action(async (opts: { unitDir: string; mode?: ServiceMode; dryRun?: boolean }, cmd: Command) => {
      const file = configFileOf(cmd);
      // The service runs with exactly this file: without one it would run on defaults nobody chose.
      if (!file) throw new ConfigError('install-service needs the config the service will run with: immich-backup -c /etc/immich-backup.yml install-service');
      const config = configOf(cmd);
      const mode = opts.mode ?? (config.temporal.address ? 'worker' : 'start');
      const cliFile = await realpath(fileURLToPath(CLI_ENTRY));
      const unit = serviceUnit({
        mode,
        node: process.execPath,
        cli: cliFile,
        configFile: resolve(file),
        workingDirectory: process.cwd(),
        // systemd's PATH lacks .venv/bin and a node installed elsewhere: the binaries found now are the ones the service runs.
        pathDirs: [dirname(process.execPath), ...(mode === 'start' && !config.temporal.address ? [dirname(resolve(findTemporalBinary(config.temporal.binary)))] : [])],
        documentation: pathToFileURL(join(dirname(cliFile), '..', '..', 'README.md')).href,
      });
      // The unit gives the service a /tmp of its own (PrivateTmp): it would not see a config or a checkout there.
      const warnTmp = () => {
        for (const [what, path] of [['the config', resolve(file)], ['the working directory', process.cwd()]] as const) {
          if (/^\/(var\/)?tmp\//.test(`${path}/`)) process.stderr.write(`warning: ${what} ${path} is under /tmp, which the service does not see (PrivateTmp=yes): move it before enabling the unit\n`);
        }
      };
      if (opts.dryRun) {
        process.stdout.write(unit);
        return warnTmp();
      }
      const target = join(opts.unitDir, SERVICE_NAME);
      const st = await stat(opts.unitDir).catch(() => undefined);
      if (!st?.isDirectory()) throw new ConfigError(`--unit-dir ${opts.unitDir} is not a directory: nothing was written`);
      await writeFile(target, unit, { mode: 0o644 });
      process.stdout.write(
        `wrote ${target} (${mode}, config ${resolve(file)})\n` +
          `  secrets (IMMICH_BACKUP_PG_PASSWORD, IMMICH_BACKUP_TEMPORAL_API_KEY), if any: ${SERVICE_ENV_FILE}, mode 0600\n` +
          `  then: systemctl daemon-reload && systemctl enable --now ${SERVICE_NAME}; logs: journalctl -u ${SERVICE_NAME} -f\n`,
      );
      warnTmp();
    });
}
