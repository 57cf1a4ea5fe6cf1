// The explorer's influence map, coloured in the browser: a Streamlit component (st.components.v2, mounted in
// the page itself, no iframe, no build step). Per click the server sends the feature grid's values (h x w
// float32) and the photo; the colours are computed here exactly as app.render.influence_rgb computes them in
// Python (nearest or bilinear upsampling as OpenCV does it, float32 levels, the same lookup table, the blend
// rounded as cv2.addWeighted rounds it), so the picture equals the server's. tests/test_browser_app.py
// compares the two. After each paint the chart's root element holds the arguments' signature in
// data-painted: tests and benchmarks wait for it to change.

function decodeBase64(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) {
    bytes[i] = binary.charCodeAt(i);
  }
  return bytes;
}

// The colour table: 256 RGB triples as 1,536 hex digits -> 768 ints.
function decodeHex(text) {
  const bytes = new Uint8Array(text.length / 2);
  for (let i = 0; i < bytes.length; i++) {
    bytes[i] = parseInt(text.substr(2 * i, 2), 16);
  }
  return bytes;
}

function decodeFloat32(text) {
  return new Float32Array(decodeBase64(text).buffer); // little-endian, as numpy's "<f4" sends it
}

// OpenCV's INTER_NEAREST: source index floor(i * src / dst), at most src - 1 (the step computed as OpenCV
// computes it, 1 / (dst / src), so the floors agree at odd sizes too).
function nearestIndex(size, cells) {
  const index = new Int32Array(size);
  const step = 1 / (size / cells);
  for (let i = 0; i < size; i++) {
    index[i] = Math.min(Math.floor(i * step), cells - 1);
  }
  return index;
}

// OpenCV's INTER_LINEAR (half-pixel centres, clamped at the edges): left index and weight of the right one.
function linearTaps(size, cells) {
  const left = new Int32Array(size);
  const weight = new Float32Array(size);
  const step = 1 / (size / cells);
  for (let i = 0; i < size; i++) {
    let position = Math.fround((i + 0.5) * step - 0.5); // OpenCV rounds it to float32
    let index = Math.floor(position);
    let fraction = position - index;
    if (index < 0) {
      index = 0;
      fraction = 0;
    }
    if (index >= cells - 1) {
      index = cells - 1;
      fraction = 0;
    }
    left[i] = index;
    weight[i] = fraction;
  }
  return {left: left, weight: weight};
}

// OpenCV's saturate_cast<uchar>(float): round half to even (cvRound), clipped to 0..255.
function roundHalfEven(value) {
  const floor = Math.floor(value);
  const fraction = value - floor;
  const rounded = fraction > 0.5 ? floor + 1 : fraction < 0.5 ? floor : floor % 2 === 0 ? floor : floor + 1;
  return rounded < 0 ? 0 : rounded > 255 ? 255 : rounded;
}

// app.render.ColourScale.to_levels for one scale: value -> 0..255, clipped, truncated as numpy's astype(uint8)
// does; in float32 steps, as numpy computes them for a float32 map (the maps are float32).
function levelsOf(scale) {
  const floor = Math.pow(10, scale.low); // log scale: values below the bar's bottom take its colour
  const low = Math.fround(scale.low);
  const span = Math.fround(Math.max(scale.high - scale.low, 1e-12));
  return (value) => {
    if (scale.log) {
      value = Math.fround(Math.log10(Math.max(value, floor)));
    }
    const level = Math.fround(Math.fround(Math.fround(value - low) / span) * 255);
    return level <= 0 ? 0 : level >= 255 ? 255 : Math.floor(level);
  };
}

function upsampledValues(values, rows, cols, height, width, smooth) {
  const out = new Float32Array(height * width);
  if (!smooth) {
    const ys = nearestIndex(height, rows);
    const xs = nearestIndex(width, cols);
    for (let y = 0; y < height; y++) {
      const row = ys[y] * cols;
      for (let x = 0; x < width; x++) {
        out[y * width + x] = values[row + xs[x]];
      }
    }
    return out;
  }
  const ys = linearTaps(height, rows);
  const xs = linearTaps(width, cols);
  for (let y = 0; y < height; y++) {
    const top = ys.left[y] * cols;
    const bottom = Math.min(ys.left[y] + 1, rows - 1) * cols;
    const wy = ys.weight[y];
    for (let x = 0; x < width; x++) {
      const left = xs.left[x];
      const right = Math.min(left + 1, cols - 1);
      const wx = xs.weight[x];
      const upper = values[top + left] * (1 - wx) + values[top + right] * wx;
      const lower = values[bottom + left] * (1 - wx) + values[bottom + right] * wx;
      out[y * width + x] = upper * (1 - wy) + lower * wy;
    }
  }
  return out;
}

// d3's ".3~%": a share as a percentage with at most three decimals, trailing zeros dropped.
function percent(value) {
  return (100 * value).toFixed(3).replace(/\.?0+$/, "") + "%";
}

