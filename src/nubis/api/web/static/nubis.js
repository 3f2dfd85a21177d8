// Nubis web console: calls to the API with the session's CSRF token, confirmation
// of destructive actions, the create-instance wizard and image uploads.
"use strict";

const Nubis = (() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(method, path, body) {
    const init = { method, credentials: "same-origin", headers: { "X-CSRF-Token": csrf() } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = text; }
    if (response.status === 401) { location.assign("/login?next=" + encodeURIComponent(location.pathname)); }
    if (!response.ok) {
      const message = (data && data.error && data.error.message) || response.statusText;
      throw new ApiError(response.status, message);
    }
    return data;
  }

  function flash(message, isError) {
    const box = document.getElementById("flash");
    box.textContent = message;
    box.className = isError ? "error" : "ok";
  }

  function changed() {
    document.body.dispatchEvent(new CustomEvent("nubis:changed"));
  }

  function confirmed(question) {
    const dialog = document.getElementById("confirm");
    document.getElementById("confirm-text").textContent = question;
    dialog.returnValue = "";
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.showModal();
      document.getElementById("confirm-ok").focus();
    });
  }

  // <button class="act" data-method data-path [data-confirm] [data-done]>
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button.act");
    if (!button) return;
    const { method, path, confirm, done } = button.dataset;
    if (confirm && !(await confirmed(confirm))) return;
    button.disabled = true;
    try {
      const body = button.dataset.body ? JSON.parse(button.dataset.body) : {};
      const result = await api(method, path, method === "DELETE" ? undefined : body);
      const task = result && result.task_id ? ` (task ${result.task_id.slice(0, 8)})` : "";
      flash(`${button.textContent.trim()}: accepted${task}.`, false);
      if (done) { location.assign(done); return; }
      changed();
    } catch (error) {
      flash(`${button.textContent.trim()}: ${error.message}`, true);
      button.disabled = false;
    }
  });

  // <form class="api-form" data-method data-path [data-reveal=field] [data-done=url] [data-flash=text]>:
  // its fields as a JSON body (empty ones left out, numbers as numbers)
  document.addEventListener("submit", async (event) => {
    const form = event.target.closest("form.api-form");
    if (!form) return;
    event.preventDefault();
    const box = form.querySelector(".form-error");
    box.hidden = true;
    for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    const invalid = [...form.elements].filter((el) => el.willValidate && !el.checkValidity());
    if (invalid.length) {
      for (const el of invalid) el.setAttribute("aria-invalid", "true");
      box.textContent = invalid.map((el) => `${el.labels[0].textContent}: ${el.validationMessage}`).join(" ");
      box.hidden = false;
      invalid[0].focus();
      return;
    }
    const body = {};
    for (const el of form.elements) {
      if (!el.name || el.value === "") continue;
      body[el.name] = el.type === "number" ? Number(el.value) : el.value;
    }
    try {
      const made = await api(form.dataset.method, form.dataset.path, body);
      const reveal = form.dataset.reveal && made && made[form.dataset.reveal];
      form.reset();
      if (reveal) {
        const out = form.querySelector(".reveal");
        out.textContent = `Created. ${form.dataset.reveal}: ${reveal} (shown only now: keep it)`;
        out.hidden = false;
      } else {
        flash(form.dataset.flash || "Created.", false);
      }
      if (form.dataset.done) { location.assign(form.dataset.done); return; }
      changed();
    } catch (error) {
      box.textContent = error.message;
      box.hidden = false;
    }
  });

  return { api, flash, changed, ApiError };
})();

