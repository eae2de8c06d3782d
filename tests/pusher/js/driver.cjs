// Drives real pusher-js (node build) and Laravel Echo clients for tests/pusher.
// Commands come as JSON lines on stdin, one object with "cmd" and a client "id";
// everything the clients see goes to stdout as JSON lines {"ev": ..., "id": ...}.
"use strict";

const readline = require("readline");
const Pusher = require("pusher-js");

const clients = new Map(); // id -> {pusher, echo?, recovery?}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function pusherOptions(cmd) {
  const options = {
    wsHost: cmd.host,
    wsPort: cmd.port,
    forceTLS: false,
    enabledTransports: ["ws"],
    cluster: "mt1",
    disableStats: true,
  };
  if (cmd.authEndpoint) {
    options.channelAuthorization = {endpoint: cmd.authEndpoint, transport: "ajax"};
  }
  if (cmd.userAuthEndpoint) {
    options.userAuthentication = {endpoint: cmd.userAuthEndpoint, transport: "ajax"};
  }
  return Object.assign(options, cmd.options || {});
}

function watchConnection(id, pusher) {
  pusher.connection.bind("state_change", (states) => {
    emit({ev: "state", id, current: states.current, previous: states.previous,
          socket_id: pusher.connection.socket_id});
  });
  pusher.connection.bind("error", (err) => {
    emit({ev: "error", id, error: err && (err.data || err.error || err.type || String(err))});
  });
  pusher.bind_global((event, data) => emit({ev: "global", id, event, data}));
  pusher.user.bind_global((event, data) => emit({ev: "user", id, event, data}));
}

function members(channel) {
  const out = [];
  if (channel.members) channel.members.each((m) => out.push({id: m.id, info: m.info}));
  out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return out;
}

function connect(cmd) {
  const pusher = new Pusher(cmd.key, pusherOptions(cmd));
  const client = {pusher};
  clients.set(cmd.id, client);
  if (cmd.recovery) {
    const recovery = require(cmd.recovery);
    client.recovery = recovery(pusher, {
      onRecoveryFailed: (channel, message) => emit({ev: "recovery_failed", id: cmd.id, channel, message}),
    });
  }
  watchConnection(cmd.id, pusher);
}

function subscribe(cmd) {
  const {pusher} = clients.get(cmd.id);
  const channel = pusher.subscribe(cmd.channel);
  for (const name of cmd.bind || []) {
    // A per-event callback also gets the metadata (user_id of presence client events).
    channel.bind(name, (data, metadata) => {
      const out = {ev: "bound", id: cmd.id, channel: cmd.channel, event: name, data};
      if (metadata && metadata.user_id) out.user_id = metadata.user_id;
      emit(out);
    });
  }
  channel.bind_global((event, data) => {
    const out = {ev: "event", id: cmd.id, channel: cmd.channel, event, data};
    if (event === "pusher:subscription_succeeded" && channel.members) {
      out.data = {members: members(channel), me: channel.members.me, count: channel.members.count};
    }
    if (event === "pusher:member_added" || event === "pusher:member_removed") {
      out.members = members(channel);
    }
    emit(out);
  });
}

async function echoConnect(cmd) {
  // laravel-echo's CommonJS build does not load in node (its package is "type": "module"):
  // take the ES module.
  const {default: Echo} = await import("laravel-echo");
  const options = Object.assign({
    broadcaster: "pusher",
    key: cmd.key,
    Pusher,
    wsHost: cmd.host,
    wsPort: cmd.port,
    forceTLS: false,
    enabledTransports: ["ws"],
    cluster: "mt1",
    disableStats: true,
    authEndpoint: cmd.authEndpoint,
  }, cmd.options || {});
  const echo = new Echo(options);
  clients.set(cmd.id, {pusher: echo.connector.pusher, echo});
  watchConnection(cmd.id, echo.connector.pusher);
}

function echo(cmd) {
  const {echo} = clients.get(cmd.id);
  const out = (extra) => emit(Object.assign({ev: "echo", id: cmd.id, channel: cmd.channel}, extra));
  if (cmd.kind === "channel") {
    echo.channel(cmd.channel).listen(cmd.event, (data) => out({event: cmd.event, data}));
  } else if (cmd.kind === "private") {
    const ch = echo.private(cmd.channel);
    if (cmd.event) ch.listen(cmd.event, (data) => out({event: cmd.event, data}));
    if (cmd.whisper) ch.listenForWhisper(cmd.whisper, (data) => out({whisper: cmd.whisper, data}));
    ch.subscribed(() => out({subscribed: true}));
  } else if (cmd.kind === "join") {
    const ch = echo.join(cmd.channel)
      .here((users) => out({here: users}))
      .joining((user) => out({joining: user}))
      .leaving((user) => out({leaving: user}));
    if (cmd.event) ch.listen(cmd.event, (data) => out({event: cmd.event, data}));
    if (cmd.whisper) ch.listenForWhisper(cmd.whisper, (data) => out({whisper: cmd.whisper, data}));
  } else if (cmd.kind === "whisper") {
    const ch = cmd.presence ? echo.join(cmd.channel) : echo.private(cmd.channel);
    ch.whisper(cmd.event, cmd.data);
    out({whispered: cmd.event});
  } else if (cmd.kind === "leave") {
    echo.leave(cmd.channel);
    out({left: true});
  }
}

const commands = {
  connect,
  subscribe,
  unsubscribe: (cmd) => clients.get(cmd.id).pusher.unsubscribe(cmd.channel),
  trigger: (cmd) => {
    const channel = clients.get(cmd.id).pusher.channel(cmd.channel);
    emit({ev: "triggered", id: cmd.id, channel: cmd.channel, ok: channel.trigger(cmd.event, cmd.data)});
  },
  signin: (cmd) => {
    const {pusher} = clients.get(cmd.id);
    pusher.signin();
    pusher.user.signinDonePromise.then(() => emit({ev: "signed_in", id: cmd.id, user: pusher.user.user_data}));
  },
  members: (cmd) => {
    const channel = clients.get(cmd.id).pusher.channel(cmd.channel);
    emit({ev: "members", id: cmd.id, channel: cmd.channel, members: members(channel)});
  },
  disconnect: (cmd) => clients.get(cmd.id).pusher.disconnect(),
  reconnect: (cmd) => clients.get(cmd.id).pusher.connect(),
  close_transport: (cmd) => {
    // An abrupt network loss: the transport closes, pusher-js reconnects by itself.
    clients.get(cmd.id).pusher.connection.connection.transport.close();
  },
  positions: (cmd) => {
    const {recovery} = clients.get(cmd.id);
    emit({ev: "positions", id: cmd.id, positions: Object.fromEntries(recovery.positions)});
  },
  echo_connect: echoConnect,
  echo,
  ping: (cmd) => emit({ev: "pong", id: cmd.id}),
  exit: () => process.exit(0),
};

readline.createInterface({input: process.stdin}).on("line", (line) => {
  if (!line.trim()) return;
  let cmd;
  const failed = (e) => emit({ev: "driver_error", id: cmd && cmd.id, error: String(e && e.stack || e)});
  try {
    cmd = JSON.parse(line);
    Promise.resolve(commands[cmd.cmd](cmd)).catch(failed);
  } catch (e) {
    failed(e);
  }
});
process.stdin.on("end", () => process.exit(0));
emit({ev: "ready"});
