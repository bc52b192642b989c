/**
 * A line chart as SVG, written by hand (no charting dependency): one curve per
 * series over a shared x axis, log-scaled x when the points span decades (1k,
 * 10k, 50k services), a linear y from 0, each point labelled with its value.
 * Baselines are drawn dashed beside the leafmesh curve they belong to.
 *
 * ```ts
 * writeFileSync("x.svg", lineChart({ title: "RSS", xLabel: "services", yLabel: "MiB", series: [{ name: "agent", points: [[1000, 80], [10000, 150]] }] }));
 * ```
 */

export interface Series {
  name: string;
  points: [number, number][];
  /** Drawn dashed: a baseline (plain NATS) beside the curve it is compared with. */
  dashed?: boolean;
}

export interface Chart {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  /** @default true when the largest x is at least 20 times the smallest */
  xLog?: boolean;
}

const palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];

export function lineChart(chart: Chart): string {
  const width = 640;
  const height = 380;
  const margin = { left: 70, right: 180, top: 40, bottom: 50 };
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const points = chart.series.flatMap((series) => series.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  const xs = [...new Set(points.map(([x]) => x))].sort((a, b) => a - b);
  const xMin = xs[0] ?? 1;
  const xMax = xs[xs.length - 1] ?? 1;
  const xLog = chart.xLog ?? (xMin > 0 && xMax / xMin >= 20);
  const yMax = niceCeiling(Math.max(...points.map(([, y]) => y), 1e-9));
  const xOf = (x: number) => {
    if (xMax === xMin) return margin.left + plotW / 2;
    const t = xLog ? Math.log(x / xMin) / Math.log(xMax / xMin) : (x - xMin) / (xMax - xMin);
    return margin.left + t * plotW;
  };
  const yOf = (y: number) => margin.top + plotH - (y / yMax) * plotH;
  const parts: string[] = [];
  parts.push(`<rect x="0" y="0" width="${width}" height="${height}" fill="white"/>`);
  parts.push(`<text x="${width / 2}" y="22" text-anchor="middle" font-size="14" font-weight="bold">${escapeXml(chart.title)}</text>`);
  // Axes, y grid (5 steps) and x ticks at the measured points.
  for (let step = 0; step <= 5; step++) {
    const value = (yMax * step) / 5;
    const y = yOf(value);
    parts.push(`<line x1="${margin.left}" y1="${y.toFixed(1)}" x2="${margin.left + plotW}" y2="${y.toFixed(1)}" stroke="#ddd"/>`);
    parts.push(`<text x="${margin.left - 6}" y="${(y + 4).toFixed(1)}" text-anchor="end">${formatValue(value)}</text>`);
  }
  parts.push(`<line x1="${margin.left}" y1="${margin.top + plotH}" x2="${margin.left + plotW}" y2="${margin.top + plotH}" stroke="black"/>`);
  parts.push(`<line x1="${margin.left}" y1="${margin.top}" x2="${margin.left}" y2="${margin.top + plotH}" stroke="black"/>`);
  for (const x of xs) {
    parts.push(`<line x1="${xOf(x).toFixed(1)}" y1="${margin.top + plotH}" x2="${xOf(x).toFixed(1)}" y2="${margin.top + plotH + 5}" stroke="black"/>`);
    parts.push(`<text x="${xOf(x).toFixed(1)}" y="${margin.top + plotH + 18}" text-anchor="middle">${formatValue(x)}</text>`);
  }
  parts.push(`<text x="${margin.left + plotW / 2}" y="${height - 10}" text-anchor="middle">${escapeXml(chart.xLabel)}${xLog ? " (log scale)" : ""}</text>`);
  parts.push(`<text transform="translate(16 ${margin.top + plotH / 2}) rotate(-90)" text-anchor="middle">${escapeXml(chart.yLabel)}</text>`);
  chart.series.forEach((series, index) => {
    const color = palette[index % palette.length];
    const valid = series.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y)).sort((a, b) => a[0] - b[0]);
    const dash = series.dashed ? ` stroke-dasharray="6 4"` : "";
    if (valid.length > 1) parts.push(`<polyline fill="none" stroke="${color}" stroke-width="2"${dash} points="${valid.map(([x, y]) => `${xOf(x).toFixed(1)},${yOf(y).toFixed(1)}`).join(" ")}"/>`);
    for (const [x, y] of valid) {
      parts.push(`<circle cx="${xOf(x).toFixed(1)}" cy="${yOf(y).toFixed(1)}" r="3.5" fill="${color}"><title>${escapeXml(series.name)}: ${formatValue(x)} → ${formatValue(y)}</title></circle>`);
      parts.push(`<text x="${(xOf(x) + 5).toFixed(1)}" y="${(yOf(y) - 6).toFixed(1)}" fill="${color}" font-size="10">${formatValue(y)}</text>`);
    }
    const legendY = margin.top + 10 + index * 18;
    parts.push(`<line x1="${width - margin.right + 14}" y1="${legendY}" x2="${width - margin.right + 38}" y2="${legendY}" stroke="${color}" stroke-width="2"${dash}/>`);
    parts.push(`<text x="${width - margin.right + 44}" y="${legendY + 4}">${escapeXml(series.name)}</text>`);
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="11">${parts.join("")}</svg>\n`;
}

/** 1, 2 or 5 times a power of ten, at or above `value`: round grid lines. */
function niceCeiling(value: number): number {
  const power = 10 ** Math.floor(Math.log10(value));
  for (const factor of [1, 2, 5, 10]) if (factor * power >= value) return factor * power;
  return 10 * power;
}

function formatValue(value: number): string {
  if (value >= 1e6) return `${+(value / 1e6).toFixed(1)}M`;
  if (value >= 1e3) return `${+(value / 1e3).toFixed(1)}k`;
  if (value >= 10) return String(Math.round(value));
  return String(+value.toFixed(2));
}

function escapeXml(text: string): string {
  return text.replace(/[<>&"]/g, (char) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;" })[char]!);
}
