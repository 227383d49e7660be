// The console's shell: login, the router (#/overview, #/queues, #/queues/{vhost}/{name},
// #/exchanges, #/connections, #/consumers), and the poll that refreshes the overview's
// history and the page shown.

import { ApiError, forgetLogin, get, request, saveLogin, savedLogin } from "./api.js";
import { clearHistory, overviewView, recordOverview } from "./overview.js";
import { queueView } from "./queue.js";
import { listView } from "./tables.js";

const $ = (selector) => document.querySelector(selector);
const POLL_S_DEFAULT = 5;

let view = null; // {refresh, onResize?} of the page shown
let pollS = POLL_S_DEFAULT;
let pollTimer = null;

// ---------------------------------------------------------------- errors

function loginProblem(error) {
  if (error.reason === "Not management user") {
    return "This user may not use the console: it needs the management, monitoring or administrator tag.";
  }
  return error.status === 401 ? "Login failed: wrong username or password." : `Login failed: ${error.reason}`;
}

async function showError(error) {
  // A 401 is also the API's answer to a refused vhost: only a refused login logs out.
  if (error instanceof ApiError && error.status === 401) {
    try {
      await get("/api/whoami");
    } catch (refused) {
      if (refused instanceof ApiError && refused.status === 401) return logOut(loginProblem(refused));
    }
  }
  const banner = $("#error");
  banner.textContent = error instanceof ApiError ? `${error.status || "Error"}: ${error.reason}` : `Error: ${error}`;
  banner.hidden = false;
}

function clearError() {
  $("#error").hidden = true;
}

window.addEventListener("unhandledrejection", (event) => {
  event.preventDefault();
  showError(event.reason);
});

// ----------------------------------------------------------------- login

async function logIn(event) {
  event.preventDefault();
  const form = event.target;
  const username = form.username.value;
  const password = form.password.value;
  const message = $("#login-error");
  message.hidden = true;
  try {
    await request("GET", "/api/whoami", undefined, { username, password });
  } catch (error) {
    message.textContent = error instanceof ApiError ? loginProblem(error) : `Login failed: ${error}`;
    message.hidden = false;
    return;
  }
  saveLogin(username, password);
  form.password.value = "";
  start();
}

function logOut(reason) {
  forgetLogin();
  clearTimeout(pollTimer);
  clearHistory();
  view = null;
  $("#view").replaceChildren();
  $("#app").hidden = true;
  $("#login").hidden = false;
  const message = $("#login-error");
  message.textContent = reason || "";
  message.hidden = !reason;
}

// ---------------------------------------------------------------- router

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const container = $("#view");
  container.replaceChildren();
  container.removeAttribute("data-samples");
  clearError();
  const [page, vhost, name] = parts;
  if (page === "queues" && parts.length === 3) view = queueView(container, vhost, name);
  else if (["queues", "exchanges", "connections", "consumers"].includes(page)) view = listView(container, page);
  else view = overviewView(container);
  for (const link of document.querySelectorAll(".top nav a")) {
    link.classList.toggle("current", link.getAttribute("href") === `#/${page || "overview"}`);
  }
  refreshView();
}

async function refreshView() {
  const shown = view;
  try {
    await shown?.refresh();
    if (shown === view) clearError();
  } catch (error) {
    if (shown === view) showError(error);
  }
}

// ------------------------------------------------------------------ poll

async function poll() {
  try {
    const overview = await get("/api/overview");
    recordOverview(overview);
    // Poll as often as the broker samples its rates, within 0.5 to 5 seconds.
    pollS = Math.min(POLL_S_DEFAULT, Math.max(0.5, overview.sample_interval_s || POLL_S_DEFAULT));
    await refreshView();
  } catch (error) {
    showError(error);
  }
  if (savedLogin()) pollTimer = setTimeout(poll, pollS * 1000);
}

async function start() {
  const login = savedLogin();
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#who").textContent = login.username;
  route();
  clearTimeout(pollTimer);
  poll();
}

window.addEventListener("hashchange", () => savedLogin() && route());
window.addEventListener("resize", () => view?.onResize?.());
$("#login-form").addEventListener("submit", logIn);
$("#logout").addEventListener("click", () => logOut());

if (savedLogin()) start();
else logOut();
