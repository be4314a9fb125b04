// Shoal's dashboard: the live parts. Every <pre data-src> follows the
// newline-delimited JSON log stream at its data-src and shows each line as
// it arrives; the input named by its data-filter hides lines without the
// text typed. The page reads without this script; it only adds the live view.
"use strict";

function show(entry) {
  const replica = entry.replica
    ? `${entry.replica.pod}-${entry.replica.index}`
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
