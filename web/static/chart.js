// An OHLC candle chart on a <canvas>: one fixed-width slot per candle, newest on the right.
// Prices arrive as decimal strings; they become floats here for drawing only.

const COLORS = {
  background: "#11151c",
  grid: "#232a35",
  text: "#8b96a8",
  up: "#26a69a",
  down: "#ef5350",
  last: "#d6b656",
};
const AXIS_PX = 78; // right-hand price labels
const PAD_PX = 12;
const FONT = "11px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace";

function timeLabel(ms) {
  return new Date(ms).toISOString().slice(5, 19).replace("T", " ");
}

/** Draw `candles` (ascending by open_time, at most `slots` of them) into `canvas`. */
export function drawCandles(canvas, candles, { slots = 120 } = {}) {
  const dpr = window.devicePixelRatio || 1;
  const cssWidth = canvas.clientWidth;
  const cssHeight = canvas.clientHeight;
  if (cssWidth === 0 || cssHeight === 0) return; // hidden
  const width = Math.round(cssWidth * dpr);
  const height = Math.round(cssHeight * dpr);
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width; // resizing clears the canvas: only when it changed
    canvas.height = height;
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = COLORS.background;
  ctx.fillRect(0, 0, cssWidth, cssHeight);
  ctx.font = FONT;
  ctx.textBaseline = "middle";

  const bars = candles.slice(-slots).map((c) => ({
    openTime: c.open_time,
    open: Number(c.open),
    high: Number(c.high),
    low: Number(c.low),
    close: Number(c.close),
    closed: c.closed !== false,
  }));
  if (bars.length === 0) {
    ctx.fillStyle = COLORS.text;
    ctx.textAlign = "center";
    ctx.fillText("waiting for candles…", cssWidth / 2, cssHeight / 2);
    return;
  }

  let hi = Math.max(...bars.map((b) => b.high));
  let lo = Math.min(...bars.map((b) => b.low));
  if (!(hi > lo)) {
    const pad = Math.abs(hi) * 0.001 || 1;
    hi += pad;
    lo -= pad;
  }
  const top = PAD_PX;
  const plotHeight = cssHeight - 2 * PAD_PX - 14; // room for the time labels
  const plotWidth = cssWidth - AXIS_PX - PAD_PX;
  const y = (price) => top + ((hi - price) / (hi - lo)) * plotHeight;
  const slot = plotWidth / slots;
  const body = Math.max(1, Math.floor(slot * 0.7));
  const x0 = PAD_PX + plotWidth - bars.length * slot; // right-aligned

  // Grid and price labels: 5 levels, with the exchange's digits or enough to tell them apart.
  const tickDigits = Math.max(...candles.slice(-slots).map((c) => decimals(c.close)));
  const digits = Math.min(8, Math.max(tickDigits, Math.ceil(-Math.log10((hi - lo) / 4))));
  ctx.textAlign = "left";
  for (let i = 0; i <= 4; i++) {
    const price = lo + ((hi - lo) * i) / 4;
    const py = Math.round(y(price)) + 0.5;
    ctx.strokeStyle = COLORS.grid;
    ctx.beginPath();
    ctx.moveTo(PAD_PX, py);
    ctx.lineTo(PAD_PX + plotWidth, py);
    ctx.stroke();
    ctx.fillStyle = COLORS.text;
    ctx.fillText(price.toFixed(digits), PAD_PX + plotWidth + 6, py);
  }

  for (const [i, b] of bars.entries()) {
    const cx = Math.round(x0 + i * slot + slot / 2);
    const color = b.close >= b.open ? COLORS.up : COLORS.down;
    ctx.strokeStyle = color;
    ctx.fillStyle = color;
    ctx.beginPath();
    ctx.moveTo(cx + 0.5, Math.round(y(b.high)));
    ctx.lineTo(cx + 0.5, Math.round(y(b.low)));
    ctx.stroke();
    const yTop = Math.round(y(Math.max(b.open, b.close)));
    const height = Math.max(1, Math.round(y(Math.min(b.open, b.close))) - yTop);
    const left = cx - Math.floor(body / 2);
    if (b.closed) {
      ctx.fillRect(left, yTop, body, height);
    } else {
      ctx.strokeRect(left + 0.5, yTop + 0.5, Math.max(1, body - 1), height); // still open: hollow
    }
  }

  // The last price, dashed across, labelled on the axis.
  const last = bars[bars.length - 1];
  const ly = Math.round(y(last.close)) + 0.5;
  ctx.strokeStyle = COLORS.last;
  ctx.setLineDash([3, 3]);
  ctx.beginPath();
  ctx.moveTo(PAD_PX, ly);
  ctx.lineTo(PAD_PX + plotWidth, ly);
  ctx.stroke();
  ctx.setLineDash([]);
  ctx.fillStyle = COLORS.last;
  ctx.fillRect(PAD_PX + plotWidth + 2, ly - 8, AXIS_PX - 4, 16);
  ctx.fillStyle = COLORS.background;
  ctx.fillText(candles[candles.length - 1].close, PAD_PX + plotWidth + 6, ly);

  // Time labels: the first and the last candle shown.
  ctx.fillStyle = COLORS.text;
  const ty = cssHeight - PAD_PX;
  if (bars.length * slot > 280) {
    ctx.textAlign = "left"; // only where it cannot overlap the last one
    ctx.fillText(timeLabel(bars[0].openTime), Math.max(PAD_PX, x0), ty);
  }
  ctx.textAlign = "right";
  ctx.fillText(timeLabel(last.openTime), PAD_PX + plotWidth, ty);
}

function decimals(text) {
  const dot = String(text).indexOf(".");
  return dot < 0 ? 0 : String(text).length - dot - 1;
}
