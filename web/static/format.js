// Numbers as traders read them, and exact decimal arithmetic for the order ticket's checks.
//
// The server sends prices and sizes as decimal strings. Display goes through Number (what a
// screen shows is rounded anyway); every check that decides whether an order may be sent uses
// `Dec`, a BigInt scaled integer, so 0.1 + 0.2 is 0.3 and a step of 0.001 divides 0.003.

/** Decimal places of a decimal string ("0.0100" -> 2: trailing zeros do not count). */
export function decimals(text) {
  const s = String(text ?? "");
  const dot = s.indexOf(".");
  if (dot < 0) return 0;
  return s.slice(dot + 1).replace(/0+$/, "").length;
}

/** A price with `precision` decimals and thousands separators. */
export function formatPrice(value, precision = 2) {
  const n = Number(value);
  if (!Number.isFinite(n)) return "–";
  return n.toLocaleString("en-US", { minimumFractionDigits: precision, maximumFractionDigits: precision });
}

/** A size or volume: compact above 10,000 (12.3K, 4.56M), else up to 4 decimals. */
export function formatQty(value) {
  const n = Number(value);
  if (!Number.isFinite(n)) return "–";
  const abs = Math.abs(n);
  if (abs >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (abs >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (abs >= 1e4) return `${(n / 1e3).toFixed(1)}K`;
  return n.toLocaleString("en-US", { maximumFractionDigits: 4 });
}

/** A signal's value for humans: 4 significant digits, no exponent for ordinary magnitudes. */
export function formatValue(value) {
  if (value === null || value === undefined || value === "") return "–";
  if (typeof value === "boolean") return value ? "yes" : "no";
  const n = Number(value);
  if (!Number.isFinite(n)) return String(value);
  if (n === 0) return "0";
  const abs = Math.abs(n);
  if (abs >= 1e6) return formatQty(n);
  if (abs >= 1) return n.toLocaleString("en-US", { maximumFractionDigits: 2 });
  if (abs >= 1e-4) return n.toPrecision(4).replace(/0+$/, "");
  const [mantissa, exponent] = n.toExponential(2).split("e");
  return `${mantissa}×10${superscript(exponent)}`;
}

const SUPERSCRIPTS = { "-": "⁻", "+": "", 0: "⁰", 1: "¹", 2: "²", 3: "³", 4: "⁴", 5: "⁵", 6: "⁶", 7: "⁷", 8: "⁸", 9: "⁹" };

function superscript(text) {
  return [...text].map((c) => SUPERSCRIPTS[c] ?? c).join("");
}

/** A signed percentage such as "+1.25%". */
export function formatPercent(value, digits = 2) {
  const n = Number(value);
  if (!Number.isFinite(n)) return "–";
  return `${n >= 0 ? "+" : ""}${n.toFixed(digits)}%`;
}

/** "2026-12-06 14:05:00" in UTC or local time. */
export function formatTime(ms, utc = true) {
  if (!Number.isFinite(Number(ms)) || !ms) return "–";
  const d = new Date(Number(ms));
  if (utc) return d.toISOString().slice(0, 19).replace("T", " ");
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** An exact decimal: `units` × 10^-`scale`. Parse with `Dec.parse` (null if not a decimal). */
export class Dec {
  constructor(units, scale) {
    this.units = units;
    this.scale = scale;
  }

  static parse(text) {
    const s = String(text ?? "").trim();
    const m = /^(-)?(\d*)(?:\.(\d*))?$/.exec(s);
    if (!m || (m[2] === "" && (m[3] ?? "") === "") || s.length > 40) return null;
    const frac = m[3] ?? "";
    const units = BigInt((m[2] || "0") + frac) * (m[1] ? -1n : 1n);
    return new Dec(units, frac.length);
  }

  #at(scale) {
    return this.units * 10n ** BigInt(scale - this.scale);
  }

  cmp(other) {
    const s = Math.max(this.scale, other.scale);
    const a = this.#at(s);
    const b = other.#at(s);
    return a < b ? -1 : a > b ? 1 : 0;
  }

  sub(other) {
    const s = Math.max(this.scale, other.scale);
    return new Dec(this.#at(s) - other.#at(s), s);
  }

  add(other) {
    const s = Math.max(this.scale, other.scale);
    return new Dec(this.#at(s) + other.#at(s), s);
  }

  mul(other) {
    return new Dec(this.units * other.units, this.scale + other.scale);
  }

  isZero() {
    return this.units === 0n;
  }

  /** Whether this is a whole multiple of `step` (a zero step divides everything). */
  multipleOf(step) {
    if (step.isZero()) return true;
    const s = Math.max(this.scale, step.scale);
    return this.#at(s) % step.#at(s) === 0n;
  }

  /** Rounded down to a multiple of `step` (toward zero). */
  floorTo(step) {
    if (step.isZero()) return this;
    const s = Math.max(this.scale, step.scale);
    const q = step.#at(s);
    return new Dec((this.#at(s) / q) * q, s);
  }

  /** This divided by `other`, to `scale` decimals, rounded toward zero. */
  div(other, scale) {
    const num = this.units * 10n ** BigInt(scale + other.scale);
    return new Dec(num / (other.units * 10n ** BigInt(this.scale)), scale);
  }

  toString() {
    const neg = this.units < 0n;
    let digits = (neg ? -this.units : this.units).toString();
    if (this.scale === 0) return (neg ? "-" : "") + digits;
    digits = digits.padStart(this.scale + 1, "0");
    const whole = digits.slice(0, -this.scale);
    const frac = digits.slice(-this.scale).replace(/0+$/, "");
    return (neg ? "-" : "") + whole + (frac ? `.${frac}` : "");
  }
}
