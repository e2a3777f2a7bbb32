const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

/**
 * Whether a client-supplied id can be a row id. Checked before any query, so a
 * malformed id is "not found" to the caller, never a database error.
 */
export const isUuid = (value: string): boolean => UUID.test(value)
