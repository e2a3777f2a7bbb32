import type { giftEvents, gifts } from '../db/schema.js'

export type GiftEvent = typeof giftEvents.$inferSelect
export type GiftRow = typeof gifts.$inferSelect

/** A user's public profile, as the User type shows it. */
export interface PublicProfile {
  id: string
  handle: string
  displayName: string
  roles: string[]
}

/**
 * A gift event with the rows its answer shows, when the code that wrote it
 * already had them (the gift's batch): GraphQL resolves `gift`, `sender`
 * and `creator` from these instead of reading them again.
 */
export interface GiftEventView extends GiftEvent {
  gift?: GiftRow
  sender?: PublicProfile
  creator?: PublicProfile
}

export interface SendGiftInput {
  senderId: string
  giftId: string
  liveStreamId?: string | null
  creatorId?: string | null
  quantity?: number | null
  idempotencyKey: string
}

export interface GiftLimits {
  quantityMax: number
  coinsMax: bigint
  comboWindowMs: number
}

/** Whether an earlier gift under the same key is the gift asked for now (a retry) or another one. */
export function isSameGift(event: GiftEvent, input: SendGiftInput & { quantity: number }): boolean {
  return (
    event.giftId === input.giftId &&
    event.quantity === input.quantity &&
    (input.liveStreamId ? event.streamId === input.liveStreamId : event.creatorId === input.creatorId)
  )
}
