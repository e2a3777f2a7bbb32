import { builder } from './builder.js'

// Domain refusals are data, not exceptions: every mutation payload carries
// `userErrors`, each with a stable code. Missing credentials or rights are
// GraphQL errors instead (UNAUTHENTICATED, FORBIDDEN: see builder.ts).

export const USER_ERROR_CODES = [
  'INVALID_INPUT',
  'NOT_FOUND',
  'INSUFFICIENT_COINS',
  'GIFT_NOT_FOUND',
  'GIFT_UNAVAILABLE',
  'STREAM_NOT_FOUND',
  'STREAM_NOT_LIVE',
  'CREATOR_NOT_FOUND',
  'USER_NOT_FOUND',
  'CANNOT_GIFT_SELF',
  'QUANTITY_OUT_OF_RANGE',
  'SPEND_LIMIT_EXCEEDED',
  'IDEMPOTENCY_KEY_REUSED',
  'ALREADY_LIVE',
  'RATE_LIMITED',
  'OVERLOADED',
  'PACKAGE_NOT_FOUND',
  'RECHARGE_NOT_FOUND',
  'PROVIDER_NOT_CONFIGURED',
  'PROVIDER_UNAVAILABLE',
  'WALLET_IN_DEBT',
  // payouts
  'NOT_A_CREATOR',
  'PAYOUT_BELOW_MINIMUM',
  'PAYOUT_CAP_EXCEEDED',
  'INSUFFICIENT_EARNINGS',
  'PAYOUT_NOT_FOUND',
  'PAYOUT_NOT_PENDING',
  'CANNOT_DECIDE_OWN_PAYOUT',
] as const
export type UserErrorCode = (typeof USER_ERROR_CODES)[number]

export interface UserError {
  code: UserErrorCode
  message: string
  /** The input field at fault, as a path ("input.quantity"), when there is one. */
  field: string | null
}

export const userError = (code: UserErrorCode, message: string, field: string | null = null): UserError => ({
  code,
  message,
  field,
})

/** A refusal a service raises; mutations turn it into a UserError in their payload. */
export class DomainError extends Error {
  override readonly name = 'DomainError'
  constructor(
    readonly code: UserErrorCode,
    message: string,
    readonly field: string | null = null,
  ) {
    super(message)
  }
  toUserError(): UserError {
    return userError(this.code, this.message, this.field)
  }
}

export const UserErrorCodeEnum = builder.enumType('UserErrorCode', {
  description: 'Why a mutation was refused. Stable: clients may switch on it.',
  values: USER_ERROR_CODES,
})

export const UserErrorRef = builder.objectRef<UserError>('UserError').implement({
  description: 'A refusal of a mutation: nothing was changed.',
  fields: (t) => ({
    code: t.field({ type: UserErrorCodeEnum, resolve: (e) => e.code }),
    message: t.exposeString('message'),
    field: t.exposeString('field', { nullable: true }),
  }),
})

/**
 * Runs a mutation's work; a DomainError becomes `{ userErrors: [it] }` with
 * every other payload field null. Anything else is unexpected and is masked.
 */
export async function withUserErrors<T extends object>(
  work: () => Promise<T>,
): Promise<(T & { userErrors: UserError[] }) | { userErrors: UserError[] }> {
  try {
    return { ...(await work()), userErrors: [] }
  } catch (error) {
    if (error instanceof DomainError) return { userErrors: [error.toUserError()] }
    throw error
  }
}
