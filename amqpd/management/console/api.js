// The management API over fetch: HTTP basic auth from the login kept in sessionStorage,
// JSON in and out, and the API's {"error", "reason"} answers raised as ApiError.

const STORAGE_KEY = "amqpd.console.login";

export class ApiError extends Error {
  constructor(status, reason) {
    super(reason);
    this.status = status; // 0: no answer at all
    this.reason = reason; // the API's own text
  }
}

function base64(text) {
  // btoa takes Latin-1 only: encode the UTF-8 bytes.
  return btoa(String.fromCharCode(...new TextEncoder().encode(text)));
}

export function savedLogin() {
  const saved = sessionStorage.getItem(STORAGE_KEY);
  return saved ? JSON.parse(saved) : null;
}

export function saveLogin(username, password) {
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify({ username, password }));
}

export function forgetLogin() {
  sessionStorage.removeItem(STORAGE_KEY);
}

// One path segment: the vhost "/" is "%2F", as the API expects.
export const segment = encodeURIComponent;

export async function request(method, path, body, login = savedLogin()) {
  const headers = { Accept: "application/json" };
  if (login) headers.Authorization = "Basic " + base64(`${login.username}:${login.password}`);
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      // No cookies or cached logins: and no browser login prompt on a 401.
      credentials: "omit",
      cache: "no-store",
    });
  } catch (error) {
    throw new ApiError(0, `the broker cannot be reached (${error.message})`);
  }
  const text = await response.text();
  let value = null;
  try {
    value = text ? JSON.parse(text) : null;
  } catch {
    value = null;
  }
  if (!response.ok) {
    const reason = (value && (value.reason || value.error)) || text || response.statusText;
    throw new ApiError(response.status, reason);
  }
  return value;
}

export const get = (path) => request("GET", path);
export const post = (path, body) => request("POST", path, body);
export const remove = (path) => request("DELETE", path);
