/* The one place the Outlook add-in calls Office.js (Microsoft's `Office` global).
 *
 * Every other script of the add-in (pane.js, compose.js, read.js, dialog.js) calls
 * `window.SightlineOffice` only, so what Office.js is asked, and in which
 * requirement set, is all here, and a test can stand a fake `Office` in front of it.
 * Every call answers a Promise; an Office failure rejects with an Error whose
 * message a person can read.
 *
 *   ready()                 Office.onReady: resolves with {host, mode: "read"|"compose"}
 *   userEmail()             the mailbox's own address (userProfile, Mailbox 1.0)
 *   threadPeople()          read: [{name, email}] from From, To and Cc of the open message
 *   messageIds()            read: {internetMessageId, conversationId}
 *   recipients()            compose: {to, cc, bcc} as [{name, email}] (getAsync, Mailbox 1.1)
 *   draftRef()              compose: a random id kept in the draft's custom properties
 *                           (Mailbox 1.1), so the same draft is named the same every time
 *   insertHtml(html, text)  compose: at the cursor (body.setSelectedDataAsync, Mailbox 1.2);
 *                           `text` instead when the body is plain text
 *   onItemChanged(handler)  read, pinned pane: another message was selected (Mailbox 1.5)
 *   openDialog(url)         displayDialogAsync; resolves with the first message the dialog
 *                           sends from our own origin, rejects if the person closes it
 *   messageParent(message)  in the dialog: hand `message` to the pane, to our origin only
 */
(function () {
  "use strict";

  var DRAFT_PROPERTY = "sightlineDraft";

  function office() {
    if (typeof window.Office === "undefined") {
      throw new Error("Office.js did not load: open Sightline from Outlook.");
    }
    return window.Office;
  }

  function item() {
    var mailbox = office().context && office().context.mailbox;
    if (!mailbox || !mailbox.item) {
      throw new Error("Open a message first.");
    }
    return mailbox.item;
  }

  /* Office's callback style, as a Promise of result.value. */
  function call(method, target, args) {
    return new Promise(function (resolve, reject) {
      method.apply(target, args.concat([function (result) {
        if (result.status === office().AsyncResultStatus.Succeeded) {
          resolve(result.value);
        } else {
          var error = result.error || {};
          reject(new Error(error.message || "Outlook refused the request."));
        }
      }]));
    });
  }

  function person(details) {
    if (!details) {
      return null;
    }
    return { name: details.displayName || "", email: (details.emailAddress || "").toLowerCase() };
  }

  function isCompose() {
    // In compose, `to` is a Recipients object with getAsync; in read, an array.
    var to = item().to;
    return Boolean(to && typeof to.getAsync === "function");
  }

  var adapter = {
    ready: function () {
      return office().onReady().then(function (info) {
        var mode = "read";
        try {
          mode = isCompose() ? "compose" : "read";
        } catch (error) {
          mode = "none";
        }
        return { host: info && info.host, mode: mode };
      });
    },

    userEmail: function () {
      var profile = office().context.mailbox.userProfile;
      return (profile && profile.emailAddress || "").toLowerCase();
    },

    threadPeople: function () {
      var message = item();
      var people = [person(message.from)];
      [message.to || [], message.cc || []].forEach(function (list) {
        list.forEach(function (details) { people.push(person(details)); });
      });
      return Promise.resolve(people.filter(function (p) { return p && p.email; }));
    },

    messageIds: function () {
      var message = item();
      return {
        internetMessageId: message.internetMessageId || null,
        conversationId: message.conversationId || null,
      };
    },

    recipients: function () {
      var draft = item();
      function field(name) {
        var recipients = draft[name];
        if (!recipients || typeof recipients.getAsync !== "function") {
          return Promise.resolve([]);
        }
        return call(recipients.getAsync, recipients, []).then(function (list) {
          return (list || []).map(person).filter(function (p) { return p && p.email; });
        });
      }
      return Promise.all([field("to"), field("cc"), field("bcc")]).then(function (lists) {
        return { to: lists[0], cc: lists[1], bcc: lists[2] };
      });
    },

    draftRef: function () {
      var draft = item();
      return call(draft.loadCustomPropertiesAsync, draft, []).then(function (properties) {
        var existing = properties.get(DRAFT_PROPERTY);
        if (existing) {
          return existing;
        }
        var bytes = new Uint8Array(16);
        window.crypto.getRandomValues(bytes);
        var ref = Array.prototype.map.call(bytes, function (b) {
          return ("0" + b.toString(16)).slice(-2);
        }).join("");
        properties.set(DRAFT_PROPERTY, ref);
        return call(properties.saveAsync, properties, []).then(function () { return ref; });
      });
    },

    insertHtml: function (html, text) {
      var body = item().body;
      return call(body.getTypeAsync, body, []).then(function (type) {
        var Office = office();
        if (type === Office.CoercionType.Html) {
          return call(body.setSelectedDataAsync, body, [html, { coercionType: Office.CoercionType.Html }])
            .then(function () { return "html"; });
        }
        return call(body.setSelectedDataAsync, body, [text, { coercionType: Office.CoercionType.Text }])
          .then(function () { return "text"; });
      });
    },

    onItemChanged: function (handler) {
      var mailbox = office().context.mailbox;
      if (typeof mailbox.addHandlerAsync === "function" && office().EventType.ItemChanged) {
        mailbox.addHandlerAsync(office().EventType.ItemChanged, handler);
      }
    },

    openDialog: function (url) {
      var Office = office();
      return new Promise(function (resolve, reject) {
        Office.context.ui.displayDialogAsync(url, { height: 60, width: 30 }, function (result) {
          if (result.status !== Office.AsyncResultStatus.Succeeded) {
            reject(new Error((result.error && result.error.message) || "Outlook could not open the sign-in window."));
            return;
          }
          var dialog = result.value;
          dialog.addEventHandler(Office.EventType.DialogMessageReceived, function (arg) {
            // `origin` is there from DialogOrigin 1.1 on: a message from elsewhere is ignored.
            if (arg.origin && arg.origin !== window.location.origin) {
              return;
            }
            dialog.close();
            resolve(arg.message);
          });
          dialog.addEventHandler(Office.EventType.DialogEventReceived, function () {
            reject(new Error("The sign-in window was closed before you signed in."));
          });
        });
      });
    },

    messageParent: function (message) {
      office().context.ui.messageParent(message, { targetOrigin: window.location.origin });
    },
  };

  window.SightlineOffice = adapter;
})();
