// mnistcnn serve: the page. It draws what the JSON endpoints compute; no number is made here.
"use strict";

const $ = (id) => document.getElementById(id);
const UPDATE_EVERY_MS = 150; // at most about six updates a second while drawing
const STROKE_WIDTH = 20; // on the 280-pixel pad: an MNIST stroke once the digit is fitted to 20x20

const state = {
  model: null, // /api/model
  strokes: [], // the drawing, for undo: lists of [x, y]
  upload: null, // a picture drawn under the strokes
  inkInAlpha: false, // whether that picture's drawing is in its transparency alone (drawn as dark ink)
  image: null, // the 28x28 image the model saw last (base64), sent back for the arithmetic
  source: "drawing", // where that image came from: "drawing" (the pad alone) or "picture" (an upload under it)
  prediction: null, // the last /api/predict answer
  gradients: null, // the last /api/gradients answer
  panels: [], // per layer: {maps: [canvases], stats, ...}
  detail: null, // the enlarged map: {layer, channel}
  arithmetic: null, // the last /api/explain answer
  explained: null, // the value whose arithmetic is shown: {layer, channel, row, col}, kept up with the drawing
  paper: "#000", // an uploaded picture's border colour, around it on the pad
  ink: "#fff", // the pen: white on the black pad, black on an uploaded picture's light paper
  strokeEnded: undefined, // when the last stroke ended (performance.now()), until the page shows it
  timings: [], // milliseconds from the end of a stroke to the page updated
};
window.serveState = state;

// -- colours ---------------------------------------------------------------------------------
function colourMap(stops) {
  const table = [];
  for (let i = 0; i < 256; i++) {
    const at = (i / 255) * (stops.length - 1);
    const lo = Math.floor(at), hi = Math.min(lo + 1, stops.length - 1), t = at - lo;
    table.push(stops[lo].map((v, k) => Math.round(v + (stops[hi][k] - v) * t)));
  }
  return table;
}
const ACTIVATION = colourMap([[0, 0, 4], [81, 18, 124], [183, 55, 121], [252, 137, 97], [252, 253, 191]]);
const SIGNED = colourMap([[33, 102, 172], [146, 197, 222], [247, 247, 247], [244, 165, 130], [178, 24, 43]]);
const GREY = colourMap([[0, 0, 0], [255, 255, 255]]);

// A layer's maps in the colours of the scale the server chose for them (inspect-layer's): signed, symmetric
// about 0 at the middle white, when the values have both signs (and for gradients); else least to largest.
const coloursOf = (maps) => (maps.signed ? SIGNED : ACTIVATION);

function scaleWords(maps) {
  return maps.signed ? `blue ${number(maps.low)}, white 0, red ${number(maps.high)}`
    : `black ${number(maps.low)} to light yellow ${number(maps.high)}`;
}

function bytesOf(base64) {
  const text = atob(base64);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return bytes;
}

// Paint w*h grey levels from bytes[offset...] onto a canvas of that size, through a colour map.
function paint(canvas, bytes, offset, w, h, colours) {
  canvas.width = w;
  canvas.height = h;
  const context = canvas.getContext("2d");
  const picture = context.createImageData(w, h);
  for (let i = 0; i < w * h; i++) {
    const c = colours[bytes[offset + i]];
    picture.data.set([c[0], c[1], c[2], 255], 4 * i);
  }
  context.putImageData(picture, 0, 0);
}

// The shape of a layer's maps as the page lays them out: channels of h x w, or a strip of units
// wrapped into rows.
function layout(shape) {
  if (shape.length === 3) return { channels: shape[2], h: shape[0], w: shape[1] };
  const w = Math.min(shape[0], 64);
  return { channels: 1, h: Math.ceil(shape[0] / w), w: w, strip: shape[0] };
}

