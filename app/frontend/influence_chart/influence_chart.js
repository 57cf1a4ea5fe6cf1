// The explorer's influence map, coloured in the browser (a Streamlit component without a build step).
// The server sends the photo once per image and, per click, the feature grid's values (h x w float32); the
// colours are computed here exactly as app.render.influence_rgb computes them in Python (nearest or bilinear
// upsampling as OpenCV does it, the same 0..255 levels, the same lookup table, the same blend), so the
// picture equals the server's within rounding. tests/test_browser_app.py compares the two.
// After each paint, document.body.dataset.painted holds the arguments' signature: tests and benchmarks wait
// for it to change.

const canvas = document.getElementById("map");
const context = canvas.getContext("2d", {willReadFrequently: true});
const marker = document.getElementById("marker");
const tooltip = document.getElementById("tooltip");
const bar = document.getElementById("bar");
const ticks = document.getElementById("ticks");
const title = document.getElementById("title");
const photo = new Image();
let photoPixels = null; // Uint8ClampedArray (H * W * 4) of the decoded photo, read once per photo
let pixelsSrc = null; // the src those pixels were read from
let latest = null; // the last arguments received, with their decoded arrays
let sentHeight = null;

function post(type, data) {
  window.parent.postMessage(Object.assign({isStreamlitMessage: true, type: type}, data), "*");
}

function reportHeight() {
  const height = Math.ceil(document.body.getBoundingClientRect().height);
  if (height !== sentHeight) {
    sentHeight = height;
    post("streamlit:setFrameHeight", {height: height});
  }
}

function decodeBase64(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) {
    bytes[i] = binary.charCodeAt(i);
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

// app.render.ColourScale.to_levels: 0..255, clipped, truncated as numpy's astype(uint8) does; in float32
// steps, as numpy computes them for a float32 map (the maps are float32).
function levelOf(value, scale) {
  if (scale.log) {
    value = Math.fround(Math.log10(Math.max(value, Math.pow(10, scale.low))));
  }
  const low = Math.fround(scale.low);
  const span = Math.fround(Math.max(scale.high - scale.low, 1e-12));
  const level = Math.fround(Math.fround(Math.fround(value - low) / span) * 255);
  return level <= 0 ? 0 : level >= 255 ? 255 : Math.floor(level);
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

function paint() {
  if (latest === null || photoPixels === null || pixelsSrc !== latest.args.photo) {
    return; // the photo is still decoding: its load handler paints
  }
  const args = latest.args;
  const [height, width] = args.size;
  if (photoPixels.length !== 4 * height * width) {
    fail(`the image is ${photo.naturalWidth} x ${photo.naturalHeight}, the map expects ${width} x ${height}`);
    return;
  }
  const [rows, cols] = args.grid;
  const values = upsampledValues(latest.values, rows, cols, height, width, args.smooth);
  const hiddenRows = latest.hidden === null ? null : nearestIndex(height, rows);
  const hiddenCols = latest.hidden === null ? null : nearestIndex(width, cols);
  const colours = args.colours; // 768 ints: the lookup table, RGB
  // cv2.addWeighted(colours, alpha, photo, 1 - alpha, 0) on uint8: float32 weights and sums, half to even.
  const alpha = Math.fround(args.opacity);
  const beta = Math.fround(1 - args.opacity);
  const picture = context.createImageData(width, height);
  const out = picture.data;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const pixel = y * width + x;
      const at = 4 * pixel;
      out[at + 3] = 255;
      if (hiddenRows !== null && latest.hidden[hiddenRows[y] * cols + hiddenCols[x]]) {
        out[at] = photoPixels[at];
        out[at + 1] = photoPixels[at + 1];
        out[at + 2] = photoPixels[at + 2];
        continue;
      }
      const level = 3 * levelOf(values[pixel], args.scale);
      for (let c = 0; c < 3; c++) {
        // One rounding for colour * alpha (as the fused multiply-add of OpenCV's SIMD path): matches it exactly.
        const sum = Math.fround(colours[level + c] * alpha + Math.fround(photoPixels[at + c] * beta));
        out[at + c] = roundHalfEven(sum);
      }
    }
  }
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  context.putImageData(picture, 0, 0);
  drawMarker(args);
  drawColourBar(args);
  document.body.dataset.painted = args.signature;
  reportHeight();
}

function drawMarker(args) {
  const [height, width] = args.size;
  marker.setAttribute("viewBox", `0 0 ${width} ${height}`);
  marker.replaceChildren();
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
    marker.appendChild(ring);
  }
}

