// shoal web UI: reloads each live region from its server-rendered fragment every 2 s.
// No framework and no build step; the pages work without it (they just do not update).
"use strict";
(function () {
  var PERIOD_MS = 2000;
  function refresh(region) {
    // Leave the region alone while the user types in it (a scale field, say).
    if (region.contains(document.activeElement) && document.activeElement !== document.body) {
      return;
    }
    var logs = region.querySelector("pre#logs");
    var atBottom = logs && logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
    fetch(region.dataset.src, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (res) {
        if (res.status === 401) {
          window.location.href = "/login";
          return null;
        }
        return res.text();
      })
      .then(function (html) {
        if (html === null || html === undefined) return;
        if (region.contains(document.activeElement) && document.activeElement !== document.body) {
          return;
        }
        region.innerHTML = html;
        var fresh = region.querySelector("pre#logs");
        if (fresh && atBottom) fresh.scrollTop = fresh.scrollHeight;
      })
      .catch(function () { /* the node is unreachable for now: try again next time */ });
  }
  function start() {
    var regions = document.querySelectorAll("div.live[data-src]");
    Array.prototype.forEach.call(regions, function (region) {
      var logs = region.querySelector("pre#logs");
      if (logs) logs.scrollTop = logs.scrollHeight;
      setInterval(function () {
        if (!document.hidden) refresh(region);
      }, PERIOD_MS);
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
