// The tessera console: plain ES module, no build step. Everything from the API is user data
// (labels, keys, messages) and reaches the page as text (textContent), never as markup.

const $ = (id) => document.getElementById(id);
const status = (text) => { $("status").textContent = text; };
const dataset = () => $("dataset").value.trim();
// Paths are relative: the page is at / locally and at /<stage>/ deployed.
const view = (key) => `view?key=${encodeURIComponent(key)}`;

// ---- Signing in (deployed: Cognito's managed login, authorization code with PKCE) ----------

let idToken = null;

function base64url(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes)))
    .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

async function signIn() {
  const config = await (await fetch("console/config.json")).json();
  if (!config.auth) return; // the local runtime: one user on loopback
  const { domain, client_id: clientId } = config.auth;
  const here = location.origin + location.pathname;
  const saved = JSON.parse(sessionStorage.getItem("tessera-token") || "null");
  if (saved && saved.expires > Date.now()) { idToken = saved.token; return; }
  const code = new URLSearchParams(location.search).get("code");
  if (code) {
    const body = new URLSearchParams({
      grant_type: "authorization_code", client_id: clientId, code, redirect_uri: here,
      code_verifier: sessionStorage.getItem("tessera-verifier") || "",
    });
    const response = await fetch(`${domain}/oauth2/token`, { method: "POST", body });
    if (!response.ok) throw new Error("sign-in failed: reload the page to try again");
    const tokens = await response.json();
    idToken = tokens.id_token;
    sessionStorage.setItem("tessera-token",
      JSON.stringify({ token: idToken, expires: Date.now() + (tokens.expires_in - 60) * 1000 }));
    history.replaceState(null, "", here + location.hash);
    return;
  }
  const verifier = base64url(crypto.getRandomValues(new Uint8Array(32)));
  sessionStorage.setItem("tessera-verifier", verifier);
  const challenge = base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  location.assign(`${domain}/oauth2/authorize?${new URLSearchParams({
    response_type: "code", client_id: clientId, redirect_uri: here, scope: "openid email",
    code_challenge: challenge, code_challenge_method: "S256",
  })}`);
  await new Promise(() => {}); // the browser is leaving
}

function authorization() {
  return idToken ? { authorization: idToken } : {};
}

// `signal` aborts a view's reads when the person moves on, so a slow answer for the view they
// left never paints over the one they are looking at.
// A throttled request (429, the API's stage limit) or a busy one (503) is sent again after
// 0.5, 1, 2 and 4 s, so a burst of corrections is slowed down, never dropped.
const RETRY_DELAYS = [500, 1000, 2000, 4000];

