// Document viewer: paging (buttons, keys, swipes) and time per page.
//
// Time counts for the page most on screen, only while the tab is visible and
// the reader was active in the last IDLE_MS. Reports carry cumulative totals
// (so a lost or repeated report changes nothing): soon after opening, when the
// reader settles on a page, every FLUSH_MS, and with sendBeacon on leaving.
(function () {
  "use strict";
  var IDLE_MS = 60000, FLUSH_MS = 10000, FIRST_MS = 1000, SETTLE_MS = 1200, TICK_MS = 250;
  var root = document.getElementById("viewer");
  if (!root) return;
  var pages = Array.prototype.slice.call(root.querySelectorAll(".page"));
  var count = pages.length;
  var beaconUrl = root.dataset.beacon, visit = root.dataset.visit;
  var tracking = Boolean(visit); // no visit: this link records nothing, paging still works
  var currentLabel = document.getElementById("current");
  var prev = document.getElementById("prev"), next = document.getElementById("next");
  var current = 1, ms = {}, dirty = false, stopped = false;
  var now = function () { return performance.now(); };
  var lastTick = now(), lastActivity = lastTick, settleTimer = null;

  function active(t) { return document.visibilityState === "visible" && t - lastActivity < IDLE_MS; }

  function tick() {
    var t = now();
    if (active(t)) {
      ms[current] = (ms[current] || 0) + (t - lastTick);
      dirty = true;
    }
    lastTick = t;
  }

  function payload(final) {
    var totals = {};
    Object.keys(ms).forEach(function (page) { totals[page] = Math.round(ms[page]); });
    return JSON.stringify({ visit: visit, page: current, ms: totals, final: final });
  }

  function flush(final) {
    if (stopped || !tracking) return;
    tick();
    if (!dirty && !final) return;
    dirty = false;
    var body = payload(final);
    if (final && navigator.sendBeacon) {
      navigator.sendBeacon(beaconUrl, new Blob([body], { type: "text/plain" }));
      return;
    }
    fetch(beaconUrl, { method: "POST", body: body, keepalive: true, credentials: "same-origin",
                       headers: { "Content-Type": "text/plain" } })
      .then(function (response) { if ([404, 409, 410].indexOf(response.status) >= 0) stopped = true; })
      .catch(function () { dirty = true; });
  }

  function show(page) {
    if (page === current) return;
    tick();
    current = page;
    currentLabel.textContent = String(page);
    prev.disabled = page <= 1;
    next.disabled = page >= count;
    clearTimeout(settleTimer);
    settleTimer = setTimeout(function () { flush(false); }, SETTLE_MS);
  }

  // The page with the largest visible share is the one being read.
  var ratios = {};
  if ("IntersectionObserver" in window) {
    var observer = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) { ratios[entry.target.dataset.page] = entry.intersectionRatio; });
      var best = current, bestRatio = -1;
      Object.keys(ratios).forEach(function (page) {
        var r = ratios[page], n = Number(page);
        if (r > bestRatio || (r === bestRatio && n < best)) { best = n; bestRatio = r; }
      });
      if (bestRatio > 0) show(best);
    }, { threshold: [0, 0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 1] });
    pages.forEach(function (page) { observer.observe(page); });
  }

  function go(page) {
    page = Math.max(1, Math.min(count, page));
    activity();
    pages[page - 1].scrollIntoView({ block: "start" });
    show(page);
  }

  function activity() {
    var t = now();
    if (t - lastActivity >= IDLE_MS) lastTick = t; // the idle gap is not reading time
    tick();
    lastActivity = t;
  }

  prev.addEventListener("click", function () { go(current - 1); });
  next.addEventListener("click", function () { go(current + 1); });
  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    var target = event.target;
    if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA")) return;
    var keys = { ArrowRight: 1, ArrowDown: 1, PageDown: 1, " ": 1, j: 1, ArrowLeft: -1, ArrowUp: -1, PageUp: -1, k: -1 };
    if (event.key === " " && event.shiftKey) { go(current - 1); event.preventDefault(); return; }
    if (keys[event.key]) { go(current + keys[event.key]); event.preventDefault(); }
    else if (event.key === "Home") { go(1); event.preventDefault(); }
    else if (event.key === "End") { go(count); event.preventDefault(); }
  });

  // A clear sideways swipe turns the page; vertical movement stays native scrolling.
  var touchX = null, touchY = null;
  root.addEventListener("touchstart", function (event) {
    if (event.touches.length !== 1) { touchX = null; return; }
    touchX = event.touches[0].clientX; touchY = event.touches[0].clientY;
  }, { passive: true });
  root.addEventListener("touchend", function (event) {
    if (touchX === null || !event.changedTouches.length) return;
    var dx = event.changedTouches[0].clientX - touchX, dy = event.changedTouches[0].clientY - touchY;
    touchX = null;
    if (Math.abs(dx) > 60 && Math.abs(dx) > 2 * Math.abs(dy)) go(current + (dx < 0 ? 1 : -1));
  }, { passive: true });

  ["scroll", "wheel", "pointerdown", "pointermove", "keydown", "touchstart"].forEach(function (name) {
    window.addEventListener(name, activity, { passive: true });
  });
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") { flush(true); } else { lastTick = now(); activity(); }
  });
  window.addEventListener("pagehide", function () { flush(true); });
  window.addEventListener("pageshow", function (event) { if (event.persisted) { lastTick = now(); activity(); } });

  setInterval(tick, TICK_MS);
  setInterval(function () { if (dirty) flush(false); }, FLUSH_MS);
  setTimeout(function () { flush(false); }, FIRST_MS);
})();
