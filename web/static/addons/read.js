/* The read pane: the people of the open conversation, their sequences, and what they read.
 *
 * The addresses come from the open message (From, To, Cc) through the adapter; the
 * server leaves out the team's own. Each enrolment offers the actions the server
 * allows (Pause, Resume, Stop); a person can be added to one of the team's sequences.
 * The footer is the user's latest Live Feed items. A pinned pane follows the selection.
 */
(function () {
  "use strict";

  var office = window.SightlineOffice;
  var ACTION_LABELS = { pause: "Pause", resume: "Resume", stop: "Stop" };
  var STATE_LABELS = {
    active: "Active", paused: "Paused", replied: "Replied", bounced: "Bounced",
    opted_out: "Opted out", finished: "Finished",
  };

  function when(iso) {
    if (!iso) {
      return "";
    }
    var date = new Date(iso);
    return isNaN(date.getTime()) ? "" : date.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
  }

  window.SightlinePane.start(function (ctx) {
    var el = ctx.el;

    function told(text) {
      ctx.show("read-error", "");
      ctx.show("read-result", text);
    }
    function failed(error) {
      if (ctx.signedOut(error)) {
        ctx.fail(error);
        return;
      }
      ctx.show("read-result", "");
      ctx.show("read-error", error.message || String(error));
    }

    function act(promise) {
      return promise.then(function (answer) {
        if (answer && answer.ok === false) {
          ctx.show("read-result", "");
          ctx.show("read-error", answer.message);
        } else {
          told(answer && answer.message || "Done.");
        }
        return load();
      }).catch(failed);
    }

    function activityList(title, items) {
      var box = el("div", { class: "activity-block" });
      box.appendChild(el("h3", {}, title));
      if (!items.length) {
        box.appendChild(el("p", { class: "empty" }, "None yet."));
        return box;
      }
      var list = el("ul", { class: "activity" });
      items.forEach(function (item) {
        var line = el("li", {}, item.text);
        line.appendChild(el("time", { datetime: item.occurred_at }, when(item.occurred_at)));
        list.appendChild(line);
      });
      box.appendChild(list);
      return box;
    }

    function enrollmentView(person, enrollment) {
      var box = el("div", { class: "enrollment", "data-enrollment-id": String(enrollment.id) });
      var head = el("p", {});
      head.appendChild(el("strong", {}, enrollment.sequence_name));
      head.appendChild(document.createTextNode(" · "));
      head.appendChild(el("span", { class: "state state-" + enrollment.state },
        STATE_LABELS[enrollment.state] || enrollment.state));
      box.appendChild(head);
      var progress = enrollment.steps_sent + " of " + enrollment.steps_total + " steps sent";
      if (enrollment.next_step) {
        progress += "; next: step " + enrollment.next_step;
      }
      box.appendChild(el("span", { class: "meta" }, progress));
      if (enrollment.reason) {
        box.appendChild(el("span", { class: "reason" }, enrollment.reason));
      }
      var buttons = el("div", { class: "buttons" });
      enrollment.actions.forEach(function (action) {
        var button = el("button", {
          type: "button",
          class: action === "stop" ? "danger" : "secondary",
          "aria-label": ACTION_LABELS[action] + " " + enrollment.sequence_name + " for " + person.address,
        }, ACTION_LABELS[action]);
        button.addEventListener("click", function () {
          button.disabled = true;
          act(ctx.api("POST", "/addons/enrollments/" + enrollment.id + "/" + action));
        });
        buttons.appendChild(button);
      });
      box.appendChild(buttons);
      return box;
    }

    function personView(person) {
      var card = el("section", { class: "card person", "data-address": person.address });
      card.appendChild(el("h2", {}, person.name || person.address));
      var about = [person.name ? person.address : null, person.company].filter(Boolean).join(" · ");
      if (about) {
        card.appendChild(el("p", { class: "address" }, about));
      }
      if (!person.enrollments.length) {
        card.appendChild(el("p", { class: "empty" }, person.prospect_id === null ?
          "Not a prospect yet." : "In no sequence."));
      }
      person.enrollments.forEach(function (enrollment) {
        card.appendChild(enrollmentView(person, enrollment));
      });
      if (person.not_enrollable) {
        card.appendChild(el("p", { class: "reason" }, person.not_enrollable));
      } else if (person.add_to.length) {
        var id = "add-to-" + Math.random().toString(36).slice(2);
        var form = el("div", { class: "add-to" });
        var label = el("label", { for: id }, "Add to sequence…");
        var select = el("select", { id: id });
        person.add_to.forEach(function (sequence) {
          select.appendChild(el("option", { value: String(sequence.id) }, sequence.name));
        });
        label.appendChild(select);
        form.appendChild(label);
        var add = el("button", { type: "button", class: "secondary" }, "Add");
        add.addEventListener("click", function () {
          add.disabled = true;
          act(ctx.api("POST", "/addons/sequences/" + select.value + "/enrollments", {
            address: person.address,
            name: person.name || null,
          }));
        });
        form.appendChild(add);
        card.appendChild(form);
      }
      card.appendChild(activityList("Last opens", person.last_opens));
      card.appendChild(activityList("Last clicks", person.last_clicks));
      card.appendChild(activityList("Pages read", person.pages_read));
      return card;
    }

    function renderPanel(panel) {
      var people = document.getElementById("people");
      people.textContent = "";
      panel.people.forEach(function (person) { people.appendChild(personView(person)); });
      document.getElementById("people-empty").hidden = panel.people.length > 0;
    }

    function renderFeed(items) {
      var list = document.getElementById("activity");
      list.textContent = "";
      items.forEach(function (item) {
        var line = el("li", { class: "feed-item kind-" + item.kind });
        line.appendChild(el("span", { class: "text" }, item.text));
        line.appendChild(el("time", { datetime: item.occurred_at || "" }, when(item.occurred_at)));
        list.appendChild(line);
      });
      document.getElementById("activity-empty").hidden = items.length > 0;
    }

    function load() {
      var me = office.userEmail();
      var panel = office.threadPeople().then(function (people) {
        var seen = {};
        var addresses = [];
        people.forEach(function (p) {
          if (p.email !== me && !seen[p.email]) {
            seen[p.email] = true;
            addresses.push(p.email);
          }
        });
        return ctx.api("POST", "/addons/panel", { addresses: addresses });
      }).then(renderPanel);
      var feed = ctx.api("GET", "/addons/feed?limit=10").then(function (answer) {
        renderFeed(Array.isArray(answer) ? answer : answer.items);
      });
      return Promise.all([panel, feed]).catch(failed);
    }

    office.onItemChanged(function () {
      ctx.show("read-result", "");
      load();
    });
    return load();
  });
})();