function paintMaps(panel, maps) {
  const bytes = bytesOf(maps.data);
  const colours = coloursOf(maps);
  const { h, w, strip } = layout(maps.shape);
  if (strip !== undefined) { // units in rows of w; the last row's spare cells stay at 0 (signed) or the bottom
    const padded = new Uint8Array(w * h).fill(maps.signed ? 128 : 0);
    padded.set(bytes);
    paint(panel.maps[0], padded, 0, w, h, colours);
    return;
  }
  panel.maps.forEach((canvas, c) => paint(canvas, bytes, c * h * w, w, h, colours));
}

// A target of clicks that is no button (a feature map, a cell of the confusion matrix): reached by Tab
// and opened by Enter or Space too, as a button is.
function clickable(element, action) {
  element.tabIndex = 0;
  element.setAttribute("role", "button");
  element.addEventListener("click", action);
  element.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" && event.key !== " ") return;
    event.preventDefault(); // Space would scroll the page
    action();
  });
}

// -- requests ----------------------------------------------------------------------------------
function showMessage(text) {
  $("message-text").textContent = text || "";
  $("message").hidden = !text;
}
$("message-close").addEventListener("click", () => showMessage(""));

async function call(url, options) {
  const response = await fetch(url, options);
  const answer = await response.json().catch(() => ({ error: `the server answered ${response.status}` }));
  if (!response.ok) throw new Error(answer.error || `the server answered ${response.status}`);
  return answer;
}

const postJson = (url, body) => call(url, {
  method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
});

// -- the drawing pad ---------------------------------------------------------------------------
const pad = $("pad");

function redraw() {
  const context = pad.getContext("2d");
  context.fillStyle = "#000";
  context.fillRect(0, 0, pad.width, pad.height);
  if (state.upload) {
    // the picture whole, its shape kept, on its own paper's colour; its transparent parts white, as
    // predict reads them (a drawing app's dark strokes on a transparent canvas)
    const scale = Math.min(pad.width / state.upload.width, pad.height / state.upload.height);
    const w = state.upload.width * scale, h = state.upload.height * scale;
    context.fillStyle = state.paper;
    context.fillRect(0, 0, pad.width, pad.height);
    context.fillStyle = "#fff";
    context.fillRect((pad.width - w) / 2, (pad.height - h) / 2, w, h);
    // light strokes on a transparent canvas: predict reads their opacity alone, as dark ink
    context.filter = state.inkInAlpha ? "brightness(0)" : "none";
    context.drawImage(state.upload, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
    context.filter = "none";
  }
  context.strokeStyle = state.ink;
  context.lineWidth = STROKE_WIDTH;
  context.lineCap = context.lineJoin = "round";
  for (const stroke of state.strokes) {
    context.beginPath();
    stroke.forEach(([x, y], i) => (i ? context.lineTo(x, y) : context.moveTo(x, y)));
    if (stroke.length === 1) context.lineTo(stroke[0][0] + 0.1, stroke[0][1]);
    context.stroke();
  }
}

function padPoint(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * (pad.width / box.width), (event.clientY - box.top) * (pad.height / box.height)];
}

pad.addEventListener("pointerdown", (event) => {
  pad.setPointerCapture(event.pointerId);
  state.strokes.push([padPoint(event)]);
  redraw();
  requestUpdate();
});
pad.addEventListener("pointermove", (event) => {
  if (!pad.hasPointerCapture(event.pointerId)) return;
  state.strokes[state.strokes.length - 1].push(padPoint(event));
  redraw();
  requestUpdate();
});
pad.addEventListener("pointerup", () => {
  state.strokeEnded = performance.now();
  requestUpdate();
});
$("undo").addEventListener("click", () => { state.strokes.pop(); redraw(); requestUpdate(); });
$("clear").addEventListener("click", () => {
  state.strokes = [];
  state.upload = null;
  state.ink = "#fff";
  $("timing").textContent = "";
  redraw();
  requestUpdate();
});

