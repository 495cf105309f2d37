import { createServer, type Server } from 'node:http';
import { freePort } from './net.js';

/** A stand-in for Immich's /api/server/ping on loopback (Immich itself cannot run here): a real HTTP server. */
export async function startPingServer(): Promise<{ url: string; stop(): Promise<void> }> {
  const port = await freePort();
  const server: Server = createServer((req, res) => {
    if (req.url === '/api/server/ping') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"res":"pong"}');
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${port}/api/server/ping`, stop: () => new Promise((resolve) => server.close(() => resolve())) };
}
