// The HTTP API (PROTOCOL.md §14 and the device directory): fetch wrappers
// that turn every failure into an ApiError with the server's code, so the
// UI can put a clear message next to the right field.

/** The session token of this tab, kept in sessionStorage so a reload keeps
 * it; the HttpOnly cookie covers a new tab. */
const TOKEN_KEY = "sotto.token";
export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  set token(t) {
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    else sessionStorage.removeItem(TOKEN_KEY);
  },
};

export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message || code);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/** Bounded wait for any request: a hung server must not hang the UI. */
const TIMEOUT_MS = 15000;

export async function request(method, path, body) {
  const headers = { Accept: "application/json" };
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
  } catch {
    throw new ApiError(0, "network", "The server cannot be reached.");
  }
  if (res.status === 204) return null;
  let data = null;
  try {
    data = await res.json();
  } catch {
    data = null;
  }
  if (!res.ok) {
    const err = (data && data.error) || {};
    const retry = Number.parseInt(res.headers.get("Retry-After") || "", 10);
    throw new ApiError(
      res.status,
      typeof err.code === "string" ? err.code : `http_${res.status}`,
      typeof err.message === "string" ? err.message : res.statusText,
      Number.isFinite(retry) ? retry : undefined,
    );
  }
  return data;
}

export const api = {
  register: (name, password) => request("POST", "/api/register", { name, password }),
  login: (name, password) => request("POST", "/api/login", { name, password }),
  logout: () => request("POST", "/api/logout"),
  logoutAll: () => request("POST", "/api/logout-all"),
  me: () => request("GET", "/api/me"),
  users: () => request("GET", "/api/users?limit=1000"),
  /** Users whose name starts with `q` (PROTOCOL 14.4). */
  search: (q) => request("GET", `/api/users?limit=50&q=${encodeURIComponent(q)}`),
  user: (id) => request("GET", `/api/users/${encodeURIComponent(id)}`),
  conversations: () => request("GET", "/api/conversations?limit=200"),
  devices: () => request("GET", "/api/devices"),
  addDevice: (publicKey, name) => request("POST", "/api/devices", { public_key: publicKey, name }),
  removeDevice: (id) => request("DELETE", `/api/devices/${encodeURIComponent(id)}`),
};

/**
 * Where an error belongs on the login form and what to say:
 * {field: "name" | "password" | "form", text}.
 */
export function fieldMessage(err, action) {
  const wait = err.retryAfter ? ` Try again in ${err.retryAfter} s.` : " Try again in a moment.";
  switch (err.code) {
    case "name_taken":
      return { field: "name", text: "This name is taken. Choose another one." };
    case "invalid_credentials":
      return { field: "password", text: "Wrong name or password." };
    case "invalid":
      return action === "register"
        ? { field: "name", text: "Use 1–32 letters, digits, '-', '_' or '.', and a password." }
        : { field: "name", text: "Enter your name and password." };
    case "bad_request":
      return { field: "name", text: "Enter your name and password." };
    case "too_many_devices":
      return { field: "form", text: "Your account has as many devices as allowed. Remove one in Settings on another device, then log in again." };
    case "rate_limited":
      return { field: "form", text: `Too many attempts.${wait}` };
    case "busy":
      return { field: "form", text: `The server is busy.${wait}` };
    case "unavailable":
      return { field: "form", text: `The server cannot reach its database.${wait}` };
    case "network":
      return { field: "form", text: "The server cannot be reached. Check your connection." };
    default:
      return { field: "form", text: `Something went wrong (${err.code || err.message}).${wait}` };
  }
}