// ---- create-instance wizard -------------------------------------------------------
(() => {
  const form = document.getElementById("wizard");
  if (!form) return;
  const fields = ["name", "image", "flavor", "network", "key_pair", "user_data"];
  // which field an API error message is about (its first mention wins)
  const words = { name: /\bname\b|named/i, image: /image/i, flavor: /flavor/i, network: /network|subnet|address/i, key_pair: /key pair/i, user_data: /user.?data/i };

  function showError(field, message) {
    const input = form.elements[field];
    const box = document.getElementById(input.getAttribute("aria-describedby").split(" ").pop());
    box.textContent = message || "";
    input.setAttribute("aria-invalid", message ? "true" : "false");
  }

  function validate(input) {
    const ok = input.checkValidity();
    showError(input.name, ok ? "" : input.dataset.message || input.validationMessage);
    return ok;
  }

  for (const field of fields) {
    const input = form.elements[field];
    input.addEventListener("blur", () => { if (input.value) validate(input); });
    input.addEventListener("input", () => { if (input.getAttribute("aria-invalid") === "true") validate(input); });
  }

  function fieldOf(message) {
    let best = null;
    let at = Infinity;
    for (const [field, pattern] of Object.entries(words)) {
      const m = message.match(pattern);
      if (m && m.index < at) { best = field; at = m.index; }
    }
    return best;
  }

  async function follow(taskId, instanceId) {
    const bar = document.getElementById("p-bar");
    for (;;) {
      const [task, inst] = await Promise.all([
        Nubis.api("GET", `/api/v1/tasks/${taskId}`),
        Nubis.api("GET", `/api/v1/instances/${instanceId}`),
      ]);
      bar.value = task.progress;
      document.getElementById("p-status").textContent = task.status;
      document.getElementById("p-step").textContent = task.step ? ` (${task.step})` : "";
      document.getElementById("p-instance").textContent = inst.status;
      if (task.status === "failed" || inst.status === "error") {
        const box = document.getElementById("p-error");
        box.textContent = task.error || inst.error || "creation failed";
        box.hidden = false;
        return;
      }
      if (task.status === "succeeded" && inst.status === "running") return;
      await new Promise((r) => setTimeout(r, 1000));
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const top = document.getElementById("wizard-error");
    top.hidden = true;
    const invalid = fields.map((f) => form.elements[f]).filter((input) => !validate(input));
    if (invalid.length) { invalid[0].focus(); return; }
    const v = (f) => form.elements[f].value.trim();
    const body = { name: v("name"), image: v("image"), flavor: v("flavor") };
    if (v("network") === "none") body.networks = [];
    else if (v("network")) body.networks = [{ network: v("network") }];
    if (v("key_pair")) body.key_pair = v("key_pair");
    if (form.elements.user_data.value) body.user_data = form.elements.user_data.value;
    const button = document.getElementById("create");
    button.disabled = true;
    let created;
    try {
      created = await Nubis.api("POST", "/api/v1/instances", body);
    } catch (error) {
      button.disabled = false;
      const field = fieldOf(error.message);
      if (field) { showError(field, error.message); form.elements[field].focus(); }
      else { top.textContent = error.message; top.hidden = false; top.focus(); }
      return;
    }
    form.hidden = true;
    const progress = document.getElementById("progress");
    document.getElementById("p-name").textContent = created.name;
    document.getElementById("p-link").href = `/instances/${created.id}`;
    progress.hidden = false;
    try { await follow(created.task_id, created.id); }
    catch (error) { Nubis.flash(error.message, true); }
  });
})();

// ---- image upload with progress -----------------------------------------------------
(() => {
  const form = document.getElementById("upload");
  if (!form) return;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!form.reportValidity()) return;
    const file = form.elements.file.files[0];
    const bar = document.getElementById("u-progress");
    const status = document.getElementById("u-status");
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/api/v1/images?name=${encodeURIComponent(form.elements.name.value)}`);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.setRequestHeader("X-CSRF-Token", document.querySelector('meta[name="csrf-token"]').content);
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) { bar.value = Math.round((100 * e.loaded) / e.total); }
    });
    xhr.addEventListener("load", () => {
      let message = "uploaded";
      if (xhr.status >= 400) {
        try { message = JSON.parse(xhr.responseText).error.message; } catch { message = xhr.statusText; }
      }
      status.textContent = xhr.status < 400 ? `${file.name}: uploaded.` : `Upload failed: ${message}`;
      status.className = xhr.status < 400 ? "ok" : "error";
      if (xhr.status < 400) { form.reset(); Nubis.changed(); }
    });
    xhr.addEventListener("error", () => { status.textContent = "Upload failed: connection lost"; status.className = "error"; });
    bar.hidden = false;
    bar.value = 0;
    status.textContent = `Uploading ${file.name}…`;
    xhr.send(file);
  });
})();
