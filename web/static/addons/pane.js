/* What both Outlook task panes share: signing in, calling API v1, and drawing text safely.
 *
 * The pane lives in a frame inside Outlook, where our cookies may never arrive, so it
 * signs in through an Office dialog (a window of our own, where they do: see
 * web/addons/outlook/pages.py) and keeps the add-in token the dialog hands back in
 * this frame's own storage. Every API call sends it as a bearer; a 401 forgets it and
 * shows "Sign in" again. Office.js is reached only through `window.SightlineOffice`
 * (office-adapter.js). Text from the server is only ever set with textContent.
 *
 * A page script calls `SightlinePane.start(function (ctx) { ... })`: once Office is
 * ready and the person is signed in, with ctx = {mode, api, show, fail, el}.
 */
(function () {
  "use strict";

  var STORAGE_KEY = "sightline.outlook.token";
  var memory = null; // when the frame may not use storage at all
  var office = window.SightlineOffice;

  function stored() {
    try {
      return window.localStorage.getItem(STORAGE_KEY) || memory;
    } catch (error) {
      return memory;
    }
  }

  function keep(token) {
    memory = token;
    try {
      if (token) {
        window.localStorage.setItem(STORAGE_KEY, token);
      } else {
        window.localStorage.removeItem(STORAGE_KEY);
      }
    } catch (error) {
      /* storage blocked: the token lives as long as the pane */
    }
  }

  function byId(id) {
    return document.getElementById(id);
  }

  function el(tag, attributes, text) {
    var node = document.createElement(tag);
    Object.keys(attributes || {}).forEach(function (name) {
      node.setAttribute(name, attributes[name]);
    });
    if (text !== undefined && text !== null) {
      node.textContent = String(text);
    }
    return node;
  }

  function status(text) {
    var node = byId("pane-status");
    node.textContent = text || "";
    node.hidden = !text;
  }

  function show(id, text) {
    var node = byId(id);
    node.textContent = text;
    node.hidden = !text;
  }

  function SignedOut(message) {
    this.message = message;
  }

  function api(method, path, body) {
    var token = stored();
    if (!token) {
      return Promise.reject(new SignedOut("Sign in to Sightline first."));
    }
    var options = { method: method, headers: { Authorization: "Bearer " + token } };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch("/api/v1" + path, options).then(function (response) {
      if (response.status === 401) {
        keep(null);
        throw new SignedOut("Your sign-in ended. Sign in again.");
      }
      if (response.status === 204) {
        return null;
      }
      return response.json().then(function (data) {
        if (!response.ok) {
          var error = (data && data.error) || {};
          throw new Error(error.message || "Sightline answered " + response.status + ".");
        }
        return data;
      });
    });
  }

  function randomState() {
    var bytes = new Uint8Array(18);
    window.crypto.getRandomValues(bytes);
    return btoa(String.fromCharCode.apply(null, bytes)).replace(/\+/g, "-").replace(/\//g, "_");
  }

  function signIn() {
    var state = randomState();
    var url = window.location.origin + "/addons/outlook/signin?state=" + encodeURIComponent(state);
    return office.openDialog(url).then(function (message) {
      var answer = JSON.parse(message);
      if (!answer || answer.state !== state || typeof answer.token !== "string") {
        throw new Error("That sign-in was not the one this pane asked for. Try again.");
      }
      keep(answer.token);
    });
  }

  function showSignIn(message) {
    byId("pane-content").hidden = true;
    byId("pane-user").hidden = true;
    byId("pane-signout").hidden = true;
    byId("pane-signin").hidden = false;
    show("pane-signin-error", message || "");
    status("");
  }

  function signOut() {
    var done = function () {
      keep(null);
      showSignIn("You are signed out of Sightline in Outlook.");
    };
    api("DELETE", "/outlook/session").then(done, done);
  }

  window.SightlinePane = {
    start: function (onSignedIn) {
      var mode = "none";
      var failed = function (error) {
        if (error instanceof SignedOut) {
          showSignIn(error.message);
        } else {
          status(error.message || String(error));
        }
      };
      var ctx = {
        api: api,
        el: el,
        show: show,
        status: status,
        fail: failed,
        signedOut: function (error) { return error instanceof SignedOut; },
        get mode() { return mode; },
      };
      var enter = function () {
        if (!stored()) {
          showSignIn("");
          return;
        }
        status("Loading…");
        api("GET", "/outlook/session").then(function (me) {
          byId("pane-signin").hidden = true;
          byId("pane-user").textContent = me.email;
          byId("pane-user").hidden = false;
          byId("pane-signout").hidden = false;
          byId("pane-content").hidden = false;
          status("");
          return onSignedIn(ctx);
        }).catch(failed);
      };
      byId("pane-signin-button").addEventListener("click", function () {
        show("pane-signin-error", "");
        signIn().then(enter, function (error) { show("pane-signin-error", error.message); });
      });
      byId("pane-signout").addEventListener("click", signOut);
      office.ready().then(function (info) {
        mode = info.mode;
        enter();
      }).catch(failed);
    },
  };
})();
