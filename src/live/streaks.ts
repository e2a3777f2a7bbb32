import { sql } from 'drizzle-orm'
import type { Db } from '../db/client.js'
import { rowsOf } from '../db/rows.js'
import { isUuid } from '../db/uuid.js'
import type { GiftEvent } from '../gifts/service.js'
import { DomainError } from '../graphql/errors.js'
import type { Json, LiveBus } from './bus.js'
import { BoundedQueue, cancellable } from './queue.js'

// The end of a streak, decided by the server and published explicitly, so
// that no client guesses (and double-counts) from timings.
//
// A gift continues a streak when it is sent within the combo window of the
// last gift of the same sender, gift and stream (GiftService decides this
// under the stream's row lock, with sentAt from the database clock). So a
// streak has ended once the database clock is past last.sentAt + window
// with no newer gift for that key: any gift committed later gets a later
// sentAt. The check takes the stream's row lock (as gift batches do), so a
// batch in flight is committed, and seen, before the clock is read.
//
// Streaks are tracked by the instance that committed their last gift (fed by
// GiftService.onCommitted, not by the bus): with several instances, a streak
// continued elsewhere is dropped here when the check sees the newer gift.

export interface StreakEnd {
  streamId: string
  senderId: string
  giftId: string
  /** The streak's final count. */
  combo: number
  lastSequence: number
  lastGiftEventId: string
  endedAt: string
}

interface Pending {
  streamId: string
  senderId: string
  giftId: string
  combo: number
  sequence: bigint
  eventId: string
  sentAtMs: number
}

export interface StreakLimits {
  windowMs: number
  /** Streaks tracked at once; past it, new ones get no end event (and an error is reported). */
  pendingMax: number
  /** How often due streaks are checked. */
  checkEveryMs: number
}

const topic = (streamId: string) => `streaks:${streamId}`
const keyOf = (e: { streamId: string; senderId: string; giftId: string }) =>
  `${e.streamId}|${e.senderId}|${e.giftId}`

export class StreakTracker {
  private readonly pending = new Map<string, Pending>()
  private timer: NodeJS.Timeout | null = null
  private sweeping = false

  constructor(
    private readonly db: Db,
    private readonly bus: LiveBus,
    private readonly limits: StreakLimits,
    private readonly onError: (error: unknown) => void = () => {},
  ) {}

  /** GiftService.onCommitted: each event is now the last of its streak. */
  track(events: GiftEvent[]): void {
    for (const e of events) {
      if (e.streamId === null || e.sequence === null) continue
      const key = keyOf({ streamId: e.streamId, senderId: e.senderId, giftId: e.giftId })
      const seen = this.pending.get(key)
      if (seen && seen.sequence >= e.sequence) continue
      if (!seen && this.pending.size >= this.limits.pendingMax) {
        this.onError(new Error(`more than ${this.limits.pendingMax} streaks at once; one gets no end event`))
        continue
      }
      this.pending.set(key, {
        streamId: e.streamId,
        senderId: e.senderId,
        giftId: e.giftId,
        combo: e.combo,
        sequence: e.sequence,
        eventId: e.id,
        sentAtMs: parseTime(e.sentAt),
      })
    }
    this.schedule()
  }

  /** The stream ended: every streak of it ends now, then its subscribers complete. */
  streamEnded(streamId: string): void {
    const endedAt = new Date().toISOString()
    for (const [key, p] of this.pending) {
      if (p.streamId !== streamId) continue
      this.pending.delete(key)
      this.publish(p, endedAt)
    }
    this.bus.publish(topic(streamId), { kind: 'ended' })
  }

