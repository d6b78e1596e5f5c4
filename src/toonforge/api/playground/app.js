// toonforge playground: the catalog, a form per tool, Run signed in the browser, the task's
// progress from the WebSocket, its outputs, Kill and Cancel, the project's recent tasks.
// Plain JavaScript, no dependency; every request goes to this page's own origin.
"use strict";

(() => {
  const STORE_KEY = "toonforge.playground.settings";
  const TERMINAL = new Set(["task_postprocess_end", "task_cancel"]);
  const STATUS_TEXT = {
    task_queue: "Queued",
    task_accept: "Accepted by a worker",
    task_preprocess_start: "Preparing",
    task_preprocess_end: "Prepared",
    task_assign: "Assigned",
    task_start: "Running",
    task_output: "Sampling",
    task_output_full: "Sampling",
    task_end: "Sampling done",
    task_postprocess_start: "Saving the outputs",
    task_postprocess_end: "Done",
    task_error: "Error",
    task_error_full: "Error",
    task_cancel: "Cancelled",
  };
  const SEED_MAX = 2 ** 32 - 1;

  const $ = (id) => document.getElementById(id);
  const state = {
    tool: null, // the Tool/Detail record shown
    items: [], // its inputs (the parameter items)
    task: null, // {id, token, status, tool}
    socket: null,
    followSerial: 0,
    searchTimer: 0,
  };

  // ------------------------------------------------------------------------------------------
  // Settings: the project's key (and secret), kept in this browser only.

  function loadSettings() {
    try {
      const s = JSON.parse(localStorage.getItem(STORE_KEY) || "{}");
      return s && typeof s === "object" ? s : {};
    } catch (_e) {
      return {};
    }
  }

  function saveSettings(s) {
    localStorage.setItem(STORE_KEY, JSON.stringify(s));
  }

  function fillSettingsForm() {
    const s = loadSettings();
    $("apikey").value = s.apikey || "";
    $("apisecret").value = s.apisecret || "";
    $("skipchecks").checked = Boolean(s.skipchecks);
  }

  function showSettings(open) {
    $("settings").hidden = !open;
    $("settings-toggle").setAttribute("aria-expanded", String(open));
    if (open) $("apikey").focus();
  }

  // ------------------------------------------------------------------------------------------
  // Signing (sign.js): x-signature = hex(HMAC-SHA256(key = API key, message = secret + nonce)).

  const { hmacHex, hmacHexScript } = window.toonforgeSign;

  // Nonces: unix time in milliseconds (what a server with a nonce time limit accepts), never
  // the same twice from this page.
  let lastNonce = 0;
  function nextNonce() {
    lastNonce = Math.max(Date.now(), lastNonce + 1);
    return String(lastNonce);
  }

  class NeedsKey extends Error {}

  async function authHeaders() {
    const s = loadSettings();
    if (!s.apikey) throw new NeedsKey("Enter your project's API key in Settings first.");
    const headers = { "x-api-key": s.apikey };
    if (s.apisecret) {
      const nonce = nextNonce();
      headers["x-nonce"] = nonce;
      headers["x-signature"] = await hmacHex(s.apikey, s.apisecret + nonce);
    }
    return headers;
  }

  // ------------------------------------------------------------------------------------------
  // The API: POST JSON to this origin, answers in the envelope {result, errors, ...}.

  async function api(path, body, { signed = true } = {}) {
    const headers = { "Content-Type": "application/json" };
    if (signed) Object.assign(headers, await authHeaders());
    let response;
    try {
      response = await fetch(path, {
        method: "POST",
        headers,
        body: JSON.stringify(body || {}),
        credentials: "same-origin",
      });
    } catch (_e) {
      return failure("The server cannot be reached.");
    }
    try {
      return await response.json();
    } catch (_e) {
      return failure(`The server answered ${response.status} without a JSON body.`);
    }
  }

  async function upload(file) {
    const form = new FormData();
    form.append("file", file, file.name);
    const response = await fetch("/v1/File/Upload", {
      method: "POST",
      headers: await authHeaders(),
      body: form,
      credentials: "same-origin",
    });
    try {
      return await response.json();
    } catch (_e) {
      return failure(`The upload was answered ${response.status}.`);
    }
  }

  function failure(message) {
    return { result: false, errors: [{ code: 0, message }] };
  }

  function errorText(data) {
    const errors = (data && data.errors) || [];
    return errors.map((e) => e.message).filter(Boolean).join(" ") || "The request failed.";
  }

  // ------------------------------------------------------------------------------------------
  // Small DOM helpers

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "text") node.textContent = value;
      else if (name === "className") node.className = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  function show(node, text) {
    node.textContent = text || "";
    node.hidden = !text;
  }

  function isVideoUrl(url) {
    return /\.(mp4|webm|mov)(\?|#|$)/i.test(url || "");
  }

  function cover(tool) {
    const initials = (tool.slugproject || tool.title || "?").slice(0, 2);
    const placeholder = () => el("div", { className: "cover placeholder", "aria-hidden": "true", text: initials });
    if (!tool.cover) return placeholder();
    const media = isVideoUrl(tool.cover)
      ? el("video", { className: "cover", src: tool.cover, muted: true, loop: true, playsinline: true, preload: "metadata", "aria-hidden": "true" })
      : el("img", { className: "cover", src: tool.cover, alt: "", loading: "lazy" });
    media.addEventListener("error", () => media.replaceWith(placeholder()), { once: true });
    return media;
  }

  // ------------------------------------------------------------------------------------------
  // The catalog

  async function loadTools() {
    const search = $("tool-search").value.trim();
    $("tools-state").textContent = "Loading…";
    const data = await api("/v1/Tool/List", { limit: 1000, summary: true, search }, { signed: false });
    if (!data.result) {
      $("tools-state").textContent = errorText(data);
      return;
    }
    const list = $("tool-list");
    list.replaceChildren();
    for (const tool of data.tool) {
      const chips = el("ul", { className: "chips", "aria-label": "Categories" });
      for (const c of tool.categories || []) chips.append(el("li", { text: c }));
      const button = el(
        "button",
        { type: "button", className: "tool-card", "data-owner": tool.slugowner, "data-slug": tool.slugproject, onclick: () => selectTool(tool.slugowner, tool.slugproject) },
        cover(tool),
        el("span", { className: "tool-text" },
          el("strong", { className: "tool-name", text: tool.title }),
          el("span", { className: "tool-description", text: tool.description }),
          chips),
      );
      list.append(el("li", {}, button));
    }
    $("tools-state").textContent = data.tool.length ? "" : "No tool matches.";
    if (data.tool.length && data.tool[0].offlinemode) showOffline(data.tool[0].offlinenote);
  }

  function showOffline(note) {
    if (!note && !$("offline-banner").hidden) return; // the tools' own note is already shown
    show($("offline-banner"), note ||
      "OFFLINE MODE (--tiny): this server runs tiny stand-in weights; outputs show the pipeline works, not what the real model draws.");
  }

  async function selectTool(owner, slug, values) {
    const data = await api("/v1/Tool/Detail", { slugowner: owner, slugproject: slug }, { signed: false });
    if (!data.result) {
      show($("run-error"), errorText(data));
      return;
    }
    const tool = data.tool[0];
    state.tool = tool;
    state.items = (tool.parameters || []).flatMap((g) => g.items || []);
    document.querySelectorAll(".tool-card").forEach((b) =>
      b.setAttribute("aria-pressed", String(b.dataset.owner === owner && b.dataset.slug === slug)));
    $("tool-empty").hidden = true;
    $("tool-view").hidden = false;
    $("tool-title").textContent = tool.title;
    $("tool-description").textContent = tool.description;
    const chips = $("tool-categories");
    chips.replaceChildren(...(tool.categories || []).map((c) => el("li", { text: c })));
    show($("tool-engine-note"), tool.engineready ? "" : (tool.enginenote || "This tool cannot run on this server."));
    $("run-button").disabled = !tool.engineready;
    if (tool.offlinemode) showOffline(tool.offlinenote);
    renderInspire(tool.inspire || []);
    renderFields(state.items);
    await addPrivateModels();
    if (values) fillForm(values);
    show($("run-error"), "");
  }

  // The project's own checkpoints are the options of `selectedModelPrivate`.
  async function addPrivateModels() {
    const select = $(fieldId("selectedModelPrivate"));
    if (!select || select.tagName !== "SELECT" || !loadSettings().apikey) return;
    const data = await api("/v1/PrivateModel/List", {}).catch(() => failure(""));
    if (!data.result || select !== $(fieldId("selectedModelPrivate"))) return;
    const present = new Set([...select.options].map((o) => o.value));
    for (const model of data.models || []) {
      if (!present.has(String(model.id))) {
        select.append(el("option", { value: String(model.id), text: `${model.name} (private)` }));
      }
    }
  }

  function renderInspire(examples) {
    const box = $("inspire-buttons");
    box.replaceChildren();
    examples.forEach((example, i) => {
      const text = String(example.prompt || Object.values(example)[0] || "");
      box.append(el("button", {
        type: "button",
        className: "inspire-button",
        title: text,
        text: `Example ${i + 1}: ${text.length > 48 ? text.slice(0, 47) + "…" : text}`,
        onclick: () => fillForm(example),
      }));
    });
    $("tool-inspire").hidden = examples.length === 0;
  }

  // ------------------------------------------------------------------------------------------
  // The form: one field per input of Tool/Detail

  const fieldId = (name) => `in-${name}`;

  function renderFields(items) {
    const box = $("run-fields");
    box.replaceChildren();
    for (const item of items) box.append(fieldFor(item));
  }

  function fieldFor(item) {
    const id = fieldId(item.id);
    const wrap = el("div", { className: `field type-${item.type}`, "data-name": item.id });
    const label = el("label", { for: id, text: item.id });
    const errorId = `err-${item.id}`;
    const noteId = `note-${item.id}`;
    const describedBy = `${noteId} ${errorId}`;
    let control;
    const def = item.default === undefined || item.default === null ? "" : item.default;
    switch (item.type) {
      case "textarea":
        control = el("textarea", { id, rows: 3, "aria-describedby": describedBy });
        control.value = String(def);
        break;
      case "number":
      case "float":
        control = el("input", {
          id, type: "number", min: item.min, max: item.max,
          step: item.step || (item.integer ? 1 : "any"), "aria-describedby": describedBy,
        });
        control.value = String(def);
        break;
      case "range":
        if (item.min !== undefined && item.max !== undefined) {
          const slider = el("input", {
            id, type: "range", min: item.min, max: item.max,
            step: item.step || (item.integer ? 1 : "any"), "aria-describedby": describedBy,
          });
          slider.value = String(def);
          const shown = el("output", { for: id, className: "range-value", text: slider.value });
          slider.addEventListener("input", () => { shown.textContent = slider.value; });
          wrap.append(label, el("div", { className: "range-line" }, slider, shown));
          control = null;
        } else {
          control = el("input", { id, type: "number", step: "any", "aria-describedby": describedBy });
          control.value = String(def);
        }
        break;
      case "select": {
        control = el("select", { id, "aria-describedby": describedBy });
        const options = item.options || [];
        const values = options.map((o) => String(o.value));
        if (!values.includes(String(def))) {
          control.append(el("option", { value: String(def), text: def === "" ? "(none)" : `${def} (default)` }));
        }
        const seen = new Set();
        for (const o of options) {
          if (seen.has(String(o.value))) continue; // a page may list a value twice
          seen.add(String(o.value));
          control.append(el("option", { value: String(o.value), text: o.label || String(o.value), title: o.description || undefined }));
        }
        control.value = String(def);
        break;
      }
      case "checkbox":
        control = el("input", { id, type: "checkbox", "aria-describedby": describedBy });
        control.checked = ["true", "1", "yes", "on"].includes(String(def).toLowerCase());
        wrap.classList.add("inline");
        wrap.append(control, label);
        control = null;
        break;
      case "file":
      case "fileinput": {
        const file = el("input", { id, type: "file", "aria-describedby": describedBy });
        const urlId = `${id}-url`;
        const url = el("input", { id: urlId, type: "text", placeholder: "or an http(s) URL / uploaded file id", "aria-describedby": describedBy });
        url.value = String(def);
        wrap.append(label, file, el("label", { for: urlId, className: "sub-label", text: `${item.id} URL` }), url);
        control = null;
        break;
      }
      default: // text (a seed is text too)
        control = el("input", { id, type: "text", "aria-describedby": describedBy, inputmode: item.seed ? "numeric" : undefined });
        control.value = String(def);
    }
    if (control) wrap.append(label, control);
    if (item.required) {
      const main = $(id) || wrap.querySelector(`#${CSS.escape(id)}`);
      if (main) main.setAttribute("aria-required", "true");
    }
    if (item.seed) {
      wrap.append(el("button", {
        type: "button", className: "small", text: "Random seed",
        onclick: () => { $(id).value = ""; },
      }));
    }
    const hint = [item.note, item.label && item.label !== item.id ? `(${item.label})` : ""].filter(Boolean).join(" ");
    const note = el("small", { id: noteId, className: "note", text: hint });
    if (item.required) note.prepend(el("strong", { className: "required", text: "Required. " }));
    wrap.append(note);
    wrap.append(el("p", { id: errorId, className: "field-error", role: "alert", hidden: true }));
    return wrap;
  }

  function setField(item, value) {
    const node = $(fieldId(item.id));
    if (!node) return;
    if (item.type === "checkbox") {
      node.checked = value === true || ["true", "1", "yes", "on"].includes(String(value).toLowerCase());
    } else if (item.type === "file" || item.type === "fileinput") {
      $(`${fieldId(item.id)}-url`).value = value === null || value === undefined ? "" : String(value);
    } else {
      const text = value === null || value === undefined ? "" : String(value);
      if (node.tagName === "SELECT" && ![...node.options].some((o) => o.value === text)) {
        node.append(el("option", { value: text, text }));
      }
      node.value = text;
      node.dispatchEvent(new Event("input"));
    }
  }

  function fillForm(values) {
    for (const item of state.items) {
      if (Object.prototype.hasOwnProperty.call(values, item.id)) setField(item, values[item.id]);
    }
    clearErrors();
  }

  function resetForm() {
    for (const item of state.items) setField(item, item.default);
    clearErrors();
  }

  function clearErrors() {
    document.querySelectorAll(".field-error").forEach((p) => show(p, ""));
    document.querySelectorAll("[aria-invalid]").forEach((n) => n.removeAttribute("aria-invalid"));
    show($("run-error"), "");
  }

  function rawValue(item) {
    const node = $(fieldId(item.id));
    if (item.type === "checkbox") return node.checked ? "true" : "false";
    if (item.type === "file" || item.type === "fileinput") return $(`${fieldId(item.id)}-url`).value.trim();
    return node.value;
  }

  // The rules Run enforces (catalog/validation.py), checked before sending.
  function checkValue(item, value) {
    const name = item.id;
    const text = String(value).trim();
    if (item.seed) {
      if (text === "") return null;
      if (!/^[0-9]+$/.test(text)) return `Request parameter [${name}] must be an integer (or empty for random)`;
      if (Number(text) > SEED_MAX) return `Request parameter [${name}] must be between 0 and ${SEED_MAX}`;
      return null;
    }
    if (item.type === "number" || item.type === "float" || item.type === "range") {
      if (text === "") return item.required ? `Request parameter [${name}] required` : null;
      const n = Number(text);
      if (!Number.isFinite(n)) return `Request parameter [${name}] must be integer or float`;
      if (item.integer && !Number.isInteger(n)) return `Request parameter [${name}] must be an integer`;
      const lo = item.min, hi = item.max;
      if ((lo !== undefined && n < lo) || (hi !== undefined && n > hi)) {
        if (lo !== undefined && hi !== undefined) return `Request parameter [${name}] must be between ${lo} and ${hi}`;
        return lo !== undefined ? `Request parameter [${name}] must be at least ${lo}` : `Request parameter [${name}] must be at most ${hi}`;
      }
      if (item.multiple_of && n % item.multiple_of !== 0) return `Request parameter [${name}] must be a multiple of ${item.multiple_of}`;
      return null;
    }
    if (item.type === "file" || item.type === "fileinput") {
      const chosen = $(fieldId(name)).files.length > 0;
      if (item.required && !chosen && text === "") return `Request parameter [${name}] required`;
      return null;
    }
    if (item.type === "select") return null;
    if (item.max_length !== undefined && String(value).length > item.max_length) {
      return `Request parameter [${name}] must be at most ${item.max_length} characters`;
    }
    if (item.required && text === "") return `Request parameter [${name}] required`;
    return null;
  }

  function fieldError(name, message) {
    const p = $(`err-${name}`);
    if (!p) return false;
    const previous = p.hidden ? "" : p.textContent + " ";
    show(p, previous + message);
    const node = $(fieldId(name)) || $(`${fieldId(name)}-url`);
    if (node) node.setAttribute("aria-invalid", "true");
    return true;
  }

  // An API error names its parameter as "Request parameter [name] …"; a file input may be
  // named by its URL variant (`nameUrl`).
  function showApiErrors(data) {
    const general = [];
    let first = null;
    for (const e of (data && data.errors) || []) {
      const match = /\[([A-Za-z0-9_]+)\]/.exec(e.message || "");
      let name = match ? match[1] : null;
      if (name && !$(`err-${name}`) && name.endsWith("Url")) name = name.slice(0, -3);
      if (name && fieldError(name, e.message)) first = first || name;
      else general.push(e.message);
    }
    show($("run-error"), general.join(" "));
    if (first) ($(fieldId(first)) || $(`${fieldId(first)}-url`)).focus();
  }

  async function run(event) {
    event.preventDefault();
    clearErrors();
    const tool = state.tool;
    if (!tool) return;
    const skipChecks = Boolean(loadSettings().skipchecks);
    const body = {};
    let invalid = false;
    for (const item of state.items) {
      const value = rawValue(item);
      const problem = skipChecks ? null : checkValue(item, value);
      if (problem) {
        fieldError(item.id, problem);
        if (!invalid) ($(fieldId(item.id)) || $(`${fieldId(item.id)}-url`)).focus();
        invalid = true;
      }
      body[item.id] = value;
    }
    if (invalid) return;
    const button = $("run-button");
    button.disabled = true;
    try {
      for (const item of state.items) {
        if (item.type !== "file" && item.type !== "fileinput") continue;
        const chosen = $(fieldId(item.id)).files[0];
        if (!chosen) continue;
        const answer = await upload(chosen);
        if (!answer.result) {
          fieldError(item.id, errorText(answer));
          return;
        }
        body[item.id] = answer.list[0].id;
      }
      const path = `/v1/Run/${encodeURIComponent(tool.slugowner)}/${encodeURIComponent(tool.slugproject)}`;
      const data = await api(path, body);
      if (!data.result) {
        showApiErrors(data);
        return;
      }
      startTask({ id: data.taskid, token: data.socketaccesstoken, owner: tool.slugowner, slug: tool.slugproject });
    } catch (e) {
      if (e instanceof NeedsKey) {
        show($("run-error"), e.message);
        showSettings(true);
      } else {
        show($("run-error"), String(e.message || e));
      }
    } finally {
      button.disabled = !tool.engineready;
    }
  }

  // ------------------------------------------------------------------------------------------
  // A task: status, queue position, progress, preview, outputs, Kill and Cancel

  function resetTaskView(task) {
    $("task-view").hidden = false;
    $("task-title").textContent = `Task ${task.id}` + (task.owner ? ` · ${task.owner}/${task.slug}` : "");
    $("task-status").textContent = "Waiting for news…";
    $("task-status").dataset.status = "";
    $("task-queue").textContent = "";
    $("task-progress").value = 0;
    $("task-progress").removeAttribute("data-done");
    $("task-steps").textContent = "";
    $("task-preview").hidden = true;
    $("task-preview").removeAttribute("src");
    $("task-outputs").replaceChildren();
    $("task-json").textContent = "";
    $("load-inputs-button").hidden = !task.parameters;
    show($("task-error"), "");
    setTaskButtons(false);
  }

  function startTask(task) {
    state.task = task;
    resetTaskView(task);
    follow(task);
    loadRecent();
  }

  function setTaskButtons(ended) {
    $("kill-button").disabled = ended;
    $("cancel-button").disabled = ended;
  }

  function setStatus(status) {
    const node = $("task-status");
    node.textContent = STATUS_TEXT[status] || status;
    node.dataset.status = status;
    if (state.task) state.task.status = status;
    if (status !== "task_queue") $("task-queue").textContent = "";
  }

  function showQueue(source) {
    if (!source || source.queueposition === undefined || source.queueposition === null || source.queueposition === "") return;
    let text = `position ${source.queueposition} in queue`;
    const start = Number(source.estimatedstarttime || 0);
    if (start > 0) {
      const seconds = Math.max(0, Math.round(start - Date.now() / 1000));
      text += `, starts in ~${seconds} s`;
    }
    $("task-queue").textContent = text;
  }

  function showProgress(message) {
    if (!message || typeof message !== "object") return;
    const pct = Number(message.percentage);
    if (Number.isFinite(pct)) $("task-progress").value = Math.max(0, Math.min(100, pct));
    if (message.stepCurrent !== undefined && message.stepTotal !== undefined) {
      $("task-steps").textContent = `step ${message.stepCurrent} / ${message.stepTotal}`;
    }
    if (typeof message.preview === "string" && message.preview.startsWith("data:image/")) {
      const img = $("task-preview");
      img.src = message.preview;
      img.hidden = false;
    }
  }

  function showOutputs(outputs) {
    const box = $("task-outputs");
    box.replaceChildren();
    $("task-preview").hidden = true;
    for (const out of outputs || []) {
      const url = out.url;
      const type = out.contenttype || "";
      let media;
      if (type.startsWith("video/") || isVideoUrl(out.name)) {
        media = el("video", { src: url, controls: true, loop: true, muted: true, autoplay: true, playsinline: true, preload: "auto", className: "output-media" });
      } else if (type.startsWith("image/")) {
        media = el("img", { src: url, alt: `Output ${out.name}`, className: "output-media" });
      }
      box.append(el("figure", { className: "output" },
        media,
        el("figcaption", {},
          el("a", { href: url, download: out.name, text: `Download ${out.name}` }),
          el("span", { className: "note", text: ` ${formatSize(out.size)}` }))));
    }
  }

  function formatSize(size) {
    const n = Number(size);
    if (!Number.isFinite(n)) return "";
    return n >= 1048576 ? `${(n / 1048576).toFixed(1)} MB` : `${Math.max(1, Math.round(n / 1024))} KB`;
  }

  function showRecord(record) {
    $("task-json").textContent = JSON.stringify(record, null, 2);
    showQueue(record);
    if (record.status === "task_postprocess_end") $("task-progress").value = 100;
    if (record.outputs && record.outputs.length) showOutputs(record.outputs);
    const failed = record.pexit && record.pexit !== "0";
    const error = failed ? (record.debugerror || `The task ended with exit code ${record.pexit}.`) : "";
    show($("task-error"), error);
  }

  async function refreshTask() {
    const task = state.task;
    if (!task) return null;
    try {
      const data = await api("/v1/Task/Detail", { taskid: task.id });
      if (data.result && data.tasklist && data.tasklist[0] && state.task === task) {
        const record = data.tasklist[0];
        task.parameters = record.parameters;
        $("load-inputs-button").hidden = !record.parameters;
        showRecord(record);
        return record;
      }
    } catch (_e) {
      // no key: the socket's news is all there is
    }
    return null;
  }

  function follow(task) {
    if (state.socket) state.socket.close();
    const serial = ++state.followSerial;
    let attempts = 0;
    const connect = () => {
      if (serial !== state.followSerial) return;
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      const socket = new WebSocket(`${scheme}://${location.host}/v1/socket`);
      state.socket = socket;
      let ended = false;
      socket.addEventListener("open", () => {
        attempts = 0;
        socket.send(JSON.stringify({ type: "task_info", tasktoken: task.token, previews: true }));
      });
      socket.addEventListener("message", (event) => {
        if (serial !== state.followSerial) return;
        let frame;
        try {
          frame = JSON.parse(event.data);
        } catch (_e) {
          return;
        }
        if (frame.result === false) {
          show($("task-error"), frame.message || "The server refused to follow this task.");
          return;
        }
        const status = frame.type;
        setStatus(status);
        showQueue(frame);
        showQueue(frame.message);
        if (status === "task_output") showProgress(frame.message);
        if (status === "task_end") $("task-progress").value = 100;
        if (status === "task_postprocess_end") {
          $("task-progress").value = 100;
          showOutputs(Array.isArray(frame.message) ? frame.message : []);
        }
        if (TERMINAL.has(status)) {
          ended = true;
          setTaskButtons(true);
          $("task-progress").dataset.done = "true";
          socket.close();
          refreshTask().then(loadRecent);
        }
      });
      socket.addEventListener("close", () => {
        if (ended || serial !== state.followSerial) return;
        refreshTask();
        // The server restarted or the network dropped: follow again where the task is now.
        if (++attempts <= 30) setTimeout(connect, Math.min(5000, 500 * attempts));
        else show($("task-error"), "Lost the connection to the server.");
      });
    };
    connect();
    refreshTask();
  }

  async function taskAction(path) {
    const task = state.task;
    if (!task) return;
    show($("task-error"), "");
    try {
      const data = await api(path, { taskid: task.id });
      if (!data.result) {
        show($("task-error"), errorText(data));
        return;
      }
      const record = data.tasklist && data.tasklist[0];
      if (record) {
        showRecord(record);
        setStatus(record.status);
        if (TERMINAL.has(record.status)) setTaskButtons(true);
      }
      loadRecent();
    } catch (e) {
      show($("task-error"), String(e.message || e));
    }
  }

  async function openTask(record) {
    const task = {
      id: record.id, token: record.socketaccesstoken, owner: record.modelslugowner,
      slug: record.modelslugproject, parameters: record.parameters,
    };
    state.task = task;
    resetTaskView(task);
    setStatus(record.status);
    showRecord(record);
    if (TERMINAL.has(record.status)) {
      setTaskButtons(true);
      $("task-progress").value = record.status === "task_postprocess_end" ? 100 : 0;
    } else {
      follow(task);
    }
  }

  async function loadInputsOfTask() {
    const task = state.task;
    if (!task || !task.parameters) return;
    await selectTool(task.owner, task.slug, task.parameters);
    $("run-form").scrollIntoView({ behavior: "smooth" });
  }

  // ------------------------------------------------------------------------------------------
  // The project's recent tasks

  async function loadRecent() {
    const stateNode = $("recent-state");
    if (!loadSettings().apikey) {
      stateNode.textContent = "Enter your project's key in Settings to see its tasks.";
      $("recent-list").replaceChildren();
      return;
    }
    const data = await api("/v1/Task/List", { limit: 20 }).catch((e) => failure(String(e.message || e)));
    if (!data.result) {
      stateNode.textContent = errorText(data);
      return;
    }
    stateNode.textContent = data.tasklist.length ? "" : "No task yet.";
    const list = $("recent-list");
    list.replaceChildren();
    for (const record of data.tasklist) {
      const when = Number(record.createtime) ? new Date(Number(record.createtime) * 1000).toLocaleTimeString() : "";
      list.append(el("li", {},
        el("button", { type: "button", className: "recent-item", "data-taskid": record.id, onclick: () => openTask(record) },
          el("strong", { text: `#${record.id}` }),
          el("span", { text: ` ${record.modelslugowner}/${record.modelslugproject}` }),
          el("span", { className: `badge ${record.status}`, text: STATUS_TEXT[record.status] || record.status }),
          el("span", { className: "note", text: when }))));
    }
  }

  // ------------------------------------------------------------------------------------------

  function init() {
    $("origin").textContent = location.origin;
    fillSettingsForm();
    $("settings-toggle").addEventListener("click", () => showSettings($("settings").hidden));
    $("settings-form").addEventListener("submit", (event) => {
      event.preventDefault();
      saveSettings({
        apikey: $("apikey").value.trim(),
        apisecret: $("apisecret").value.trim(),
        skipchecks: $("skipchecks").checked,
      });
      $("settings-state").textContent = "Saved.";
      loadRecent();
    });
    $("skipchecks").addEventListener("change", () => {
      saveSettings({ ...loadSettings(), skipchecks: $("skipchecks").checked });
    });
    $("settings-forget").addEventListener("click", () => {
      localStorage.removeItem(STORE_KEY);
      fillSettingsForm();
      $("settings-state").textContent = "Forgotten.";
      loadRecent();
    });
    $("tool-search").addEventListener("input", () => {
      clearTimeout(state.searchTimer);
      state.searchTimer = setTimeout(loadTools, 200);
    });
    $("run-form").addEventListener("submit", run);
    $("reset-button").addEventListener("click", resetForm);
    $("kill-button").addEventListener("click", () => taskAction("/v1/Task/Kill"));
    $("cancel-button").addEventListener("click", () => taskAction("/v1/Task/Cancel"));
    $("load-inputs-button").addEventListener("click", loadInputsOfTask);
    $("recent-refresh").addEventListener("click", loadRecent);
    if (!loadSettings().apikey) showSettings(true);
    fetch("/healthz").then((r) => r.json()).then((h) => { if (h.offlinemode) showOffline(""); }).catch(() => {});
    loadTools();
    loadRecent();
  }

  window.toonforgePlayground = { nextNonce };
  init();
})();
