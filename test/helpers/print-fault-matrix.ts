// Prints the fault matrix recorded by this run's fault tests (scripts/test.sh calls it last).
import { readFaults } from './fault-matrix.js';

const rows = await readFaults();
if (rows.length) {
  console.log(`\nFault matrix (${rows.length} rows, each measured by a test in this run):`);
  console.log('| fault | measured outcome |\n|---|---|');
  for (const { fault, outcome } of rows) console.log(`| ${fault} | ${outcome.replace(/\|/g, '/')} |`);
}