  async subscribe(streamId: string, onOverflow?: () => void): Promise<AsyncGenerator<StreakEnd>> {
    const [stream] = isUuid(streamId)
      ? rowsOf<{ status: string }>(
          await this.db.execute(sql`select status from live_streams where id = ${streamId}`),
        )
      : []
    if (!stream) throw new DomainError('STREAM_NOT_FOUND', 'no such live stream', 'streamId')
    const queue = new BoundedQueue<StreakEnd | 'ended'>(256)
    const unsubscribe = this.bus.subscribe(topic(streamId), (payload) => {
      const item = fromWire(payload)
      if (!item || queue.push(item)) return
      unsubscribe()
      queue.fail(new Error('slow consumer'))
      onOverflow?.()
    })
    const ended = stream.status === 'ended'
    async function* run(): AsyncGenerator<StreakEnd> {
      if (ended) return
      for (;;) {
        const item = await queue.take()
        if (item === undefined || item === 'ended') return
        yield item
      }
    }
    return cancellable(run(), () => {
      unsubscribe()
      queue.close()
    })
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
    this.pending.clear()
  }

  private schedule(): void {
    if (this.timer || this.sweeping || this.pending.size === 0) return
    this.timer = setTimeout(() => {
      this.timer = null
      this.sweeping = true
      this.sweep()
        .catch(this.onError)
        .finally(() => {
          this.sweeping = false
          this.schedule()
        })
    }, this.limits.checkEveryMs)
    this.timer.unref()
  }

  private async sweep(): Promise<void> {
    const now = Date.now()
    const dueByStream = new Map<string, Pending[]>()
    for (const p of this.pending.values()) {
      if (now < p.sentAtMs + this.limits.windowMs) continue
      const list = dueByStream.get(p.streamId) ?? []
      list.push(p)
      dueByStream.set(p.streamId, list)
    }
    for (const [streamId, due] of dueByStream) await this.settle(streamId, due)
  }

  private async settle(streamId: string, due: Pending[]): Promise<void> {
    const { nowMs, latest } = await this.db.transaction(async (tx) => {
      const [row] = rowsOf<{ now: string }>(
        await tx.execute(sql`
          select to_char(clock_timestamp() at time zone 'utc', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as now
            from live_streams where id = ${streamId} for no key update`),
      )
      const rows = rowsOf<{ sender_id: string; gift_id: string; sequence: string }>(
        await tx.execute(sql`
          select distinct on (sender_id, gift_id) sender_id::text, gift_id::text, sequence::text
            from gift_events
           where stream_id = ${streamId}
             and sender_id = any(${sql.param(due.map((p) => p.senderId))}::uuid[])
             and gift_id = any(${sql.param(due.map((p) => p.giftId))}::uuid[])
           order by sender_id, gift_id, sequence desc`),
      )
      return {
        nowMs: row ? Date.parse(row.now) : Number.NaN,
        latest: new Map(rows.map((r) => [`${r.sender_id}|${r.gift_id}`, BigInt(r.sequence)])),
      }
    })
    for (const p of due) {
      const key = keyOf(p)
      if (this.pending.get(key) !== p) continue // a newer gift arrived meanwhile
      const last = latest.get(`${p.senderId}|${p.giftId}`) ?? p.sequence
      if (last > p.sequence) {
        this.pending.delete(key) // continued, committed elsewhere: tracked there
        continue
      }
      if (Number.isNaN(nowMs) || nowMs - p.sentAtMs > this.limits.windowMs) {
        this.pending.delete(key)
        this.publish(p, new Date(Number.isNaN(nowMs) ? Date.now() : nowMs).toISOString())
      }
    }
  }

  private publish(p: Pending, endedAt: string): void {
    this.bus.publish(topic(p.streamId), {
      kind: 'streakEnded',
      streamId: p.streamId,
      senderId: p.senderId,
      giftId: p.giftId,
      combo: p.combo,
      lastSequence: Number(p.sequence),
      lastGiftEventId: p.eventId,
      endedAt,
    })
  }
}

function fromWire(payload: Json): StreakEnd | 'ended' | null {
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) return null
  if (payload.kind === 'ended') return 'ended'
  if (payload.kind !== 'streakEnded') return null
  const { kind: _kind, ...end } = payload
  return end as unknown as StreakEnd
}

/** PostgreSQL's text timestamps ("2026-11-25 22:30:01.123456+00") as milliseconds. */
function parseTime(text: string): number {
  return Date.parse(text.includes('T') ? text : text.replace(' ', 'T').replace(/([+-]\d\d)$/, '$1:00'))
}
