// Money for people: amounts travel as integers in the currency's minor units.

const formatters = new Map();

function formatter(currency, exponent, compact) {
  const key = `${currency}/${exponent}/${compact}`;
  let f = formatters.get(key);
  if (!f) {
    try {
      f = new Intl.NumberFormat(undefined, {
        style: 'currency',
        currency,
        minimumFractionDigits: compact ? 0 : exponent,
        maximumFractionDigits: exponent,
      });
    } catch {
      f = new Intl.NumberFormat(undefined, { minimumFractionDigits: compact ? 0 : exponent, maximumFractionDigits: exponent });
    }
    formatters.set(key, f);
  }
  return f;
}

/** `amount` minor units as money, e.g. formatMoney(975, 'EUR', 2) → "€9.75". */
export function formatMoney(amount, currency = 'EUR', exponent = 2) {
  return formatter(currency, exponent, false).format(amount / 10 ** exponent);
}

/** A chip's face: whole units without decimals, "1k" from a thousand. */
export function formatChip(amount, exponent = 2) {
  const units = amount / 10 ** exponent;
  if (units >= 1000 && units % 1000 === 0) return `${units / 1000}k`;
  if (units >= 1000) return `${(units / 1000).toFixed(1)}k`;
  return Number.isInteger(units) ? String(units) : units.toFixed(exponent);
}