// Whether a picture's drawing is in its transparency alone, as predict's _flattened tells: one grey
// over white paper (white strokes on a transparent canvas), its opacity varied.
function inkInAlphaOf(bitmap) {
  const small = document.createElement("canvas");
  small.width = bitmap.width;
  small.height = bitmap.height;
  const context = small.getContext("2d");
  context.drawImage(bitmap, 0, 0);
  const pixels = context.getImageData(0, 0, small.width, small.height).data;
  let greyLow = 255, greyHigh = 0, alphaLow = 255, alphaHigh = 0;
  for (let i = 0; i < pixels.length; i += 4) {
    const alpha = pixels[i + 3] / 255;
    const grey = (0.299 * pixels[i] + 0.587 * pixels[i + 1] + 0.114 * pixels[i + 2]) * alpha + 255 * (1 - alpha);
    greyLow = Math.min(greyLow, grey);
    greyHigh = Math.max(greyHigh, grey);
    alphaLow = Math.min(alphaLow, pixels[i + 3]);
    alphaHigh = Math.max(alphaHigh, pixels[i + 3]);
  }
  return greyHigh - greyLow <= state.model.one_colour && alphaHigh - alphaLow > state.model.one_colour;
}

// The colour of a picture's border, as its paper's; the pen then draws in the contrasting ink.
function paperOf(bitmap) {
  const small = document.createElement("canvas");
  small.width = small.height = 16;
  const context = small.getContext("2d");
  context.fillStyle = "#fff"; // under transparent parts, as on the pad
  context.fillRect(0, 0, 16, 16);
  context.drawImage(bitmap, 0, 0, 16, 16);
  const pixels = context.getImageData(0, 0, 16, 16).data;
  const sum = [0, 0, 0];
  let count = 0;
  for (let i = 0; i < 16 * 16; i++) {
    const x = i % 16, y = Math.floor(i / 16);
    if (x > 0 && x < 15 && y > 0 && y < 15) continue;
    for (let k = 0; k < 3; k++) sum[k] += pixels[4 * i + k];
    count += 1;
  }
  const [r, g, b] = sum.map((v) => Math.round(v / count));
  return { colour: `rgb(${r}, ${g}, ${b})`, light: 0.299 * r + 0.587 * g + 0.114 * b > 127 };
}
$("upload").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  event.target.value = "";
  if (!file) return;
  const limit = state.model.max_picture_bytes;
  if (file.size > limit) { // said before the upload, by name: the server's 413 cannot tell which file was chosen
    const megabytes = (bytes) => `${Math.ceil((bytes / 2 ** 20) * 10) / 10} MB`;
    showMessage(`${file.name}: is ${megabytes(file.size)}, larger than the ${megabytes(limit)} a picture may be; ` +
      "choose a smaller one, or save it smaller (as a JPEG, or with fewer pixels)");
    return;
  }
  try {
    // a form's file: the server names it in a refusal ("notes.txt: is not a picture ...")
    const form = new FormData();
    form.append("picture", file);
    await predict(form, "picture");
    state.strokes = [];
    $("timing").textContent = "";
    state.upload = await createImageBitmap(file).catch(() => null);
    if (state.upload) {
      state.inkInAlpha = inkInAlphaOf(state.upload);
      const paper = paperOf(state.upload);
      state.paper = paper.colour;
      state.ink = paper.light ? "#000" : "#fff";
    }
    redraw();
  } catch (error) {
    showMessage(error.message);
  }
});

// Updates while drawing: one request at a time, at most one every UPDATE_EVERY_MS; a change made
// meanwhile is sent when the answer is in.
let busy = false, pending = false, lastSent = 0;
function requestUpdate() {
  pending = true;
  if (busy) return;
  busy = true;
  setTimeout(sendDrawing, Math.max(0, UPDATE_EVERY_MS - (performance.now() - lastSent)));
}

async function sendDrawing() {
  pending = false;
  lastSent = performance.now();
  const started = lastSent;
  try {
    // toDataURL, not toBlob: Chrome encodes toBlob in idle time, which a page busy drawing may lack
    const png = bytesOf(pad.toDataURL("image/png").split(",")[1]);
    await predict(new Blob([png], { type: "image/png" }), state.upload ? "picture" : "drawing");
    if (state.strokeEnded !== undefined && started >= state.strokeEnded) {
      const took = performance.now() - state.strokeEnded;
      state.timings.push(took);
      state.strokeEnded = undefined;
      $("timing").textContent = `Updated ${took.toFixed(0)} ms after the stroke ended.`;
    }
  } catch (error) {
    showMessage(error.message);
  } finally {
    busy = false;
    if (pending) requestUpdate();
  }
}

