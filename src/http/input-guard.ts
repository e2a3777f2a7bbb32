import { type DocumentNode, Kind, visit } from 'graphql'
import { createGraphQLError, type Plugin } from 'graphql-yoga'

// PostgreSQL's text cannot hold U+0000: a string with it reached the database
// as an internal error ("invalid byte sequence"), in a filter, a key, a title
// or a reason alike (test/attacks.test.ts, test/fuzz-mutations.test.ts). No
// string of this API has a use for it, so it is refused at the door, for
// every operation, before any resolver runs: a bad input, not a server error.

const NUL = '\u0000'

function hasNul(value: unknown, depth = 0): boolean {
  if (typeof value === 'string') return value.includes(NUL)
  // Variables are JSON: bounded by the body size; the depth bound keeps a hostile nesting from the stack.
  if (depth > 64 || value === null || typeof value !== 'object') return false
  if (Array.isArray(value)) return value.some((v) => hasNul(v, depth + 1))
  return Object.entries(value).some(([k, v]) => k.includes(NUL) || hasNul(v, depth + 1))
}

function documentHasNul(document: DocumentNode): boolean {
  let found = false
  visit(document, {
    [Kind.STRING]: (node) => {
      if (node.value.includes(NUL)) found = true
    },
  })
  return found
}

const refusal = () =>
  createGraphQLError('Strings may not contain the NUL character (U+0000).', {
    extensions: { code: 'BAD_USER_INPUT', http: { status: 400 } },
  })

/** Refuses an operation whose variables or literals contain U+0000 (BAD_USER_INPUT, HTTP 400). */
export function useRefuseNulCharacters(): Plugin {
  const check = (document: DocumentNode, variables: unknown) => hasNul(variables) || documentHasNul(document)
  return {
    onExecute({ args, setResultAndStopExecution }) {
      if (check(args.document, args.variableValues)) setResultAndStopExecution({ errors: [refusal()] })
    },
    onSubscribe({ args, setResultAndStopExecution }) {
      if (check(args.document, args.variableValues)) setResultAndStopExecution({ errors: [refusal()] })
    },
  }
}
