import type { PreparedPosting } from './posting.js'
import type { Account, AccountSpec } from './types.js'

// Lanes: more than one writer, for accounts that every posting credits.
//
// One writer (one connection, batches in order) keeps a hot account's lock
// for one statement and a commit per batch, but it is one backend doing all
// of the writing: on two cores it is the limit (BENCHMARKS.md). With lanes,
// postings are split by their debited account (a wallet) over several
// writers, each with its own connection and batches. An account credited by
// nearly every posting (a popular creator's earnings, the platform's
// commission) would make the lanes wait on each other's row lock, so each
// lane other than the first credits a shard of it instead: an account of
// its own, `<code>:shard<k>`, of the same type, unit and owner. The first
// lane credits the account itself.
//
// A sharded account's balance is the sum of the account and its shards
// (Ledger.balance, balanceAt). Shards are swept into their account: a
// posting that moves each shard's balance to it (kind `sweep`), before any
// debit of the account through the engine (a payout, a reversal) and in
// the background. Shards are plain ledger accounts to the database: every
// guarantee holds for them as for any account, and the books balance
// without any sweep.

/** The most lanes (and so the most shards of an account, the account itself included). */
export const LANES_MAX = 8

const SHARD_SUFFIX = /:shard([1-9])$/

/** The code of an account's shard for lane k (k ≥ 1; lane 0 credits the account itself). */
export function shardCode(code: string, lane: number): string {
  if (!Number.isInteger(lane) || lane < 1 || lane >= LANES_MAX)
    throw new Error(`ledger: no shard for lane ${lane}`)
  return `${code}:shard${lane}`
}

/** The codes of every shard an account may have, whatever the lanes are now (they may have been more). */
export function shardCodes(code: string): string[] {
  return Array.from({ length: LANES_MAX - 1 }, (_, i) => shardCode(code, i + 1))
}

/** The account a shard belongs to, or null for an account that is no shard. */
export function shardParent(code: string): string | null {
  return SHARD_SUFFIX.test(code) ? code.replace(SHARD_SUFFIX, '') : null
}

/** A shard's identity: its account's, under its own code. Never negative: it only takes credits and sweeps. */
export function shardSpec(account: Account, lane: number): AccountSpec {
  return {
    code: shardCode(account.code, lane),
    name: `${account.name} (shard ${lane})`,
    type: account.type,
    unit: account.unit,
    ownerId: account.ownerId,
    allowNegative: false,
  }
}

/**
 * The lane of a posting: by its first debited account, so that a wallet's
 * postings are written in one lane, in order, and its expected state stays
 * with that lane's batches.
 */
export function laneOf(prepared: PreparedPosting, lanes: number): number {
  if (lanes <= 1) return 0
  const i = prepared.request.entries.findIndex((e) => e.direction === 'debit')
  const account = prepared.accounts[Math.max(i, 0)] as Account
  return Number(account.id % BigInt(lanes))
}
