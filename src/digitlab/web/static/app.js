// The digitlab page: draw or upload, send to /api/predict, show what the model saw and said.
// Plain JavaScript, no libraries: the page must work offline from the package.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  const DEBOUNCE_MS = 150; // at most one prediction per 150 ms while drawing
  const TOP_K = 3;

  let classes = [];
  let strokes = []; // [{width, points: [[x, y], ...]}], kept for undo
  let current = null; // the stroke being drawn
  let timer = null;
  let inFlight = false;
  let dirty = false; // the drawing changed while a request was in flight
  let requestId = 0; // answers to older requests are dropped

  // ---- drawing -------------------------------------------------------------
  // White on black like MNIST; the server detects ink either way.
  function strokePath(points, width) {
    ctx.strokeStyle = "#fff";
    ctx.fillStyle = "#fff";
    ctx.lineWidth = width;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    if (points.length === 1) {
      ctx.beginPath();
      ctx.arc(points[0][0], points[0][1], width / 2, 0, 2 * Math.PI);
      ctx.fill();
      return;
    }
    ctx.beginPath();
    ctx.moveTo(points[0][0], points[0][1]);
    for (const [x, y] of points.slice(1)) ctx.lineTo(x, y);
    ctx.stroke();
  }

  function repaint() {
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    for (const s of strokes) strokePath(s.points, s.width);
  }

  function canvasPoint(e) {
    const r = canvas.getBoundingClientRect();
    return [((e.clientX - r.left) * canvas.width) / r.width, ((e.clientY - r.top) * canvas.height) / r.height];
  }

  canvas.addEventListener("pointerdown", (e) => {
    if (e.pointerType === "mouse" && e.button !== 0) return;
    e.preventDefault();
    canvas.setPointerCapture(e.pointerId);
    current = { width: Number($("pen-width").value), points: [canvasPoint(e)] };
    strokes.push(current);
    strokePath(current.points, current.width);
    showDrawing();
    schedule();
  });

  canvas.addEventListener("pointermove", (e) => {
    if (!current) return;
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
    const last = current.points[current.points.length - 1];
    const added = (events.length ? events : [e]).map(canvasPoint);
    current.points.push(...added);
    strokePath([last, ...added], current.width);
    schedule();
  });

  const endStroke = () => {
    if (!current) return;
    current = null;
    schedule();
  };
  canvas.addEventListener("pointerup", endStroke);
  canvas.addEventListener("pointercancel", endStroke);

  function undo() {
    if (!strokes.length) return;
    strokes.pop();
    repaint();
    showDrawing();
    schedule();
  }

  function clearCanvas() {
    strokes = [];
    current = null;
    repaint();
    showDrawing();
    schedule(); // a blank canvas answers "no digit found"
  }

  $("undo").addEventListener("click", undo);
  $("clear").addEventListener("click", clearCanvas);
  $("pen-width").addEventListener("input", (e) => ($("pen-width-value").value = e.target.value));
  document.addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === "z" && !$("draw-panel").hidden) {
      e.preventDefault();
      undo();
    }
  });

  // ---- talking to the server -----------------------------------------------
  // The drawing goes out at 96x96: it reads as well as the full 280x280 canvas (the model sees 28x28)
  // and costs the server a ninth of the pixels to decode and preprocess (BENCHMARKS.md, web).
  const SENT_SIDE = 96;
  const sent = document.createElement("canvas");
  sent.width = SENT_SIDE;
  sent.height = SENT_SIDE;
  const sentCtx = sent.getContext("2d");
  sentCtx.imageSmoothingEnabled = true;
  sentCtx.imageSmoothingQuality = "high";

  function canvasDataUrl() {
    sentCtx.drawImage(canvas, 0, 0, sent.width, sent.height);
    return sent.toDataURL("image/png");
  }

  function schedule() {
    if (!timer) timer = setTimeout(sendCanvas, DEBOUNCE_MS);
  }

  async function sendCanvas() {
    timer = null;
    if (inFlight) {
      dirty = true;
      return;
    }
    inFlight = true;
    const body = JSON.stringify({ image: canvasDataUrl(), include_input: true, top_k: TOP_K });
    await predict({ method: "POST", headers: { "Content-Type": "application/json" }, body }, null);
    inFlight = false;
    if (dirty) {
      dirty = false;
      schedule();
    }
  }

  function sendFile(file) {
    if (!file) return;
    const img = $("preview-img");
    if (img.src) URL.revokeObjectURL(img.src);
    img.src = URL.createObjectURL(file);
    $("preview").hidden = false;
    clearOverlay();
    const form = new FormData();
    form.append("file", file, file.name);
    predict({ method: "POST", body: form }, img, `?include_input=true&top_k=${TOP_K}`);
  }

  async function predict(options, previewImg, query = "") {
    const id = ++requestId;
    $("result").setAttribute("aria-busy", "true");
    try {
      const res = await fetch("/api/predict" + query, options);
      const data = await res.json().catch(() => ({ error: `server answered ${res.status}` }));
      if (id !== requestId) return;
      if (!res.ok) throw new Error(data.error || `server answered ${res.status}`);
      showResult(data);
      if (previewImg) drawBoxes(previewImg, data.items);
    } catch (err) {
      if (id === requestId) showError(err.message || String(err));
    } finally {
      if (id === requestId) $("result").removeAttribute("aria-busy");
    }
  }

  // ---- showing results -----------------------------------------------------
  function setLabel(text, kind) {
    const label = $("result-label");
    label.textContent = text;
    label.className = "label" + (kind ? " " + kind : "");
  }

  function showDrawing() {
    $("preview").hidden = true;
  }

  function showError(message) {
    const el = $("error");
    el.textContent = message;
    el.hidden = false;
    $("result").dataset.status = "error";
    setLabel("!", "empty");
    $("result-detail").textContent = "";
    $("items").replaceChildren();
  }

  // Calibrated models are often surer than 99.9%: never round that up to a claim of 100%.
  const pct = (p) => (p >= 0.9995 ? ">99.9%" : p < 0.0005 ? "<0.1%" : `${(100 * p).toFixed(1)}%`);

  function showResult(data) {
    $("error").hidden = true;
    $("result").dataset.status = data.status;
    const items = data.items || [];
    const ms = `${Math.round(data.elapsed_ms)} ms`;
    if (data.status === "empty" || !items.length) {
      setLabel("No digit found", "empty");
      $("result-detail").textContent = `Nothing that looks like ink. · ${ms}`;
    } else {
      setLabel(data.text ?? items.map((it) => it.label).join(""), data.status === "uncertain" ? "uncertain" : "");
      const sure = items.length === 1 ? `${pct(items[0].probability)} sure` : `${items.length} digits`;
      const doubt = data.status === "uncertain" ? " — uncertain, please check" : "";
      $("result-detail").textContent = `${sure}${doubt} · ${ms}`;
    }
    $("items").replaceChildren(...items.map(itemView));
  }

  function itemView(item, i) {
    const box = document.createElement("div");
    box.className = "item" + (item.uncertain ? " uncertain" : "");
    const head = document.createElement("div");
    head.className = "item-head";
    if (item.input_image) {
      const img = document.createElement("img");
      img.src = item.input_image;
      img.alt = `The 28x28 image the model saw for item ${i + 1}`;
      img.title = "What the model saw (28x28)";
      head.append(img);
    }
    const digit = document.createElement("div");
    digit.className = "digit";
    digit.textContent = item.label;
    head.append(digit);

    const bars = document.createElement("ol");
    bars.className = "bars";
    bars.setAttribute("aria-label", `Probabilities for item ${i + 1}`);
    const longest = Math.max(1, ...classes.map((c) => c.length));
    bars.style.setProperty("--name-width", `${Math.min(longest, 12) + 0.5}ch`);
    (item.probs || []).forEach((p, k) => {
      const name = classes[k] ?? String(k);
      const li = document.createElement("li");
      li.className = "bar" + (k === item.index ? " top" : "");
      li.setAttribute("aria-label", `${name}: ${pct(p)}`);
      const n = document.createElement("span");
      n.className = "name";
      n.textContent = name;
      n.title = name;
      const track = document.createElement("span");
      track.className = "track";
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.width = `${(100 * p).toFixed(1)}%`;
      track.append(fill);
      const v = document.createElement("span");
      v.className = "pct";
      v.textContent = pct(p);
      li.append(n, track, v);
      bars.append(li);
    });
    box.append(head, bars);
    return box;
  }

  function clearOverlay() {
    const o = $("overlay");
    o.getContext("2d").clearRect(0, 0, o.width, o.height);
  }

  // Boxes come in the uploaded image's pixels; the overlay canvas uses the same size.
  function drawBoxes(img, items) {
    const draw = () => {
      const o = $("overlay");
      o.width = img.naturalWidth;
      o.height = img.naturalHeight;
      const c = o.getContext("2d");
      const line = Math.max(2, Math.round(Math.max(o.width, o.height) / 150));
      c.lineWidth = line;
      c.font = `bold ${line * 8}px system-ui, sans-serif`;
      c.textBaseline = "bottom";
      for (const it of items || []) {
        if (!it.box) continue;
        const [x0, y0, x1, y1] = it.box;
        c.strokeStyle = c.fillStyle = it.uncertain ? "#f59e0b" : "#2f6fdf";
        c.strokeRect(x0, y0, x1 - x0, y1 - y0);
        c.fillText(it.label, x0, Math.max(line * 8, y0 - line));
      }
    };
    if (img.complete && img.naturalWidth) draw();
    else img.addEventListener("load", draw, { once: true });
  }

  // ---- upload: picker and drag-and-drop ------------------------------------
  $("file").addEventListener("change", (e) => {
    sendFile(e.target.files[0]);
    e.target.value = ""; // picking the same file again still triggers a prediction
  });
  const drop = $("drop");
  window.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("dragging");
  });
  window.addEventListener("dragleave", (e) => {
    if (!e.relatedTarget) drop.classList.remove("dragging");
  });
  window.addEventListener("drop", (e) => {
    e.preventDefault(); // otherwise the browser navigates to the dropped file
    drop.classList.remove("dragging");
    sendFile(e.dataTransfer.files[0]);
  });

  // ---- start: what model is this? -----------------------------------------
  async function loadModel() {
    try {
      const res = await fetch("/api/model");
      const info = await res.json();
      classes = info.classes || [];
      const acc = info.accuracy == null ? "" : ` · test accuracy ${(info.accuracy <= 1 ? 100 * info.accuracy : info.accuracy).toFixed(2)}%`;
      $("model-info").textContent = `Model ${info.name} (${info.dataset ?? info.task}, ${classes.length} classes)${acc}`;
      $("classes").textContent = classes.join(", ");
      const mb = info.limits ? ` · up to ${Math.round(info.limits.max_body_bytes / 1048576)} MB` : "";
      $("drop-hint").textContent = `PNG, JPEG, GIF, BMP, WebP, TIFF${mb}`;
      if (info.task === "images") {
        // Drawing is for digit models; image models take photos.
        $("draw-panel").hidden = true;
        $("input-title").textContent = "Upload an image";
        $("result-detail").textContent = "Upload an image to classify it.";
        $("preview-caption").textContent = "Your image.";
      }
      document.body.dataset.ready = info.task;
    } catch (err) {
      showError(`could not reach the server: ${err.message || err}`);
    }
  }

  repaint();
  loadModel();
})();
