/*
 * channelcast recovery for pusher-js (docs/pusher.md).
 *
 *   const pusher = new Pusher(key, {wsHost, wsPort, forceTLS: false, ...});
 *   const recovery = channelcastRecovery(pusher, {onRecoveryFailed: (channel, message) => ...});
 *
 * channelcast adds a "position" to every event frame of the Pusher protocol and to the data
 * of pusher_internal:subscription_succeeded. This wrapper keeps the last position of each
 * subscribed channel and, when pusher-js subscribes again (after a reconnect), adds it to
 * pusher:subscribe as "since": the gateway then replays every event published meanwhile,
 * in order, before going live. Without the wrapper pusher-js works as with any Pusher
 * server (no replay). When the history is gone the gateway sends pusher:recovery_failed on
 * the channel: the events in between are lost, reload the state from your application.
 * On pusher:dropped (the server had to drop events for this slow connection) it reconnects,
 * which recovers them the same way.
 *
 * Events addressed away from this client (triggered with its socket_id, as Laravel's
 * toOthers() does, and its own client events) stay away after a reconnect: each
 * pusher:subscribe also carries "previous_socket_ids", the socket ids of this client's
 * earlier connections (at most 10), and the gateway leaves out what was addressed away
 * from them, in the replay and live.
 *
 * It reads frames from pusher.connection.connection.transport (public fields of pusher-js
 * 8, checked on every connection; without them it logs a warning and recovers nothing).
 * Returns {positions: Map, position(channel), forget(channel), socketIds(), detach()}.
 */
(function (root, factory) {
  if (typeof module === "object" && module.exports) {
    module.exports = factory();
  } else {
    root.channelcastRecovery = factory();
  }
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";

  var MAX_SOCKET_IDS = 10; // the gateway accepts at most this many previous_socket_ids

  return function channelcastRecovery(pusher, options) {
    options = options || {};
    var positions = new Map();
    var socketIds = []; // this client's socket ids, oldest first
    var hooked = null;

    function noteSocketId() {
      var id = pusher.connection && pusher.connection.socket_id;
      if (typeof id !== "string" || !id || socketIds.indexOf(id) >= 0) return;
      socketIds.push(id);
      while (socketIds.length > MAX_SOCKET_IDS + 1) socketIds.shift();
    }

    function previousSocketIds() {
      var current = pusher.connection && pusher.connection.socket_id;
      return socketIds.filter(function (id) { return id !== current; }).slice(-MAX_SOCKET_IDS);
    }

    function remember(frame) {
      if (!frame || typeof frame.channel !== "string") return;
      if (typeof frame.position === "string") {
        positions.set(frame.channel, frame.position);
        return;
      }
      if (frame.event === "pusher_internal:subscription_succeeded" && typeof frame.data === "string") {
        try {
          var data = JSON.parse(frame.data);
          // A replay follows this frame and moves the position on; only a channel seen for
          // the first time (or whose replay is done) takes the subscription's position.
          if (data && typeof data.position === "string" && !positions.has(frame.channel)) {
            positions.set(frame.channel, data.position);
          }
        } catch (e) { /* not channelcast's: nothing to keep */ }
      }
    }

    function onRawMessage(messageEvent) {
      var frame;
      try {
        frame = JSON.parse(messageEvent.data);
      } catch (e) {
        return;
      }
      if (frame && frame.event === "pusher:recovery_failed") {
        if (typeof options.onRecoveryFailed === "function") {
          options.onRecoveryFailed(frame.channel, frame.data && frame.data.message);
        }
        return;
      }
      if (frame && frame.event === "pusher:dropped") {
        pusher.disconnect();
        pusher.connect();
        return;
      }
      remember(frame);
    }

    function hook() {
      noteSocketId();
      var connection = pusher.connection && pusher.connection.connection;
      var transport = connection && connection.transport;
      if (!transport || typeof transport.bind !== "function") {
        if (typeof console !== "undefined") {
          console.warn("channelcast recovery: pusher-js has no connection.connection.transport; positions are not kept");
        }
        return;
      }
      if (hooked === transport) return;
      hooked = transport;
      transport.bind("message", onRawMessage);
    }

    var sendEvent = pusher.send_event.bind(pusher);
    pusher.send_event = function (name, data, channel) {
      if (name === "pusher:subscribe" && data) {
        var extra = {};
        if (positions.has(data.channel)) extra.since = positions.get(data.channel);
        var previous = previousSocketIds();
        if (previous.length) extra.previous_socket_ids = previous;
        data = Object.assign({}, data, extra);
      }
      return sendEvent(name, data, channel);
    };
    var unsubscribe = pusher.unsubscribe.bind(pusher);
    pusher.unsubscribe = function (name) {
      positions.delete(name);
      return unsubscribe(name);
    };
    // Bound before pusher-js's own "connected" handler runs subscribeAll? pusher-js binds
    // its handler in the constructor, so ours runs after it: the subscribe frames are sent
    // first, and the replay frames they cause arrive later, on the hooked transport.
    pusher.connection.bind("connected", hook);
    if (pusher.connection.state === "connected") hook();

    return {
      positions: positions,
      position: function (channel) { return positions.get(channel); },
      forget: function (channel) { positions.delete(channel); },
      socketIds: function () { return socketIds.slice(); },
      detach: function () {
        pusher.send_event = sendEvent;
        pusher.unsubscribe = unsubscribe;
        pusher.connection.unbind("connected", hook);
        if (hooked) hooked.unbind("message", onRawMessage);
      },
    };
  };
});
