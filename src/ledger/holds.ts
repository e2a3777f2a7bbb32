import { createHash } from 'node:crypto'
import { and, eq, sql } from 'drizzle-orm'
import type { Tx } from '../db/client.js'
import { rowsOf } from '../db/rows.js'
import { ledgerAccounts, ledgerHolds } from '../db/schema.js'
import { IdempotencyConflictError, InsufficientFundsError, invalid, LedgerError } from './errors.js'
import { loadTransactions, type PreparedPosting, postBatchInTx } from './posting.js'
import type {
  Account,
  AccountRef,
  EntryRequest,
  Hold,
  HoldRequest,
  PostingRequest,
  PostingResult,
} from './types.js'
import { canonicalJson, checkBalanced, requestHash, validateShape } from './validate.js'

// Two-phase movements (payouts under review, disputes): a hold reserves an
// amount of an account now; later it is posted (a real transaction, for up
// to the held amount, releasing the rest) or voided, or it expires.
// Lock order: the hold row, then account rows (the same order as postings).

type HoldRow = typeof ledgerHolds.$inferSelect

export function validateHold(req: HoldRequest, accounts: readonly Account[]): string {
  // A hold becomes a two-entry posting: validate it as one.
  validateShape({
    idempotencyKey: req.idempotencyKey,
    kind: req.kind,
    description: req.description,
    metadata: req.metadata,
    entries: [
      { account: req.account, direction: 'debit', amount: req.amount },
      { account: req.counterAccount, direction: 'credit', amount: req.amount },
    ],
  })
  const [account, counter] = accounts as [Account, Account]
  if (account.id === counter.id) throw invalid('a hold needs two different accounts')
  if (account.unit !== counter.unit) {
    throw new LedgerError('UNIT_MISMATCH', `hold accounts differ in unit (${account.unit}, ${counter.unit})`)
  }
  if (!(req.expiresAt instanceof Date) || Number.isNaN(req.expiresAt.getTime()))
    throw invalid('expiresAt must be a date')
  return createHash('sha256')
    .update(
      JSON.stringify([
        req.kind,
        account.code,
        counter.code,
        req.amount.toString(),
        req.expiresAt.toISOString(),
        req.description ?? '',
        canonicalJson(req.metadata ?? {}),
      ]),
    )
    .digest('hex')
}

export async function createHoldInTx(
  tx: Tx,
  req: HoldRequest,
  accounts: readonly Account[],
  requestHash: string,
): Promise<{ hold: Hold; replayed: boolean }> {
  const [account, counter] = accounts as [Account, Account]
  const [state] = await tx
    .select({ balance: ledgerAccounts.balance, heldAmount: ledgerAccounts.heldAmount })
    .from(ledgerAccounts)
    .where(eq(ledgerAccounts.id, account.id))
    .for('update')
  if (!state) throw new LedgerError('UNKNOWN_ACCOUNT', `no account ${account.code}`)

  const [prior] = await tx
    .select()
    .from(ledgerHolds)
    .where(eq(ledgerHolds.idempotencyKey, req.idempotencyKey))
  if (prior) {
    if (prior.requestHash !== requestHash) throw new IdempotencyConflictError(req.idempotencyKey)
    return { hold: toHold(prior), replayed: true }
  }
  const available = state.balance - state.heldAmount
  if (!account.allowNegative && available < req.amount) {
    throw new InsufficientFundsError(account.code, available, req.amount)
  }
  const [row] = await tx
    .insert(ledgerHolds)
    .values({
      idempotencyKey: req.idempotencyKey,
      requestHash,
      kind: req.kind,
      description: req.description ?? '',
      metadata: req.metadata ?? {},
      accountId: account.id,
      counterAccountId: counter.id,
      unit: account.unit,
      amount: req.amount,
      expiresAt: req.expiresAt.toISOString(),
    })
    .returning()
  await tx
    .update(ledgerAccounts)
    .set({ heldAmount: sql`${ledgerAccounts.heldAmount} + ${req.amount}` })
    .where(eq(ledgerAccounts.id, account.id))
  return { hold: toHold(row as HoldRow), replayed: false }
}

/** How a hold is posted: by default, for its whole amount, as the hold's own two entries. */
export interface PostHoldOptions {
  /** Up to the held amount; the rest is released. Default: all of it. */
  amount?: bigint
  /** The posting's key; default `hold:<id>:post`. A hold is posted once, whatever the key. */
  idempotencyKey?: string
  /** Default: the hold's description. */
  description?: string
  /** Merged over the hold's metadata. */
  metadata?: Record<string, unknown>
  /**
   * More entries for the same transaction, posted with the hold's two under
   * the same locks: the other side of one movement (a payout's money beside its
   * coins). They must balance per unit among themselves, on existing accounts,
   * without routes.
   */
  entries?: EntryRequest[]
  /** Who decided to post it and why, kept on the hold. */
  resolution?: Record<string, unknown>
}

/** Resolves accounts inside the posting's transaction (they must exist). */
export interface AccountLookup {
  byId(id: bigint): Promise<Account>
  byRefs(refs: readonly AccountRef[]): Promise<Account[]>
}

