/**
 * `@dstore/protocol/internal`: mechanisms the other dstore packages share (the storage node, the
 * balancer, the client and their CLIs) but that are not part of the public API. Nothing here is
 * covered by semver: it may change in any release, in step with the packages of this repository.
 *
 * @internal
 * @packageDocumentation
 */
export { type StopWatchingAbort, watchAbort } from './abort-watch.js';
export { AnswerSizes, FIRST_ANSWER_ESTIMATE } from './answer-sizes.js';
export { decoyCredential, unmappedAddress, verifyPassword } from './auth.js';
export { type BackoffOptions, backoffDelay } from './backoff.js';
export { type BitUnit, bitCount, bitPos, byteRange, getBit } from './bytes.js';
export {
  type AddressOptions,
  EnvVar,
  ExitCode,
  formatBytes,
  type HostPort,
  type IntegerOptions,
  LOG_LEVELS,
  optionParser,
  parseAddress,
  parseAddressList,
  parseByteSize,
  parseDuration,
  parseInteger,
} from './cli-args.js';
export {
  ConnectionServer,
  type ConnectionServerEvents,
  type ConnectionServerOptions,
  type ServedConnection,
} from './connection-server.js';
export { DeadlineSweeper, type Sweepable, sharedSweeper } from './deadline-sweeper.js';
export { writeFileDurably } from './durable-file.js';
export { stacklessError, timeoutError } from './errors.js';
export { FRAME_HEADER_BYTES, FrameDecoder } from './frame-decoder.js';
export { globMatcher } from './glob.js';
export { releaseLockFile, takeLockFile } from './lock-file.js';
export {
  ClientOutputBudget,
  type ClientOutputBudgetOptions,
  DEFAULT_CLIENT_OUTPUT_BUDGET_BYTES,
} from './output-budget.js';
export {
  EndOfTickQueue,
  type EndOfTickWriter,
  flushAtEndOfTick,
  OutputBuffer,
} from './output-buffer.js';
export {
  PasswordChecks,
  type PasswordChecksOptions,
} from './password-checks.js';
export { type ReadInPartsOptions, readInParts, sumInChunks } from './read-in-parts.js';
export {
  copyKeyed,
  type DataRequest,
  isSingleKeyRead,
  type KeyedRequest,
  migratingDeleteOutcome,
  partlyApplied,
  withEpoch,
} from './routing.js';
export { ServingBytes } from './serving-bytes.js';
export { checkBodyShape } from './shape.js';
export {
  MOVE_ATTEMPTS,
  type MoveOptions,
  type MoveOutcome,
  moveKey,
  resultsOf,
  setAllIfAbsent,
  type TransactSender,
} from './tag-operations.js';
