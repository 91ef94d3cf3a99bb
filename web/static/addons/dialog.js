/* The sign-in dialog's last page: hand the add-in token to the pane that opened it.
 *
 * The token and the pane's nonce are in data attributes (no inline script: the CSP
 * allows none). `SightlineOffice.messageParent` addresses the message to our own
 * origin only, so no other page that managed to open this window can receive it.
 */
(function () {
  "use strict";

  document.addEventListener("DOMContentLoaded", function () {
    var done = document.getElementById("signed-in");
    if (!done) {
      return;
    }
    var status = document.getElementById("dialog-status");
    window.SightlineOffice.ready().then(function () {
      window.SightlineOffice.messageParent(JSON.stringify({
        state: done.getAttribute("data-state"),
        token: done.getAttribute("data-token"),
      }));
      status.textContent = "Signed in. You can close this window.";
    }).catch(function (error) {
      status.textContent = "Open this window from the Sightline pane in Outlook (" + error.message + ").";
    });
  });
})();
