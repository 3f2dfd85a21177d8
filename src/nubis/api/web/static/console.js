// The VNC console: a one-time ticket from the API, then noVNC over Nubis's websocket proxy.
import RFB from "/static/vendor/novnc/core/rfb.js";

const screen = document.getElementById("screen");
const status = document.getElementById("console-status");
let rfb = null;

async function connect() {
  status.textContent = "Connecting…";
  let ticket;
  try {
    ticket = await Nubis.api("POST", `/api/v1/instances/${screen.dataset.instance}/console`, {});
  } catch (error) {
    status.textContent = `Cannot open the console: ${error.message}`;
    return;
  }
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  // the ticket travels as a subprotocol, never in the URL (so never in a log)
  const url = `${scheme}://${location.host}${ticket.websocket}`;
  rfb = new RFB(screen, url, {
    credentials: { password: ticket.password },
    wsProtocols: ["binary", `nubis-ticket.${ticket.ticket}`],
  });
  rfb.scaleViewport = true;
  rfb.addEventListener("connect", () => { status.textContent = "Connected"; rfb.focus(); });
  rfb.addEventListener("disconnect", (e) => {
    status.textContent = e.detail.clean ? "Disconnected" : "Connection lost";
    rfb = null;
  });
  rfb.addEventListener("securityfailure", (e) => { status.textContent = `Refused: ${e.detail.reason || "authentication failed"}`; });
}

document.getElementById("console-cad").addEventListener("click", () => rfb && rfb.sendCtrlAltDel());
document.getElementById("console-reconnect").addEventListener("click", () => {
  if (rfb) rfb.disconnect();
  connect();
});
connect();
