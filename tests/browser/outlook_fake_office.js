/* A fake of Microsoft's Office.js for the Outlook add-in's browser tests.
 *
 * Installed before any page script (Playwright's add_init_script, on every page of the
 * context, the sign-in popup too), it answers what web/static/addons/office-adapter.js
 * asks, in Office's callback shapes ({status, value, error}), from `window.__fakeOutlook`:
 *   {mode: "read"|"compose", me, from, to, cc, bcc, bodyType}
 * and records what the add-in did in `window.__officeCalls` (setSelectedDataAsync with
 * its data and coercion type, displayDialogAsync, messageParent with its target origin).
 * `displayDialogAsync` opens the URL in a real popup window; `messageParent` there posts
 * to the opener, addressed to the target origin it was given, as Office delivers it.
 */
(function () {
  "use strict";

  var config = window.__fakeOutlook || {};
  var calls = (window.__officeCalls = []);
  var SUCCEEDED = "succeeded";

  function answer(callback, value) {
    setTimeout(function () { callback({ status: SUCCEEDED, value: value }); }, 0);
  }

  function details(person) {
    return { displayName: person.name || "", emailAddress: person.email };
  }

  var body = {
    content: "<p>Hello,</p>",
    getTypeAsync: function (callback) { answer(callback, config.bodyType || "html"); },
    setSelectedDataAsync: function (data, options, callback) {
      calls.push({ method: "setSelectedDataAsync", data: data, coercionType: options.coercionType });
      body.content += data;
      answer(callback);
    },
  };
  window.__fakeBody = body;

  var properties = {};
  function recipients(list) {
    return { getAsync: function (callback) { answer(callback, (list || []).map(details)); } };
  }

  var item;
  if (config.mode === "compose") {
    item = {
      to: recipients(config.to),
      cc: recipients(config.cc),
      bcc: recipients(config.bcc),
      body: body,
      loadCustomPropertiesAsync: function (callback) {
        answer(callback, {
          get: function (name) { return properties[name]; },
          set: function (name, value) { properties[name] = value; },
          saveAsync: function (done) { answer(done); },
        });
      },
    };
  } else if (config.mode === "read") {
    item = {
      from: details(config.from),
      to: (config.to || []).map(details),
      cc: (config.cc || []).map(details),
      internetMessageId: "<read-1@prospect.test>",
      conversationId: "conversation-1",
    };
  }

  var EventType = {
    DialogMessageReceived: "dialogMessageReceived",
    DialogEventReceived: "dialogEventReceived",
    ItemChanged: "olkItemSelectedChanged",
  };

  window.Office = {
    AsyncResultStatus: { Succeeded: SUCCEEDED, Failed: "failed" },
    CoercionType: { Html: "html", Text: "text" },
    EventType: EventType,
    onReady: function () { return Promise.resolve({ host: "Outlook", platform: "OfficeOnline" }); },
    context: {
      mailbox: {
        item: item,
        userProfile: { emailAddress: config.me || "" },
        addHandlerAsync: function (type) { calls.push({ method: "addHandlerAsync", type: type }); },
      },
      ui: {
        displayDialogAsync: function (url, options, callback) {
          calls.push({ method: "displayDialogAsync", url: url });
          var popup = window.open(url, "officeDialog", "width=480,height=640");
          var handlers = {};
          window.addEventListener("message", function (event) {
            if (event.source !== popup || !event.data || event.data.fakeOffice !== "messageParent") {
              return;
            }
            handlers[EventType.DialogMessageReceived]({ message: event.data.message, origin: event.origin });
          });
          answer(callback, {
            addEventHandler: function (type, handler) { handlers[type] = handler; },
            close: function () { calls.push({ method: "close" }); popup.close(); },
          });
        },
        messageParent: function (message, options) {
          var target = options && options.targetOrigin;
          window.opener.__officeCalls.push({ method: "messageParent", targetOrigin: target });
          window.opener.postMessage({ fakeOffice: "messageParent", message: message }, target || "*");
        },
      },
    },
  };
})();
