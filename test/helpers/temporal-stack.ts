import { after, before } from 'node:test';
import { Client, Connection } from '@temporalio/client';
import { startTestTemporal } from './temporal.js';

export interface TemporalStack {
  temporal: Awaited<ReturnType<typeof startTestTemporal>>;
  client: Client;
}

/** Registers the file's before/after hooks: a test dev server and a client on it; the returned object is filled in by `before`. */
export function useTestTemporal(): TemporalStack {
  const stack = {} as TemporalStack;
  let connection: Connection | undefined;
  before(async () => {
    stack.temporal = await startTestTemporal();
    connection = await Connection.connect({ address: stack.temporal.address });
    stack.client = new Client({ connection });
  });
  after(async () => {
    await connection?.close();
    await stack.temporal?.stop();
  });
  return stack;
}
