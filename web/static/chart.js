// The candle chart: TradingView's lightweight-charts (vendor/README says which release), candles
// over a volume pane, a crosshair legend, signal markers, local or UTC time, and scroll-back.
//
// Times: the library reads a bar's time as UTC seconds and formats it as UTC. Local time is
// shown by shifting each bar by its own UTC offset (the library's documented approach), so a
// switch rebuilds the series.

import {
  CandlestickSeries,
  CrosshairMode,
  HistogramSeries,
  createChart,
  createSeriesMarkers,
} from "./vendor/lightweight-charts.standalone.production.mjs";
import { decimals, formatPrice, formatQty } from "./format.js";

const UP = "#26a69a";
const DOWN = "#ef5350";
const UP_VOLUME = "rgba(38, 166, 154, 0.45)";
const DOWN_VOLUME = "rgba(239, 83, 80, 0.45)";
const OLDER_WHEN_LEFT_OF = 20; // bars: nearer the left edge than this asks for older history
const MARKER_COLORS = { long: UP, short: DOWN, flat: "#8b96a8" };

export class CandleChart {
  #chart;
  #candles;
  #volume;
  #markers;
  #legend;
  #utc = false;
  #bars = []; // the candles shown, ascending by open_time (the page's own objects)
  #byTime = new Map(); // chart time -> candle
  #signalMarkers = [];
  #onNeedOlder;
  #precision = 2;

