export { type BackoffOptions, backoffDelay } from './backoff.js';
export { type BinaryLike, bytesToString, toBytes } from './bytes.js';
export { fromWireArray, MessageCodec, toWireArray } from './codec.js';
export {
  Connection,
  type ConnectionEvents,
  type ConnectionOptions,
  LARGE_REQUEST_BYTES,
  type RequestOptions,
} from './connection.js';
export { DeadlineSweeper, type Sweepable, sharedSweeper } from './deadline-sweeper.js';
export { DstoreError, ErrorCode, isKnownErrorCode, ProtocolError, timeoutError } from './errors.js';
export { FailoverLink, type FailoverLinkOptions, type FailoverServer } from './failover-link.js';
export { FRAME_HEADER_BYTES, FrameDecoder } from './frame-decoder.js';
export { FrameServer, type FrameServerEvents, type FrameServerOptions } from './frame-server.js';
export { LatencyHistogram, type LatencySummary } from './latency-histogram.js';
export { DEFAULT_LIMITS, LMDB_MAX_KEY_BYTES, type ProtocolLimits, resolveLimits } from './limits.js';
export * from './messages.js';
export { OutputBuffer } from './output-buffer.js';
export {
  answerHello,
  type ConnectSocketOptions,
  connectSocket,
  handshake,
  PeerLink,
  type PeerLinkEvents,
  type PeerLinkOptions,
} from './peer-link.js';
export { checkBodyShape } from './shape.js';
