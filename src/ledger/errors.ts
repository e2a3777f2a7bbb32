// Every refusal of the ledger is a LedgerError with a stable code. A refused
// operation has changed nothing.

export type LedgerErrorCode =
  | 'INVALID_POSTING'
  | 'UNBALANCED'
  | 'UNKNOWN_ACCOUNT'
  | 'ACCOUNT_MISMATCH'
  | 'UNIT_MISMATCH'
  | 'INSUFFICIENT_FUNDS'
  | 'IDEMPOTENCY_KEY_REUSED'
  | 'TRANSACTION_NOT_FOUND'
  | 'ALREADY_REVERSED'
  | 'HOLD_NOT_FOUND'
  | 'HOLD_NOT_PENDING'
  | 'HOLD_AMOUNT_EXCEEDED'

export class LedgerError extends Error {
  override readonly name: string = 'LedgerError'
  constructor(
    readonly code: LedgerErrorCode,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message)
  }
}

export class InsufficientFundsError extends LedgerError {
  override readonly name = 'InsufficientFundsError'
  constructor(
    readonly accountCode: string,
    readonly available: bigint,
    readonly requested: bigint,
  ) {
    super('INSUFFICIENT_FUNDS', `account ${accountCode} has ${available} available, ${requested} requested`, {
      accountCode,
    })
  }
}

export class IdempotencyConflictError extends LedgerError {
  override readonly name = 'IdempotencyConflictError'
  constructor(readonly idempotencyKey: string) {
    super(
      'IDEMPOTENCY_KEY_REUSED',
      `idempotency key ${idempotencyKey} was already used for a different request`,
      {
        idempotencyKey,
      },
    )
  }
}

export const invalid = (message: string, details: Record<string, unknown> = {}) =>
  new LedgerError('INVALID_POSTING', message, details)
