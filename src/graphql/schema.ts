import { type GraphQLSchema, lexicographicSortSchema, printSchema } from 'graphql'
import { builder } from './builder.js'
import './money.js'
import './errors.js'
import '../catalog/schema.js'
import '../users/schema.js'
import '../streams/schema.js'
import '../wallet/schema.js'
import '../gifts/schema.js'
import '../recharge/schema.js'
import '../live/schema.js'
import '../audit/schema.js'
import '../payouts/schema.js'
import '../audit/integrity-schema.js'

// One import per capability's GraphQL file; the builder collects them.

export const schema: GraphQLSchema = builder.toSchema()

/** The SDL committed as schema.graphql: sorted, so that diffs show real changes only. */
export function printSchemaSdl(target: GraphQLSchema = schema): string {
  return `${printSchema(lexicographicSortSchema(target))}\n`
}
