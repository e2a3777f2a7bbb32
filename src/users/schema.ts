import { builder } from '../graphql/builder.js'

/** A person's public profile: what anyone may see. Nothing here is money or private. */
export const User = builder.drizzleObject('users', {
  name: 'User',
  description: 'A user’s public profile.',
  select: { columns: { id: true, handle: true, displayName: true, roles: true } },
  fields: (t) => ({
    id: t.exposeID('id'),
    handle: t.exposeString('handle'),
    displayName: t.exposeString('displayName'),
    isCreator: t.boolean({ resolve: (u) => u.roles.includes('creator') }),
  }),
})
