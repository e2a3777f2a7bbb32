import DataLoader from 'dataloader'
import { sql } from 'drizzle-orm'
import type { Db } from '../db/client.js'
import { rowsOf } from '../db/rows.js'

export interface TopGifter {
  rank: number
  coins: bigint
  user: { id: string; handle: string; displayName: string; roles: string[] }
}

export const TOP_GIFTERS_MAX = 100

/**
 * Top gifters of many streams in one query (a page of live streams asks for
 * each stream's ranking): ranks by coins, ties broken by who got there first.
 * Per stream it reads only the top rows, along the ranking index.
 */
export function topGiftersLoader(db: Db, first: number): DataLoader<string, TopGifter[]> {
  return new DataLoader<string, TopGifter[]>(async (streamIds) => {
    const rows = rowsOf<{
      stream_id: string
      rank: string
      coins: string
      id: string
      handle: string
      display_name: string
      roles: string[] | string
    }>(
      await db.execute(sql`
        select r.stream_id::text, r.rank::text, r.coins::text, u.id::text, u.handle, u.display_name, u.roles
          from unnest(${sql.param([...streamIds])}::uuid[]) as s(id)
          cross join lateral (
            select g.stream_id, g.sender_id, g.coins, row_number() over () as rank
              from (select * from stream_gifters g where g.stream_id = s.id
                     order by g.coins desc, g.last_gift_at, g.sender_id limit ${first}) g
          ) r
          join users u on u.id = r.sender_id
         order by r.stream_id, r.rank`),
    )
    const byStream = new Map<string, TopGifter[]>()
    for (const r of rows) {
      const list = byStream.get(r.stream_id) ?? []
      list.push({
        rank: Number(r.rank),
        coins: BigInt(r.coins),
        user: { id: r.id, handle: r.handle, displayName: r.display_name, roles: parseRoles(r.roles) },
      })
      byStream.set(r.stream_id, list)
    }
    return streamIds.map((id) => byStream.get(id) ?? [])
  })
}

/** text[] arrives as an array from one driver and as '{a,b}' from the other through raw SQL. */
function parseRoles(value: string[] | string): string[] {
  if (Array.isArray(value)) return value
  return value
    .replace(/^\{|\}$/g, '')
    .split(',')
    .filter(Boolean)
}
