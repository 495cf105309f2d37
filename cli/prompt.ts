import { createInterface } from 'node:readline/promises';

// What the operator types: on a terminal, a question; otherwise the first line of stdin (a script,
// or `immich-backup recover < code.txt`). Ctrl-C at the question ends the command, nothing done.

/** The answer, trimmed; '' for Enter (or empty stdin). */
export async function readAnswer(question: string): Promise<string> {
  if (!process.stdin.isTTY) {
    let text = '';
    for await (const chunk of process.stdin) text += String(chunk);
    return text.split('\n')[0]?.trim() ?? '';
  }
  const prompt = createInterface({ input: process.stdin, output: process.stderr });
  prompt.on('SIGINT', () => {
    process.stderr.write('\nstopped: nothing was changed\n');
    process.exit(130);
  });
  try {
    return (await prompt.question(question)).trim();
  } finally {
    prompt.close();
  }
}
