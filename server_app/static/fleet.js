// The fleet table refreshes itself every 2 s from /gateways.json. Text only (textContent): nothing the
// server returns is ever parsed as HTML.
(function () {
  "use strict";
  var table = document.getElementById("fleet");
  if (!table) { return; }
  var source = table.getAttribute("data-source");
  var columns = ["name", "connected", "mode", "applied_revision", "lag", "status", "elements", "agent_version",
                 "address", "last_seen"];

  // One group of what a gateway does not hold and why, its elements listed (text only, as everywhere here).
  function difference(d, name, opened) {
    var details = document.createElement("details");
    details.className = "difference";
    details.setAttribute("data-kind", d.kind);
    details.setAttribute("data-reason", d.reason);
    details.open = opened.indexOf(name + " " + d.kind + " " + d.reason) >= 0;
    var summary = document.createElement("summary");
    summary.textContent = d.count + " " + d.label;
    details.appendChild(summary);
    var list = document.createElement("ul");
    d.elements.forEach(function (e) {
      var li = document.createElement("li");
      var target = document.createElement("span");
      target.className = "target";
      target.textContent = e.element;
      li.appendChild(target);
      li.appendChild(document.createTextNode(": " + e.message));
      list.appendChild(li);
    });
    if (d.count > d.elements.length) {
      var more = document.createElement("li");
      more.className = "muted";
      more.textContent = "and " + (d.count - d.elements.length) + " more";
      list.appendChild(more);
    }
    details.appendChild(list);
    return details;
  }

  // The groups the operator opened (gateway, kind, reason), so they stay open across refreshes.
  function openGroups() {
    var keys = [];
    table.querySelectorAll("tbody tr details.difference[open]").forEach(function (details) {
      keys.push(details.closest("tr").getAttribute("data-name") + " " + details.getAttribute("data-kind") + " " +
                details.getAttribute("data-reason"));
    });
    return keys;
  }

  function cell(key, gw, opened) {
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
      td.appendChild(span);
      if (key === "status") {
        td.className = "sync";
        (gw.differences || []).forEach(function (d) { td.appendChild(difference(d, gw.name, opened)); });
      }
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
    var opened = openGroups();
    data.items.forEach(function (gw) {
      var tr = document.createElement("tr");
      tr.setAttribute("data-name", gw.name);
      columns.forEach(function (key) { tr.appendChild(cell(key, gw, opened)); });
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
    document.getElementById("refreshed").textContent = "updated " + new Date().toISOString().slice(11, 19) + " UTC";
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
