import { type DocumentNode, Kind, visit } from 'graphql'
import { createGraphQLError, type Plugin } from 'graphql-yoga'

// Strings the database cannot keep as they were given. PostgreSQL's text
// cannot hold U+0000: a string with it came back as an internal error
// ("invalid byte sequence"), in a filter, a key, a title or a reason alike
// (test/attacks.test.ts). A lone surrogate (JSON allows "\ud800") has no UTF-8
// form: it is stored as U+FFFD, so an idempotency key read back is not the key
// given, and grantCoins failed with an internal error (found by
// test/fuzz-mutations.test.ts). No string of this API has a use for either, so
// they are refused at the door, for every operation, before any resolver
// runs: a bad input, not a server error.

const NUL = '\u0000'

/** A high surrogate not followed by a low one, or a low one not preceded by a high one. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

function unstorable(text: string): boolean {
  return text.includes(NUL) || LONE_SURROGATE.test(text)
}

function holdsUnstorable(value: unknown, depth = 0): boolean {
  if (typeof value === 'string') return unstorable(value)
  // Variables are JSON: bounded by the body size; the depth bound keeps a hostile nesting from the stack.
  if (depth > 64 || value === null || typeof value !== 'object') return false
  if (Array.isArray(value)) return value.some((v) => holdsUnstorable(v, depth + 1))
  return Object.entries(value).some(([k, v]) => unstorable(k) || holdsUnstorable(v, depth + 1))
}

/**
 * Yoga's parser cache hands the same document object to every request with
 * the same query text (a client's operations, over and over): each document
 * is walked once, not on every request (it was ~3% of a sendGift request's
 * CPU in a profile).
 */
const documentsChecked = new WeakMap<DocumentNode, boolean>()

function documentHoldsUnstorable(document: DocumentNode): boolean {
  const known = documentsChecked.get(document)
  if (known !== undefined) return known
  let found = false
  visit(document, {
    [Kind.STRING]: (node) => {
      if (unstorable(node.value)) found = true
    },
  })
  documentsChecked.set(document, found)
  return found
}

const refusal = () =>
  createGraphQLError('Strings must be well-formed Unicode without the NUL character (U+0000).', {
    extensions: { code: 'BAD_USER_INPUT', http: { status: 400 } },
  })

/** Refuses an operation whose variables or literals hold U+0000 or a lone surrogate (BAD_USER_INPUT, HTTP 400). */
export function useRefuseUnstorableStrings(): Plugin {
  const check = (document: DocumentNode, variables: unknown) =>
    holdsUnstorable(variables) || documentHoldsUnstorable(document)
  return {
    onExecute({ args, setResultAndStopExecution }) {
      if (check(args.document, args.variableValues)) setResultAndStopExecution({ errors: [refusal()] })
    },
    onSubscribe({ args, setResultAndStopExecution }) {
      if (check(args.document, args.variableValues)) setResultAndStopExecution({ errors: [refusal()] })
    },
  }
}
