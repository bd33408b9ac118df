// The console's only script: copy buttons, confirmations before destructive forms, and the billing page
// waiting for Stripe's confirmation. Loaded from our origin (the CSP allows no inline script).
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

function setUpCopyButtons() {
  for (const button of document.querySelectorAll("button[data-copy]")) {
    const label = button.textContent;
    button.addEventListener("click", async () => {
      const source = document.getElementById(button.dataset.copy);
      try {
        await copyText(source.textContent.trim());
        button.textContent = "Copied";
      } catch (error) {
        button.textContent = "Select and copy it";
      }
      setTimeout(() => { button.textContent = label; }, 2500);
    });
  }
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

document.addEventListener("DOMContentLoaded", () => {
  setUpCopyButtons();
  setUpConfirmations();
  for (const element of document.querySelectorAll("[data-poll]")) {
    waitForStatus(element);
  }
});
