import net from 'node:net';

/**
 * A TCP proxy between the browser and the server, so a test can cut the
 * network for real: Chromium's offline emulation makes `navigator.onLine`
 * false and fires `offline`, but leaves an open WebSocket running. Going
 * offline here drops every proxied connection and refuses new ones.
 */
export class TcpProxy {
  private readonly sockets = new Set<net.Socket>();
  private online = true;
  private listenPort = 0;
  /** Connections accepted while online / refused while offline. */
  accepted = 0;
  refused = 0;
  /** Bytes the browser sent towards the server through this proxy (requests, bodies, socket frames). */
  bytesUp = 0;
  private readonly server = net.createServer((client) => {
    if (!this.online) {
      this.refused += 1;
      client.destroy();
      return;
    }
    this.accepted += 1;
    const upstream = net.connect(this.targetPort, '127.0.0.1');
    for (const socket of [client, upstream]) {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
      socket.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.on('data', (chunk: Buffer) => {
      this.bytesUp += chunk.length;
    });
    client.pipe(upstream);
    upstream.pipe(client);
  });

  constructor(private readonly targetPort: number) {}

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.listenPort = (this.server.address() as net.AddressInfo).port;
  }

  get url(): string {
    return `http://127.0.0.1:${this.listenPort}`;
  }

  /** Drops every open connection and refuses new ones. */
  goOffline(): void {
    this.online = false;
    for (const socket of this.sockets) socket.destroy();
  }

  goOnline(): void {
    this.online = true;
  }

  async stop(): Promise<void> {
    this.goOffline();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