class InfluenceChart {
  constructor(root) {
    this.root = root; // div.ccnet-influence-chart, from influence_chart.html
    this.canvas = root.querySelector("canvas.map");
    this.context = this.canvas.getContext("2d", {willReadFrequently: true});
    this.marker = root.querySelector("svg.marker");
    this.tooltip = root.querySelector(".tooltip");
    this.bar = root.querySelector("canvas.bar");
    this.ticks = root.querySelector(".ticks");
    this.title = root.querySelector(".title");
    this.photoSrc = null; // the photo asked for last (null after a failed load: the next render tries again)
    this.photoSize = null; // [width, height] of the decoded photo
    this.photoPixels = null; // Uint8ClampedArray (H * W * 4) of the decoded photo, read once per photo
    this.pixelsSrc = null; // the src those pixels were read from
    this.latest = null; // the last arguments received, with their decoded arrays
    this.canvas.addEventListener("mousemove", (event) => this.hover(event));
    this.canvas.addEventListener("mouseleave", () => {
      this.tooltip.style.display = "none";
    });
  }

  update(args) {
    const values = decodeFloat32(args.values);
    this.latest = {
      args: args,
      values: values,
      hoverValues: args.hover_values === null ? values : decodeFloat32(args.hover_values),
      hidden: args.hidden === null ? null : decodeBase64(args.hidden),
      classes: decodeBase64(args.classes),
      colours: decodeHex(args.colours),
    };
    if (this.photoSrc !== args.photo) {
      this.loadPhoto(args.photo); // its load handler paints
    } else {
      this.paint();
    }
  }

  // One Image per photo, its handlers bound to its own URL: a late load (or failure) of an earlier photo is
  // ignored instead of passing for the current one. A photo is read once; every map of it reuses the pixels.
  loadPhoto(src) {
    this.photoSrc = src;
    this.photoPixels = null;
    this.pixelsSrc = null;
    const photo = new Image();
    photo.addEventListener("load", () => {
      if (src !== this.photoSrc) {
        return;
      }
      const reader = document.createElement("canvas");
      reader.width = photo.naturalWidth;
      reader.height = photo.naturalHeight;
      const readerContext = reader.getContext("2d", {willReadFrequently: true});
      readerContext.drawImage(photo, 0, 0);
      this.photoSize = [photo.naturalWidth, photo.naturalHeight];
      this.photoPixels = readerContext.getImageData(0, 0, reader.width, reader.height).data;
      this.pixelsSrc = src;
      this.paint();
    });
    photo.addEventListener("error", () => {
      if (src !== this.photoSrc) {
        return;
      }
      // E.g. the media file was freed by a rerun while this page fetched it: the next render asks again.
      this.photoSrc = null;
      this.fail("the image could not be loaded; click again to retry");
    });
    photo.src = src;
  }

