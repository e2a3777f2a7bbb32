import { parseArgs } from 'node:util'
import { loadJwtKey, signToken } from '../auth/tokens.js'
import { ConfigError, loadConfig } from '../config.js'
import { ROLES } from '../graphql/context.js'

// `npm run token -- --sub ID [--handle H] [--name N] [--roles creator,admin] [--expires 1h]`
// prints a signed JWT for local use, with the server's key: JWT_SECRET, or the
// development key under ./.data (made if missing). JWT_ISSUER and
// JWT_AUDIENCE, when set, go into the token.

const USAGE =
  'usage: npm run token -- --sub ID [--handle H] [--name N] [--roles creator,accountant,admin] [--expires 1h]'

function fail(message: string): never {
  console.error(message)
  process.exit(1)
}

async function main(): Promise<void> {
  let values: { sub?: string; handle?: string; name?: string; roles?: string; expires?: string }
  try {
    ;({ values } = parseArgs({
      options: {
        sub: { type: 'string' },
        handle: { type: 'string' },
        name: { type: 'string' },
        roles: { type: 'string' },
        expires: { type: 'string', default: '1h' },
      },
      strict: true,
    }))
  } catch (err) {
    fail(`${(err as Error).message}\n${USAGE}`)
  }
  if (!values.sub) fail(USAGE)
  const roles = (values.roles ?? '')
    .split(',')
    .map((r) => r.trim())
    .filter((r) => r !== '')
  const unknown = roles.filter((r) => !(ROLES as readonly string[]).includes(r))
  if (unknown.length > 0) fail(`unknown role(s) ${unknown.join(', ')}; known: ${ROLES.join(', ')}`)
  const expires = values.expires ?? '1h'
  if (!/^\d+ ?(s|sec|secs|m|min|mins|h|hr|hrs|d|day|days|w|week|weeks)$/.test(expires)) {
    fail(`--expires ${expires}: expected a span such as 30m, 1h or 7d`)
  }

  let config: ReturnType<typeof loadConfig>
  try {
    config = loadConfig()
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message)
    throw err
  }
  const { key } = loadJwtKey(config.jwt, config.env)
  const token = await signToken(
    key,
    {
      sub: values.sub,
      ...(values.handle !== undefined && { preferred_username: values.handle }),
      ...(values.name !== undefined && { name: values.name }),
      roles,
    },
    { expiresIn: expires, issuer: config.jwt.issuer, audience: config.jwt.audience },
  )
  console.log(token)
}

await main()
