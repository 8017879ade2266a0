/**
 * `@dstore/protocol`: the dstore wire format (length-prefixed MessagePack frames, messages, error
 * codes, limits; the spec is the README) and the connection layer every dstore package uses
 * (`Connection`, `FrameServer`, `PeerLink`, `FailoverLink`). What the other packages share beyond
 * this is in `@dstore/protocol/internal`, which is not covered by semver.
 *
 * @packageDocumentation
 */
export {
  type AuthChallenge,
  assertClusterSecret,
  type Credentials,
  checkScryptCost,
  clusterSecretOption,
  DEFAULT_SCRYPT,
  DEFAULT_USER,
  hashPassword,
  isLoopbackAddress,
  MIN_CLUSTER_SECRET_LENGTH,
  parseScryptCost,
  type ScryptParams,
} from './auth.js';
export {
  AUTH_PACE_AFTER_FAILURES,
  AuthFailureBudget,
  type AuthFailureBudgetOptions,
  DEFAULT_AUTH_FAILURE_ADDRESSES,
  DEFAULT_AUTH_FAILURE_LIMIT,
  DEFAULT_AUTH_FAILURE_WINDOW_MS,
  DEFAULT_AUTH_PACE_MS,
} from './auth-failures.js';
export {
  type AdmissionKind,
  Authenticator,
  type AuthenticatorOptions,
  type AuthStep,
  type Principal,
} from './authenticator.js';
export { type BinaryLike, bytesToString, toBytes } from './bytes.js';
export { fromWireArray, MessageCodec, toWireArray } from './codec.js';
export {
  Connection,
  type ConnectionEvents,
  type ConnectionOptions,
  type RequestOptions,
  type ResponseCallback,
} from './connection.js';
export {
  classifyError,
  DstoreError,
  type DstoreErrorOptions,
  type ErrorClass,
  ErrorCode,
  isKnownErrorCode,
  isRetryable,
  isSafeToResend,
  ProtocolError,
} from './errors.js';
export { FailoverLink, type FailoverLinkOptions, type FailoverServer } from './failover-link.js';
export { FrameServer, type FrameServerEvents, type FrameServerOptions } from './frame-server.js';
export { LatencyHistogram, type LatencySummary } from './latency-histogram.js';
export { DEFAULT_LIMITS, LMDB_MAX_KEY_BYTES, type ProtocolLimits, resolveLimits } from './limits.js';
export * from './messages.js';
export {
  type ConnectSocketOptions,
  connectSocket,
  type HandshakeOptions,
  handshake,
  PeerLink,
  type PeerLinkEvents,
  type PeerLinkOptions,
} from './peer-link.js';
export { LARGE_REQUEST_BYTES } from './serving-bytes.js';
export {
  isTlsPeerVerified,
  type PeerTlsOptions,
  type PemInput,
  peerClientTls,
  readPeerTlsFiles,
  readTlsFiles,
  TLS_HANDSHAKE_RECORD,
  TLS_REQUIRED_MESSAGE,
  type TlsClientOptions,
  type TlsFiles,
  type TlsMaterial,
  type TlsServerOptions,
} from './tls.js';
export {
  clusterOnly,
  keyDenied,
  keyspaceDenied,
  keyVisible,
  parseUsersFile,
  requestDenied,
  type UserAccess,
  UserDirectory,
  type UserDirectoryOptions,
  type UserEntry,
  type UserGrant,
} from './users.js';