// -- the answer --------------------------------------------------------------------------------
async function predict(body, source) {
  const answer = await call("/api/predict", { method: "POST", body: body }); // the body's own type
  showMessage("");
  state.prediction = answer;
  state.source = source;
  state.image = answer.image;
  paint($("seen"), bytesOf(answer.image), 0, 28, 28, GREY);
  showVerdict(answer);
  if (showing() === "activations") paintLayers();
  if (state.detail) showDetail(state.detail.layer, state.detail.channel);
  if (state.explained) explain(); // the numbers of this drawing, not of the one before
  updateGradients();
  return answer;
}

function showVerdict(answer) {
  // nothing on the pad is no doubt: the page invites a drawing (in the pad's words for "blank")
  const nothingDrawn = answer.prediction === null && state.source === "drawing";
  $("draw").classList.toggle("nothing-drawn", nothingDrawn);
  // a prediction in doubt is a guess, marked as mnistcnn predict marks it, and the page says why
  $("prediction").textContent = answer.prediction === null ? "-" : answer.prediction + (answer.doubt ? "?" : "");
  $("doubt").textContent = answer.doubt || "";
  $("doubt").hidden = !answer.doubt || nothingDrawn;
  $("advice").textContent = answer.doubt ? state.model.advice[state.source][answer.doubt] : "";
  state.model.classes.forEach((name, i) => {
    const p = answer.probabilities[i];
    const bar = $(`bar-${i}`);
    bar.querySelector(".fill").style.width = `${p === null ? 0 : 100 * p}%`;
    bar.querySelector(".value").textContent = p === null ? "" : `${(100 * p).toFixed(1)}%`;
    bar.classList.toggle("top", name === answer.prediction);
  });
}

function saliencyClass() {
  const chosen = $("saliency-class").value;
  if (chosen !== "") return Number(chosen);
  const predicted = state.prediction && state.prediction.prediction;
  return predicted === null || predicted === undefined ? null : state.model.classes.indexOf(predicted);
}

async function updateGradients() {
  const target = saliencyClass();
  if (target === null || !state.image) {
    state.gradients = null;
    $("saliency").getContext("2d").clearRect(0, 0, 28, 28);
    if (showing() === "gradients") paintLayers();
    return;
  }
  try {
    state.gradients = await postJson("/api/gradients", { image: state.image, class: target });
    const saliency = state.gradients.saliency_map;
    paint($("saliency"), bytesOf(saliency.data), 0, 28, 28, coloursOf(saliency));
    if (showing() === "gradients") paintLayers();
  } catch (error) {
    showMessage(error.message);
  }
}
$("saliency-class").addEventListener("change", updateGradients);

// -- the layers --------------------------------------------------------------------------------
const showing = () => document.querySelector("input[name=show]:checked").value;
document.querySelectorAll("input[name=show]").forEach((radio) => radio.addEventListener("change", paintLayers));

function number(v) {
  const size = Math.abs(v);
  if (v === 0) return "0";
  if (size >= 1e5 || size < 1e-3) return v.toExponential(2);
  return size >= 100 ? v.toFixed(1) : v.toPrecision(3);
}

function statsWords(stats) {
  const words = ["mean", "std", "min", "max", "norm"].map((key) => `${key} ${number(stats[key])}`);
  words.push(`zeros ${(100 * stats.zero_fraction).toFixed(1)}%`);
  if (stats.dead_channel_fraction !== undefined) {
    words.push(`dead channels ${(100 * stats.dead_channel_fraction).toFixed(1)}%`);
  }
  return words.join(" \u00b7 ");
}

