// Shoal's dashboard: the live parts. Every <pre data-src> follows the
// newline-delimited JSON log stream at its data-src and shows each line as
// it arrives; the input named by its data-filter hides lines without the
// text typed. Every <section data-refresh> is read again from the page's
// own address each second and replaced, unless something in it has the
// focus. The page reads without this script; it only adds the live parts.
"use strict";

// The indexes of a pod's canary and shadow replicas (u32::MAX and one less).
const EXTRA = { 4294967295: "canary", 4294967294: "shadow" };

function show(entry) {
  const replica = entry.replica
    ? `${entry.replica.pod}-${EXTRA[entry.replica.index] ?? entry.replica.index}`
    : "";
  const line = document.createElement("div");
  line.className = `log ${entry.stream || ""}`;
  line.textContent = `[${replica} ${entry.component || ""}] ${entry.text}`;
  return line;
}

function applyFilter(pre, text) {
  for (const line of pre.children) {
    line.hidden = text !== "" && !line.textContent.includes(text);
  }
}

async function follow(pre) {
  const filter = document.getElementById(pre.dataset.filter || "");
  if (filter) {
    filter.addEventListener("input", () => applyFilter(pre, filter.value));
  }
  const status = document.getElementById(pre.dataset.status || "");
  const say = (words) => { if (status) status.textContent = words; };
  try {
    const response = await fetch(pre.dataset.src, { credentials: "same-origin" });
    if (!response.ok || !response.body) {
      say(`The live view stopped: ${response.status} ${response.statusText}.`);
      return;
    }
    say("Following: new lines appear as they are written.");
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let rest = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      rest += value;
      const lines = rest.split("\n");
      rest = lines.pop();
      for (const text of lines) {
        if (!text) continue;
        const entry = JSON.parse(text);
        if (entry.error) { say(`The live view stopped: ${entry.error}`); return; }
        const line = show(entry);
        if (filter && filter.value && !line.textContent.includes(filter.value)) line.hidden = true;
        pre.append(line);
      }
    }
    say("The live view ended: reload the page to follow again.");
  } catch (e) {
    say(`The live view stopped: ${e}`);
  }
}

for (const pre of document.querySelectorAll("pre[data-src]")) {
  follow(pre);
}

const REFRESH_MS = 1000;

async function refresh(sections) {
  if (document.hidden) return;
  let page;
  try {
    const response = await fetch(location.href, { credentials: "same-origin" });
    if (!response.ok) return;
    page = new DOMParser().parseFromString(await response.text(), "text/html");
  } catch (e) {
    return;
  }
  for (const section of sections) {
    const fresh = page.getElementById(section.id);
    if (fresh && !section.contains(document.activeElement) && fresh.innerHTML !== section.innerHTML) {
      section.innerHTML = fresh.innerHTML;
    }
  }
}

const live = [...document.querySelectorAll("section[data-refresh][id]")];
if (live.length) {
  setInterval(() => refresh(live), REFRESH_MS);
}
