import { and, desc, eq, gte, lt, sql } from 'drizzle-orm'
import type { Db } from '../db/client.js'
import { giftEvents, ledgerEntries, ledgerTransactions, users } from '../db/schema.js'
import { DomainError } from '../graphql/errors.js'
import { creatorEarnings, type Ledger, LedgerError, platform, userWallet } from '../ledger/index.js'

// A user's coins: their wallet (what they can spend), a creator's earnings,
// their history, promotional grants, and the limits they set themselves.

export interface WalletEntry {
  id: bigint
  kind: string
  /** Signed, as the wallet sees it: credits positive, debits negative. */
  amount: bigint
  balanceAfter: bigint
  postedAt: string
  description: string
  seq: bigint
}

export const HISTORY_PAGE_MAX = 100
export const GRANT_COINS_MAX = 10_000_000n
export const REASON_LENGTH_MAX = 200
export const DAILY_LIMIT_MAX = 1_000_000_000_000n

export function walletBalance(ledger: Ledger, userId: string): Promise<{ coins: bigint; available: bigint }> {
  return ledger.balance(userWallet(userId)).then((b) => ({ coins: b.balance, available: b.available }))
}

export async function earningsBalance(ledger: Ledger, userId: string) {
  const b = await ledger.balance(creatorEarnings(userId))
  return { coins: b.balance, pendingPayoutCoins: b.held }
}

/** The wallet's entries, newest first, before the entry with sequence `beforeSeq`. */
export async function walletHistory(
  db: Db,
  ledger: Ledger,
  userId: string,
  page: { beforeSeq: bigint | null; limit: number },
): Promise<WalletEntry[]> {
  const [wallet] = await ledger.accounts.resolve(db, [userWallet(userId)])
  if (!wallet) return []
  const rows = await db
    .select({
      id: ledgerEntries.id,
      kind: ledgerTransactions.kind,
      direction: ledgerEntries.direction,
      amount: ledgerEntries.amount,
      balanceAfter: ledgerEntries.balanceAfter,
      postedAt: ledgerEntries.postedAt,
      description: ledgerTransactions.description,
      seq: ledgerEntries.accountSeq,
    })
    .from(ledgerEntries)
    .innerJoin(ledgerTransactions, eq(ledgerTransactions.id, ledgerEntries.transactionId))
    .where(
      and(
        eq(ledgerEntries.accountId, wallet.id),
        page.beforeSeq === null ? undefined : lt(ledgerEntries.accountSeq, page.beforeSeq),
      ),
    )
    .orderBy(desc(ledgerEntries.accountSeq))
    .limit(Math.min(page.limit, HISTORY_PAGE_MAX + 1))
  return rows.map((r) => ({ ...r, amount: r.direction === 'credit' ? r.amount : -r.amount }))
}

/** Promotional coins from the platform's promotions account, idempotent on the key. */
export async function grantCoins(
  db: Db,
  ledger: Ledger,
  input: { userId: string; coins: bigint; reason: string; idempotencyKey: string; grantedBy: string },
) {
  const reason = input.reason.trim()
  if (reason.length === 0 || reason.length > REASON_LENGTH_MAX) {
    throw new DomainError(
      'INVALID_INPUT',
      `reason must be 1 to ${REASON_LENGTH_MAX} characters`,
      'input.reason',
    )
  }
  if (input.coins <= 0n || input.coins > GRANT_COINS_MAX) {
    throw new DomainError('INVALID_INPUT', `coins must be between 1 and ${GRANT_COINS_MAX}`, 'input.coins')
  }
  checkKey(input.idempotencyKey)
  const [user] = await db.select({ id: users.id }).from(users).where(eq(users.id, input.userId))
  if (!user) throw new DomainError('USER_NOT_FOUND', 'no such user', 'input.userId')
  try {
    const { transaction } = await ledger.post({
      idempotencyKey: `grant:${input.idempotencyKey}`,
      kind: 'grant',
      description: `Promotional coins: ${reason}`,
      metadata: { reason, userId: input.userId, grantedBy: input.grantedBy },
      entries: [
        { account: platform.promotions, direction: 'debit', amount: input.coins },
        { account: userWallet(input.userId), direction: 'credit', amount: input.coins },
      ],
    })
    const walletEntry = transaction.entries.find((e) => e.direction === 'credit')
    return { transaction, walletCoins: walletEntry?.balanceAfter ?? null }
  } catch (error) {
    if (error instanceof LedgerError && error.code === 'IDEMPOTENCY_KEY_REUSED') {
      throw new DomainError(
        'IDEMPOTENCY_KEY_REUSED',
        'this idempotency key was used for another grant',
        'input.idempotencyKey',
      )
    }
    throw error
  }
}

export function checkKey(key: string): void {
  if (key.trim().length === 0 || key.length > 200) {
    throw new DomainError(
      'INVALID_INPUT',
      'idempotencyKey must be 1 to 200 characters',
      'input.idempotencyKey',
    )
  }
}

/** Coins the user has sent in gifts since midnight UTC. */
export async function spentToday(db: Db, userId: string): Promise<bigint> {
  const [row] = await db
    .select({ coins: sql<string>`coalesce(sum(${giftEvents.coins}), 0)::text` })
    .from(giftEvents)
    .where(
      and(
        eq(giftEvents.senderId, userId),
        gte(giftEvents.sentAt, sql`date_trunc('day', now() at time zone 'utc') at time zone 'utc'`),
      ),
    )
  return BigInt(row?.coins ?? '0')
}

export async function dailyLimit(db: Db, userId: string): Promise<bigint | null> {
  const [row] = await db.select({ limit: users.dailySpendLimitCoins }).from(users).where(eq(users.id, userId))
  return row?.limit ?? null
}

/** A user's own daily limit on gift spending; null removes it. Takes effect at once. */
export async function setDailyLimit(db: Db, userId: string, coins: bigint | null): Promise<bigint | null> {
  if (coins !== null && (coins <= 0n || coins > DAILY_LIMIT_MAX)) {
    throw new DomainError(
      'INVALID_INPUT',
      `a daily limit is between 1 and ${DAILY_LIMIT_MAX} coins`,
      'input.dailyCoins',
    )
  }
  await db
    .update(users)
    .set({ dailySpendLimitCoins: coins, updatedAt: sql`now()` })
    .where(eq(users.id, userId))
  return coins
}
