// The guardian's page, live: every few seconds fetch this page again and swap in its [data-live] parts;
// when what the page offers changed (body data-stage), reload it unless the guardian is typing.
// A dropped file lands in the verify form's file input. No page needs this script to be read.
(function () {
  "use strict";
  var EVERY = 2000;

  function typing() {
    var inputs = document.querySelectorAll("input[type=password], input[type=text], input[type=file]");
    for (var i = 0; i < inputs.length; i++) {
      if (inputs[i].value) return true;
    }
    return false;
  }

  function poll() {
    fetch(location.pathname, {credentials: "same-origin", cache: "no-store", redirect: "error"})
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (text) {
        if (text === null) return;
        var fresh = new DOMParser().parseFromString(text, "text/html");
        if (fresh.body.dataset.stage !== document.body.dataset.stage) {
          if (!typing()) location.replace(location.pathname);
          return;
        }
        document.querySelectorAll("[data-live]").forEach(function (part) {
          var now = fresh.getElementById(part.id);
          if (now) part.replaceWith(document.importNode(now, true));
        });
      })
      .catch(function () {})
      .then(function () { setTimeout(poll, EVERY); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    // The download answers with the file, so the page stays: empty the passphrases once it is sent.
    document.querySelectorAll("form[data-download]").forEach(function (form) {
      form.addEventListener("submit", function () { setTimeout(function () { form.reset(); }, 500); });
    });
    document.querySelectorAll("form.drop").forEach(function (form) {
      var input = form.querySelector("input[type=file]");
      form.addEventListener("dragover", function (e) { e.preventDefault(); form.classList.add("over"); });
      form.addEventListener("dragleave", function () { form.classList.remove("over"); });
      form.addEventListener("drop", function (e) {
        e.preventDefault();
        form.classList.remove("over");
        if (e.dataTransfer.files.length) input.files = e.dataTransfer.files;
      });
    });
    setTimeout(poll, EVERY);
  });
})();