  /** `container` holds the chart, `legend` the OHLCV line; `onNeedOlder()` asks for history. */
  constructor(container, legend, { onNeedOlder, utc = false } = {}) {
    this.#legend = legend;
    this.#onNeedOlder = onNeedOlder;
    this.#utc = utc;
    this.#chart = createChart(container, {
      autoSize: true,
      layout: {
        background: { color: "#11151c" },
        textColor: "#d5dbe5",
        panes: { separatorColor: "#232a35" },
      },
      grid: { vertLines: { color: "#1a2029" }, horzLines: { color: "#1a2029" } },
      crosshair: { mode: CrosshairMode.Normal },
      rightPriceScale: { borderColor: "#232a35" },
      timeScale: { borderColor: "#232a35", timeVisible: true, secondsVisible: false },
      localization: { priceFormatter: (p) => formatPrice(p, this.#precision) },
    });
    this.#candles = this.#chart.addSeries(CandlestickSeries, {
      upColor: UP,
      downColor: DOWN,
      borderVisible: false,
      wickUpColor: UP,
      wickDownColor: DOWN,
    });
    this.#volume = this.#chart.addSeries(
      HistogramSeries,
      { priceFormat: { type: "volume" }, priceLineVisible: false, lastValueVisible: false },
      1,
    );
    this.#chart.panes()[1]?.setHeight(90);
    this.#markers = createSeriesMarkers(this.#candles, []);
    this.#chart.subscribeCrosshairMove((param) => this.#showLegend(param));
    this.#chart.timeScale().subscribeVisibleLogicalRangeChange((range) => {
      if (range && range.from < OLDER_WHEN_LEFT_OF && this.#bars.length) this.#onNeedOlder?.();
    });
  }

  /** Price precision from the symbol's tick size (a decimal string such as "0.10"). */
  setTickSize(tick) {
    const precision = decimals(tick);
    if (precision === this.#precision) return;
    this.#precision = precision;
    const minMove = Number(tick) > 0 ? Number(tick) : 10 ** -precision;
    this.#candles.applyOptions({ priceFormat: { type: "price", precision, minMove } });
  }

  /** Show UTC (true) or the browser's local time (false). */
  setUtc(utc) {
    if (utc === this.#utc) return;
    this.#utc = utc;
    this.#redraw(true);
  }

  /** Replace every bar (ascending candles of one series); `fit` scrolls to the newest. */
  setCandles(candles, { fit = false } = {}) {
    const range = this.#chart.timeScale().getVisibleLogicalRange();
    const added = candles.length - this.#bars.length;
    const olderAdded = this.#bars.length > 0 && candles.length > 0 && added > 0 &&
      candles[0].open_time < this.#bars[0].open_time;
    this.#bars = candles;
    this.#redraw(false);
    if (fit || !range) {
      this.#chart.timeScale().scrollToRealTime();
    } else if (olderAdded) {
      // Older history came in on the left: keep the same bars in view.
      this.#chart.timeScale().setVisibleLogicalRange({ from: range.from + added, to: range.to + added });
    }
    this.#showLegend(null);
  }

  /** Update the newest bar or add one after it (a live update). */
  update(candle) {
    const last = this.#bars[this.#bars.length - 1];
    if (last && candle.open_time < last.open_time) return false; // not the tail: caller redraws
    if (last && candle.open_time === last.open_time) this.#bars[this.#bars.length - 1] = candle;
    else this.#bars.push(candle);
    const time = this.#time(candle.open_time);
    this.#byTime.set(time, candle);
    this.#candles.update(this.#bar(candle, time));
    this.#volume.update(this.#vol(candle, time));
    this.#showLegend(null);
    return true;
  }

  /** Markers where a signal's closed state changed: [{open_time, state, text}]. */
  setSignalMarkers(changes) {
    this.#signalMarkers = changes;
    this.#applyMarkers();
  }

  /** The visible logical range {from, to} (bar indexes; scrolling back lowers both). */
  visibleRange() {
    return this.#chart.timeScale().getVisibleLogicalRange() ?? { from: 0, to: 0 };
  }

  /** How many bars the visible range spans (zooming in makes it smaller). */
  visibleBars() {
    const range = this.visibleRange();
    return range.to - range.from;
  }

  /** The markers shown (for tests and the page's own labels). */
  markers() {
    return this.#markers.markers();
  }

  #redraw(keepRange) {
    const range = keepRange ? this.#chart.timeScale().getVisibleLogicalRange() : null;
    this.#byTime.clear();
    const bars = [];
    const volume = [];
    for (const candle of this.#bars) {
      const time = this.#time(candle.open_time);
      this.#byTime.set(time, candle);
      bars.push(this.#bar(candle, time));
      volume.push(this.#vol(candle, time));
    }
    this.#candles.setData(bars);
    this.#volume.setData(volume);
    this.#applyMarkers();
    if (range) this.#chart.timeScale().setVisibleLogicalRange(range);
  }

  #applyMarkers() {
    const first = this.#bars[0]?.open_time ?? Infinity;
    this.#markers.setMarkers(
      this.#signalMarkers
        .filter((m) => m.open_time >= first)
        .map((m) => ({
          time: this.#time(m.open_time),
          position: m.state === "short" ? "aboveBar" : "belowBar",
          shape: m.state === "long" ? "arrowUp" : m.state === "short" ? "arrowDown" : "circle",
          color: MARKER_COLORS[m.state] ?? MARKER_COLORS.flat,
          text: m.text,
        })),
    );
  }

  #time(openTimeMs) {
    const shift = this.#utc ? 0 : -new Date(openTimeMs).getTimezoneOffset() * 60;
    return Math.floor(openTimeMs / 1000) + shift;
  }

  #bar(c, time) {
    return { time, open: Number(c.open), high: Number(c.high), low: Number(c.low), close: Number(c.close) };
  }

  #vol(c, time) {
    const up = Number(c.close) >= Number(c.open);
    return { time, value: Number(c.volume), color: up ? UP_VOLUME : DOWN_VOLUME };
  }

  #showLegend(param) {
    const candle = (param?.time !== undefined && this.#byTime.get(param.time)) ||
      this.#bars[this.#bars.length - 1];
    if (!candle) {
      this.#legend.textContent = "";
      return;
    }
    const p = this.#precision;
    const change = Number(candle.open) ? (Number(candle.close) / Number(candle.open) - 1) * 100 : 0;
    const up = Number(candle.close) >= Number(candle.open);
    this.#legend.dataset.openTime = String(candle.open_time);
    this.#legend.className = up ? "legend up" : "legend down";
    this.#legend.textContent =
      `O ${formatPrice(candle.open, p)}  H ${formatPrice(candle.high, p)}  ` +
      `L ${formatPrice(candle.low, p)}  C ${formatPrice(candle.close, p)}  ` +
      `${change >= 0 ? "+" : ""}${change.toFixed(2)}%  V ${formatQty(candle.volume)}` +
      (candle.closed ? "" : "  (open)");
  }
}
