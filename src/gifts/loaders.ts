import DataLoader from 'dataloader'
import { sql } from 'drizzle-orm'
import type { Db } from '../db/client.js'
import { gifts, liveStreams, users } from '../db/schema.js'
import type { GiftRow, PublicProfile } from './types.js'

// A gift event's gift, sender, creator and stream, when the event came
// without them (a retry's answer, the live feed): loaded per request, one
// statement per kind for every event of the request.

export type LiveStreamRow = typeof liveStreams.$inferSelect

export interface GiftEventLoaders {
  gifts: DataLoader<string, GiftRow>
  users: DataLoader<string, PublicProfile>
  streams: DataLoader<string, LiveStreamRow>
}

const loaders = new WeakMap<object, GiftEventLoaders>()

/** The loaders of one request (its GraphQL context). */
export function giftEventLoaders(ctx: { db: Db }): GiftEventLoaders {
  let found = loaders.get(ctx)
  if (!found) {
    found = create(ctx.db)
    loaders.set(ctx, found)
  }
  return found
}

function create(db: Db): GiftEventLoaders {
  return {
    gifts: new DataLoader(async (ids) =>
      inOrder(
        ids,
        await db
          .select()
          .from(gifts)
          .where(sql`${gifts.id} = any(${sql.param([...ids])}::uuid[])`),
      ),
    ),
    users: new DataLoader(async (ids) =>
      inOrder(
        ids,
        await db
          .select({ id: users.id, handle: users.handle, displayName: users.displayName, roles: users.roles })
          .from(users)
          .where(sql`${users.id} = any(${sql.param([...ids])}::uuid[])`),
      ),
    ),
    streams: new DataLoader(async (ids) =>
      inOrder(
        ids,
        await db
          .select()
          .from(liveStreams)
          .where(sql`${liveStreams.id} = any(${sql.param([...ids])}::uuid[])`),
      ),
    ),
  }
}

/** Rows in the order of `ids`; a missing one (the foreign keys exclude it) is an error for its key alone. */
function inOrder<T extends { id: string }>(ids: readonly string[], rows: T[]): (T | Error)[] {
  const byId = new Map(rows.map((r) => [r.id, r]))
  return ids.map((id) => byId.get(id) ?? new Error(`gifts: no row ${id}`))
}
