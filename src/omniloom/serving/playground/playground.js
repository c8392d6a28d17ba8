// omniloom playground: chat with the served model through the same API any client uses.
// Attachments are previewed with /tokenize (tokens, cost beside hosted models, the tiles or
// frames the model will see); answers stream from /v1/chat/completions with usage and timings.
// Voice mode talks over /v1/realtime (voice.js).

import { VoiceSession } from "/playground/voice.js";

const $ = (id) => document.getElementById(id);
const state = {
  cards: [],
  history: [],
  attachments: [],
  lastRequest: null,
  controller: null,
  recorder: null,
  voice: null,
};
let nextId = 1;

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function api(path, body) {
  const response = await fetch(path, {
    method: body ? "POST" : "GET",
    headers: headers(),
    body: body ? JSON.stringify(body) : undefined,
  });
  if (!response.ok) throw new Error(await errorText(response));
  return response;
}

async function errorText(response) {
  try {
    const body = await response.json();
    return body.error?.message || `${response.status} ${response.statusText}`;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function chatModel() {
  return state.cards.find((card) => card.id === $("model").value);
}

function modalities() {
  return new Set(chatModel()?.input_modalities || ["text"]);
}

async function loadModels() {
  const cards = (await (await api("/v1/models")).json()).data;
  state.cards = cards.filter((c) => c.input_modalities?.includes("text") && c.output_modalities?.includes("text"));
  $("model").replaceChildren(...state.cards.map((c) => new Option(c.id, c.id)));
  modelChanged();
}

function modelChanged() {
  const kinds = [...modalities()];
  $("modalities").textContent = `takes ${kinds.join(", ")}`;
  const accept = kinds.filter((k) => k !== "text").map((k) => `${k}/*`);
  $("file").accept = accept.join(",");
  $("attach").hidden = accept.length === 0;
  $("record").hidden = !kinds.includes("audio") || !navigator.mediaDevices?.getUserMedia;
}

// --- microphone --------------------------------------------------------------------------------

async function toggleRecording() {
  if (state.recorder) {
    state.recorder.stop();
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (error) {
    showError(`The microphone is not available: ${error.message}`);
    return;
  }
  const recorder = new MediaRecorder(stream);
  const chunks = [];
  recorder.addEventListener("dataavailable", (e) => chunks.push(e.data));
  recorder.addEventListener("stop", () => {
    stream.getTracks().forEach((track) => track.stop());
    state.recorder = null;
    $("record").textContent = "Record audio";
    $("record").setAttribute("aria-pressed", "false");
    const type = recorder.mimeType.split(";")[0] || "audio/webm";
    const name = `recording.${type.split("/")[1] || "webm"}`;
    addFiles([new File(chunks, name, { type })]);
  });
  state.recorder = recorder;
  recorder.start();
  $("record").textContent = "Stop recording";
  $("record").setAttribute("aria-pressed", "true");
}

// --- attachments -----------------------------------------------------------------------------

function kindOf(file) {
  return ["image", "audio", "video"].find((k) => file.type.startsWith(`${k}/`)) || "file";
}

function readDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function addFiles(files) {
  showError("");
  for (const file of files) {
    const kind = kindOf(file);
    if (!modalities().has(kind)) {
      showError(`Model '${$("model").value}' does not take ${kind === "file" ? file.type || "this file" : kind} input.`);
      continue;
    }
    const attachment = { id: nextId++, kind, name: file.name, mime: file.type, url: await readDataUrl(file) };
    state.attachments.push(attachment);
    renderAttachments();
    preview(attachment);
  }
}

function contentPart(a) {
  if (a.kind === "image") return { type: "image_url", image_url: { url: a.url, detail: $("detail").value } };
  if (a.kind === "video") return { type: "video_url", video_url: { url: a.url }, video: { strategy: $("video-strategy").value } };
  const format = (a.name.split(".").pop() || "wav").toLowerCase();
  return { type: "input_audio", input_audio: { data: a.url.split(",")[1], format } };
}

async function preview(a) {
  const body = { model: $("model").value, messages: [{ role: "user", content: [contentPart(a)] }] };
  if ($("perception").value) body.perception = $("perception").value;
  try {
    const path = a.kind === "video" ? "/tokenize?previews=true" : "/tokenize";
    a.counted = await (await api(path, body)).json();
    a.problem = null;
  } catch (error) {
    a.problem = error.message;
  }
  renderAttachments();
}

function renderAttachments() {
  $("attachments").replaceChildren(...state.attachments.map(attachmentCard));
}

function attachmentCard(a) {
  const item = document.createElement("li");
  item.className = "attachment";
  item.dataset.kind = a.kind;
  const remove = button("×", () => {
    state.attachments = state.attachments.filter((x) => x !== a);
    renderAttachments();
  });
  remove.className = "remove";
  remove.setAttribute("aria-label", `Remove ${a.name}`);
  item.append(remove, text("div", a.name, "name"));
  item.append(mediaPreview(a));
  if (a.problem) item.append(text("p", a.problem, "problem"));
  else if (!a.counted) item.append(text("p", "counting tokens…", "muted"));
  else item.append(...summary(a));
  return item;
}

function mediaPreview(a) {
  const holder = document.createElement("div");
  holder.className = "preview";
  if (a.kind === "image") {
    const img = document.createElement("img");
    img.src = a.url;
    img.alt = a.name;
    holder.append(img);
    const grid = a.counted?.media?.[0]?.grid;
    if (grid) img.addEventListener("load", () => holder.append(tileOverlay(img, grid)), { once: true });
  } else if (a.kind === "video") {
    const video = document.createElement("video");
    video.src = a.url;
    video.controls = true;
    video.muted = true;
    holder.append(video);
  } else {
    const audio = document.createElement("audio");
    audio.src = a.url;
    audio.controls = true;
    holder.append(audio);
  }
  return holder;
}

function tileOverlay(img, grid) {
  const canvas = document.createElement("canvas");
  canvas.className = "tiles";
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  canvas.dataset.cols = grid.cols;
  canvas.dataset.rows = grid.rows;
  const ctx = canvas.getContext("2d");
  ctx.strokeStyle = "rgba(255, 200, 0, 0.95)";
  ctx.lineWidth = 3 * (canvas.width / Math.max(1, img.clientWidth));
  for (let c = 0; c <= grid.cols; c++) line(ctx, (c * canvas.width) / grid.cols, 0, (c * canvas.width) / grid.cols, canvas.height);
  for (let r = 0; r <= grid.rows; r++) line(ctx, 0, (r * canvas.height) / grid.rows, canvas.width, (r * canvas.height) / grid.rows);
  return canvas;
}

function line(ctx, x0, y0, x1, y1) {
  ctx.beginPath();
  ctx.moveTo(x0, y0);
  ctx.lineTo(x1, y1);
  ctx.stroke();
}

function summary(a) {
  const counted = a.counted;
  const media = counted.media || [];
  const tokens = media.reduce((sum, m) => sum + m.tokens, 0);
  const out = [];
  const grid = media[0]?.grid;
  let how = `${tokens} tokens for ${$("model").value}`;
  if (a.kind === "image" && grid) how += ` · ${grid.cols}×${grid.rows} tiles${grid.whole_view ? " + whole view" : ""}`;
  if (a.kind === "video") {
    const frames = media.map((m) => `${m.timestamp?.toFixed(1) ?? "?"} s`);
    how += ` · ${media.length} frames at ${frames.join(", ")}${counted.exact ? "" : " (at most)"}`;
  }
  if (media.length === 0) {
    const words = a.kind === "audio" ? "its transcript goes in as words" : "described in words (perception cascade)";
    how = `no ${a.kind} tokens: ${words}, ${counted.count} prompt tokens in all`;
  }
  out.push(text("p", how, "count"));
  if (a.kind === "video" && counted.videos?.[0]?.previews) out.push(filmstrip(counted.videos[0]));
  const costs = media[0]?.costs;
  if (costs) out.push(costTable(costs));
  return out;
}

// The frames the model will see, as the server decoded and sampled them.
function filmstrip(plan) {
  const strip = document.createElement("div");
  strip.className = "frames";
  strip.setAttribute("aria-label", `${plan.frames} frames the model sees`);
  plan.previews.forEach((url, i) => {
    const figure = document.createElement("figure");
    const image = document.createElement("img");
    image.src = url;
    image.alt = `frame at ${plan.timestamps[i].toFixed(1)} s`;
    figure.append(image, text("figcaption", `${plan.timestamps[i].toFixed(1)} s`));
    strip.append(figure);
  });
  return strip;
}

function costTable(rows) {
  const table = document.createElement("table");
  table.className = "costs";
  table.innerHTML = "<thead><tr><th>model</th><th>tokens</th><th>cost $</th></tr></thead>";
  const body = document.createElement("tbody");
  for (const row of rows) {
    const cost = row.price == null ? "—" : ((row.tokens * row.price) / 1e6).toFixed(6);
    const tr = document.createElement("tr");
    tr.append(text("td", row.model), text("td", String(Math.round(row.tokens))), text("td", cost));
    body.append(tr);
  }
  table.append(body);
  return table;
}

// --- conversation ----------------------------------------------------------------------------

function text(tag, value, className) {
  const node = document.createElement(tag);
  node.textContent = value;
  if (className) node.className = className;
  return node;
}

function button(label, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.addEventListener("click", onClick);
  return b;
}

function messageNode(role, content, attachments = []) {
  const node = document.createElement("article");
  node.className = `message ${role}`;
  node.append(text("div", role, "role"));
  for (const a of attachments) {
    if (a.kind !== "image") node.append(text("div", `[${a.kind}: ${a.name}]`, "muted"));
    else {
      const img = document.createElement("img");
      img.src = a.url;
      img.alt = a.name;
      img.className = "thumb";
      node.append(img);
    }
  }
  node.append(text("div", content, "text"));
  $("messages").append(node);
  node.scrollIntoView({ block: "end" });
  return node;
}

function buildRequest(userContent) {
  const messages = [];
  const system = $("system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push(...state.history, { role: "user", content: userContent });
  const request = {
    model: $("model").value,
    messages,
    stream: true,
    stream_options: { include_usage: true },
    temperature: Number($("temperature").value),
    max_tokens: Number($("max-tokens").value),
  };
  if ($("perception").value) request.perception = $("perception").value;
  const schema = $("schema").value.trim();
  if (schema) request.response_format = { type: "json_schema", json_schema: { name: "answer", schema: JSON.parse(schema) } };
  return request;
}

async function send(event) {
  event.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!prompt && state.attachments.length === 0) return;
  showError("");
  let request;
  const attachments = state.attachments.filter((a) => !a.problem);
  const content = [...attachments.map(contentPart), { type: "text", text: prompt }];
  try {
    request = buildRequest(content);
  } catch (error) {
    showError(`The JSON schema is not valid JSON: ${error.message}`);
    return;
  }
  state.lastRequest = request;
  $("export").disabled = false;
  messageNode("user", prompt, attachments);
  const reply = messageNode("assistant", "");
  $("prompt").value = "";
  state.attachments = [];
  renderAttachments();
  const answer = await stream(request, reply);
  if (answer !== null) state.history.push({ role: "user", content }, { role: "assistant", content: answer });
}

async function stream(request, node) {
  const out = node.querySelector(".text");
  state.controller = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  const started = performance.now();
  let firstToken = null;
  let finished = null;
  let usage = null;
  let timings = null;
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers(),
      body: JSON.stringify(request),
      signal: state.controller.signal,
    });
    if (!response.ok) throw new Error(await errorText(response));
    for await (const chunk of events(response)) {
      if (chunk.error) throw new Error(chunk.error.message);
      const delta = chunk.choices?.[0]?.delta?.content;
      if (delta) {
        firstToken ??= performance.now();
        out.textContent += delta;
      }
      if (chunk.usage) {
        usage = chunk.usage;
        timings = chunk.timings;
        finished = performance.now();
      }
    }
    node.append(stats(usage, timings, response.headers, { started, firstToken, finished }));
    return out.textContent;
  } catch (error) {
    if (error.name === "AbortError") return out.textContent;
    node.remove();
    showError(error.message);
    return null;
  } finally {
    $("send").disabled = false;
    $("stop").disabled = true;
  }
}

