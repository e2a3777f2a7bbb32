import { eq, sql } from 'drizzle-orm'
import type { Db } from '../db/client.js'
import { users } from '../db/schema.js'
import { type Ledger, userWallet } from '../ledger/index.js'
import type { TokenClaims } from './tokens.js'

/** Subjects remembered per process; past that, the least recently seen is forgotten. */
export const KNOWN_SUBJECTS_MAX = 10_000

interface Known {
  userId: string
  /** The claims last written to the user's row. */
  fingerprint: string
}

/**
 * Users come from tokens: the first valid token of a `sub` creates the user
 * and their coin wallet; a token whose handle, name or roles changed updates
 * the row. Subjects already seen with the same claims cost no database work,
 * so a request pays for this once per subject and process, not every time.
 */
export class UserService {
  /** subject → user; a Map in least-recently-seen-first order (an LRU). */
  private readonly known = new Map<string, Known>()
  /** Sign-ins being written, so that concurrent first requests write once. */
  private readonly pending = new Map<string, Promise<string>>()

  constructor(
    private readonly db: Db,
    private readonly ledger: Ledger,
    private readonly knownMax = KNOWN_SUBJECTS_MAX,
  ) {}

  /** The id of the token's user, creating or updating the user (and their wallet) as needed. */
  async signIn(claims: TokenClaims): Promise<string> {
    const fingerprint = JSON.stringify([claims.handle, claims.displayName, claims.roles])
    const known = this.known.get(claims.subject)
    if (known?.fingerprint === fingerprint) {
      this.remember(claims.subject, known)
      return known.userId
    }
    const key = `${claims.subject}\n${fingerprint}`
    let signingIn = this.pending.get(key)
    if (!signingIn) {
      signingIn = this.write(claims).finally(() => this.pending.delete(key))
      this.pending.set(key, signingIn)
    }
    const userId = await signingIn
    this.remember(claims.subject, { userId, fingerprint })
    return userId
  }

  /**
   * Upserts the user, then makes sure the wallet exists. Both are idempotent,
   * so concurrent first sign-ins (other processes too) race harmlessly, and a
   * wallet missing after a crash between the two is created next time.
   */
  private async write(claims: TokenClaims): Promise<string> {
    const values = {
      subject: claims.subject,
      handle: claims.handle,
      displayName: claims.displayName,
      roles: claims.roles,
    }
    // Updates only when something changed; an unchanged row returns nothing.
    const [written] = await this.db
      .insert(users)
      .values(values)
      .onConflictDoUpdate({
        target: users.subject,
        set: {
          handle: sql`excluded.handle`,
          displayName: sql`excluded.display_name`,
          roles: sql`excluded.roles`,
          updatedAt: sql`now()`,
        },
        setWhere: sql`(${users.handle}, ${users.displayName}, ${users.roles})
          is distinct from (excluded.handle, excluded.display_name, excluded.roles)`,
      })
      .returning({ id: users.id })
    const userId = written?.id ?? (await this.idOf(claims.subject))
    await this.ledger.accounts.resolve(this.db, [userWallet(userId)])
    return userId
  }

  private async idOf(subject: string): Promise<string> {
    const [row] = await this.db.select({ id: users.id }).from(users).where(eq(users.subject, subject))
    if (!row) throw new Error(`user ${subject} vanished during sign-in`)
    return row.id
  }

  private remember(subject: string, known: Known): void {
    this.known.delete(subject)
    this.known.set(subject, known)
    if (this.known.size > this.knownMax) {
      const oldest = this.known.keys().next().value
      if (oldest !== undefined) this.known.delete(oldest)
    }
  }
}
