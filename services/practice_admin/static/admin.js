// Progressive enhancement only: every page works without this file.
// On the teksten page the preview follows the unsaved form as you type.
(function () {
  "use strict";
  var summary = document.getElementById("error-summary");
  if (summary) { summary.focus(); }
  var form = document.getElementById("texts-form");
  var button = document.getElementById("preview-button");
  if (!form || !button || typeof form.requestSubmit !== "function") { return; }
  var timer = null;
  function refresh() {
    if (timer) { clearTimeout(timer); }
    timer = setTimeout(function () { form.requestSubmit(button); }, 400);
  }
  form.addEventListener("input", refresh);
  form.addEventListener("change", refresh);
  form.requestSubmit(button);
})();
