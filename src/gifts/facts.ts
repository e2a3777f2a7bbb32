import { sql } from 'drizzle-orm'
import type { Db } from '../db/client.js'
import { rowsOf } from '../db/rows.js'

// What a gift is priced and checked against before its batch: the gift's
// price, the stream's creator and status, the creator's share. They change
// rarely (an admin edits the catalog or a share, a stream ends), so they are
// remembered for a short while and a gift usually goes to its batch without
// a database round trip of its own. A remembered fact is never the last
// word: the batch reads the prices and shares again (one statement for the
// whole batch) and sends a gift priced from outdated facts back to be priced
// again (StaleFactsError), and it checks the stream's status under the
// stream's lock. A refusal is never decided from remembered facts alone:
// the facts are read afresh first, with the key's earlier gift if any.

export interface GiftFacts {
  gift: { coinCost: bigint; active: boolean } | null
  stream: { creatorId: string; status: 'live' | 'ended' } | null
  /** The stream's creator, or the creator named in the input. */
  creator: { id: string; roles: string[]; shareBps: number } | null
}

/** Facts read from the database just now, with the gift already sent under this key, if any. */
export interface FreshFacts extends GiftFacts {
  earlierEventId: string | null
}

export interface FactsTarget {
  giftId: string
  liveStreamId?: string | null
  creatorId?: string | null
}

/** A gift priced from facts that the batch found outdated: the sender prices it again from fresh ones. */
export class StaleFactsError extends Error {
  override readonly name = 'StaleFactsError'
}

/** Everything a gift is checked against before its batch, in one round trip. */
export async function loadFacts(db: Db, input: FactsTarget, ledgerKey: string): Promise<FreshFacts> {
  const stream = input.liveStreamId ?? null
  const creator = input.creatorId ?? null
  const [row] = rowsOf<Record<string, string | boolean | number | null>>(
    await db.execute(sql`
      with s as (select creator_id, status from live_streams where id = ${stream}::uuid),
           c as (select id, roles, creator_share_bps from users
                  where id = coalesce((select creator_id from s), ${creator}::uuid))
      select
        (select ge.id::text from ledger_transactions t join gift_events ge on ge.transaction_id = t.id
          where t.idempotency_key = ${ledgerKey}) as earlier_id,
        (select coin_cost::text from gifts where id = ${input.giftId}::uuid) as gift_cost,
        (select active from gifts where id = ${input.giftId}::uuid) as gift_active,
        (select creator_id::text from s) as stream_creator,
        (select status::text from s) as stream_status,
        (select id::text from c) as creator_id,
        (select array_to_string(roles, ',') from c) as creator_roles,
        (select creator_share_bps from c) as creator_share`),
  )
  if (!row) throw new Error('gifts: the facts query returned no row')
  return {
    earlierEventId: row.earlier_id === null ? null : String(row.earlier_id),
    gift:
      row.gift_cost === null
        ? null
        : { coinCost: BigInt(String(row.gift_cost)), active: row.gift_active === true },
    stream:
      row.stream_creator === null
        ? null
        : { creatorId: String(row.stream_creator), status: String(row.stream_status) as 'live' | 'ended' },
    creator:
      row.creator_id === null
        ? null
        : {
            id: String(row.creator_id),
            roles: String(row.creator_roles ?? '')
              .split(',')
              .filter(Boolean),
            shareBps: Number(row.creator_share),
          },
  }
}

export interface FactsCacheOptions {
  /** How long a fact is used before it is read again. */
  ttlMs: number
  /** Facts remembered per kind (gifts, streams, creators); past that, the oldest are forgotten. */
  entriesMax: number
}

export const FACTS_CACHE_DEFAULTS: FactsCacheOptions = { ttlMs: 30_000, entriesMax: 10_000 }

/** Facts remembered per gift, stream and creator, each for `ttlMs` at most. */
export class FactsCache {
  private readonly gifts: Expiring<NonNullable<GiftFacts['gift']>>
  private readonly streams: Expiring<NonNullable<GiftFacts['stream']>>
  private readonly creators: Expiring<NonNullable<GiftFacts['creator']>>

  constructor(options: FactsCacheOptions = FACTS_CACHE_DEFAULTS) {
    this.gifts = new Expiring(options)
    this.streams = new Expiring(options)
    this.creators = new Expiring(options)
  }

  /** All the facts of a gift to `target`, if every one is remembered; undefined otherwise. */
  lookup(target: FactsTarget): GiftFacts | undefined {
    const gift = this.gifts.get(target.giftId)
    if (!gift) return undefined
    let stream: GiftFacts['stream'] = null
    let creatorId = target.creatorId ?? null
    if (target.liveStreamId) {
      stream = this.streams.get(target.liveStreamId) ?? null
      if (!stream) return undefined
      creatorId = stream.creatorId
    }
    const creator = creatorId === null ? undefined : this.creators.get(creatorId)
    if (!creator) return undefined
    return { gift, stream, creator }
  }

  /** Remembers what was found; what was not found is not remembered. */
  remember(target: FactsTarget, facts: GiftFacts): void {
    if (facts.gift) this.gifts.set(target.giftId, facts.gift)
    if (target.liveStreamId && facts.stream) this.streams.set(target.liveStreamId, facts.stream)
    if (facts.creator) this.creators.set(facts.creator.id, facts.creator)
  }

  forgetGift(giftId: string): void {
    this.gifts.delete(giftId)
  }

  forgetStream(streamId: string): void {
    this.streams.delete(streamId)
  }

  forgetCreator(creatorId: string): void {
    this.creators.delete(creatorId)
  }
}

/** A bounded map whose entries are forgotten `ttlMs` after they were set. */
class Expiring<V> {
  /** Insertion order is age order: entries are only ever appended. */
  private readonly entries = new Map<string, { value: V; expiresAt: number }>()

  constructor(private readonly options: FactsCacheOptions) {}

  get(key: string): V | undefined {
    const entry = this.entries.get(key)
    if (!entry) return undefined
    if (entry.expiresAt <= performance.now()) {
      this.entries.delete(key)
      return undefined
    }
    return entry.value
  }

  set(key: string, value: V): void {
    this.entries.delete(key)
    this.entries.set(key, { value, expiresAt: performance.now() + this.options.ttlMs })
    if (this.entries.size > this.options.entriesMax) {
      const oldest = this.entries.keys().next().value
      if (oldest !== undefined) this.entries.delete(oldest)
    }
  }

  delete(key: string): void {
    this.entries.delete(key)
  }
}