function buildPanels() {
  const holder = $("layers");
  state.model.layers.forEach((layer) => {
    const panel = document.createElement("div");
    panel.className = "layer";
    panel.dataset.layer = layer.index;
    panel.innerHTML = '<div class="layer-head"><b></b> <span class="shape"></span></div><div class="stats"></div>' +
      '<div class="maps"></div>';
    panel.querySelector("b").textContent = layer.words;
    panel.querySelector(".shape").textContent = `\u00b7 output ${layer.shape.join("x")}` +
      (layer.params ? ` \u00b7 ${layer.params.toLocaleString()} parameters` : "");
    const { channels, h, w, strip } = layout(layer.shape);
    const scale = strip !== undefined ? Math.max(4, Math.min(24, Math.floor(512 / w)))
      : Math.max(2, Math.round(56 / w));
    // the last layer's units are the classes' logits: each is named under its cell
    const logits = layer.index === state.model.layers.length - 1 && strip === state.model.classes.length;
    panel.querySelector(".maps").classList.toggle("logits", logits);
    const maps = [];
    for (let c = 0; c < channels; c++) {
      const canvas = document.createElement("canvas");
      canvas.className = "pixels map";
      canvas.width = w;
      canvas.height = h;
      canvas.style.width = `${w * scale}px`;
      canvas.style.height = strip !== undefined ? "auto" : `${h * scale}px`; // a strip may shrink to fit
      canvas.title = strip !== undefined ? `${strip} values` : `channel ${c}`;
      if (strip === undefined) clickable(canvas, () => openDetail(layer.index, c));
      panel.querySelector(".maps").appendChild(canvas);
      maps.push(canvas);
    }
    if (logits) {
      const names = document.createElement("div");
      names.className = "unit-names";
      names.style.width = maps[0].style.width;
      for (const name of state.model.classes) {
        const label = document.createElement("span");
        label.textContent = name;
        names.appendChild(label);
      }
      panel.querySelector(".maps").appendChild(names);
    }
    holder.appendChild(panel);
    state.panels.push({ element: panel, maps: maps });
  });
}

function paintLayers() {
  const gradients = showing() === "gradients";
  const source = gradients ? state.gradients : state.prediction;
  if (!source) return;
  source.layers.forEach((layer, i) => {
    const panel = state.panels[i];
    paintMaps(panel, layer.maps);
    panel.element.querySelector(".stats").textContent =
      `${gradients ? "gradient" : "output"}: ${statsWords(layer.stats)} (colours: ${scaleWords(layer.maps)})`;
  });
}

// -- one map enlarged, its filter, and the arithmetic behind one of its values ------------------
async function showDetail(index, channel) {
  const layer = state.model.layers[index];
  const source = showing() === "gradients" && state.gradients ? state.gradients : state.prediction;
  if (!source) return;
  state.detail = { layer: index, channel: channel };
  const explained = state.explained;
  if (explained && (explained.layer !== index || explained.channel !== channel)) hideArithmetic();
  $("detail").hidden = false;
  $("detail-title").textContent = `Layer ${index} (${layer.name}), channel ${channel}`;
  const { h, w } = layout(layer.shape);
  const maps = source.layers[index].maps;
  paint($("detail-map"), bytesOf(maps.data), channel * h * w, w, h, coloursOf(maps));
  $("detail-map").style.width = $("detail-map").style.height = "224px";
  $("detail-map-caption").textContent = `Colours as the whole layer's: ${scaleWords(maps)}. ` + (layer.type === "conv2d"
    ? "Click a pixel to see how it was computed." : `${layer.type} of the channel made by the filter beside it.`);
  if (layer.filters_from === null) return;
  const filter = await call(`/api/filter?layer=${layer.filters_from}&channel=${channel}`);
  showFilter(filter);
}

// The card opens above the layers: a map clicked far down would open it off screen, as if nothing happened.
async function openDetail(index, channel) {
  try {
    await showDetail(index, channel);
  } catch (error) {
    showMessage(error.message);
  }
  $("detail").scrollIntoView({ block: "nearest" });
}

