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
    var opener = (dialogOpener && document.querySelector(dialogOpener)) ||
      document.getElementById("new-token");
    dialogOpener = null;
    if (opener) opener.focus();
  }

  // ---- Focus after a swap (settings page token list) ----------------------
  // htmx replaces the list after a toggle or a revoke, and a label after a
  // rename; the element that had focus is gone. Before the request we note
  // which control acted and what comes next, and put focus back on the
  // same control (found again by its row and its kind in the new list), or
  // the next row's, or the section heading: never <body>. Controls are
  // kept as CSS selectors: a row's switch and links carry no ids.
  var pendingFocus = null;
  var dialogOpener = null;
  var lastSubmitter = null;

  function rowOf(el) {
    return el && el.closest ? el.closest("tr.token-row") : null;
  }

  // Finds `el` again after a swap: by its id, or as "this row's switch",
  // "this row's link to …/revoke" (a row's links differ by their URL).
  function selectorOf(el) {
    if (!el) return null;
    if (el.id) return "#" + el.id;
    var row = rowOf(el);
    if (!row) return null;
    if (el.matches("[role=switch]")) return "#" + row.id + " [role=switch]";
    var href = el.getAttribute("href");
    return href ? "#" + row.id + " a[href=\"" + href + "\"]" : null;
  }

  function rowControls(row) {
    var rowId = row.id.replace("token-", "");
    return ["#" + row.id + " [role=switch]", "#label-" + rowId, "#" + row.id + " a.btn-danger"];
  }

  function focusCandidates(el) {
    var found = [];
    var own = selectorOf(el);
    if (own) found.push(own);
    var row = rowOf(el);
    if (row) {
      found = found.concat(rowControls(row));
      var next = row.nextElementSibling || row.previousElementSibling;
      if (next && next.id) found = found.concat(rowControls(next));
    }
    return found.concat(["#enabled-heading", "#disabled-heading", "#new-token"]);
  }

  // A row's links other than its label open in the dialog (the Team page's
  // and the New token button say so with data-opens-dialog).
  function opensDialog(el) {
    return el.matches("[data-opens-dialog]") ||
      (el.matches("a[href]") && !!rowOf(el) && !el.closest(".token-label"));
  }

  function onBeforeRequest(event) {
    var elt = event.detail.elt;
    if (!elt || !elt.closest) return;
    // A revoke confirmed in the dialog acts on the row that opened it. Any
    // other form in the dialog (a regenerate) keeps the dialog open: focus
    // goes back to its opener when the dialog closes.
    if (elt.closest("#token-dialog") && dialogOpener) {
      if (elt.matches("[data-close-dialog-on-success]")) {
        pendingFocus = focusCandidates(document.getElementById(dialogOpener));
      }
      return;
    }
    if (!elt.closest("#token-list")) return;
    if (opensDialog(elt)) {
      dialogOpener = selectorOf(elt);
      return;
    }
    if (elt.matches(".token-label > a, .finder, .pager a")) return; // they place focus themselves
    var active = document.activeElement;
    // A row's switch sits outside the shared form it submits (form=).
    var submitter = active && active.form === elt ? active
      : (lastSubmitter && lastSubmitter.form === elt ? lastSubmitter : null);
    var acted = active && elt.contains(active) ? active : submitter || elt.querySelector("button, a") || elt;
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
      var el = document.querySelector(ids[i]);
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
      announceCopy(button, label === "Copied" ? "Copied" : "Press Ctrl+C to copy the selected text");
      if (label === "Copied") markCopied(button);
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

  // A token row's links say their URL once (href): htmx fetches the dialog
  // or the inline editor from it. A modified click (new tab) stays a link,
  // and without htmx every one is a plain link to its own page.
  function rowLink(el, event) {
    if (!window.htmx || event.defaultPrevented || event.button > 0 ||
        event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return false;
    if (el.matches("a[hx-get]")) return false;
    if (el.matches(".token-label > a") && rowOf(el)) {
      event.preventDefault();
      htmx.ajax("GET", el.getAttribute("href"), { source: el, target: el.closest(".token-label"), swap: "innerHTML" });
      return true;
    }
    if (el.matches("a") && opensDialog(el)) {
      event.preventDefault();
      htmx.ajax("GET", el.getAttribute("href"), { source: el, target: "#dialog-body", swap: "innerHTML" });
      return true;
    }
    return false;
  }

  function onClick(event) {
    if (event.target === dialog() && onBackdropClick(event)) return;
    var el = event.target.closest("button, a");
    if (!el) return;
    if (el.matches("button[form]")) lastSubmitter = el;
    if (rowLink(el, event)) return;
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
    if (el.matches("[data-discard-token]")) {
      closeDialog();
      return;
    }
    if (el.matches("[data-keep-token]")) {
      keepToken();
      return;
    }
    if (el.matches("[role=tab]")) {
      selectTab(el, false);
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

  // ---- What a token row leaves to the script -----------------------------
  // The HTML of a row is kept lean (see partials/tokens/row.html): the Copy
  // button after the prefix and the exact times as tooltips are added here,
  // for the page and for every swapped-in list. Without JavaScript there
  // is no Copy button (it could not copy) and the times show as written.
  function exactTime(iso) {
    var d = new Date(iso);
    if (isNaN(d.getTime())) return iso;
    function two(n) { return (n < 10 ? "0" : "") + n; }
    // As the server writes it elsewhere (web::format::exact): 2026-11-23 17:52 UTC.
    return d.getUTCFullYear() + "-" + two(d.getUTCMonth() + 1) + "-" + two(d.getUTCDate()) +
      " " + two(d.getUTCHours()) + ":" + two(d.getUTCMinutes()) + " UTC";
  }

  function enhanceRows(root) {
    if (!root || !root.querySelectorAll) return;
    root.querySelectorAll(".token-meta > code").forEach(function (code) {
      var row = rowOf(code);
      var cell = document.createElement("span");
      cell.className = "prefix-cell";
      code.parentNode.insertBefore(cell, code);
      cell.appendChild(code);
      var button = document.createElement("button");
      button.type = "button";
      button.className = "copy-btn";
      button.dataset.copy = code.textContent.replace(/…$/, "");
      button.textContent = "Copy";
      // "Copy the prefix of token 42", from the label as it is now.
      if (row) button.setAttribute("aria-labelledby", "n-copy label-" + row.id.replace("token-", ""));
      cell.appendChild(document.createTextNode(" "));
      cell.appendChild(button);
    });
    root.querySelectorAll(".tokens time[datetime]:not([title])").forEach(function (t) {
      t.title = exactTime(t.getAttribute("datetime"));
    });
  }

  function init(root) {
    enhanceRows(root);
    root.querySelectorAll("[data-tabs]").forEach(function (tabs) {
      var first = tabs.querySelector("[role=tab][aria-selected=true]") || tabs.querySelector("[role=tab]");
      if (first) selectTab(first, false);
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
    // Every swap, out-of-band ones included (the list after a create).
    document.body.addEventListener("htmx:load", function (event) { enhanceRows(event.detail.elt); });
    document.addEventListener("keydown", onShownOnceKeydown, true);
    document.addEventListener("keydown", onTabKeydown);
    document.addEventListener("copy", onCopyEvent);
    var d = dialog();
    if (d) {
      d.addEventListener("close", onDialogClose);
      d.addEventListener("cancel", onDialogCancel);
    }
    init(document);
  });

  // ---- The shown-once dialog ---------------------------------------------
  // The new token exists only in this dialog. Until something was copied
  // from it (the token or a command holding it), Escape and the backdrop do
  // not close it: they ask first. "I have copied it" closes it as it says.

  function shownOnce() {
    var d = dialog();
    return d && d.open ? d.querySelector("[data-shown-once]") : null;
  }

  function markCopied(el) {
    var created = el.closest && el.closest("[data-shown-once]");
    if (!created) return;
    created.dataset.copied = "true";
    var confirm = created.querySelector("#discard-confirm");
    if (confirm) confirm.hidden = true;
  }

  function announceCopy(el, message) {
    var created = el.closest && el.closest("[data-shown-once]");
    var status = created && created.querySelector("#copy-status");
    if (!status) return;
    // Emptied first, so the same words twice are announced twice.
    status.textContent = "";
    setTimeout(function () { status.textContent = message; }, 50);
  }

  // True when closing now would throw the token away unseen: then the
  // confirmation shows instead and takes the focus.
  function mustConfirm() {
    var created = shownOnce();
    if (!created || created.dataset.copied === "true") return false;
    var confirm = created.querySelector("#discard-confirm");
    if (!confirm) return false;
    confirm.hidden = false;
    var keep = confirm.querySelector("[data-keep-token]");
    if (keep) keep.focus();
    return true;
  }

  function keepToken() {
    var created = shownOnce();
    if (!created) return;
    var confirm = created.querySelector("#discard-confirm");
    if (confirm) confirm.hidden = true;
    var copy = created.querySelector(".plaintext-row .copy-btn");
    if (copy) copy.focus();
  }

  // Escape is stopped on keydown (so the browser never starts closing the
  // dialog); the `cancel` handler covers any other close request.
  function onShownOnceKeydown(event) {
    if (event.key !== "Escape" || !shownOnce()) return;
    var input = event.target;
    if (input.matches && input.matches("[data-rename-input]")) return;
    var created = shownOnce();
    var confirm = created.querySelector("#discard-confirm");
    if (confirm && !confirm.hidden) {
      // Escape on the question means "no, keep it".
      event.preventDefault();
      event.stopPropagation();
      keepToken();
      return;
    }
    if (mustConfirm()) {
      event.preventDefault();
      event.stopPropagation();
    }
  }

  function onDialogCancel(event) {
    if (mustConfirm()) event.preventDefault();
  }

  // A click on a modal dialog's backdrop targets the dialog itself, outside
  // its box.
  function onBackdropClick(event) {
    var d = dialog();
    if (!shownOnce()) return false;
    var box = d.getBoundingClientRect();
    var inside = event.clientX >= box.left && event.clientX <= box.right &&
      event.clientY >= box.top && event.clientY <= box.bottom;
    if (inside) return false;
    if (!mustConfirm()) closeDialog();
    return true;
  }

  // Copying by keyboard (the fallback selects the text) counts as copying.
  function onCopyEvent(event) {
    var created = shownOnce();
    if (created && created.contains(event.target)) {
      markCopied(event.target);
      announceCopy(event.target, "Copied");
    }
  }

  // ---- MCP tabs (WAI-ARIA tabs, automatic activation) ---------------------
  // One tab stop for the tab list (roving tabindex); Left/Right move and
  // wrap, Home/End go to the ends; the selected tab shows its panel.

  function selectTab(tab, focus) {
    var tabs = tab.closest("[data-tabs]");
    tabs.querySelectorAll("[role=tab]").forEach(function (t) {
      var selected = t === tab;
      t.setAttribute("aria-selected", selected ? "true" : "false");
      t.tabIndex = selected ? 0 : -1;
      var panel = document.getElementById(t.getAttribute("aria-controls"));
      if (panel) panel.hidden = !selected;
    });
    if (focus) tab.focus();
  }

  function onTabKeydown(event) {
    var tab = event.target;
    if (!tab.matches || !tab.matches("[role=tab]")) return;
    var all = Array.prototype.slice.call(tab.closest("[role=tablist]").querySelectorAll("[role=tab]"));
    var i = all.indexOf(tab);
    var next = {
      ArrowRight: all[(i + 1) % all.length],
      ArrowLeft: all[(i - 1 + all.length) % all.length],
      Home: all[0],
      End: all[all.length - 1]
    }[event.key];
    if (!next) return;
    event.preventDefault();
    selectTab(next, true);
  }
})();

// ---- Team pages: focus after htmx swaps (team branch) --------------------
// Inside [data-focus-scope], a swap would drop focus to <body>. Before the
// request, remember the control acted on (by id) and its neighbours of the
// same [data-focus-group]; after the swap, focus the first invalid field of
// the new content, else that control again (the new content repeats its
// id), else a neighbour (the control went away, e.g. a revoked token),
// else the new content's heading.
(function () {
  "use strict";
  var pending = null;

  function remember(event) {
    var elt = event.detail.elt;
    if (!elt || !elt.closest || !elt.closest("[data-focus-scope]")) return;
    var active = document.activeElement;
    var ids = [];
    if (active && active.id && elt.contains(active)) ids.push(active.id);
    else if (elt.id) ids.push(elt.id);
    var group = active && active.dataset && active.dataset.focusGroup;
    if (group) {
      var all = Array.prototype.slice.call(document.querySelectorAll("[data-focus-group='" + group + "']"));
      var at = all.indexOf(active);
      [all[at + 1], all[at - 1]].forEach(function (n) { if (n && n.id) ids.push(n.id); });
    }
    var target = event.detail.target;
    pending = { ids: ids, target: target, targetId: target && target.id };
  }

  function focusable(el) {
    if (!el.matches("a[href], button, input, select, textarea, [tabindex]")) el.setAttribute("tabindex", "-1");
    el.focus();
  }

  function restore() {
    if (!pending) return;
    var p = pending;
    pending = null;
    // After every part of the answer (out-of-band ones too) is in place.
    setTimeout(function () {
      // An outerHTML swap replaced the target: its successor has its id.
      var target = p.target && p.target.isConnected ? p.target
        : (p.targetId && document.getElementById(p.targetId));
      var invalid = target && target.querySelector("[aria-invalid=true]");
      if (invalid) return invalid.focus();
      for (var i = 0; i < p.ids.length; i++) {
        var el = document.getElementById(p.ids[i]);
        if (el && !el.disabled) return el.focus();
      }
      var scope = target || document.querySelector("[data-focus-scope]");
      var heading = scope && (scope.matches("h1, h2") ? scope : scope.querySelector("h2, h1"));
      if (heading) focusable(heading);
    }, 0);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.body.addEventListener("htmx:beforeRequest", remember);
    document.body.addEventListener("htmx:afterSettle", restore);
  });
})();