async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = frame.replace(/^data: /, "");
      if (data === "[DONE]") return;
      if (data) yield JSON.parse(data);
    }
  }
}

function stats(usage, timings, responseHeaders, clock) {
  const box = document.createElement("div");
  box.className = "stats";
  const add = (label, value) => box.append(text("span", `${label} ${value}`));
  if (usage) {
    const details = usage.prompt_tokens_details || {};
    const parts = ["text", "image", "audio", "video"]
      .filter((m) => details[`${m}_tokens`])
      .map((m) => `${m} ${details[`${m}_tokens`]}`);
    add("prompt", `${usage.prompt_tokens} tokens (${parts.join(", ")})`);
    add("cached", details.cached_tokens || 0);
    add("completion", `${usage.completion_tokens} tokens`);
  }
  if (clock.firstToken) add("time to first token", `${((clock.firstToken - clock.started) / 1000).toFixed(2)} s`);
  if (usage && clock.firstToken && clock.finished > clock.firstToken && usage.completion_tokens > 1) {
    add("speed", `${((usage.completion_tokens - 1) / ((clock.finished - clock.firstToken) / 1000)).toFixed(1)} tok/s`);
  }
  if (timings) {
    const stages = ["fetch", "preprocess", "queue", "encode", "prefill", "decode"];
    add("server", stages.map((s) => `${s} ${(timings[s] ?? 0).toFixed(3)} s`).join(", "));
  }
  const perception = responseHeaders.get("X-Omniloom-Perception");
  if (perception) add("perception", perception);
  for (const flag of ["Prompt-Injection", "Image-Safety", "Skipped"]) {
    const value = responseHeaders.get(`X-Omniloom-${flag}`);
    if (value && value !== "none") add(flag.toLowerCase().replace("-", " "), value);
  }
  return box;
}