function showFilter(filter) {
  const holder = $("detail-filter");
  holder.textContent = "";
  const weights = filter.weights; // (C_prev, f, f)
  const f = weights[0].length;
  const largest = Math.max(...weights.flat(2).map(Math.abs)) || 1;
  weights.forEach((channel) => {
    const bytes = Uint8Array.from(channel.flat(), (v) => Math.round(127.5 + 127.5 * (v / largest)));
    const canvas = document.createElement("canvas");
    canvas.className = "pixels";
    canvas.style.width = canvas.style.height = `${weights.length === 1 ? 160 : 40}px`;
    paint(canvas, bytes, 0, f, f, SIGNED);
    holder.appendChild(canvas);
  });
  const layer = state.model.layers[filter.layer];
  $("detail-filter-caption").textContent = `Filter ${filter.channel} of layer ${filter.layer} (${layer.name}): ` +
    `${f}x${f} over ${weights.length} input channel${weights.length > 1 ? "s" : ""}` +
    (filter.bias === null ? "" : `, bias ${number(filter.bias)}`) +
    `; weights from -${number(largest)} (blue) to ${number(largest)} (red)`;
}

$("detail-close").addEventListener("click", () => { state.detail = null; $("detail").hidden = true; hideArithmetic(); });

function hideArithmetic() {
  state.explained = state.arithmetic = null;
  $("arithmetic").hidden = true;
}

async function explain() {
  const value = state.explained;
  try {
    const answer = await postJson("/api/explain", { image: state.image, ...value });
    if (state.explained !== value) return; // another value was chosen meanwhile
    state.arithmetic = answer;
    showArithmetic(answer);
  } catch (error) {
    showMessage(error.message);
  }
}

$("detail-map").addEventListener("click", async (event) => {
  const detail = state.detail;
  if (!detail || state.model.layers[detail.layer].type !== "conv2d") return;
  const canvas = $("detail-map");
  const box = canvas.getBoundingClientRect();
  const col = Math.floor(((event.clientX - box.left) / box.width) * canvas.width);
  const row = Math.floor(((event.clientY - box.top) / box.height) * canvas.height);
  state.explained = { layer: detail.layer, channel: detail.channel, row: row, col: col };
  await explain();
  $("arithmetic").scrollIntoView({ block: "nearest" }); // below the map, off a phone's screen
});

function showArithmetic(a) {
  $("arithmetic").hidden = false;
  $("arithmetic-title").textContent = `Layer ${a.layer}, row ${a.row}, column ${a.col}, channel ${a.channel}`;
  const select = $("arithmetic-channel");
  select.textContent = "";
  const order = a.channel_sums.map((s, c) => c);
  order.sort((x, y) => Math.abs(a.channel_sums[y]) - Math.abs(a.channel_sums[x]));
  for (const c of order) {
    const option = document.createElement("option");
    option.value = c;
    option.textContent = `${c} (adds ${number(a.channel_sums[c])})`;
    select.appendChild(option);
  }
  showInputChannel(a, order[0]);
  let words = `Sum of the ${a.products.length * a.kernel * a.kernel} products = ${number(a.sum)}, plus bias ` +
    `${number(a.bias)} = ${number(a.sum + a.bias)}; the engine computed ${number(a.value)}`;
  for (const later of a.after) words += ` \u2192 ${later.type} (layer ${later.index}) ${number(later.value)}`;
  $("arithmetic-sum").textContent = words;
}
$("arithmetic-channel").addEventListener("change",
  (event) => showInputChannel(state.arithmetic, Number(event.target.value)));

function fillNumbers(table, grid) {
  table.textContent = "";
  for (const values of grid) {
    const tr = table.insertRow();
    for (const v of values) tr.insertCell().textContent = number(v);
  }
}

