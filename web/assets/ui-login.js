// The login / registration screen. Errors go next to the field they are
// about (name taken → name; wrong password → password; rate limits and a
// busy server → the whole form, with the wait the server asked for).

import { h, replace, text } from "./dom.js";
import { api, fieldMessage, session } from "./api.js";

export function showLogin(root, onLoggedIn, notice) {
  const nameErr = h("p", { id: "name-error", class: "field-error" });
  const passErr = h("p", { id: "password-error", class: "field-error" });
  const formErr = h("p", { id: "form-error", class: "form-error", role: "alert" });
  const name = h("input", {
    id: "name", name: "name", autocomplete: "username", required: true, maxlength: 32,
    autocapitalize: "none", spellcheck: "false", "aria-describedby": "name-error",
  });
  const password = h("input", {
    id: "password", name: "password", type: "password", autocomplete: "current-password",
    required: true, maxlength: 1024, "aria-describedby": "password-error",
  });
  const loginBtn = h("button", { type: "submit", class: "primary" }, "Log in");
  const registerBtn = h("button", { type: "button", class: "secondary" }, "Create account");

  function clearErrors() {
    for (const [el, input] of [[nameErr, name], [passErr, password]]) {
      text(el, "");
      input.removeAttribute("aria-invalid");
    }
    text(formErr, "");
  }

  function showError(err, action) {
    const { field, text: msg } = fieldMessage(err, action);
    if (field === "name") {
      text(nameErr, msg);
      name.setAttribute("aria-invalid", "true");
      name.focus();
    } else if (field === "password") {
      text(passErr, msg);
      password.setAttribute("aria-invalid", "true");
      password.focus();
    } else {
      text(formErr, msg);
    }
    if (err.retryAfter && (err.code === "rate_limited" || err.code === "busy")) {
      setBusy(true);
      setTimeout(() => setBusy(false), Math.min(err.retryAfter, 120) * 1000);
    }
  }

  function setBusy(busy) {
    loginBtn.disabled = busy;
    registerBtn.disabled = busy;
  }

  async function submit(action) {
    clearErrors();
    if (!name.value.trim()) {
      showError({ code: "bad_request" }, action);
      return;
    }
    if (!password.value) {
      text(passErr, "Enter your password.");
      password.setAttribute("aria-invalid", "true");
      password.focus();
      return;
    }
    setBusy(true);
    text(formErr, action === "register" ? "Creating your account…" : "Logging in…");
    try {
      if (action === "register") await api.register(name.value.trim(), password.value);
      const res = await api.login(name.value.trim(), password.value);
      session.token = res.token;
      text(formErr, "");
      await onLoggedIn(res.user);
    } catch (err) {
      text(formErr, "");
      setBusy(false);
      showError(err, action);
    }
  }

  const form = h(
    "form",
    { class: "login-form", novalidate: true, "aria-labelledby": "login-title", on: { submit: (e) => { e.preventDefault(); submit("login"); } } },
    h("h1", { id: "login-title" }, "sotto"),
    h("p", { class: "tagline" }, "Private messages, encrypted on your devices."),
    notice ? h("p", { class: "notice", role: "status" }, notice) : null,
    h("label", { for: "name" }, "Name"),
    name,
    nameErr,
    h("label", { for: "password" }, "Password"),
    password,
    passErr,
    formErr,
    h("div", { class: "actions" }, loginBtn, registerBtn),
  );
  registerBtn.addEventListener("click", () => submit("register"));
  replace(root, h("main", { class: "login", id: "main" }, form));
  document.title = "sotto — log in";
  name.focus();
}
