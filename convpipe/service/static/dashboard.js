// Live updates of the convpipe dashboard: every element with data-refresh="URL" polls that URL once a
// second and updates, in place, the parts (data-part="...") whose HTML changed, so a button or link that did
// not change is never replaced under the pointer. The pages are complete without this script.
(function () {
  "use strict";
  var PERIOD_MS = 1000;

  function update(container, html) {
    var t = document.createElement("template");
    t.innerHTML = html;
    var fresh = t.content.querySelectorAll("[data-part]");
    var old = container.querySelectorAll("[data-part]");
    var same = fresh.length === old.length;
    for (var i = 0; same && i < fresh.length; i++) {
      same = fresh[i].getAttribute("data-part") === old[i].getAttribute("data-part");
    }
    if (!same) {  // parts came or went (a new job, a preview): the whole region anew
      container.replaceChildren(t.content);
      return;
    }
    for (var j = 0; j < fresh.length; j++) {
      if (fresh[j].outerHTML !== old[j].outerHTML) {
        old[j].replaceWith(fresh[j]);
      }
    }
  }

  function follow(container) {
    var url = container.getAttribute("data-refresh");
    if (!url) {
      return;
    }
    function later() {
      window.setTimeout(tick, PERIOD_MS);
    }
    function tick() {
      if (document.hidden) {
        later();
        return;
      }
      fetch(url, {credentials: "same-origin", cache: "no-store", headers: {"Accept": "text/html"}})
        .then(function (r) {
          if (r.status === 401) {  // the session ended: the page shows the sign-in form
            window.location.reload();
            return null;
          }
          if (!r.ok) {
            later();
            return null;
          }
          var stop = r.headers.get("X-Refresh") === "stop";
          return r.text().then(function (html) {
            update(container, html);
            container.setAttribute("data-updated", String(Date.now()));
            if (!stop) {
              later();
            }
          });
        })
        .catch(later);
    }
    later();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var live = document.querySelectorAll("[data-refresh]");
    for (var i = 0; i < live.length; i++) {
      follow(live[i]);
    }
  });
})();
