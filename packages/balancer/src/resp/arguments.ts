/** Reading command arguments (bytes) the way Redis reads them. */

/** `bytes` decoded as UTF-8 (names, passwords, option words). */
export function textOf(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8');
}

/** `bytes` as a canonical decimal integer (as Redis's string2ll), or undefined. */
export function integerOf(bytes: Uint8Array): number | undefined {
  const text = textOf(bytes);
  if (!/^(0|-?[1-9][0-9]{0,17})$/.test(text)) return undefined;
  return Number(text);
}

/** Whether `bytes` spells `word`, ignoring ASCII case (`word` lower-case). */
export function isWord(bytes: Uint8Array, word: string): boolean {
  if (bytes.length !== word.length) return false;
  for (let index = 0; index < bytes.length; index++) {
    if ((bytes[index]! | 0x20) !== word.charCodeAt(index)) return false;
  }
  return true;
}

/** Redis's arity error. `name` is the command's full lower-case name (`client|setname`). */
export function wrongArity(name: string): string {
  return `ERR wrong number of arguments for '${name}' command`;
}

/** Redis's answer to an unknown subcommand. */
export function unknownSubcommand(subcommand: Uint8Array, command: string): string {
  return `ERR unknown subcommand '${textOf(subcommand).slice(0, 128)}'. Try ${command.toUpperCase()} HELP.`;
}

/**
 * Redis's exact unknown-command error (server.c processCommand): the name, then the first
 * arguments quoted, while their text stays under 128 characters.
 */
export function unknownCommand(args: readonly Uint8Array[]): string {
  let quoted = '';
  for (let index = 1; index < args.length && quoted.length < 128; index++) {
    quoted += `'${textOf(args[index]!).slice(0, 128 - quoted.length)}' `;
  }
  return `ERR unknown command '${textOf(args[0]!).slice(0, 128)}', with args beginning with: ${quoted}`;
}