// The input channel the window reads, with the window outlined (padding falls outside the map).
function showInputChannel(a, c) {
  $("arithmetic-channel").value = c;
  fillNumbers($("window"), a.window[c]);
  fillNumbers($("weights"), a.filter[c]);
  fillNumbers($("products"), a.products[c]);
  const canvas = $("arithmetic-input");
  if (a.input_layer < 0) {
    paint(canvas, bytesOf(state.prediction.image), 0, 28, 28, GREY);
  } else {
    const maps = state.prediction.layers[a.input_layer].maps;
    const { h, w } = layout(maps.shape);
    paint(canvas, bytesOf(maps.data), c * h * w, w, h, coloursOf(maps));
  }
  const scale = 224 / canvas.width;
  const big = document.createElement("canvas");
  big.width = big.height = 224;
  const context = big.getContext("2d");
  context.imageSmoothingEnabled = false;
  context.drawImage(canvas, 0, 0, 224, 224);
  context.strokeStyle = "#2ecc71";
  context.lineWidth = 2;
  context.strokeRect(a.left * scale, a.top * scale, a.kernel * scale, a.kernel * scale);
  canvas.width = canvas.height = 224;
  canvas.getContext("2d").drawImage(big, 0, 0);
}

// -- the run tab -------------------------------------------------------------------------------
let runLoaded = false;
document.querySelectorAll(".tab").forEach((tab) => tab.addEventListener("click", () => {
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t === tab));
  document.querySelectorAll(".page").forEach((page) => { page.hidden = page.id !== tab.dataset.page; });
  if (tab.dataset.page === "run" && !runLoaded) {
    runLoaded = true;
    loadRun();
  }
}));

async function loadRun() {
  try {
    const run = await call("/api/run");
    const images = run.confusion.flat().reduce((a, b) => a + b, 0);
    $("run-status").textContent =
      `Test accuracy ${(100 * run.accuracy).toFixed(2)}% on ${images.toLocaleString()} images.`;
    drawCurves($("curve-loss"), run.history, [["train_loss", "training"], ["val_loss", "validation"]], "loss",
      number);
    // in percent, as the test accuracy above it, the summary and curves.png say an accuracy
    drawCurves($("curve-accuracy"), run.history, [["train_acc", "training"], ["val_acc", "validation"]], "accuracy",
      (v) => `${(100 * v).toFixed(2)}%`);
    showConfusion(run);
    $("worst").textContent = "";
    for (const m of run.misclassified) {
      const caption = `#${m.index}: ${run.classes[m.true]} \u2192 ${run.classes[m.predicted]}`;
      addThumb($("worst"), m.image, `${caption} ${(100 * m.confidence).toFixed(0)}%`);
    }
    $("config").textContent = run.config;
    showSummary(run.results, run.summary);
  } catch (error) {
    $("run-status").textContent = error.message;
  }
}

function addThumb(holder, image, caption) {
  const figure = document.createElement("figure");
  const canvas = document.createElement("canvas");
  canvas.className = "pixels thumb";
  paint(canvas, bytesOf(image), 0, 28, 28, GREY);
  const text = document.createElement("figcaption");
  text.textContent = caption;
  figure.append(canvas, text);
  holder.appendChild(figure);
}

function showConfusion(run) {
  const table = $("confusion");
  table.textContent = "";
  const head = table.insertRow();
  head.insertCell();
  run.classes.forEach((name) => { head.insertCell().textContent = name; });
  run.confusion.forEach((counts, t) => {
    const tr = table.insertRow();
    tr.insertCell().textContent = run.classes[t];
    const total = counts.reduce((a, b) => a + b, 0) || 1;
    counts.forEach((count, p) => {
      const cell = tr.insertCell();
      cell.textContent = count;
      cell.className = `cell${t === p ? " diagonal" : ""}${count ? "" : " zero"}`;
      cell.dataset.true = t;
      cell.dataset.predicted = p;
      const share = t === p ? 0 : Math.min(1, Math.sqrt(count / total) * 2);
      if (share) cell.style.background = `rgba(178, 24, 43, ${share.toFixed(2)})`;
      clickable(cell, () => showCell(run, t, p));
    });
  });
}

