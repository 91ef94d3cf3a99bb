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
      // A document event's whole sentence ("Dana opened pricing.pdf — now on page 4").
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
    return li;
  }

  var source = new EventSource(list.dataset.stream);
  source.addEventListener("open", function () { status.textContent = "Live"; });
  source.addEventListener("error", function () { status.textContent = "Reconnecting…"; });
  source.addEventListener("item", function (message) {
    var item = JSON.parse(message.data);
    if (seen[item.id]) return;
    seen[item.id] = true;
    list.insertBefore(render(item), list.firstChild);
    empty.hidden = true;
  });
})();
