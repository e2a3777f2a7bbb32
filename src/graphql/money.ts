import { builder } from './builder.js'

/** An amount of a fiat currency in its minor unit (cents for USD). */
export interface MoneyShape {
  amountMinor: bigint
  /** ISO 4217 code, e.g. "USD". */
  currency: string
}

const formatters = new Map<string, Intl.NumberFormat>()

function formatterFor(currency: string): Intl.NumberFormat {
  let formatter = formatters.get(currency)
  if (!formatter) {
    formatter = new Intl.NumberFormat('en-US', { style: 'currency', currency })
    formatters.set(currency, formatter)
  }
  return formatter
}

/**
 * "$0.99", "€0.99", "¥500": the amount in the currency's own number of minor
 * digits (2 for USD, 0 for JPY, 3 for BHD). Formats from a decimal string, so
 * no bigint ever passes through a float.
 */
export function formatMoney({ amountMinor, currency }: MoneyShape): string {
  const formatter = formatterFor(currency)
  const digits = formatter.resolvedOptions().maximumFractionDigits ?? 2
  const negative = amountMinor < 0n
  const magnitude = (negative ? -amountMinor : amountMinor).toString().padStart(digits + 1, '0')
  const whole = magnitude.slice(0, magnitude.length - digits)
  const fraction = magnitude.slice(magnitude.length - digits)
  const decimal = `${negative ? '-' : ''}${whole}${digits > 0 ? `.${fraction}` : ''}`
  // Intl formats decimal strings exactly (the typings only list number | bigint).
  return formatter.format(decimal as `${number}`)
}

export const Money = builder.objectRef<MoneyShape>('Money').implement({
  description: 'An amount of money in a fiat currency.',
  fields: (t) => ({
    amount: t.field({
      type: 'Amount',
      description: 'In the minor unit of the currency (cents for USD).',
      resolve: (money) => money.amountMinor,
    }),
    currency: t.exposeString('currency', { description: 'ISO 4217 code, e.g. "USD".' }),
    formatted: t.string({
      description: 'For display, in en-US style: "$0.99", "€0.99".',
      resolve: (money) => formatMoney(money),
    }),
  }),
})
