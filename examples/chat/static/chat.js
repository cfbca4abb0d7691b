// The chat page: one of three transports receives, a POST sends. Served by nginx.
"use strict";
const list = document.getElementById("messages");
const show = (message) => {
  const item = document.createElement("li");
  item.textContent = message.text;
  list.appendChild(item);
};
let stop = () => {};

const transports = {
  websocket() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let socket = null;
    let stopped = false;
    const connect = () => {
      socket = new WebSocket(`${scheme}//${location.host}/ws/chat`);
      socket.onmessage = (event) => show(JSON.parse(event.data));
      // 1001: the instance is restarting, and another one takes a new connection at once; any
      // other end (a handshake that met a restart, a lost network): try again in a second.
      socket.onclose = (event) => {
        if (!stopped) setTimeout(connect, event.code === 1001 ? 100 : 1000);
      };
    };
    connect();
    return () => { stopped = true; socket.close(); };
  },
  sse() {
    const source = new EventSource("/events");
    source.onmessage = (event) => show(JSON.parse(event.data));
    return () => source.close();
  },
  poll() {
    let running = true;
    (async () => {
      let after = (await (await fetch("/poll")).json()).last_id;
      while (running) {
        try {
          const reply = await (await fetch(`/poll?after=${encodeURIComponent(after)}`)).json();
          reply.messages.forEach(show);
          after = reply.last_id;
        } catch (error) {
          await new Promise((resolve) => setTimeout(resolve, 1000));
        }
      }
    })();
    return () => { running = false; };
  },
};

function start() {
  stop();
  stop = transports[document.getElementById("transport").value]();
}
document.getElementById("transport").onchange = start;
document.getElementById("send").onsubmit = async (event) => {
  event.preventDefault();
  const text = document.getElementById("text");
  if (text.value) await fetch("/messages", { method: "POST", body: text.value });
  text.value = "";
};
start();
