// The search page: the HTTP/JSON API of this service (docs/api.md), from the browser.
// No framework and no build step. Everything a caller stored (ids, metadata, labels) reaches
// the page as text nodes, never as HTML.

const $ = (id) => document.getElementById(id);
const THUMBNAIL_BATCH = 200;  // ids per GetThumbnails call (the service takes up to 1000)
const MAX_GROUPS_SHOWN = 50;
const MATCH_KINDS = {
  MATCH_KIND_EXACT: "exact copy",
  MATCH_KIND_COPY: "edited copy",
  MATCH_KIND_SIMILAR: "similar",
};

// Each search, duplicates run or classification takes a ticket, numbered per tab; an answer
// that lands after a newer one was asked for in its tab, or after the collection changed, is
// dropped, so a slow earlier answer never replaces a later one.
const latest = { search: 0, groups: 0, classify: 0 };
class Stale extends Error {}
function current(ticket) {
  if (latest[ticket.kind] !== ticket.number) throw new Stale();
}
// Runs task(ticket); its failure is shown only while it is still the latest of its kind.
function begin(kind, task) {
  const ticket = { kind, number: ++latest[kind] };
  task(ticket).catch((err) => { if (latest[kind] === ticket.number) sayError(err); });
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function call(method, path, body) {
  const headers = {};
  const token = $("token").value.trim();
  // fetch() itself throws on a header outside Latin-1, and gRPC metadata is printable ASCII.
  if (!/^[\x20-\x7e]*$/.test(token)) {
    throw new ApiError(401, "the token can hold printable ASCII characters only");
  }
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  let answer = {};
  try {
    answer = await response.json();
  } catch {
    answer = { message: `${response.status} ${response.statusText}` };
  }
  if (!response.ok) throw new ApiError(response.status, answer.message || response.statusText);
  return answer;
}

// Relative to the page, which may sit behind a reverse proxy's path prefix.
function collectionPath(suffix, collection = $("collection").value) {
  return `v1/collections/${encodeURIComponent(collection)}${suffix}`;
}

function say(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function sayError(err) {
  if (err instanceof Stale) return;
  if (err instanceof ApiError && err.status === 401) {
    say(`${err.message}: this service asks for a token; enter it above.`, true);
  } else {
    say(err.message || String(err), true);
  }
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// --- collections -------------------------------------------------------------------------

async function loadCollections() {
  const select = $("collection");
  const collections = [];
  let pageToken = "";
  do {
    const query = new URLSearchParams({ page_size: "1000" });
    if (pageToken) query.set("page_token", pageToken);
    const page = await call("GET", `v1/collections?${query}`);
    collections.push(...(page.collections || []));
    pageToken = page.nextPageToken || "";
  } while (pageToken);
  const wanted = sessionStorage.getItem("collection") || select.value;
  select.replaceChildren(...collections.map((c) => {
    const option = element("option", "", c.name);
    option.value = c.name;
    option.dataset.count = c.imageCount || "0";
    option.dataset.model = c.model ? c.model.name : "";
    return option;
  }));
  if (collections.some((c) => c.name === wanted)) select.value = wanted;
  describeCollection();
  say(collections.length ? "" : "No collections yet: create one and add images "
    + "(imagesearch index <folder> -c <name> --create).");
}

function describeCollection() {
  const option = $("collection").selectedOptions[0];
  $("collection-info").textContent = option
    ? `${option.dataset.count} images, model ${option.dataset.model}` : "";
  if (option) sessionStorage.setItem("collection", option.value);
}

// --- pictures ----------------------------------------------------------------------------

function card(id, details) {
  const node = element("figure", "card");
  node.dataset.id = id;
  node.append(element("div", "none", "…"));
  const caption = element("figcaption");
  caption.append(element("div", "id", id));
  for (const line of details) caption.append(line);
  node.append(caption);
  return node;
}

function metadataList(metadata) {
  const list = element("dl");
  for (const [key, value] of Object.entries(metadata || {}).sort()) {
    const shown = Object.values(value)[0];
    list.append(element("dt", "", key), element("dd", "", String(shown)));
  }
  return list;
}

// The thumbnails of the cards in `container`, from `collection` (the one their ids are of).
// Without them (a service that keeps none) the results stay results: each card says so.
async function fillThumbnails(container, collection, ticket) {
  const cards = [...container.querySelectorAll(".card")];
  const ids = [...new Set(cards.map((c) => c.dataset.id))];
  const found = new Map();
  let missing = "no thumbnail kept";
  const batches = [];
  for (let at = 0; at < ids.length; at += THUMBNAIL_BATCH) {
    batches.push(ids.slice(at, at + THUMBNAIL_BATCH));
  }
  try {
    while (batches.length) {
      const batch = batches.shift();
      let answer;
      try {
        answer = await call("POST", collectionPath("/images:thumbnails", collection),
          { ids: batch });
      } catch (err) {
        // 429: the answer would pass the service's message limit; ask for half as many.
        if (!(err instanceof ApiError && err.status === 429 && batch.length > 1)) throw err;
        const half = Math.floor(batch.length / 2);
        batches.unshift(batch.slice(0, half), batch.slice(half));
        continue;
      }
      current(ticket);
      for (const thumbnail of answer.thumbnails || []) found.set(thumbnail.id, thumbnail.jpeg);
    }
  } catch (err) {
    if (err instanceof Stale || !(err instanceof ApiError)) throw err;
    missing = `no thumbnail: ${err.message}`;
  }
  for (const node of cards) {
    const jpeg = found.get(node.dataset.id);
    const placeholder = node.querySelector(".none");
    if (jpeg) {
      const img = element("img");
      img.alt = node.dataset.id;
      img.src = `data:image/jpeg;base64,${jpeg}`;
      placeholder.replaceWith(img);
    } else {
      placeholder.textContent = missing;
    }
  }
}

function readBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result.slice(reader.result.indexOf(",") + 1));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function onImage(kind, dropId, inputId, handler) {
  const zone = $(dropId);
  const run = (file) => { if (file) begin(kind, (ticket) => handler(ticket, file)); };
  $(inputId).addEventListener("change", (event) => run(event.target.files[0]));
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    run(event.dataTransfer.files[0]);
  });
}

