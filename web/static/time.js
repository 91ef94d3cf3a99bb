// Times in the reader's own zone. The server writes every time as
// <time datetime="…Z" title="2026-12-06 14:05 UTC">Dec 6, 2026 14:05 UTC</time> (readable
// without this script); here each becomes "Dec 6, 9:05 AM EST" in the browser's zone and
// language, the title keeping the UTC time. Times added later (the Live Feed draws its
// items from a stream) are converted as they arrive.
(function () {
  "use strict";
  if (!window.Intl || !Intl.DateTimeFormat) return;
  var thisYear = new Date().getFullYear();
  var formats = {};

  function format(sameYear) {
    var key = sameYear ? "y" : "n";
    if (!formats[key]) {
      var options = { month: "short", day: "numeric", hour: "numeric", minute: "2-digit", timeZoneName: "short" };
      if (!sameYear) options.year = "numeric";
      formats[key] = new Intl.DateTimeFormat(undefined, options);
    }
    return formats[key];
  }

  function utcTitle(date) {
    return date.toISOString().slice(0, 16).replace("T", " ") + " UTC";
  }

  function localize(el) {
    var value = el.getAttribute("datetime") || "";
    // A time with no offset is UTC: that is what the server stores.
    if (/T\d\d:\d\d(:\d\d(\.\d+)?)?$/.test(value)) value += "Z";
    var date = new Date(value);
    if (!value || isNaN(date.getTime())) return;
    var text = format(date.getFullYear() === thisYear).format(date);
    // Compared first: setting it is itself a change this script observes.
    if (el.textContent !== text) el.textContent = text;
    if (el.title !== utcTitle(date)) el.title = utcTitle(date);
  }

  function within(root) {
    if (root.nodeType !== 1) return;
    if (root.matches("time[datetime]")) localize(root);
    Array.prototype.forEach.call(root.querySelectorAll("time[datetime]"), localize);
  }

  within(document.body);
  // New items, and a shown item whose time a script rewrites (it writes UTC).
  new MutationObserver(function (changes) {
    changes.forEach(function (change) {
      var target = change.target.nodeType === 1 ? change.target : change.target.parentElement;
      var time = target && target.closest("time[datetime]");
      if (time) localize(time);
      Array.prototype.forEach.call(change.addedNodes, within);
    });
  }).observe(document.body, { childList: true, subtree: true, characterData: true, attributes: true, attributeFilter: ["datetime"] });
})();
