// The ledger's vocabulary. Amounts are bigints in the smallest step of their
// unit: whole coins for COIN, minor units (cents) for ISO 4217 currencies.

export type Unit = string // 'COIN' or an ISO 4217 code such as 'USD'
export const COIN: Unit = 'COIN'

export type AccountType = 'asset' | 'liability' | 'equity' | 'income' | 'expense'
export type Direction = 'debit' | 'credit'

export const TRANSACTION_KINDS = [
  'recharge',
  'gift',
  'grant',
  'refund',
  'chargeback',
  'dispute_hold',
  'dispute_release',
  'payout',
  'fee',
  'adjustment',
  'reversal',
  'hold_posted',
  'sweep',
] as const
export type TransactionKind = (typeof TRANSACTION_KINDS)[number]

/** An account's fixed identity; the database refuses any change to it. */
export interface AccountSpec {
  code: string
  name: string
  type: AccountType
  unit: Unit
  ownerId?: string | null
  allowNegative?: boolean
}

export interface Account {
  id: bigint
  code: string
  name: string
  type: AccountType
  unit: Unit
  ownerId: string | null
  allowNegative: boolean
}

export interface AccountBalance {
  account: Account
  /** On the account's normal side: a wallet's coins, a clearing account's money. */
  balance: bigint
  /** balance minus pending holds. */
  available: bigint
  held: bigint
  debitsTotal: bigint
  creditsTotal: bigint
  /** The account's last entry sequence: its entry count. A sharded account's sums over it and its shards. */
  lastSeq: bigint
}

/** An account named by code (it must exist) or by spec (created on first use). */
export type AccountRef = string | AccountSpec

export interface EntryRequest {
  account: AccountRef
  direction: Direction
  amount: bigint
  /**
   * Debits only: the part of the amount that `account` cannot cover (a
   * non-negative account at its available balance) is debited here instead,
   * under the same lock. A clawback that meets an empty wallet becomes a
   * recorded debt, never a silent clamp.
   */
  shortfallTo?: AccountRef
  /**
   * Credits only: up to this account's (positive) balance, the credit goes
   * here first, the rest to `account`. A debt is repaid before coins reach
   * the wallet.
   */
  repayFirst?: AccountRef
}

export interface PostingRequest {
  /** Unique per posting; a retry with the same key and content returns the original. */
  idempotencyKey: string
  kind: TransactionKind
  description?: string
  metadata?: Record<string, unknown>
  entries: EntryRequest[]
}

export interface PostedEntry {
  id: bigint
  accountId: bigint
  accountCode: string
  direction: Direction
  amount: bigint
  unit: Unit
  accountSeq: bigint
  balanceAfter: bigint
}

export interface PostedTransaction {
  id: bigint
  idempotencyKey: string
  kind: string
  description: string
  metadata: Record<string, unknown>
  reversesId: bigint | null
  postedAt: string
  entries: PostedEntry[]
}

export interface PostingResult {
  transaction: PostedTransaction
  /** True when the key had been posted before and this is the original. */
  replayed: boolean
}

export type HoldStatus = 'pending' | 'posted' | 'voided' | 'expired'

export interface HoldRequest {
  idempotencyKey: string
  kind: TransactionKind
  /** Debited when the hold is posted; its available balance drops now. */
  account: AccountRef
  /** Credited when the hold is posted. */
  counterAccount: AccountRef
  amount: bigint
  expiresAt: Date
  description?: string
  metadata?: Record<string, unknown>
}

export interface Hold {
  id: bigint
  idempotencyKey: string
  kind: string
  accountId: bigint
  counterAccountId: bigint
  unit: Unit
  amount: bigint
  status: HoldStatus
  expiresAt: string
  createdAt: string
  resolvedAt: string | null
  transactionId: bigint | null
  /** Who posted, voided or expired it and why (JSON), when the caller said. */
  resolution: Record<string, unknown> | null
}

/** Which side of an account grows its balance. */
export function normalSide(type: AccountType): Direction {
  return type === 'asset' || type === 'expense' ? 'debit' : 'credit'
}

/** The change an entry makes to its account's (normal-side) balance. */
export function signedAmount(type: AccountType, direction: Direction, amount: bigint): bigint {
  return normalSide(type) === direction ? amount : -amount
}
