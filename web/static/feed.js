// Live Feed: server-sent events from /feed/stream; new items go on top.
(function () {
  "use strict";
  var list = document.getElementById("feed");
  var status = document.getElementById("feed-status");
  var empty = document.getElementById("feed-empty");
  if (!list || !window.EventSource) { if (status) status.textContent = "Live updates need a newer browser."; return; }
  var seen = {};
  Array.prototype.forEach.call(list.children, function (li) { seen[li.dataset.id] = true; });

  function span(cls, text) {
    var el = document.createElement("span");
    el.className = cls;
    el.textContent = text;
    return el;
  }

  function render(item) {
    var li = document.createElement("li");
    li.className = "feed-item kind-" + item.kind + (item.probable ? " probable" : "") + " fresh";
    li.dataset.id = item.id;
    li.dataset.kind = item.kind;
    li.appendChild(span("badge", item.label));
    if (item.text) {
      // A document item's whole sentence ("Dana is reading pricing.pdf — page 4 of 12, 2 min").
      li.appendChild(span("text", item.text));
    } else {
      var who = item.prospect ? (item.prospect.name || item.prospect.email) : (item.from || "");
      li.appendChild(span("who", who));
    }
    if (item.subject) li.appendChild(span("subject", item.subject));
    if (item.url) li.appendChild(span("url", item.url));
    if (item.sequence) li.appendChild(span("sequence", item.sequence.name));
    var time = document.createElement("time");
    time.dateTime = item.occurred_at;
    time.textContent = item.occurred_at.slice(0, 19).replace("T", " ") + " UTC";
    li.appendChild(time);
    if (item.reading_until && item.settled_text) {
      li.dataset.readingUntil = item.reading_until;
      li.dataset.settledText = item.settled_text;
    }
    return li;
  }

  // A visit still being read says "is reading"; with no further word from the viewer
  // by `reading_until` it is over, and its line says "read" (the server says the same).
  var timers = {};
  function settleLater(li) {
    var until = li.dataset.readingUntil;
    if (!until) return;
    clearTimeout(timers[li.dataset.id]);
    var wait = Math.max(0, new Date(/Z|[+-]\d\d:\d\d$/.test(until) ? until : until + "Z") - Date.now());
    timers[li.dataset.id] = setTimeout(function () {
      if (!li.isConnected || li.dataset.readingUntil !== until) return;
      var text = li.querySelector(".text");
      if (text) text.textContent = li.dataset.settledText;
      var badge = li.querySelector(".badge");
      if (badge) badge.textContent = "Read a document";
      delete li.dataset.readingUntil;
    }, wait + 1000);
  }
  Array.prototype.forEach.call(list.children, settleLater);

  var source = new EventSource(list.dataset.stream);
  source.addEventListener("open", function () { status.textContent = "Live"; });
  source.addEventListener("error", function () { status.textContent = "Reconnecting…"; });
  function show(item) {
    var li = render(item);
    list.insertBefore(li, list.firstChild);
    settleLater(li);
    if (empty) empty.hidden = true;
  }
  source.addEventListener("item", function (message) {
    var item = JSON.parse(message.data);
    if (seen[item.id]) return;
    seen[item.id] = true;
    show(item);
  });
  // An item that changed in place (a document visit read on): it keeps its place.
  source.addEventListener("update", function (message) {
    var item = JSON.parse(message.data);
    var old = list.querySelector('li[data-id="' + Number(item.id) + '"]');
    seen[item.id] = true;
    if (!old) { show(item); return; }
    var li = render(item);
    li.classList.remove("fresh");
    list.replaceChild(li, old);
    settleLater(li);
  });
})();