// --- search ------------------------------------------------------------------------------

async function search(ticket, makeQuery, label) {
  const collection = $("collection").value;
  say(`Searching for ${label}…`);
  const query = await makeQuery();
  current(ticket);
  const answer = await call("POST", collectionPath(":search", collection),
    { queries: [query], topK: Number($("top-k").value) });
  current(ticket);
  const result = answer.results[0];
  if (result.status && result.status.code) throw new Error(result.status.message);
  const hits = result.hits || [];
  $("results").replaceChildren(...hits.map((hit, rank) => card(hit.id, [
    element("div", "score", `#${rank + 1}  similarity ${hit.similarity.toFixed(3)}`
      + (MATCH_KINDS[hit.match] ? `, ${MATCH_KINDS[hit.match]}` : "")),
    metadataList(hit.metadata),
  ])));
  say(hits.length ? `${hits.length} results for ${label}` : `Nothing found for ${label}`);
  await fillThumbnails($("results"), collection, ticket);
}

// --- duplicates --------------------------------------------------------------------------

async function findGroups(ticket) {
  const collection = $("collection").value;
  say("Looking for duplicates across the collection…");
  const answer = await call("POST", collectionPath(":findDuplicateGroups", collection), {
    mode: $("groups-mode").value, minSimilarity: Number($("groups-min").value),
  });
  current(ticket);
  const groups = answer.groups || [];
  $("groups").replaceChildren(...groups.slice(0, MAX_GROUPS_SHOWN).map((group, index) => {
    const section = element("section", "group");
    section.append(element("h3", "", `Group ${index + 1}: ${group.ids.length} images, `
      + `similarity at least ${(group.minSimilarity || 0).toFixed(3)}`));
    const grid = element("div", "grid");
    grid.append(...group.ids.map((id) => card(id, [])));
    section.append(grid);
    return section;
  }));
  const shown = groups.length > MAX_GROUPS_SHOWN ? ` (the first ${MAX_GROUPS_SHOWN} shown)` : "";
  say(`${groups.length} groups among ${answer.imagesScanned || 0} images${shown}`);
  await fillThumbnails($("groups"), collection, ticket);
}

// --- classify ----------------------------------------------------------------------------

async function classify(ticket, file) {
  const collection = $("collection").value;
  say(`Classifying ${file.name}…`);
  const image = await readBase64(file);
  current(ticket);
  const answer = await call("POST", collectionPath(":classify", collection), {
    queries: [{ image }], labelKey: $("label-key").value,
  });
  current(ticket);
  const result = answer.results[0];
  if (result.status && result.status.code) throw new Error(result.status.message);
  const preview = element("img");
  preview.alt = file.name;
  preview.src = URL.createObjectURL(file);
  preview.width = 160;
  const table = element("table", "labels");
  const head = element("tr");
  head.append(element("th", "", "label"), element("th", "", "confidence"),
    element("th", "", "votes"));
  table.append(head);
  for (const label of result.labels || []) {
    const row = element("tr");
    row.append(element("td", "label", label.label),
      element("td", "", label.confidence.toFixed(3)), element("td", "", String(label.votes || 0)));
    table.append(row);
  }
  $("classification").replaceChildren(preview, table);
  say((result.labels || []).length ? `Labels for ${file.name}`
    : `No neighbour of ${file.name} has a "${$("label-key").value}" label`);
}

// --- wiring ------------------------------------------------------------------------------

function showTab(name) {
  for (const tab of document.querySelectorAll("[role=tab]")) {
    tab.setAttribute("aria-selected", String(tab.dataset.tab === name));
  }
  for (const section of document.querySelectorAll(".tab")) section.hidden = section.id !== name;
}

function start() {
  $("token").value = sessionStorage.getItem("token") || "";
  $("token").addEventListener("change", () => {
    sessionStorage.setItem("token", $("token").value.trim());
    loadCollections().catch(sayError);
  });
  $("collection").addEventListener("change", () => {
    // What was asked of the previous collection is no longer wanted, nor shown.
    for (const kind of Object.keys(latest)) latest[kind] += 1;
    for (const id of ["results", "groups", "classification"]) $(id).replaceChildren();
    say("");
    describeCollection();
  });
  for (const tab of document.querySelectorAll("[role=tab]")) {
    tab.addEventListener("click", () => showTab(tab.dataset.tab));
  }
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("query").value.trim();
    if (text) {
      begin("search", (ticket) => search(ticket, async () => ({ text }), `"${text}"`));
    }
  });
  onImage("search", "search-drop", "search-image",
    (ticket, file) => search(ticket, async () => ({ image: await readBase64(file) }),
      file.name));
  $("groups-form").addEventListener("submit", (event) => {
    event.preventDefault();
    begin("groups", findGroups);
  });
  onImage("classify", "classify-drop", "classify-image", classify);
  loadCollections().catch(sayError);
}

start();
