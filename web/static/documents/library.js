// Content library: follow documents being converted and rendered until they are ready.
(function () {
  "use strict";
  var labels = { queued: "Waiting to start", converting: "Converting to PDF", rendering: "Rendering pages" };
  function follow(el) {
    var url = el.dataset.poll;
    function poll() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
        .then(function (doc) {
          if (doc.status === "ready" || doc.status === "failed") { window.location.reload(); return; }
          var label = el.querySelector("[data-label]");
          var bar = el.querySelector("progress");
          if (label) label.textContent = labels[doc.status] + (doc.status === "rendering" ? " · " + doc.progress + "%" : "");
          if (bar && doc.status === "rendering") { bar.value = doc.progress; bar.textContent = doc.progress + "%"; }
          setTimeout(poll, 1000);
        })
        .catch(function () { setTimeout(poll, 5000); });
    }
    poll();
  }
  Array.prototype.forEach.call(document.querySelectorAll("[data-poll]"), follow);
})();