  paint() {
    if (this.latest === null || this.photoPixels === null || this.pixelsSrc !== this.latest.args.photo) {
      return; // the photo is still decoding: its load handler paints
    }
    const args = this.latest.args;
    const [height, width] = args.size;
    if (this.photoPixels.length !== 4 * height * width) {
      const shape = `${this.photoSize[0]} x ${this.photoSize[1]}`;
      this.fail(`the image is ${shape}, the map expects ${width} x ${height}`);
      return;
    }
    const [rows, cols] = args.grid;
    const values = upsampledValues(this.latest.values, rows, cols, height, width, args.smooth);
    const hiddenRows = this.latest.hidden === null ? null : nearestIndex(height, rows);
    const hiddenCols = this.latest.hidden === null ? null : nearestIndex(width, cols);
    const colours = this.latest.colours; // 768 ints: the lookup table, RGB
    const levelOf = levelsOf(args.scale);
    // cv2.addWeighted(colours, alpha, photo, 1 - alpha, 0) on uint8: float32 weights and sums, half to even.
    const alpha = Math.fround(args.opacity);
    const beta = Math.fround(1 - args.opacity);
    const picture = this.context.createImageData(width, height);
    const out = picture.data;
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const pixel = y * width + x;
        const at = 4 * pixel;
        out[at + 3] = 255;
        if (hiddenRows !== null && this.latest.hidden[hiddenRows[y] * cols + hiddenCols[x]]) {
          out[at] = this.photoPixels[at];
          out[at + 1] = this.photoPixels[at + 1];
          out[at + 2] = this.photoPixels[at + 2];
          continue;
        }
        const level = 3 * levelOf(values[pixel]);
        for (let c = 0; c < 3; c++) {
          // One rounding for colour * alpha (the fused multiply-add of OpenCV's SIMD path): matches it exactly.
          const sum = Math.fround(colours[level + c] * alpha + Math.fround(this.photoPixels[at + c] * beta));
          out[at + c] = roundHalfEven(sum);
        }
      }
    }
    if (this.canvas.width !== width || this.canvas.height !== height) {
      this.canvas.width = width;
      this.canvas.height = height;
    }
    this.context.putImageData(picture, 0, 0);
    this.drawMarker(args);
    this.drawColourBar(args);
    this.root.dataset.painted = args.signature;
  }

  drawMarker(args) {
    const [height, width] = args.size;
    this.marker.setAttribute("viewBox", `0 0 ${width} ${height}`);
    this.marker.replaceChildren();
    if (!args.marker) {
      return;
    }
    for (const [colour, stroke] of [["black", 3], ["white", 1]]) { // the same ring as render.draw_marker
      const ring = document.createElementNS("http://www.w3.org/2000/svg", "circle");
      ring.setAttribute("cx", args.marker[0]);
      ring.setAttribute("cy", args.marker[1]);
      ring.setAttribute("r", args.radius);
      ring.setAttribute("fill", "none");
      ring.setAttribute("stroke", colour);
      ring.setAttribute("stroke-width", stroke);
      ring.setAttribute("vector-effect", "non-scaling-stroke");
      this.marker.appendChild(ring);
    }
  }

  drawColourBar(args) {
    const strip = this.bar.getContext("2d");
    const table = strip.createImageData(256, 1);
    for (let i = 0; i < 256; i++) {
      const colours = this.latest.colours;
      table.data.set([colours[3 * i], colours[3 * i + 1], colours[3 * i + 2], 255], 4 * i);
    }
    strip.putImageData(table, 0, 0);
    this.ticks.replaceChildren();
    for (const [fraction, label] of args.scale.ticks) {
      const tick = document.createElement("span");
      tick.textContent = label;
      tick.style.left = `${100 * fraction}%`;
      // The end ticks stay inside the chart: anchored by their outer edge.
      tick.style.transform = fraction < 0.05 ? "none" : fraction > 0.95 ? "translateX(-100%)" : "translateX(-50%)";
      this.ticks.appendChild(tick);
    }
    this.title.replaceChildren();
    args.scale.title.split("<br>").forEach((line, i) => {
      if (i > 0) {
        this.title.appendChild(document.createElement("br"));
      }
      this.title.appendChild(document.createTextNode(line));
    });
  }

  // Said in the chart instead of a blank space, and published for tests as painted = "error: ...".
  fail(message) {
    this.context.clearRect(0, 0, this.canvas.width, this.canvas.height); // no earlier map left under the message
    this.marker.replaceChildren();
    this.ticks.replaceChildren();
    this.title.textContent = `The map could not be drawn: ${message}.`;
    this.root.dataset.painted = `error: ${message}`;
  }

  hover(event) {
    if (this.latest === null || this.pixelsSrc !== this.latest.args.photo) {
      return; // no map shown yet for these arguments
    }
    const args = this.latest.args;
    const [height, width] = args.size;
    const [rows, cols] = args.grid;
    const rect = this.canvas.getBoundingClientRect();
    const col = Math.min(Math.max(Math.floor(((event.clientX - rect.left) / rect.width) * cols), 0), cols - 1);
    const row = Math.min(Math.max(Math.floor(((event.clientY - rect.top) / rect.height) * rows), 0), rows - 1);
    const cell = row * cols + col;
    const x = ((col + 0.5) * width) / cols;
    const y = ((row + 0.5) * height) / rows;
    this.tooltip.replaceChildren(
      document.createTextNode(`x ${Math.round(x)}, y ${Math.round(y)}`),
      document.createElement("br"),
      document.createTextNode(`influence ${percent(this.latest.hoverValues[cell])} of the total`),
      document.createElement("br"),
      document.createTextNode(args.names[this.latest.classes[cell]] || "?"),
    );
    this.tooltip.style.display = "block";
    const localX = event.clientX - rect.left;
    const localY = event.clientY - rect.top;
    // Beside the pointer, flipped to the other side near the right or bottom edge so it stays over the map.
    const tipWidth = this.tooltip.offsetWidth;
    const tipHeight = this.tooltip.offsetHeight;
    const left = localX + 12 + tipWidth > rect.width ? localX - 12 - tipWidth : localX + 12;
    const top = localY + 12 + tipHeight > rect.height ? localY - 12 - tipHeight : localY + 12;
    this.tooltip.style.left = `${Math.max(left, 0)}px`;
    this.tooltip.style.top = `${Math.max(top, 0)}px`;
  }
}

// Streamlit calls this on every render of every chart; the chart's state lives on its root element, so a
// root Streamlit rebuilds starts afresh and one it keeps is updated in place.
export default function ({data, parentElement}) {
  const root = parentElement.querySelector(".ccnet-influence-chart");
  if (!root.ccnetChart) {
    root.ccnetChart = new InfluenceChart(root);
  }
  root.ccnetChart.update(data);
}