export async function postHoldInTx(
  tx: Tx,
  holdId: bigint,
  options: PostHoldOptions,
  lookup: AccountLookup,
): Promise<PostingResult> {
  const hold = await lockHold(tx, holdId)
  if (hold.status === 'posted' && hold.transactionId !== null) {
    const [original] = await loadTransactions(tx, [hold.transactionId])
    if (!original) throw new Error(`ledger: hold ${holdId} names a missing transaction`)
    return { transaction: original.transaction, replayed: true }
  }
  await assertPending(tx, hold)
  const postAmount = options.amount ?? hold.amount
  if (postAmount <= 0n) throw invalid('a hold is posted for a positive amount')
  if (postAmount > hold.amount) {
    throw new LedgerError(
      'HOLD_AMOUNT_EXCEEDED',
      `hold ${holdId} holds ${hold.amount}, ${postAmount} requested`,
    )
  }
  const extra = options.entries ?? []
  if (extra.some((e) => e.shortfallTo !== undefined || e.repayFirst !== undefined))
    throw invalid('the entries posted with a hold take no routes')
  const account = await lookup.byId(hold.accountId)
  const counter = await lookup.byId(hold.counterAccountId)
  const extraAccounts = extra.length > 0 ? await lookup.byRefs(extra.map((e) => e.account)) : []
  const request: PostingRequest = {
    idempotencyKey: options.idempotencyKey ?? `hold:${hold.id}:post`,
    kind: hold.kind as PostingRequest['kind'],
    description: options.description ?? hold.description,
    metadata: {
      ...(hold.metadata as Record<string, unknown>),
      ...options.metadata,
      holdId: hold.id.toString(),
    },
    entries: [
      { account: account.code, direction: 'debit', amount: postAmount },
      { account: counter.code, direction: 'credit', amount: postAmount },
      ...extra,
    ],
  }
  const accounts = [account, counter, ...extraAccounts]
  if (extra.length > 0) {
    validateShape(request)
    checkBalanced(request, accounts)
  }
  const prepared: PreparedPosting = {
    request,
    accounts,
    requestHash:
      extra.length === 0 && options.idempotencyKey === undefined
        ? `hold:${hold.id}:${postAmount}`
        : `hold:${hold.id}:${requestHash(request, accounts, null)}`,
    reversesId: null,
    releases: [{ accountId: account.id, amount: hold.amount }],
  }
  const [result] = await postBatchInTx(tx, [prepared], {
    // The hold leaves `pending` before the account's held amount drops, as the database checks.
    beforeEntries: async (t, [posted]) => {
      await t
        .update(ledgerHolds)
        .set({
          status: 'posted',
          resolvedAt: sql`clock_timestamp()`,
          transactionId: posted?.id ?? null,
          resolution: options.resolution ?? null,
        })
        .where(eq(ledgerHolds.id, hold.id))
    },
  })
  if (!result) throw new Error('ledger: posting a hold returned no result')
  if (!result.ok) throw result.error
  return result.value
}

/**
 * Voids (or expires) a pending hold, releasing its amount, with who decided
 * and why. Voiding a voided hold is a no-op (the first resolution stays).
 */
export async function releaseHoldInTx(
  tx: Tx,
  holdId: bigint,
  as: 'voided' | 'expired',
  resolution: Record<string, unknown> | null = null,
): Promise<Hold> {
  const hold = await lockHold(tx, holdId)
  if (hold.status === as) return toHold(hold)
  if (hold.status !== 'pending') {
    throw new LedgerError('HOLD_NOT_PENDING', `hold ${holdId} is ${hold.status}`, { status: hold.status })
  }
  await tx
    .select({ id: ledgerAccounts.id })
    .from(ledgerAccounts)
    .where(eq(ledgerAccounts.id, hold.accountId))
    .for('update')
  const [row] = await tx
    .update(ledgerHolds)
    .set({ status: as, resolvedAt: sql`clock_timestamp()`, resolution })
    .where(and(eq(ledgerHolds.id, hold.id), eq(ledgerHolds.status, 'pending')))
    .returning()
  await tx
    .update(ledgerAccounts)
    .set({ heldAmount: sql`${ledgerAccounts.heldAmount} - ${hold.amount}` })
    .where(eq(ledgerAccounts.id, hold.accountId))
  return toHold(row as HoldRow)
}

async function lockHold(tx: Tx, holdId: bigint): Promise<HoldRow> {
  const [hold] = await tx.select().from(ledgerHolds).where(eq(ledgerHolds.id, holdId)).for('update')
  if (!hold) throw new LedgerError('HOLD_NOT_FOUND', `no hold ${holdId}`)
  return hold
}

async function assertPending(tx: Tx, hold: HoldRow): Promise<void> {
  if (hold.status !== 'pending') {
    throw new LedgerError('HOLD_NOT_PENDING', `hold ${hold.id} is ${hold.status}`, { status: hold.status })
  }
  const [row] = rowsOf<{ expired: boolean }>(
    await tx.execute(sql`select ${hold.expiresAt}::timestamptz <= clock_timestamp() as expired`),
  )
  if (row?.expired)
    throw new LedgerError('HOLD_NOT_PENDING', `hold ${hold.id} has expired`, { status: 'expired' })
}

export function toHold(row: HoldRow): Hold {
  return {
    id: row.id,
    idempotencyKey: row.idempotencyKey,
    kind: row.kind,
    accountId: row.accountId,
    counterAccountId: row.counterAccountId,
    unit: row.unit,
    amount: row.amount,
    status: row.status,
    expiresAt: row.expiresAt,
    createdAt: row.createdAt,
    resolvedAt: row.resolvedAt,
    transactionId: row.transactionId,
    resolution: (row.resolution as Record<string, unknown> | null) ?? null,
  }
}
