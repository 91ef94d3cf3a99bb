/* The compose pane: a library document's tracked link, or the open pixel, at the cursor.
 *
 * The draft is named by `SightlineOffice.draftRef()` (kept in the draft itself), so
 * pressing a button twice finds the same tracking record on the server. With exactly
 * one To the link is that person's; otherwise it is the draft's, and the server says so
 * (`per_recipient`). A Solo team reads why content is unavailable, in the web app's words.
 */
(function () {
  "use strict";

  var office = window.SightlineOffice;

  function emails(list) {
    return list.map(function (p) { return p.email; });
  }

  function audience(recipients) {
    var to = recipients.to;
    if (to.length === 1) {
      return "One recipient: links you insert are " + (to[0].name || to[0].email) +
        "'s own, and their reading shows under their name.";
    }
    if (to.length === 0) {
      return "No recipient yet: links you insert are this email's, counted for the email.";
    }
    return to.length + " recipients: links you insert are this email's, counted for the email, " +
      "not for a person.";
  }

  window.SightlinePane.start(function (ctx) {
    function result(text) {
      ctx.show("compose-error", "");
      ctx.show("compose-result", text);
    }
    function failed(error) {
      ctx.show("compose-result", "");
      if (ctx.signedOut(error)) {
        ctx.fail(error);
        return;
      }
      ctx.show("compose-error", error.message || String(error));
    }

    function insert(documentId, documentName) {
      ctx.show("compose-error", "");
      return Promise.all([office.draftRef(), office.recipients()]).then(function (got) {
        var recipients = got[1];
        ctx.show("compose-audience", audience(recipients));
        return ctx.api("POST", "/addons/drafts", {
          source: "outlook",
          draft_ref: got[0],
          recipients: { to: emails(recipients.to), cc: emails(recipients.cc), bcc: emails(recipients.bcc) },
          document_id: documentId,
          track_opens: documentId === null,
          sender: office.userEmail() || null,
        });
      }).then(function (answer) {
        var text = answer.link_url || "";
        return office.insertHtml(answer.html, text).then(function (kind) {
          if (documentId === null) {
            result(kind === "html" ? "Opens of this email will be tracked." :
              "This email is plain text, so opens cannot be tracked. Switch it to HTML and try again.");
            return;
          }
          var whose = answer.per_recipient ? "the recipient's own link" : "a link for this email";
          result("Inserted " + whose + " to " + (answer.document_name || documentName) + ".");
        });
      }).catch(failed);
    }

    office.recipients().then(function (recipients) {
      ctx.show("compose-audience", audience(recipients));
    }).catch(failed);

    document.getElementById("track-opens").addEventListener("click", function () {
      insert(null, null);
    });

    return ctx.api("GET", "/addons/content").then(function (choices) {
      var list = document.getElementById("documents");
      list.textContent = "";
      if (choices.unavailable) {
        ctx.show("content-unavailable", choices.unavailable);
        return;
      }
      document.getElementById("documents-empty").hidden = choices.documents.length > 0;
      choices.documents.forEach(function (doc) {
        var item = ctx.el("li", { "data-document-id": String(doc.id) });
        item.appendChild(ctx.el("span", { class: "name" }, doc.name));
        var button = ctx.el("button", { type: "button", "aria-label": "Insert " + doc.name }, "Insert");
        button.addEventListener("click", function () { insert(doc.id, doc.name); });
        item.appendChild(button);
        list.appendChild(item);
      });
    }).catch(failed);
  });
})();
