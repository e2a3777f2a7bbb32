import { and, eq, sql } from 'drizzle-orm'
import type { Db } from '../db/client.js'
import { liveStreams } from '../db/schema.js'
import { DomainError } from '../graphql/errors.js'
import { sqlState } from '../ledger/tx.js'

// Live streams: a creator is live at most once at a time (a partial unique
// index says so in the database); ending takes the stream's row lock, so it
// serializes with the gift batches: every gift is either in before the end,
// or refused with STREAM_NOT_LIVE.

export type LiveStream = typeof liveStreams.$inferSelect

export const TITLE_LENGTH_MAX = 200

export async function startLiveStream(db: Db, creatorId: string, rawTitle: string): Promise<LiveStream> {
  const title = rawTitle.trim()
  if (title.length === 0 || title.length > TITLE_LENGTH_MAX) {
    throw new DomainError('INVALID_INPUT', `title must be 1 to ${TITLE_LENGTH_MAX} characters`, 'input.title')
  }
  try {
    const [stream] = await db.insert(liveStreams).values({ creatorId, title }).returning()
    return stream as LiveStream
  } catch (error) {
    if (sqlState(error) === '23505')
      throw new DomainError('ALREADY_LIVE', 'you are already live; end that stream first')
    throw error
  }
}

/** Ends the creator's own live stream; ending an ended stream returns it unchanged. */
export async function endLiveStream(db: Db, creatorId: string, streamId: string): Promise<LiveStream> {
  return db.transaction(async (tx) => {
    const [stream] = await tx
      .select()
      .from(liveStreams)
      .where(and(eq(liveStreams.id, streamId), eq(liveStreams.creatorId, creatorId)))
      .for('no key update')
    // Someone else's stream is "not found" to this creator: ids are not probed.
    if (!stream)
      throw new DomainError('STREAM_NOT_FOUND', 'no such live stream of yours', 'input.liveStreamId')
    if (stream.status === 'ended') return stream
    const [ended] = await tx
      .update(liveStreams)
      .set({ status: 'ended', endedAt: sql`clock_timestamp()` })
      .where(eq(liveStreams.id, streamId))
      .returning()
    return ended as LiveStream
  })
}
