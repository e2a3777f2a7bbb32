import { hash } from 'node:crypto'
import { invalid, LedgerError } from './errors.js'
import { type Account, type Direction, type PostingRequest, TRANSACTION_KINDS } from './types.js'

// Pure checks of a posting request, before any database work.

export const LIMITS = {
  entriesMax: 64,
  idempotencyKeyLengthMax: 200,
  descriptionLengthMax: 500,
  metadataBytesMax: 8 * 1024,
  amountMax: (1n << 63n) - 1n,
} as const

const kinds = new Set<string>(TRANSACTION_KINDS)

export function validateShape(req: PostingRequest): void {
  if (typeof req.idempotencyKey !== 'string' || req.idempotencyKey.length === 0) {
    throw invalid('idempotencyKey is required')
  }
  if (req.idempotencyKey.length > LIMITS.idempotencyKeyLengthMax) {
    throw invalid(`idempotencyKey is longer than ${LIMITS.idempotencyKeyLengthMax} characters`)
  }
  if (!kinds.has(req.kind)) throw invalid(`unknown transaction kind ${JSON.stringify(req.kind)}`)
  if ((req.description ?? '').length > LIMITS.descriptionLengthMax) {
    throw invalid(`description is longer than ${LIMITS.descriptionLengthMax} characters`)
  }
  if (metadataBytes(req.metadata) > LIMITS.metadataBytesMax) {
    throw invalid(`metadata is larger than ${LIMITS.metadataBytesMax} bytes`)
  }
  if (!Array.isArray(req.entries) || req.entries.length < 2) {
    throw invalid('a transaction needs two or more entries')
  }
  if (req.entries.length > LIMITS.entriesMax)
    throw invalid(`a transaction has at most ${LIMITS.entriesMax} entries`)
  for (const entry of req.entries) {
    if (entry.direction !== 'debit' && entry.direction !== 'credit') {
      throw invalid(`entry direction must be debit or credit, not ${JSON.stringify(entry.direction)}`)
    }
    if (typeof entry.amount !== 'bigint') throw invalid('entry amounts are bigints')
    if (entry.amount <= 0n) throw invalid(`entry amounts must be positive, got ${entry.amount}`)
    if (entry.amount > LIMITS.amountMax) throw invalid('entry amount exceeds the 64-bit range')
  }
}

function metadataBytes(metadata: Record<string, unknown> | undefined): number {
  if (metadata === undefined) return 0
  try {
    return Buffer.byteLength(JSON.stringify(metadata))
  } catch {
    throw invalid('metadata must be JSON-serializable')
  }
}

/** In each unit, debits equal credits. `accounts` is index-aligned with the entries. */
export function checkBalanced(req: PostingRequest, accounts: readonly Account[]): void {
  const net = new Map<string, bigint>()
  req.entries.forEach((entry, i) => {
    const unit = (accounts[i] as Account).unit
    const signed = entry.direction === 'debit' ? entry.amount : -entry.amount
    net.set(unit, (net.get(unit) ?? 0n) + signed)
  })
  for (const [unit, sum] of net) {
    if (sum !== 0n) {
      throw new LedgerError(
        'UNBALANCED',
        `transaction ${req.idempotencyKey} does not balance in ${unit} (off by ${sum})`,
        {
          unit,
        },
      )
    }
  }
}

/**
 * The request's fingerprint: the same key with a different fingerprint is a
 * different request and is refused.
 */
export function requestHash(
  req: PostingRequest,
  accounts: readonly Account[],
  reversesId: bigint | null,
  routes?: readonly (Account | null)[],
): string {
  const canonical = {
    kind: req.kind,
    description: req.description ?? '',
    metadata: canonicalJson(req.metadata ?? {}),
    reversesId: reversesId?.toString() ?? null,
    entries: req.entries.map((e, i) => [
      ...(routes?.[i]
        ? [`${e.shortfallTo !== undefined ? 'shortfallTo' : 'repayFirst'}:${routes[i]?.code}`]
        : []),
      (accounts[i] as Account).code,
      e.direction satisfies Direction,
      e.amount.toString(),
    ]),
  }
  return hash('sha256', JSON.stringify(canonical), 'hex')
}

/** JSON with object keys sorted, so that key order does not change the hash. */
export function canonicalJson(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonicalJson)
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(
      Object.keys(value)
        .sort()
        .map((k) => [k, canonicalJson((value as Record<string, unknown>)[k])]),
    )
  }
  if (typeof value === 'bigint') return value.toString()
  return value
}