// --- export ------------------------------------------------------------------------------------

function exportRequest() {
  const json = JSON.stringify(state.lastRequest, null, 2);
  $("export-json").textContent = json;
  $("export-python").textContent = [
    "import json",
    "from openai import OpenAI",
    "",
    'request = json.load(open("request.json"))',
    'extra = {k: request.pop(k) for k in ("perception",) if k in request}  # omniloom\'s own fields',
    `client = OpenAI(base_url="${location.origin}/v1", api_key="unused")`,
    "for chunk in client.chat.completions.create(**request, extra_body=extra):",
    '    print(chunk.choices[0].delta.content or "" if chunk.choices else "", end="")',
  ].join("\n");
  $("export-download").href = URL.createObjectURL(new Blob([json], { type: "application/json" }));
  $("export-dialog").showModal();
}

// --- voice ---------------------------------------------------------------------------------------

async function toggleVoice() {
  if (state.voice) {
    state.voice.stop();
    state.voice = null;
    voiceControls(false);
    return;
  }
  let answer = null;
  const session = new VoiceSession({
    mode: $("voice-mode").value,
    apiKey: $("api-key").value.trim(),
    onUser: (transcript) => {
      messageNode("user", transcript || "(nothing heard)");
      answer = null;
    },
    onAnswer: (delta) => {
      answer ??= messageNode("assistant", "");
      answer.querySelector(".text").textContent += delta;
    },
    onAnswerDone: (response) => {
      const box = document.createElement("div");
      box.className = "stats";
      box.textContent = `voice · ${response?.status || "done"}`;
      answer?.append(box);
      answer = null;
    },
    onError: showError,
    onState: (words) => ($("voice-state").textContent = words),
  });
  try {
    await session.start();
  } catch (error) {
    session.stop();
    showError(`Voice mode could not start: ${error.message}`);
    return;
  }
  state.voice = session;
  voiceControls(true);
}

