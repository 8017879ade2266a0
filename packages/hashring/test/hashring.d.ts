/** Minimal typings for the npm `hashring` package (dev-only comparison target). */
declare module 'hashring' {
  export default class NpmHashRing {
    constructor(
      servers: string[] | Record<string, number | { weight?: number; vnodes?: number }>,
      algorithm?: string,
      options?: Record<string, unknown>,
    );
    get(key: string): string;
    range(key: string, size?: number, unique?: boolean): string[];
  }
}
