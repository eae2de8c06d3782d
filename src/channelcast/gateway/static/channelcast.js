/* channelcast.js: a small browser client for the channelcast gateway. No build step.
 *
 *   const client = new Channelcast({ url: "ws://127.0.0.1:8000/ws",
 *                                    authEndpoint: "/auth", authParams: { user_id: "ann" } });
 *   const news = client.subscribe("news");
 *   news.on("message", (msg) => console.log(msg.event, msg.data));
 *   client.connect();
 *
 * It reconnects with backoff and resubscribes every channel with its last position, so the
 * gateway replays what was missed (or sends a "recovery_failed" error when it cannot).
 * Channel events: "subscribed", "message", "member_added", "member_removed", "error".
 * Client events: "state" (connecting/connected/disconnected), "reconnecting" ({delayMs,
 * attempt}: after a lost connection, when the next attempt is due), "connected",
 * "dropped", "error", "closing". A frame that is not JSON (which the gateway never sends) closes the
 * connection with an "unreadable_frame" error, and the client reconnects.
 */
(function (global) {
  "use strict";

  function Emitter() { this._handlers = {}; }
  Emitter.prototype.on = function (name, fn) {
    (this._handlers[name] = this._handlers[name] || []).push(fn);
    return this;
  };
  Emitter.prototype.emit = function (name, arg) {
    (this._handlers[name] || []).forEach(function (fn) {
      try { fn(arg); } catch (e) { console.error(e); }
    });
  };

  function Channel(client, name) {
    Emitter.call(this);
    this.client = client;
    this.name = name;
    this.position = null;   // last position seen: sent as "since" when resubscribing
    this.members = {};      // presence: user_id -> user_info
    this.subscribed = false;
  }
  Channel.prototype = Object.create(Emitter.prototype);

  function Channelcast(options) {
    Emitter.call(this);
    options = options || {};
    var loc = global.location || { protocol: "http:", host: "127.0.0.1:8000" };
    this.url = options.url || ((loc.protocol === "https:" ? "wss://" : "ws://") + loc.host + "/ws");
    this.authEndpoint = options.authEndpoint || "/auth";
    this.authParams = options.authParams || {};
    this.maxBackoffMs = options.maxBackoffMs || 10000;
    this.channels = {};
    this.connectionId = null;
    this.state = "disconnected";
    this._ws = null;
    this._attempt = 0;
    this._stopped = true;
  }
  Channelcast.prototype = Object.create(Emitter.prototype);

  Channelcast.prototype._setState = function (state) {
    this.state = state;
    this.emit("state", state);
  };

  Channelcast.prototype.connect = function () {
    var self = this;
    this._stopped = false;
    this._setState("connecting");
    var ws = new WebSocket(this.url);
    this._ws = ws;
    ws.onmessage = function (ev) {
      var frame;
      try {
        frame = JSON.parse(ev.data);
      } catch (e) {
        // Never stay on a connection that loses frames: reconnect and resubscribe.
        self.emit("error", { code: "unreadable_frame", message: String(e) });
        ws.close(1000, "unreadable frame");
        return;
      }
      self._receive(frame);
    };
    ws.onclose = function (ev) {
      self._ws = null;
      self.connectionId = null;
      Object.keys(self.channels).forEach(function (n) { self.channels[n].subscribed = false; });
      self._setState("disconnected");
      if (!self._stopped) {
        var delay = Math.min(self.maxBackoffMs, 250 * Math.pow(2, self._attempt++));
        self.emit("reconnecting", { delayMs: delay, attempt: self._attempt });
        setTimeout(function () { if (!self._stopped) self.connect(); }, delay);
      }
    };
    return this;
  };

  Channelcast.prototype.disconnect = function () {
    this._stopped = true;
    if (this._ws) this._ws.close(1000);
  };

  Channelcast.prototype._send = function (frame) {
    if (this._ws && this._ws.readyState === 1) this._ws.send(JSON.stringify(frame));
  };

  Channelcast.prototype.subscribe = function (name) {
    var ch = this.channels[name];
    if (!ch) {
      ch = this.channels[name] = new Channel(this, name);
      if (this.connectionId) this._subscribe(ch);
    }
    return ch;
  };

  Channelcast.prototype.unsubscribe = function (name) {
    var ch = this.channels[name];
    if (!ch) return;
    delete this.channels[name];
    if (ch.subscribed) this._send({ type: "unsubscribe", channel: name });
  };

  Channelcast.prototype._subscribe = function (ch) {
    var self = this;
    var frame = { type: "subscribe", channel: ch.name };
    if (ch.position) frame.since = ch.position;
    var isPrivate = ch.name.indexOf("private-") === 0 || ch.name.indexOf("presence-") === 0;
    if (!isPrivate) { this._send(frame); return; }
    var body = Object.assign({}, this.authParams,
      { connection_id: this.connectionId, channel: ch.name });
    fetch(this.authEndpoint, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body)
    }).then(function (r) { return r.json(); }).then(function (signed) {
      if (signed.type === "error") { ch.emit("error", signed.data); return; }
      frame.auth = signed.auth;
      if (signed.channel_data) frame.channel_data = signed.channel_data;
      self._send(frame);
    }).catch(function (e) { ch.emit("error", { code: "auth_request_failed", message: String(e) }); });
  };

  Channelcast.prototype._receive = function (frame) {
    var ch = frame.channel ? this.channels[frame.channel] : null;
    switch (frame.type) {
      case "connected":
        this.connectionId = frame.data.connection_id;
        this._attempt = 0;
        this._setState("connected");
        this.emit("connected", frame.data);
        for (var n in this.channels) this._subscribe(this.channels[n]);
        return;
      case "message":
        if (ch) { ch.position = frame.position; ch.emit("message", frame); }
        return;
      case "subscribed":
        if (!ch) return;
        ch.subscribed = true;
        if (frame.data.position && !ch.position) ch.position = frame.data.position;
        if (frame.data.members) {
          ch.members = {};
          frame.data.members.forEach(function (m) { ch.members[m.user_id] = m.user_info; });
        }
        ch.emit("subscribed", frame.data);
        return;
      case "member_added":
        if (ch) { ch.members[frame.data.user_id] = frame.data.user_info; ch.emit("member_added", frame.data); }
        return;
      case "member_removed":
        if (ch) { delete ch.members[frame.data.user_id]; ch.emit("member_removed", frame.data); }
        return;
      case "error":
        if (ch) {
          var code = frame.data.code;
          if (code === "subscription_lost" || code === "subscribe_failed") {
            // The node lost (or could not open) its broker subscription: try again later,
            // from our last position, so nothing is missed.
            var self = this;
            ch.subscribed = false;
            setTimeout(function () {
              if (self.channels[ch.name] === ch && self.connectionId && !ch.subscribed) self._subscribe(ch);
            }, 1000);
          }
          ch.emit("error", frame.data);
        } else {
          this.emit("error", frame.data);
        }
        return;
      case "dropped":
      case "closing":
      case "pong":
      case "unsubscribed":
        this.emit(frame.type, frame.data);
        return;
    }
  };

  global.Channelcast = Channelcast;
})(typeof window !== "undefined" ? window : globalThis);