function voiceControls(on) {
  $("voice-start").textContent = on ? "Stop voice" : "Start voice";
  $("voice-talk").hidden = !on || $("voice-mode").value !== "push-to-talk";
  $("voice-mode").disabled = on;
  if (!on) $("voice-state").textContent = "";
}

// --- wiring ------------------------------------------------------------------------------------

function wire() {
  $("model").addEventListener("change", modelChanged);
  $("composer").addEventListener("submit", send);
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) send(e);
  });
  $("file").addEventListener("change", () => {
    addFiles([...$("file").files]);
    $("file").value = "";
  });
  $("attach").addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") $("file").click();
  });
  $("prompt").addEventListener("paste", (e) => {
    const files = [...e.clipboardData.items].filter((i) => i.kind === "file").map((i) => i.getAsFile());
    if (files.length) {
      e.preventDefault();
      addFiles(files);
    }
  });
  const composer = $("composer");
  composer.addEventListener("dragover", (e) => {
    e.preventDefault();
    composer.classList.add("dragging");
  });
  composer.addEventListener("dragleave", () => composer.classList.remove("dragging"));
  composer.addEventListener("drop", (e) => {
    e.preventDefault();
    composer.classList.remove("dragging");
    addFiles([...e.dataTransfer.files]);
  });
  $("stop").addEventListener("click", () => state.controller?.abort());
  $("record").addEventListener("click", toggleRecording);
  $("voice-start").addEventListener("click", toggleVoice);
  const talk = $("voice-talk");
  talk.addEventListener("pointerdown", () => state.voice?.press());
  talk.addEventListener("pointerup", () => state.voice?.release());
  talk.addEventListener("pointerleave", () => state.voice?.release());
  talk.addEventListener("keydown", (e) => {
    if ((e.key === " " || e.key === "Enter") && !e.repeat) state.voice?.press();
  });
  talk.addEventListener("keyup", (e) => {
    if (e.key === " " || e.key === "Enter") state.voice?.release();
  });
  $("export").addEventListener("click", exportRequest);
  $("export-close").addEventListener("click", () => $("export-dialog").close());
  $("clear").addEventListener("click", () => {
    state.history = [];
    $("messages").replaceChildren();
    showError("");
  });
  $("api-key").value = localStorage.getItem("omniloom-key") || "";
  $("api-key").addEventListener("change", () => {
    localStorage.setItem("omniloom-key", $("api-key").value);
    loadModels().catch((error) => showError(error.message));
  });
  if (window.matchMedia("(max-width: 720px)").matches) $("settings").open = false;
}

wire();
loadModels().catch((error) => showError(error.message));
