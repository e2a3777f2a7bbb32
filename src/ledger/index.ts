// The double-entry ledger engine: no GraphQL, no capabilities; every
// capability moves value through it.
export * from './chart.js'
export * from './errors.js'
export type { PostHoldOptions } from './holds.js'
export type { IntegrityProblem, IntegrityReport } from './integrity.js'
export { LANES_MAX, shardParent } from './lanes.js'
export { defaultConcurrency, defaultLedgerOptions, Ledger, type LedgerOptions } from './ledger.js'
export type { FastBatch, PreparedPosting, Settled } from './posting.js'
export * from './types.js'
