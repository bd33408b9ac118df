// The console's only script: copy buttons, confirmations before destructive forms, the billing page waiting
// for Stripe's confirmation, and parts of pages kept live (the identity's provisioning). Loaded from our
// origin (the CSP allows no inline script).
"use strict";

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.className = "offscreen";
  document.body.append(area);
  area.select();
  document.execCommand("copy");
  area.remove();
}

// <button data-copy=ID>: copies the text of element ID. Listened for on the document, so buttons in a part
// of the page replaced later work too.
function setUpCopyButtons() {
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-copy]");
    if (!button || button.dataset.copied) return;
    const label = button.textContent;
    button.dataset.copied = "yes";
    try {
      await copyText(document.getElementById(button.dataset.copy).textContent.trim());
      button.textContent = "Copied";
    } catch (error) {
      button.textContent = "Select and copy it";
    }
    setTimeout(() => { button.textContent = label; delete button.dataset.copied; }, 2500);
  });
}

function setUpConfirmations() {
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) {
        event.preventDefault();
      }
    });
  }
}

// <element data-poll=URL data-until=STATUS data-done=URL>: ask URL every second until its JSON says
// {"status": STATUS}, then go to the done URL. After two minutes, show the element's [data-slow] part.
function waitForStatus(element) {
  const started = Date.now();
  const tick = async () => {
    try {
      const response = await fetch(element.dataset.poll, {
        headers: { accept: "application/json" },
        credentials: "same-origin",
        redirect: "error",
      });
      if (response.ok && (await response.json()).status === element.dataset.until) {
        window.location.replace(element.dataset.done);
        return;
      }
    } catch (error) {
      // offline for a moment, or the session ended: keep trying until the time is up
    }
    if (Date.now() - started > 120000) {
      const slow = element.querySelector("[data-slow]");
      if (slow) slow.hidden = false;
      return;
    }
    setTimeout(tick, 1000);
  };
  setTimeout(tick, 1000);
}

// <element data-live=URL data-every=SECONDS>: ask URL again after SECONDS for the element's current contents,
// {"html": ..., "poll_seconds": ...}, show them if they changed, and go on at the pace the answer asks for,
// until it asks for none (nothing changes by itself any more). Failures (offline, signed out) slow it down.
function keepLive(element) {
  let shown = null;
  const tick = async (seconds) => {
    try {
      const response = await fetch(element.dataset.live, {
        headers: { accept: "application/json" },
        credentials: "same-origin",
        redirect: "error",
      });
      if (!response.ok) throw new Error(`status ${response.status}`);
      const update = await response.json();
      if (update.html !== shown) {
        element.innerHTML = update.html;
        shown = update.html;
      }
      seconds = update.poll_seconds;
    } catch (error) {
      seconds = Math.min(seconds * 2, 60);
    }
    if (seconds) setTimeout(() => tick(seconds), seconds * 1000);
  };
  const every = Number(element.dataset.every);
  setTimeout(() => tick(every), every * 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  setUpCopyButtons();
  setUpConfirmations();
  for (const element of document.querySelectorAll("[data-poll]")) {
    waitForStatus(element);
  }
  for (const element of document.querySelectorAll("[data-live]")) {
    keepLive(element);
  }
});
