import {
  type DocumentNode,
  type ExecutionArgs,
  type ExecutionResult,
  execute,
  type GraphQLError,
  getOperationAST,
  Kind,
  visit,
} from 'graphql'

// Fan-out of one live event to many subscribers with the same operation:
// the event is executed once per distinct operation (document, operation
// name, variables other than afterSequence) and serialized once; every
// subscriber gets the same result object, and the WebSocket transport
// splices each subscription's id into the same JSON bytes.
//
// Each subscriber keeps its own source stream (GiftFeed.subscribe): the
// replay phase, the seam and exactly-once/order stay per subscriber; only
// the execution of an event (keyed by its id) and its JSON are shared.
//
// Sharing across viewers is sound because everything reachable from
// GiftEvent is public (no field-level authScopes, no resolver reads the
// viewer); a viewer-dependent field there must add the viewer to the key.

/** Root fields whose operations are shared, and the argument that only selects the source. */
const SHAREABLE_FIELDS: Record<string, string> = { liveGifts: 'afterSequence' }

/** A result sent as is to every subscriber of the same event and operation. */
export interface SharedPayload {
  data?: unknown
  errors?: unknown[]
}

/** Test and benchmark hook: how much work the shared path did. */
export const fanoutStats = { executions: 0, serializations: 0, hits: 0 }

export class SharedResults {
  private readonly results = new Map<string, Promise<SharedPayload>>()
  private readonly json = new WeakMap<object, string>()

  /** Fingerprint → a short key, so that a lookup does not hash the query text. */
  private readonly operations = new Map<string, string>()

  constructor(private readonly entriesMax = 4096) {}

  /** The short key of an operation's fingerprint (once per subscription). */
  operationKey(fingerprint: string): string {
    let key = this.operations.get(fingerprint)
    if (key === undefined) {
      // Operations are few (one per distinct query and variables); forget them all past a bound.
      if (this.operations.size >= this.entriesMax) this.operations.clear()
      key = `op${this.operationCount++}`
      this.operations.set(fingerprint, key)
    }
    return key
  }
  private operationCount = 0

  /** The result for (event id, operation), computed at most once while it is cached. */
  get(key: string, run: () => Promise<SharedPayload>): Promise<SharedPayload> {
    const cached = this.results.get(key)
    if (cached) {
      fanoutStats.hits++
      return cached
    }
    const result = run()
    this.results.set(key, result)
    // Oldest first: a Map iterates in insertion order.
    if (this.results.size > this.entriesMax) {
      const oldest = this.results.keys().next().value
      if (oldest !== undefined) this.results.delete(oldest)
    }
    // A failed execution is not kept: the next subscriber tries again.
    result.catch(() => this.results.delete(key))
    return result
  }

  isShared(payload: unknown): payload is SharedPayload {
    return typeof payload === 'object' && payload !== null && this.json.has(payload)
  }

  register(payload: SharedPayload): SharedPayload {
    this.json.set(payload, '')
    return payload
  }

  /** The payload's JSON, serialized on first use. */
  jsonOf(payload: SharedPayload): string {
    let text = this.json.get(payload)
    if (!text) {
      text = JSON.stringify(payload)
      fanoutStats.serializations++
      this.json.set(payload, text)
    }
    return text
  }
}

/**
 * The sharing key of an operation, or null when it is not shared: a
 * subscription with one root field, a shareable one. The variable given to
 * the source-only argument (afterSequence) is left out when used nowhere else.
 */
export function operationFingerprint(
  query: string,
  document: DocumentNode,
  operationName: string | null | undefined,
  variables: Record<string, unknown> | null | undefined,
): string | null {
  const operation = getOperationAST(document, operationName)
  if (operation?.operation !== 'subscription') return null
  const selections = operation.selectionSet.selections
  const [root] = selections
  if (selections.length !== 1 || root?.kind !== Kind.FIELD) return null
  const sourceArgument = SHAREABLE_FIELDS[root.name.value]
  if (!sourceArgument) return null
  const omitted = new Set<string>()
  const argument = root.arguments?.find((a) => a.name.value === sourceArgument)
  if (argument?.value.kind === Kind.VARIABLE) {
    const name = argument.value.name.value
    let uses = 0
    visit(document, {
      Variable: (node) => {
        if (node.name.value === name) uses++
      },
    })
    // Its definition and this argument: used nowhere else.
    if (uses === 2) omitted.add(name)
  }
  const kept = Object.entries(variables ?? {})
    .filter(([name]) => !omitted.has(name))
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  return JSON.stringify([query, operationName ?? null, kept])
}

/** A source event's identity: its id (gift events have one); null when it has none. */
function eventKey(event: unknown): string | null {
  const id = typeof event === 'object' && event !== null ? (event as { id?: unknown }).id : undefined
  return typeof id === 'string' || typeof id === 'number' ? String(id) : null
}

/**
 * Maps a subscriber's source stream to results, each executed once per
 * (event, operation) across subscribers. return() reaches the source at once.
 */
export function sharedResultStream(
  source: AsyncIterable<unknown>,
  args: ExecutionArgs,
  operationKey: string,
  shared: SharedResults,
  mask: (error: GraphQLError) => GraphQLError,
): AsyncGenerator<SharedPayload> {
  const iterator = source[Symbol.asyncIterator]()
  const run = async (event: unknown): Promise<SharedPayload> => {
    fanoutStats.executions++
    const result = (await execute({ ...args, rootValue: event })) as ExecutionResult
    const payload: SharedPayload = {}
    if (result.data !== undefined) payload.data = result.data
    if (result.errors) payload.errors = result.errors.map((e) => mask(e).toJSON())
    return shared.register(payload)
  }
  const stream: AsyncGenerator<SharedPayload> = {
    next: async () => {
      const step = await iterator.next()
      if (step.done) return { done: true, value: undefined }
      const key = eventKey(step.value)
      try {
        const value =
          key === null
            ? await run(step.value)
            : await shared.get(`${key}:${operationKey}`, () => run(step.value))
        return { done: false, value }
      } catch (error) {
        await iterator.return?.()
        throw error
      }
    },
    return: async () => {
      await iterator.return?.()
      return { done: true, value: undefined }
    },
    throw: async (error) => {
      await iterator.return?.()
      throw error
    },
    [Symbol.asyncIterator]: () => stream,
  } as AsyncGenerator<SharedPayload>
  return stream
}

/** The placeholder a shared payload is serialized as; the socket's send splices the real JSON in. */
export const SPLICE_TOKEN = '\u0000fanout\u0000'
const SPLICE_TAIL = `${JSON.stringify(SPLICE_TOKEN)}}`

/**
 * graphql-ws serializes a message, then sends it, synchronously in one go:
 * the replacer leaves the pending payload's JSON here for the very next send.
 */
let pendingJson: string | null = null

export function spliceReplacer(shared: SharedResults) {
  return function (this: unknown, key: string, value: unknown): unknown {
    if (key === 'payload' && shared.isShared(value)) {
      pendingJson = shared.jsonOf(value)
      return SPLICE_TOKEN
    }
    return value
  }
}

/** The message with the shared payload's JSON in place of the placeholder. */
export function spliceMessage(data: unknown): unknown {
  if (pendingJson === null) return data
  const json = pendingJson
  pendingJson = null
  if (typeof data !== 'string' || !data.endsWith(SPLICE_TAIL)) return data
  return `${data.slice(0, -SPLICE_TAIL.length)}${json}}`
}
