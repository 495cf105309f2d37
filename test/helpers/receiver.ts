import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';

// A real HTTP server on 127.0.0.1 standing in for a webhook endpoint, an ntfy server and a
// healthchecks.io-style ping service: it records every request and answers with the statuses a
// test queued for a path (200 once the queue is empty).

export interface ReceivedRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
  status: number;
}

export interface Receiver {
  url: string;
  requests: ReceivedRequest[];
  /** Answer the next requests to `path` with these statuses, in order. */
  failNext(path: string, ...statuses: number[]): void;
  /** The requests to a path that were answered 2xx. */
  delivered(path: string): ReceivedRequest[];
  close(): Promise<void>;
}

export async function startReceiver(): Promise<Receiver> {
  const requests: ReceivedRequest[] = [];
  const queued = new Map<string, number[]>();
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = req.url ?? '/';
      const status = queued.get(path)?.shift() ?? 200;
      requests.push({ method: req.method ?? '', path, headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), status });
      res.writeHead(status, { 'content-type': 'text/plain' }).end(status === 200 ? 'OK' : 'unavailable');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    failNext: (path, ...statuses) => queued.set(path, [...(queued.get(path) ?? []), ...statuses]),
    delivered: (path) => requests.filter((r) => r.path === path && r.status < 300),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