async function api(path, { method = "GET", body, signal } = {}) {
  let response;
  for (let attempt = 0; ; attempt += 1) {
    response = await fetch(path, {
      method,
      signal,
      headers: { ...authorization(), ...(body === undefined ? {} : { "content-type": "application/json" }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (![429, 503].includes(response.status) || attempt >= RETRY_DELAYS.length) break;
    status(`busy (${response.status}), trying again`);
    await new Promise((resolve) => setTimeout(resolve, RETRY_DELAYS[attempt]));
  }
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = answer.error || {};
    throw new Error(`${error.code || response.status}: ${error.message || response.statusText}`);
  }
  return answer;
}

// Pictures are user data behind the same sign-in: fetched with the token, shown as blobs.
async function showImage(img, key) {
  const response = await fetch(view(key), { headers: authorization() });
  if (!response.ok) { img.alt = `${key}: ${response.status}`; return; }
  const url = URL.createObjectURL(await response.blob());
  img.addEventListener("load", () => URL.revokeObjectURL(url), { once: true });
  img.src = url;
}

// Pictures in galleries (sheet overlays, a sheet's thousands of tiles) are fetched only once
// they scroll into view.
const lazyImages = new IntersectionObserver((entries) => {
  for (const entry of entries.filter((e) => e.isIntersecting)) {
    lazyImages.unobserve(entry.target);
    showImage(entry.target, entry.target.dataset.key);
  }
});

function lazyImage(img, key) {
  img.dataset.key = key;
  lazyImages.observe(img);
  return img;
}

function element(tag, text, attributes = {}) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

function tileItem(key, caption, corrected = false) {
  const item = element("li", null, corrected ? { class: "corrected" } : {});
  const img = lazyImage(element("img", null, { alt: key }), key);
  item.append(img, element("span", caption));
  return item;
}

// ---- Draw -------------------------------------------------------------------------------

const pad = $("pad");
const ink = pad.getContext("2d");
let drawing = false;
let pending = null;

function clearPad() {
  ink.fillStyle = "#fff";
  ink.fillRect(0, 0, pad.width, pad.height);
  $("prediction").textContent = "-";
  showSeen(null);
  $("top").replaceChildren();
  $("neighbours").replaceChildren();
}

function stroke(event) {
  const box = pad.getBoundingClientRect();
  const x = ((event.clientX - box.left) * pad.width) / box.width;
  const y = ((event.clientY - box.top) * pad.height) / box.height;
  ink.lineTo(x, y);
  ink.stroke();
  ink.beginPath();
  ink.moveTo(x, y);
}

pad.addEventListener("pointerdown", (event) => {
  drawing = true;
  pad.setPointerCapture(event.pointerId);
  ink.lineWidth = 18;
  ink.lineCap = "round";
  ink.strokeStyle = "#000";
  ink.beginPath();
  stroke(event);
});
pad.addEventListener("pointermove", (event) => { if (drawing) stroke(event); });
pad.addEventListener("pointerup", () => {
  drawing = false;
  clearTimeout(pending);
  pending = setTimeout(predictDrawing, 150);
});
$("clear").addEventListener("click", clearPad);

// The model's input as it saw it: 784 values in [0, 1], 1 = ink, drawn white on black like
// the stored tiles (MNIST's convention).
function showSeen(values) {
  const seen = $("seen").getContext("2d");
  const picture = seen.createImageData(28, 28);
  for (let i = 0; i < 784; i += 1) {
    const shade = Math.round(255 * (values ? values[i] : 0));
    picture.data.set([shade, shade, shade, 255], i * 4);
  }
  seen.putImageData(picture, 0, 0);
}

async function predictDrawing() {
  const image = pad.toDataURL("image/png").split(",", 2)[1];
  const model = dataset();
  try {
    const answer = await api("console/predict", {
      method: "POST", body: { image, model, top_k: 3, inputs: true },
    });
    $("prediction").textContent = answer.label;
    showSeen(answer.inputs[0]);
    $("top").replaceChildren(
      ...answer.top.map((t) => element("li", `${t.label} ${(t.probability * 100).toFixed(1)}%`)),
    );
    status(`model ${answer.model} ${answer.version}`);
  } catch (error) {
    status(error.message);
    return;
  }
  try {
    const similar = await api("console/similar", { method: "POST", body: { image, model, k: 6 } });
    $("neighbours").replaceChildren(
      ...similar.neighbours.map((n) => tileItem(n.source, `${n.label} (${n.score.toFixed(2)})`)),
    );
  } catch (error) {
    $("neighbours").replaceChildren(element("li", error.message));
  }
}

// ---- Sheets -----------------------------------------------------------------------------

let sheetsNext = null; // the cursor of the list's next page, null when the list is whole

async function showSheets(signal) {
  $("sheet-detail").hidden = true;
  $("sheet-list").replaceChildren();
  await moreSheets(null, signal);
}

async function moreSheets(after, signal) {
  const cursor = after ? `&after=${encodeURIComponent(after)}` : "";
  const answer = await api(`sheets?dataset=${encodeURIComponent(dataset())}${cursor}`, { signal });
  sheetsNext = answer.next;
  $("more-sheets").hidden = !sheetsNext;
  $("sheet-list").append(
    ...answer.sheets.map((sheet) => {
      const card = element("li", null, { class: sheet.status, tabindex: "0" });
      if (sheet.overlay) {
        const thumbnail = element("img", null, { alt: `overlay of ${sheet.source_key}`, class: "thumb" });
        card.append(lazyImage(thumbnail, sheet.overlay));
      }
      card.append(
        element("strong", sheet.source_key),
        element("div", sheet.reason ? `${sheet.status}: ${sheet.reason.code} - ${sheet.reason.message}`
          : `${sheet.status}, ${sheet.layout}, ${sheet.inked} of ${sheet.cells} cells inked`),
      );
      card.addEventListener("click", () => showSheet(sheet));
      return card;
    }),
  );
  const shown = $("sheet-list").children.length;
  status(`${shown} sheets in ${answer.dataset}${sheetsNext ? ", more to come" : ""}`);
}

$("more-sheets").addEventListener("click", async () => {
  const button = $("more-sheets");
  if (button.disabled || !sheetsNext) return;
  button.disabled = true; // one page at a time: a second click before the first answers adds nothing
  try {
    await moreSheets(sheetsNext, navigation.signal);
  } catch (error) {
    if (error.name !== "AbortError") status(error.message);
  } finally {
    button.disabled = false;
  }
});

async function showSheet(sheet) {
  $("sheet-detail").hidden = false;
  $("sheet-title").textContent = sheet.source_key;
  if (sheet.overlay) await showImage($("overlay"), sheet.overlay);
  $("sheet-tiles").replaceChildren();
  if (!sheet.sheet_id) return;
  const answer = await api(
    `sheets/${encodeURIComponent(sheet.sheet_id)}?dataset=${encodeURIComponent(dataset())}`,
  );
  $("sheet-tiles").replaceChildren(
    ...answer.tiles.map((tile) => {
      const fixed = tile.correction;
      const caption = fixed ? `${tile.label} -> ${fixed.action === "exclude" ? "excluded" : fixed.label}`
        : tile.label;
      return tileItem(tile.tile, caption, Boolean(fixed));
    }),
  );
}

// ---- Review -----------------------------------------------------------------------------

let queue = [];
let reviewed = { total: 0, corrected: 0 };

async function showReview(signal) {
  const answer = await api(`review?dataset=${encodeURIComponent(dataset())}&limit=100`, { signal });
  queue = answer.tiles;
  reviewed = { total: answer.total, corrected: answer.corrected };
  status(`ranked by ${answer.method} (${answer.version})`);
  nextTile();
}

function nextTile() {
  $("review-progress").textContent =
    `${reviewed.corrected} of ${reviewed.total} corrected; ${queue.length} left in this queue`;
  const tile = queue[0];
  $("review-card").hidden = !tile;
  if (!tile) return;
  showImage($("review-tile"), tile.tile);
  $("review-label").textContent = tile.label;
  $("review-suggested").textContent = tile.suggested;
  $("review-kind").textContent = tile.kind === "label_issues" ? "suspected label error" : "least confident";
  $("review-score").textContent = Number(tile.score).toFixed(3);
  $("review-source").textContent = tile.tile;
  $("review-input").value = "";
  $("review-input").focus();
}

let deciding = false; // one correction at a time: a key pressed twice is not two corrections

async function decide(change) {
  const tile = queue[0];
  if (!tile || deciding) return;
  deciding = true;
  try {
    await api("corrections", { method: "POST", body: { dataset: dataset(), tile: tile.tile, ...change } });
    reviewed.corrected += 1;
    status(`${tile.tile}: ${change.exclude ? "excluded" : `labelled ${change.label}`}`);
  } catch (error) {
    status(error.message);
    if (!error.message.startsWith("unknown_tile")) return; // a stale tile leaves the queue
  } finally {
    deciding = false;
  }
  queue.shift();
  nextTile();
}

$("review-accept").addEventListener("click", () => decide({ label: queue[0].suggested }));
$("review-exclude").addEventListener("click", () => decide({ exclude: true }));
$("review-skip").addEventListener("click", () => { queue.push(queue.shift()); nextTile(); });
$("review-input").addEventListener("keydown", (event) => {
  const typed = event.target.value.trim();
  if (event.key === "Enter") {
    event.preventDefault();
    decide({ label: typed || queue[0].suggested });
  } else if (!typed && (event.key === "x" || event.key === "n")) {
    event.preventDefault();
    if (event.key === "x") decide({ exclude: true });
    else $("review-skip").click();
  }
});

// ---- Models -----------------------------------------------------------------------------

async function showModels(signal) {
  const name = dataset();
  const answer = await api(`models/${encodeURIComponent(name)}`, { signal });
  $("champion").textContent = answer.champion ? answer.champion.version : "none";
  $("versions").tBodies[0].replaceChildren(
    ...answer.versions.slice().reverse().map((v) => {
      const row = element("tr", null, { "data-version": v.version });
      const accuracy = v.test_accuracy === null ? "-" : v.test_accuracy.toFixed(4);
      row.append(element("td", v.version), element("td", v.family), element("td", accuracy),
        element("td", v.parity_passed ? "passed" : "failed"));
      const actions = element("td");
      const report = element("button", "report", { type: "button" });
      report.addEventListener("click", () => showReport(v));
      actions.append(report);
      if (!v.champion && v.parity_passed) {
        const promote = element("button", "make champion", { type: "button", class: "promote" });
        promote.addEventListener("click", () => makeChampion(name, v.version));
        actions.append(promote);
      }
      row.append(actions);
      return row;
    }),
  );
  $("history").replaceChildren(
    ...answer.history.map((p) => element("li", `${p.promoted_at}: ${p.version}`)),
  );
}

function showReport(version) {
  $("report").hidden = false;
  $("report-title").textContent = `${version.version} (${version.family})`;
  $("report-link").onclick = async (event) => {
    event.preventDefault();
    const response = await fetch(view(version.report), { headers: authorization() });
    window.open(URL.createObjectURL(await response.blob()), "_blank", "noopener");
  };
  showImage($("plot-confusion"), version.plots.confusion);
  showImage($("plot-curves"), version.plots.curves);
}

async function makeChampion(name, version) {
  try {
    await api(`models/${encodeURIComponent(name)}/champion`, { method: "POST", body: { version } });
    status(`champion of ${name} is now ${version}`);
  } catch (error) {
    status(error.message);
  }
  await showModels();
}

$("train").addEventListener("click", async () => {
  try {
    const body = { dataset: dataset(), family: $("train-family").value };
    const started = await api("console/train", { method: "POST", body });
    // the local runtime names its run; deployed, the run id is the execution's name
    const run = started.execution || started.executionArn.split(":").pop();
    $("train-status").textContent = `${run}: started`;
    for (;;) {
      await new Promise((resolve) => setTimeout(resolve, 2000));
      const state = await api(`runs/${encodeURIComponent(run)}`).catch(() => ({ status: "starting" }));
      $("train-status").textContent = `${run}: ${state.status}`;
      if (state.status === "succeeded" || state.status === "failed") break;
    }
    await showModels();
  } catch (error) {
    $("train-status").textContent = error.message;
  }
});

// ---- Navigation -------------------------------------------------------------------------

const views = { draw: async () => {}, sheets: showSheets, review: showReview, models: showModels };

let navigation = new AbortController();

async function route() {
  navigation.abort();
  navigation = new AbortController();
  const { signal } = navigation;
  const name = (location.hash || "#draw").slice(1);
  const shown = name in views ? name : "draw";
  for (const section of document.querySelectorAll("main > section")) {
    section.hidden = section.id !== shown;
  }
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.view === shown);
  }
  status("");
  try {
    await views[shown](signal);
  } catch (error) {
    if (!signal.aborted) status(error.message);
  }
}

window.addEventListener("hashchange", route);
$("dataset").addEventListener("change", route);
clearPad();
signIn().then(route, (error) => status(error.message));
