/**
 * @dstore/checker: dstore's own test tooling (private, never published). A linearizability
 * checker for per-key registers (Wing & Gong with Lowe's memoisation, as porcupine), the history
 * recorder and register workload that feed it, a bank workload and checker for multi-key
 * transactions, and fault injection on real processes.
 */
export {
  type BankCheckResult,
  type BankFinal,
  type BankKeys,
  type BankMix,
  type BankOutcome,
  type BankRead,
  type BankReadKind,
  type BankRecording,
  type BankSetupStore,
  type BankSnapshot,
  type BankStats,
  type BankStore,
  type BankTransaction,
  type BankTransfer,
  type BankViolation,
  type BankViolationKind,
  type BankWorkloadOptions,
  bankKeys,
  bankLogIds,
  checkBank,
  formatBankResult,
  type RunningBank,
  readBank,
  readBankFinal,
  setupBank,
  startBank,
  summarizeBank,
} from './bank.js';
export {
  type CheckOptions,
  type CheckResult,
  checkHistory,
  checkHistoryWith,
  checkOperations,
  explainFailure,
  formatCheckResult,
  type KeyResult,
} from './check.js';
export {
  type CompletedPair,
  type EventType,
  formatHistory,
  type HistoryEvent,
  type JsonValue,
  MalformedHistoryError,
  type OperationBuilder,
  pairEvents,
  parseHistory,
  partitionByKey,
  registerOperation,
} from './history.js';
export { hashString, type Model, type StepResult, UNKNOWN, type Unknown } from './model.js';
export { type Fault, ManagedProcess, Nemesis, type ProcessOptions } from './nemesis.js';
export type { Operation } from './operation.js';
export { HistoryRecorder, type PendingOperation, type RecorderOptions } from './recorder.js';
export {
  type RegisterInput,
  type RegisterOutput,
  type RegisterState,
  registerModel,
} from './register-model.js';
export { type SearchBudget, type SearchResult, searchLinearization, type Verdict } from './search.js';
export {
  type AppendReadTransaction,
  classifyFailure,
  type FailureKind,
  type OperationMix,
  type RegisterStore,
  type RunningWorkload,
  runRegisterOperation,
  startWorkload,
  type WorkloadOperation,
  type WorkloadOptions,
  type WorkloadResult,
  type WorkloadStats,
} from './workload.js';