function drawColourBar(args) {
  const strip = bar.getContext("2d");
  const table = strip.createImageData(256, 1);
  for (let i = 0; i < 256; i++) {
    table.data.set([args.colours[3 * i], args.colours[3 * i + 1], args.colours[3 * i + 2], 255], 4 * i);
  }
  strip.putImageData(table, 0, 0);
  ticks.replaceChildren();
  for (const [fraction, label] of args.scale.ticks) {
    const tick = document.createElement("span");
    tick.textContent = label;
    tick.style.left = `${100 * fraction}%`;
    // The end ticks stay inside the frame: anchored by their outer edge.
    tick.style.transform = fraction < 0.05 ? "none" : fraction > 0.95 ? "translateX(-100%)" : "translateX(-50%)";
    ticks.appendChild(tick);
  }
  title.replaceChildren();
  args.scale.title.split("<br>").forEach((line, i) => {
    if (i > 0) {
      title.appendChild(document.createElement("br"));
    }
    title.appendChild(document.createTextNode(line));
  });
}

// Said in the frame instead of a blank space, and published for tests as painted = "error: ...".
function fail(message) {
  title.textContent = `The map could not be drawn: ${message}.`;
  document.body.dataset.painted = `error: ${message}`;
  reportHeight();
}

// d3's ".3~%": a share as a percentage with at most three decimals, trailing zeros dropped.
function percent(value) {
  return (100 * value).toFixed(3).replace(/\.?0+$/, "") + "%";
}

canvas.addEventListener("mousemove", (event) => {
  if (latest === null || pixelsSrc !== latest.args.photo) {
    return; // no map shown yet for these arguments
  }
  const args = latest.args;
  const [height, width] = args.size;
  const [rows, cols] = args.grid;
  const rect = canvas.getBoundingClientRect();
  const col = Math.min(Math.max(Math.floor(((event.clientX - rect.left) / rect.width) * cols), 0), cols - 1);
  const row = Math.min(Math.max(Math.floor(((event.clientY - rect.top) / rect.height) * rows), 0), rows - 1);
  const cell = row * cols + col;
  const x = ((col + 0.5) * width) / cols;
  const y = ((row + 0.5) * height) / rows;
  tooltip.replaceChildren(
    document.createTextNode(`x ${Math.round(x)}, y ${Math.round(y)}`),
    document.createElement("br"),
    document.createTextNode(`influence ${percent(latest.hoverValues[cell])} of the total`),
    document.createElement("br"),
    document.createTextNode(args.names[latest.classes[cell]] || "?"),
  );
  tooltip.style.display = "block";
  const localX = event.clientX - rect.left;
  const localY = event.clientY - rect.top;
  // Beside the pointer, flipped to the other side near the right or bottom edge so it stays in the frame.
  const left = localX + 12 + tooltip.offsetWidth > rect.width ? localX - 12 - tooltip.offsetWidth : localX + 12;
  const top = localY + 12 + tooltip.offsetHeight > rect.height ? localY - 12 - tooltip.offsetHeight : localY + 12;
  tooltip.style.left = `${Math.max(left, 0)}px`;
  tooltip.style.top = `${Math.max(top, 0)}px`;
});

canvas.addEventListener("mouseleave", () => {
  tooltip.style.display = "none";
});

// The load handler is in place before any src is set; a new photo is read once, then every map reuses it.
photo.addEventListener("load", () => {
  const reader = document.createElement("canvas");
  reader.width = photo.naturalWidth;
  reader.height = photo.naturalHeight;
  const readerContext = reader.getContext("2d", {willReadFrequently: true});
  readerContext.drawImage(photo, 0, 0);
  photoPixels = readerContext.getImageData(0, 0, reader.width, reader.height).data;
  pixelsSrc = photo.getAttribute("src"); // a late load of an earlier photo cannot pass for the current one
  paint();
});
photo.addEventListener("error", () => fail("the browser could not decode the image"));

new ResizeObserver(reportHeight).observe(document.body);

window.addEventListener("message", (event) => {
  if (!event.data || event.data.type !== "streamlit:render") {
    return;
  }
  const args = event.data.args;
  const theme = event.data.theme;
  if (theme && theme.textColor) {
    document.body.style.color = theme.textColor; // the colour bar's labels follow a dark theme too
  }
  const values = decodeFloat32(args.values);
  latest = {
    args: args,
    values: values,
    hoverValues: args.hover_values === null ? values : decodeFloat32(args.hover_values),
    hidden: args.hidden === null ? null : decodeBase64(args.hidden),
    classes: decodeBase64(args.classes),
  };
  if (photo.getAttribute("src") !== args.photo) {
    photoPixels = null;
    pixelsSrc = null;
    photo.src = args.photo; // its load handler paints
  } else {
    paint();
  }
});

post("streamlit:componentReady", {apiVersion: 1});
