// The VM's serial console: a one-time ticket (POST, with the CSRF token), then a websocket to
// the server, which relays to the host's console endpoint. Bytes in both directions.
(function () {
  "use strict";
  const body = document.body;
  const state = document.getElementById("console-state");

  // The CSP admits no inline style but a <style> carrying this response's nonce. xterm.js builds
  // its stylesheet at run time: its <style> elements get the nonce, and the style attributes it
  // writes (true-colour cells) go through the CSSOM instead, which the CSP does not restrict.
  const nonce = body.dataset.styleNonce;
  const createElement = document.createElement.bind(document);
  document.createElement = function (tag, options) {
    const el = createElement(tag, options);
    if (nonce && String(tag).toLowerCase() === "style") el.nonce = nonce;
    return el;
  };
  const setAttribute = Element.prototype.setAttribute;
  Element.prototype.setAttribute = function (name, value) {
    if (String(name).toLowerCase() === "style") { this.style.cssText = String(value); return; }
    return setAttribute.call(this, name, value);
  };

  const term = new Terminal({cols: 100, rows: 32, convertEol: false, cursorBlink: true, fontSize: 14});
  window.vcTerm = term;  // the end-to-end test reads the screen through it
  term.open(document.getElementById("terminal"));
  const enc = new TextEncoder();

  async function start() {
    const r = await fetch("/ui/vm/" + body.dataset.vm + "/console/ticket", {method: "POST", credentials: "same-origin", headers: {"X-CSRF-Token": body.dataset.csrf}});
    const answer = await r.json();
    if (!r.ok) { state.textContent = answer.code + ": " + answer.message; state.dataset.state = "error"; return; }
    const proto = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(proto + location.host + answer.url);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => { state.textContent = "connected"; state.dataset.state = "open"; term.focus(); ws.send(enc.encode("\r")); };
    ws.onmessage = (e) => term.write(typeof e.data === "string" ? e.data : new Uint8Array(e.data));
    ws.onclose = (e) => { state.textContent = "closed" + (e.reason ? ": " + e.reason : ""); state.dataset.state = "closed"; };
    term.onData((d) => { if (ws.readyState === WebSocket.OPEN) ws.send(enc.encode(d)); });
  }
  start();
})();
