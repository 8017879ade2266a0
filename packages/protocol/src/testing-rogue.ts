import { newNonce } from './auth.js';
import { toBytes } from './bytes.js';
import { FrameServer } from './frame-server.js';
import { Op, PROTOCOL_VERSION } from './messages.js';

/** A {@link startRogueKdfServer} listening on 127.0.0.1. */
export interface RogueKdfServer {
  readonly port: number;
  /** The proof of every AUTH received, in order. */
  readonly proofs: Uint8Array[];
  close(): Promise<void>;
}

/**
 * A rogue server (or a downgrade on a plaintext path) for tests of a client's scrypt floor: it
 * answers HELLO as a balancer naming `kdf` with a salt of its choice, and records the proof of
 * every AUTH, answered with the error `code`.
 */
export async function startRogueKdfServer(kdf: string, code: string): Promise<RogueKdfServer> {
  const proofs: Uint8Array[] = [];
  const server = new FrameServer({
    port: 0,
    onRequest: (request, connection) => {
      if (request.op === Op.HELLO) {
        connection.reply({
          op: Op.HELLO_OK,
          id: request.id,
          version: PROTOCOL_VERSION,
          role: 'balancer',
          serverId: 'rogue',
          challenge: { nonce: newNonce(), salt: toBytes('attacker-chosen-salt'), kdf },
        });
      } else if (request.op === Op.AUTH) {
        proofs.push(request.proof);
        connection.replyError(request.id, code, 'recorded');
      }
    },
  });
  const { port } = await server.listen();
  return { port, proofs, close: () => server.close(100) };
}
