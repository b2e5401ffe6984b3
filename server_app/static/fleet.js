// The fleet table refreshes itself every 2 s from /gateways.json. Text only (textContent): nothing the
// server returns is ever parsed as HTML.
(function () {
  "use strict";
  var table = document.getElementById("fleet");
  if (!table) { return; }
  var source = table.getAttribute("data-source");
  var columns = ["name", "connected", "mode", "applied_revision", "lag", "status", "elements", "agent_version",
                 "address", "last_seen"];

  function cell(key, gw) {
    var td = document.createElement("td");
    if (key === "mode") {
      var badge = document.createElement("span");
      badge.className = "badge " + (gw.mode === "enforce" ? "ok" : "warn");
      badge.textContent = gw.mode;
      td.appendChild(badge);
      if (gw.running_mode && gw.running_mode !== gw.mode) {
        var pending = document.createElement("small");
        pending.className = "muted";
        pending.textContent = " agent still " + gw.running_mode;
        td.appendChild(pending);
      }
    } else if (key === "connected" || key === "status") {
      var span = document.createElement("span");
      var good = key === "connected" ? gw.connected : gw.in_sync;
      span.className = "badge " + (good ? "ok" : (key === "connected" ? "bad" : "warn"));
      span.textContent = key === "connected" ? (good ? "connected" : "disconnected") : gw.status;
      if (key === "status" && gw.not_enforced && gw.not_enforced.count) {
        // What this gateway's own policy refuses, named on hover (text only, as everywhere here).
        span.title = gw.not_enforced.elements.map(function (e) { return e.element + ": " + e.message; }).join("\n");
      }
      td.appendChild(span);
    } else {
      td.textContent = gw[key] === null || gw[key] === undefined ? "" : String(gw[key]);
      if (key === "applied_revision") { td.className = "applied"; }
    }
    return td;
  }

  function render(data) {
    document.getElementById("head-revision").textContent = String(data.revision);
    var tbody = table.tBodies[0];
    var rows = document.createDocumentFragment();
    data.items.forEach(function (gw) {
      var tr = document.createElement("tr");
      tr.setAttribute("data-name", gw.name);
      columns.forEach(function (key) { tr.appendChild(cell(key, gw)); });
      rows.appendChild(tr);
    });
    if (!data.items.length) {
      var tr = document.createElement("tr");
      var td = document.createElement("td");
      td.colSpan = columns.length;
      td.className = "muted";
      td.textContent = "No gateway has connected yet.";
      tr.appendChild(td);
      rows.appendChild(tr);
    }
    tbody.replaceChildren(rows);
    document.getElementById("refreshed").textContent = "updated " + new Date().toLocaleTimeString();
  }

  function tick() {
    fetch(source, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) {
        if (r.status === 401) { window.location.reload(); throw new Error("logged out"); }
        return r.json();
      })
      .then(render)
      .catch(function () { document.getElementById("refreshed").textContent = "server not reachable, retrying"; })
      .finally(function () { window.setTimeout(tick, 2000); });
  }
  window.setTimeout(tick, 2000);
}());
