// A line chart on a canvas: samples over time, one line per series, a y axis that starts
// at zero and ends at a round number. Redrawn whole on each new sample.

const PADDING = { left: 52, right: 12, top: 12, bottom: 24 };

function niceCeiling(value) {
  if (value <= 1) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  const step = [1, 2, 2.5, 5, 10].find((factor) => factor * power >= value);
  return step * power;
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

// samples: [{t: ms, ...}]; lines: [{label, color, value: (sample) => number}]
export function drawChart(canvas, samples, lines, formatValue = String) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.clearRect(0, 0, width, height);
  context.font = "11px system-ui, sans-serif";

  const plotWidth = width - PADDING.left - PADDING.right;
  const plotHeight = height - PADDING.top - PADDING.bottom;
  const values = samples.flatMap((sample) => lines.map((line) => line.value(sample)));
  const top = niceCeiling(Math.max(0, ...values));
  const y = (value) => PADDING.top + plotHeight * (1 - value / top);

  // Grid and y labels.
  context.strokeStyle = "#e3e8ec";
  context.fillStyle = "#5f6b73";
  context.lineWidth = 1;
  context.textAlign = "right";
  context.textBaseline = "middle";
  for (let step = 0; step <= 4; step += 1) {
    const value = (top * step) / 4;
    const lineY = Math.round(y(value)) + 0.5;
    context.beginPath();
    context.moveTo(PADDING.left, lineY);
    context.lineTo(width - PADDING.right, lineY);
    context.stroke();
    context.fillText(formatValue(value), PADDING.left - 6, lineY);
  }

  if (samples.length < 2) {
    context.textAlign = "center";
    context.fillText("waiting for samples ...", PADDING.left + plotWidth / 2, PADDING.top + plotHeight / 2);
    return;
  }

  const first = samples[0].t;
  const span = Math.max(samples[samples.length - 1].t - first, 1);
  const x = (t) => PADDING.left + (plotWidth * (t - first)) / span;

  context.textBaseline = "top";
  context.textAlign = "left";
  context.fillText(clock(first), PADDING.left, height - PADDING.bottom + 6);
  context.textAlign = "right";
  context.fillText(clock(first + span), width - PADDING.right, height - PADDING.bottom + 6);

  for (const line of lines) {
    context.beginPath();
    samples.forEach((sample, index) => {
      const pointX = x(sample.t);
      const pointY = y(line.value(sample));
      if (index === 0) context.moveTo(pointX, pointY);
      else context.lineTo(pointX, pointY);
    });
    context.strokeStyle = line.color;
    context.lineWidth = 2;
    context.lineJoin = "round";
    context.stroke();
    // A light fill under the line.
    context.lineTo(x(samples[samples.length - 1].t), y(0));
    context.lineTo(x(first), y(0));
    context.closePath();
    context.globalAlpha = 0.1;
    context.fillStyle = line.color;
    context.fill();
    context.globalAlpha = 1;
  }
}