async function showCell(run, t, p) {
  try {
    const cell = await call(`/api/run/cell?true=${t}&predicted=${p}`);
    $("cell").hidden = false;
    $("cell-title").textContent = `True ${run.classes[t]}, predicted ${run.classes[p]}: ${cell.count} test image` +
      (cell.count === 1 ? "" : "s") +
      (cell.count > cell.images.length ? `, the first ${cell.images.length} shown` : "");
    $("cell-images").textContent = "";
    for (const item of cell.images) addThumb($("cell-images"), item.image, `#${item.index}`);
  } catch (error) {
    showMessage(error.message);
  }
}

// the run's results in words, as train printed them; summary.json itself under them, folded
function showSummary(results, summary) {
  const table = $("summary");
  table.textContent = "";
  $("summary-json").hidden = !summary;
  if (!results) {
    table.insertRow().insertCell().textContent = "No summary.json beside this checkpoint.";
    return;
  }
  for (const [what, value] of results) {
    const tr = table.insertRow();
    tr.insertCell().textContent = what;
    tr.insertCell().textContent = value;
  }
  $("summary-file").textContent = JSON.stringify(summary, null, 2);
}

function drawCurves(canvas, history, series, label, format) {
  const context = canvas.getContext("2d");
  const { width, height } = canvas;
  const left = 52, right = 12, top = 22, bottom = 30;
  context.clearRect(0, 0, width, height);
  const values = history.flatMap((row) => series.map(([key]) => row[key])).filter((v) => v !== null && v !== undefined);
  if (!values.length) return;
  let low = Math.min(...values), high = Math.max(...values);
  if (high === low) { low -= 0.5 * Math.abs(low || 1) * 0.1; high += 0.5 * Math.abs(high || 1) * 0.1; }
  const epochs = history.map((row) => row.epoch);
  const first = Math.min(...epochs), last = Math.max(...epochs);
  const x = (e) => left + (last === first ? 0.5 : (e - first) / (last - first)) * (width - left - right);
  const y = (v) => top + (1 - (v - low) / (high - low)) * (height - top - bottom);
  context.strokeStyle = "#999";
  context.fillStyle = "#333";
  context.font = "12px sans-serif";
  context.strokeRect(left, top, width - left - right, height - top - bottom);
  context.fillText(label, left, 14);
  context.fillText(format(high), 4, top + 4);
  context.fillText(format(low), 4, height - bottom);
  canvas.setAttribute("role", "img");  // what the picture says, for a screen reader
  canvas.setAttribute("aria-label", `${label} per epoch, ${series.map(([, name]) => name).join(" and ")}: ` +
    `${format(low)} to ${format(high)}`);
  context.fillText(`epoch ${first}`, left, height - 10);
  if (last !== first) context.fillText(`${last}`, width - right - 16, height - 10);
  const colours = ["#2166ac", "#b2182b"];
  series.forEach(([key, name], i) => {
    const points = history.filter((row) => row[key] !== null && row[key] !== undefined);
    context.strokeStyle = context.fillStyle = colours[i];
    context.beginPath();
    points.forEach((row, j) => context[j ? "lineTo" : "moveTo"](x(row.epoch), y(row[key])));
    context.stroke();
    points.forEach((row) => context.fillRect(x(row.epoch) - 2, y(row[key]) - 2, 4, 4));
    context.fillText(name, width - right - 150 + 75 * i, 14);
  });
}

// -- start -------------------------------------------------------------------------------------
async function start() {
  state.model = await call("/api/model");
  $("model-name").textContent = `${state.model.name}: ${state.model.checkpoint}`;
  const bars = $("bars");
  state.model.classes.forEach((name, i) => {
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.id = `bar-${i}`;
    bar.innerHTML = '<span class="label"></span><span class="track"><span class="fill"></span></span>' +
      '<span class="value"></span>';
    bar.querySelector(".label").textContent = name;
    bars.appendChild(bar);
    const option = document.createElement("option");
    option.value = i;
    option.textContent = name;
    $("saliency-class").appendChild(option);
  });
  buildPanels();
  redraw();
  requestUpdate();
}
start().catch((error) => showMessage(error.message));
