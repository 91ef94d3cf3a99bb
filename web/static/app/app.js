// Sightline web app: the rich-text editor, the live preview and small form helpers.
// Every form works without this file; it only makes them nicer.
(function () {
  "use strict";

  function csrf(form) {
    var field = form.querySelector("input[name=csrf_token]");
    return field ? field.value : "";
  }

  // -- the rich-text editor: a contenteditable div kept in sync with the form's textarea --
  function setupEditor(box) {
    var field = box.parentNode;
    var textarea = field.querySelector("textarea[name=body_html]");
    var rich = box.querySelector(".rich");
    if (!textarea || !rich || !document.execCommand) return null;
    // The server sanitized the body; DOMParser builds it inert before it joins the page.
    var parsed = new DOMParser().parseFromString(textarea.value, "text/html");
    while (parsed.body.firstChild) rich.appendChild(parsed.body.firstChild);
    document.execCommand("defaultParagraphSeparator", false, "p");
    if (!rich.firstElementChild) {  // typing starts inside a paragraph, as emails expect
      var first = document.createElement("p");
      first.textContent = rich.textContent;
      if (!first.textContent) first.appendChild(document.createElement("br"));
      rich.textContent = "";
      rich.appendChild(first);
    }
    box.hidden = false;
    textarea.hidden = true;
    textarea.removeAttribute("autofocus");
    var sync = function () { textarea.value = rich.innerHTML; };
    rich.addEventListener("input", sync);
    // Toolbar controls take the focus: remember where the caret was, to put it back.
    var saved = null;
    var remember = function () {
      var selection = window.getSelection();
      if (selection.rangeCount && rich.contains(selection.anchorNode)) saved = selection.getRangeAt(0).cloneRange();
    };
    ["keyup", "mouseup", "input", "blur"].forEach(function (name) { rich.addEventListener(name, remember); });
    var restore = function () {
      rich.focus();
      if (!saved) return;
      var selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(saved);
    };
    box.querySelectorAll("button[data-command]").forEach(function (button) {
      button.addEventListener("mousedown", function (e) { e.preventDefault(); });
      button.addEventListener("click", function () {
        var command = button.dataset.command;
        restore();
        if (command === "createLink") {
          var url = window.prompt("Link to (https://…)", "https://");
          if (!url || !/^(https?:\/\/|mailto:)/i.test(url)) return;
          document.execCommand("createLink", false, url);
        } else {
          document.execCommand(command, false, null);
        }
        sync();
        rich.dispatchEvent(new Event("input", { bubbles: true }));
      });
    });
    var picker = box.querySelector("[data-insert-placeholder]");
    if (picker) {
      picker.addEventListener("change", function () {
        if (!picker.value) return;
        restore();
        document.execCommand("insertText", false, "{{" + picker.value + "}}");
        picker.value = "";
        sync();
        rich.dispatchEvent(new Event("input", { bubbles: true }));
      });
    }
    document.addEventListener("selectionchange", function () {
      box.querySelectorAll("button[data-command=bold],button[data-command=italic],button[data-command=underline]")
        .forEach(function (b) { b.setAttribute("aria-pressed", String(document.queryCommandState(b.dataset.command))); });
    });
    if (field.classList.contains("invalid") && !document.querySelector("[autofocus]")) rich.focus();
    if (textarea.getAttribute("aria-invalid") === "true" && document.activeElement === document.body) rich.focus();
    var form = textarea.form;
    if (form) form.addEventListener("submit", sync);
    return rich;
  }

  // -- the live preview: the form's subject and body filled in by the server --
  function setupPreview(form, panel) {
    var url = panel.dataset.preview;
    var frame = panel.querySelector("iframe");
    var subject = panel.querySelector("#preview-subject");
    var problems = panel.querySelector("#preview-problems");
    var timer = null;
    var sequence = 0;
    function refresh() {
      var data = new FormData(form);
      data.delete("attachments");
      var mine = ++sequence;
      fetch(url, { method: "POST", body: data, credentials: "same-origin",
                   headers: { "X-CSRF-Token": csrf(form) } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (result) {
          if (!result || mine !== sequence) return;
          frame.srcdoc = result.document;
          subject.textContent = result.subject || "(no subject)";
          problems.textContent = "";
          result.problems.forEach(function (text) {
            var li = document.createElement("li");
            li.textContent = text;
            problems.appendChild(li);
          });
        })
        .catch(function () { /* the preview button still works */ });
    }
    function later() { clearTimeout(timer); timer = setTimeout(refresh, 400); }
    form.addEventListener("input", later);
    form.addEventListener("change", later);
  }

  // -- sending later: the browser's time zone travels with the chosen time --
  function setupSchedule(form) {
    var offset = form.querySelector("[data-tz-offset]");
    if (!offset) return;
    var hint = document.getElementById(offset.dataset.tzHint);
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (hint && zone) hint.textContent = "In your time zone (" + zone + ").";
    var input = form.querySelector("input[name=send_at]");
    var label = form.querySelector("[data-send-label]");
    var box = form.querySelector(".send-at");
    function update() {
      var later = form.querySelector("input[name=when][value=later]");
      if (label) label.textContent = later && later.checked ? "Schedule" : "Send";
      if (box) box.hidden = !(later && later.checked);
      if (input && input.value) offset.value = String(new Date(input.value).getTimezoneOffset());
      else offset.value = String(new Date().getTimezoneOffset());
    }
    form.addEventListener("change", update);
    form.addEventListener("submit", update);
    update();
  }

  // -- attachments: say it is too large before uploading it --
  function setupAttachments(form) {
    var input = form.querySelector("input[type=file][name=attachments]");
    var limit = Number(form.dataset.attachmentsLimit || 0) * 1024 * 1024;
    if (!input || !limit) return;
    input.addEventListener("change", function () {
      var total = 0;
      Array.prototype.forEach.call(input.files, function (f) { total += f.size; });
      input.setCustomValidity(total > limit
        ? "Attachments: " + (total / 1048576).toFixed(1) + " MB in all; at most " + form.dataset.attachmentsLimit + " MB."
        : "");
      input.reportValidity();
    });
  }

  document.querySelectorAll("[data-editor]").forEach(setupEditor);
  document.querySelectorAll("form").forEach(function (form) {
    var panel = form.querySelector("[data-preview]");
    if (panel) setupPreview(form, panel);
    setupSchedule(form);
    setupAttachments(form);
    if (form.dataset.confirm) {
      form.addEventListener("submit", function (e) {
        if (!window.confirm(form.dataset.confirm)) e.preventDefault();
      });
    }
  });
})();
