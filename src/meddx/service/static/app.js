// The overlay opacity slider on the result card (the only script on the page).
document.addEventListener("DOMContentLoaded", function () {
  var slider = document.getElementById("opacity");
  var overlay = document.getElementById("overlay");
  var out = document.getElementById("opacity-value");
  if (!slider || !overlay) { return; }
  function apply() {
    overlay.style.opacity = String(slider.value / 100);
    if (out) { out.textContent = slider.value + "%"; }
  }
  slider.addEventListener("input", apply);
  apply();
});

// The live monitor: one WebSocket, a snapshot per second, tables rebuilt with textContent (no HTML injection).
document.addEventListener("DOMContentLoaded", function () {
  var alerts = document.getElementById("monitor-alerts");
  var devices = document.getElementById("monitor-devices");
  var status = document.getElementById("monitor-status");
  if (!alerts || !devices) { return; }
  var csrf = alerts.getAttribute("data-csrf");
  function time(t) { return t ? new Date(t * 1000).toLocaleTimeString() : ""; }
  function cell(row, text) { var td = document.createElement("td"); td.textContent = text; row.appendChild(td); return td; }
  function ackForm(id) {
    var form = document.createElement("form");
    form.method = "post"; form.action = "/monitor/ack";
    [["csrf", csrf], ["alert_id", String(id)]].forEach(function (kv) {
      var input = document.createElement("input");
      input.type = "hidden"; input.name = kv[0]; input.value = kv[1]; form.appendChild(input);
    });
    var button = document.createElement("button"); button.type = "submit"; button.textContent = "Acknowledge";
    form.appendChild(button);
    return form;
  }
  function fill(table, items, columns, empty) {
    var body = table.tBodies[0];
    while (body.firstChild) { body.removeChild(body.firstChild); }
    if (!items.length) {
      var row = body.insertRow(); var td = cell(row, empty); td.colSpan = columns; td.className = "muted"; return;
    }
    items.forEach(function (item) { item(body.insertRow()); });
  }
  function render(data) {
    fill(alerts, data.open_alerts.map(function (a) {
      return function (row) {
        [a.id, a.device_id, a.rule, a.severity, time(a.onset_time), a.acknowledged_by || ""].forEach(function (v) {
          cell(row, String(v));
        });
        var td = cell(row, ""); if (!a.acknowledged_by) { td.appendChild(ackForm(a.id)); }
      };
    }), 7, "No open alerts.");
    fill(devices, data.devices.map(function (d) {
      return function (row) { [d.device_id, d.signal, d.label, d.quality, time(d.window_end)].forEach(function (v) {
        cell(row, String(v)); }); };
    }), 5, "No device has streamed yet.");
  }
  var scheme = location.protocol === "https:" ? "wss://" : "ws://";
  var socket = new WebSocket(scheme + location.host + "/ws/monitor");
  socket.onopen = function () { status.textContent = "live"; };
  socket.onclose = function () { status.textContent = "disconnected: reload the page"; };
  socket.onmessage = function (event) { render(JSON.parse(event.data)); };
});
