// The explorer's clickable image (a Streamlit component without a build step).
// Reports, in shown (CSS) pixels of the image:
//   a click: {x, y, width, height, unix_time}
//   a drag (click_and_drag): {x1, y1} where the button went down, {x2, y2} where it came up, width, height.
// The frame's height follows the image's shown height whenever either changes. Measured once, at load
// time, a frame that happened to be laid out 0 px wide kept the image 0 px tall for good (streamlit#7376,
// and one of eight concurrent sessions in tests/test_concurrent_sessions.py).
// "Ready" is said again until the first render message comes: Streamlit drops a message from a frame whose
// listener it has not registered yet (a React effect that can run after this script under load), and a
// frame whose ready message was dropped stays hidden (display: none) for good.

const image = document.getElementById("image");
let dragMode = false;
let dragStart = null; // {x, y, pointerId} while the button is down in drag mode
let sentHeight = null;
let rendered = false;
const READY_RETRY_MS = 250;

function post(type, data) {
  window.parent.postMessage(Object.assign({isStreamlitMessage: true, type: type}, data), "*");
}

function reportHeight() {
  if (!image.complete || !image.naturalWidth) {
    return; // not decoded yet: the load event calls again
  }
  const height = Math.ceil(image.getBoundingClientRect().height);
  if (height !== sentHeight) {
    sentHeight = height;
    post("streamlit:setFrameHeight", {height: height});
  }
}

function pointIn(event) {
  const rect = image.getBoundingClientRect();
  return {x: event.clientX - rect.left, y: event.clientY - rect.top, width: rect.width, height: rect.height};
}

function send(value) {
  value.unix_time = Date.now();
  post("streamlit:setComponentValue", {value: value, dataType: "json"});
}

image.addEventListener("load", reportHeight);
new ResizeObserver(reportHeight).observe(image);

image.addEventListener("click", (event) => {
  if (dragMode) {
    return;
  }
  const p = pointIn(event);
  send({x: p.x, y: p.y, width: p.width, height: p.height});
});

// Pointer capture: the button may come up outside the frame and the drag still ends here.
image.addEventListener("pointerdown", (event) => {
  if (!dragMode || event.button !== 0) {
    dragStart = null;
    return;
  }
  dragStart = Object.assign(pointIn(event), {pointerId: event.pointerId});
  image.setPointerCapture(event.pointerId);
  event.preventDefault();
});

image.addEventListener("pointerup", (event) => {
  if (!dragMode || dragStart === null || event.pointerId !== dragStart.pointerId) {
    return;
  }
  const end = pointIn(event);
  send({x1: dragStart.x, y1: dragStart.y, x2: end.x, y2: end.y, width: end.width, height: end.height});
  dragStart = null;
});

// A drag that loses its pointer (cancelled, or capture taken away) sends nothing.
image.addEventListener("pointercancel", () => {
  dragStart = null;
});
image.addEventListener("lostpointercapture", (event) => {
  if (dragStart !== null && event.pointerId === dragStart.pointerId) {
    dragStart = null;
  }
});

window.addEventListener("message", (event) => {
  if (!event.data || event.data.type !== "streamlit:render") {
    return;
  }
  rendered = true;
  const args = event.data.args;
  dragMode = Boolean(args.click_and_drag);
  image.style.cursor = args.cursor || "crosshair";
  // The load listener is in place before a new src is set, and reportHeight also covers a cached image.
  if (image.getAttribute("src") !== args.src) {
    image.src = args.src;
  }
  reportHeight();
});

function announceReady() {
  if (!rendered) {
    post("streamlit:componentReady", {apiVersion: 1});
    setTimeout(announceReady, READY_RETRY_MS);
  }
}

announceReady();
