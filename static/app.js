// Keysmith page behaviour that htmx does not cover: the dialog, copy
// buttons, inline rename keys, implied scopes, the expiry date field, tabs
// and error messages. Everything here is progressive: without JavaScript
// the same pages work as plain forms and links.
(function () {
  "use strict";

  function dialog() {
    return document.getElementById("token-dialog");
  }

  function closeDialog() {
    var d = dialog();
    if (!d) return;
    if (d.open) d.close();
  }

  // Opening: htmx has just put content into the dialog's body.
  function afterSwap(event) {
    var target = event.detail.target;
    if (target && target.id === "dialog-body") {
      var d = dialog();
      if (d && !d.open) d.showModal();
      // A failed submit: the first invalid field that can be seen, so the
      // summary (role=alert) is heard and the fix is where focus is.
      var invalid = Array.prototype.filter.call(
        target.querySelectorAll("[aria-invalid=true]"),
        function (el) { return el.offsetParent !== null; }
      )[0];
      var focus = invalid || target.querySelector("[autofocus], input:not([type=hidden]), button");
      if (focus) focus.focus();
    }
    var rename = target && target.querySelector && target.querySelector("[data-rename-input]");
    if (rename) {
      rename.focus();
      rename.select();
    }
    init(target || document);
  }

  // Whatever the dialog held (the plaintext token included) leaves the page
  // when it closes. Focus goes back to what opened it (a row's Revoke), or
  // to New token; a pending swap (a revoke) places it itself once settled.
  function onDialogClose() {
    var body = document.getElementById("dialog-body");
    if (body) body.innerHTML = "";
    if (pendingFocus) return;
    var opener = (dialogOpener && document.getElementById(dialogOpener)) ||
      document.getElementById("new-token");
    dialogOpener = null;
    if (opener) opener.focus();
  }

  // ---- Focus after a swap (settings page token list) ----------------------
  // htmx replaces the list after a toggle or a revoke, and a label after a
  // rename; the element that had focus is gone. Before the request we note
  // which control acted and what comes next, and put focus back on the
  // same control (same id in the new list), or the next row's, or the
  // section heading: never <body>.
  var pendingFocus = null;
  var dialogOpener = null;

  function rowOf(el) {
    return el && el.closest ? el.closest("tr.token-row") : null;
  }

  function focusCandidates(el) {
    var ids = [];
    if (el && el.id) ids.push(el.id);
    var row = rowOf(el);
    if (row) {
      var rowId = row.id.replace("token-", "");
      ids.push("switch-" + rowId, "label-" + rowId, "revoke-" + rowId);
      var next = row.nextElementSibling || row.previousElementSibling;
      if (next && next.id) {
        var nextId = next.id.replace("token-", "");
        ids.push("switch-" + nextId, "revoke-" + nextId, "label-" + nextId);
      }
    }
    ids.push("enabled-heading", "disabled-heading", "new-token");
    return ids;
  }

  function onBeforeRequest(event) {
    var elt = event.detail.elt;
    if (!elt || !elt.closest) return;
    // A revoke confirmed in the dialog acts on the row that opened it.
    if (elt.closest("#token-dialog") && dialogOpener) {
      pendingFocus = focusCandidates(document.getElementById(dialogOpener));
      return;
    }
    if (!elt.closest("#token-list")) return;
    if (elt.matches("[data-opens-dialog]")) {
      dialogOpener = elt.id || null;
      return;
    }
    if (elt.matches(".label-edit, .finder, .pager a")) return; // they place focus themselves
    var active = document.activeElement;
    var acted = active && elt.contains(active) ? active : elt.querySelector("button, a") || elt;
    if (elt.matches(".rename-form")) {
      // Saved: the label link comes back in the same place.
      acted = { id: "label-" + elt.action.split("/").slice(-2, -1)[0], closest: function () { return null; } };
    } else if (elt.matches("[data-rename-cancel]")) {
      acted = { id: "label-" + elt.getAttribute("hx-get").split("/").slice(-2, -1)[0], closest: function () { return null; } };
    }
    pendingFocus = focusCandidates(acted);
  }

  function onAfterSettle() {
    if (!pendingFocus) return;
    var ids = pendingFocus;
    if (dialog() && dialog().open) return; // the dialog keeps focus
    var active = document.activeElement;
    if (active && active.matches && active.matches("[data-rename-input]")) {
      pendingFocus = null; // a rename error: the field keeps focus
      return;
    }
    pendingFocus = null;
    dialogOpener = null;
    for (var i = 0; i < ids.length; i++) {
      var el = document.getElementById(ids[i]);
      if (el && el.offsetParent !== null) {
        if (el.matches("h2")) el.setAttribute("tabindex", "-1");
        el.focus();
        return;
      }
    }
  }

  function copyText(button, text) {
    function done(label) {
      var original = button.dataset.label || button.textContent;
      button.dataset.label = original;
      button.textContent = label;
      button.classList.add("copied");
      setTimeout(function () {
        button.textContent = original;
        button.classList.remove("copied");
      }, 2000);
    }
    function fallback() {
      var source = button.dataset.copyFrom && document.querySelector(button.dataset.copyFrom);
      if (source && source.select) {
        source.focus();
        source.select();
      } else if (source) {
        var range = document.createRange();
        range.selectNodeContents(source);
        var sel = window.getSelection();
        sel.removeAllRanges();
        sel.addRange(range);
      }
      done("Press Ctrl+C");
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { done("Copied"); }, fallback);
    } else {
      fallback();
    }
  }

  function onClick(event) {
    var el = event.target.closest("button, a");
    if (!el) return;
    if (el.matches("[data-close-dialog]")) {
      event.preventDefault();
      closeDialog();
      return;
    }
    if (el.matches("[data-copy]")) {
      copyText(el, el.dataset.copy);
      return;
    }
    if (el.matches("[data-copy-from]")) {
      var source = document.querySelector(el.dataset.copyFrom);
      if (source) copyText(el, source.value !== undefined && source.tagName === "INPUT" ? source.value : source.textContent);
      return;
    }
    if (el.matches("[role=tab]")) {
      selectTab(el);
    }
  }

  function onKeydown(event) {
    var input = event.target;
    if (event.key === "Escape" && input.matches && input.matches("[data-rename-input]")) {
      // Cancel the inline rename; keep the dialog (if any) open.
      event.preventDefault();
      event.stopPropagation();
      var cell = input.closest(".token-label");
      var cancel = cell && cell.querySelector("[data-rename-cancel]");
      if (cancel) cancel.click();
    }
  }

  function onChange(event) {
    var el = event.target;
    if (el.matches("[data-autosubmit]") && el.form) {
      el.form.requestSubmit ? el.form.requestSubmit() : el.form.submit();
    }
    if (el.matches("input[name=scopes]")) updateImplied(el.form);
    if (el.matches("[data-expiry-select]")) updateExpiry(el.form);
  }

  // Checking a scope shows the scopes it includes as checked and "included".
  function updateImplied(form) {
    if (!form) return;
    var boxes = form.querySelectorAll("input[name=scopes]");
    var implied = {};
    boxes.forEach(function (box) {
      if (box.checked && !box.disabled) {
        (box.dataset.implies || "").split(" ").forEach(function (n) { if (n) implied[n] = true; });
      }
    });
    boxes.forEach(function (box) {
      var note = box.parentElement.querySelector(".implied-note");
      if (implied[box.value]) {
        if (!box.disabled) box.dataset.prev = box.checked ? "1" : "";
        box.checked = true;
        box.disabled = true;
        if (note) note.hidden = false;
      } else if (box.disabled) {
        box.disabled = false;
        box.checked = box.dataset.prev === "1";
        if (note) note.hidden = true;
      }
    });
  }

  function updateExpiry(form) {
    if (!form) return;
    var select = form.querySelector("[data-expiry-select]");
    var date = form.querySelector("[data-expiry-date]");
    if (!select || !date) return;
    var custom = select.value === "custom";
    date.hidden = !custom;
    var label = form.querySelector("label[for=" + date.id + "]");
    if (label) label.hidden = !custom;
    if (custom && document.activeElement === select) date.focus();
  }

  function selectTab(tab) {
    var tabs = tab.closest("[data-tabs]");
    tabs.querySelectorAll("[role=tab]").forEach(function (t) {
      var selected = t === tab;
      t.setAttribute("aria-selected", selected ? "true" : "false");
      var panel = document.getElementById(t.getAttribute("aria-controls"));
      if (panel) panel.hidden = !selected;
    });
  }

  function init(root) {
    root.querySelectorAll("[data-tabs]").forEach(function (tabs) {
      var first = tabs.querySelector("[role=tab][aria-selected=true]") || tabs.querySelector("[role=tab]");
      if (first) selectTab(first);
    });
    root.querySelectorAll("form").forEach(function (form) {
      if (form.querySelector("input[name=scopes]")) updateImplied(form);
      if (form.querySelector("[data-expiry-select]")) updateExpiry(form);
    });
  }

  // A failed htmx request says so where the user is looking.
  function onResponseError(event) {
    pendingFocus = null; // nothing was swapped: focus is where it was
    var flash = document.getElementById("flash");
    if (!flash) return;
    var xhr = event.detail.xhr;
    var text = xhr && xhr.status === 403 && xhr.responseText && xhr.responseText.length < 2000
      ? xhr.responseText
      : "";
    flash.innerHTML = "";
    var div = document.createElement("div");
    div.className = "alert alert-error";
    div.setAttribute("role", "alert");
    if (text) {
      var tmp = document.createElement("div");
      tmp.innerHTML = text;
      div.textContent = tmp.textContent.trim();
    } else if (xhr && xhr.status === 0) {
      div.textContent = "Keysmith could not be reached. Check your connection and try again.";
    } else {
      div.textContent = "That did not work (" + (xhr ? xhr.status : "?") + "). Reload the page and try again.";
    }
    flash.appendChild(div);
  }

  function onAfterRequest(event) {
    var form = event.detail.elt;
    if (event.detail.successful && form && form.matches && form.matches("[data-close-dialog-on-success]")) {
      closeDialog();
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.addEventListener("click", onClick);
    document.addEventListener("keydown", onKeydown, true);
    document.addEventListener("change", onChange);
    document.body.addEventListener("htmx:afterSwap", afterSwap);
    document.body.addEventListener("htmx:afterRequest", onAfterRequest);
    document.body.addEventListener("htmx:beforeRequest", onBeforeRequest);
    document.body.addEventListener("htmx:afterSettle", onAfterSettle);
    document.body.addEventListener("htmx:responseError", onResponseError);
    var d = dialog();
    if (d) d.addEventListener("close", onDialogClose);
    init(document);
  });
})();
