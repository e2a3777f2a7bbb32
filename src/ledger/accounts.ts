import { inArray } from 'drizzle-orm'
import type { DbOrTx } from '../db/client.js'
import { ledgerAccounts } from '../db/schema.js'
import { LedgerError } from './errors.js'
import type { Account, AccountRef, AccountSpec } from './types.js'

// Resolves account codes to accounts, creating user-owned accounts on first
// use. An account's identity (id, code, type, unit, owner, allow_negative)
// never changes (the database refuses it), so resolved accounts are cached.

const CACHE_SIZE_MAX = 100_000
const CODE_FORMAT = /^[a-z0-9_]+(:[A-Za-z0-9_-]+)+$/

export class AccountDirectory {
  private readonly cache = new Map<string, Account>()

  /**
   * The account, if it is cached (it was resolved before) and matches the
   * spec: no database, no promise. Otherwise undefined, and resolve tells why.
   * Only well-formed codes are ever cached, so a hit needs no format check.
   */
  cached(ref: AccountRef): Account | undefined {
    const account = this.cache.get(typeof ref === 'string' ? ref : ref.code)
    return account && (typeof ref === 'string' || matches(account, ref)) ? account : undefined
  }

  /** Resolves every ref (creating spec'd accounts that do not exist yet), index-aligned with refs. */
  async resolve(db: DbOrTx, refs: readonly AccountRef[]): Promise<Account[]> {
    const specs = new Map<string, AccountSpec | null>()
    for (const ref of refs) {
      const code = typeof ref === 'string' ? ref : ref.code
      if (!CODE_FORMAT.test(code))
        throw new LedgerError('UNKNOWN_ACCOUNT', `malformed account code ${JSON.stringify(code)}`)
      if (!this.cache.has(code) && !specs.get(code)) specs.set(code, typeof ref === 'string' ? null : ref)
    }
    if (specs.size > 0) await this.load(db, specs)
    return refs.map((ref) => {
      const account = this.cache.get(typeof ref === 'string' ? ref : ref.code)
      if (!account)
        throw new LedgerError('UNKNOWN_ACCOUNT', `no account ${typeof ref === 'string' ? ref : ref.code}`)
      if (typeof ref !== 'string') assertMatches(account, ref)
      return account
    })
  }

  private async load(db: DbOrTx, specs: Map<string, AccountSpec | null>): Promise<void> {
    const toCreate = [...specs.values()].filter((s): s is AccountSpec => s !== null)
    if (toCreate.length > 0) {
      // Concurrent first uses race harmlessly: one insert wins, the others do nothing.
      await db
        .insert(ledgerAccounts)
        .values(
          toCreate.map((s) => ({
            code: s.code,
            name: s.name,
            type: s.type,
            unit: s.unit,
            ownerId: s.ownerId ?? null,
            allowNegative: s.allowNegative ?? false,
          })),
        )
        .onConflictDoNothing({ target: ledgerAccounts.code })
    }
    const rows = await db
      .select({
        id: ledgerAccounts.id,
        code: ledgerAccounts.code,
        name: ledgerAccounts.name,
        type: ledgerAccounts.type,
        unit: ledgerAccounts.unit,
        ownerId: ledgerAccounts.ownerId,
        allowNegative: ledgerAccounts.allowNegative,
      })
      .from(ledgerAccounts)
      .where(inArray(ledgerAccounts.code, [...specs.keys()]))
    for (const row of rows) this.remember(row)
  }

  private remember(account: Account): void {
    if (this.cache.size >= CACHE_SIZE_MAX) {
      const oldest = this.cache.keys().next().value
      if (oldest !== undefined) this.cache.delete(oldest)
    }
    this.cache.set(account.code, account)
  }
}

function matches(account: Account, spec: AccountSpec): boolean {
  return (
    account.type === spec.type &&
    account.unit === spec.unit &&
    account.allowNegative === (spec.allowNegative ?? false) &&
    (account.ownerId ?? null) === (spec.ownerId ?? null)
  )
}

function assertMatches(account: Account, spec: AccountSpec): void {
  if (!matches(account, spec)) {
    throw new LedgerError(
      'ACCOUNT_MISMATCH',
      `account ${spec.code} exists with a different type, unit or owner`,
      {
        code: spec.code,
      },
    )
  }
}
