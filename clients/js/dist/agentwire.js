// agentwire client SDK: one WebSocket per client with authentication by ticket
// or subprotocol token, automatic reconnect with exponential backoff and full
// jitter, resume from the last seq/epoch, dedupe by seq, and sendMessage()
// resolving with the ack. The wire contract is PROTOCOL.md (agentwire.v1).
// No runtime dependencies: in Node, pass a WebSocket constructor (e.g. `ws`).
/** The subprotocol and version this client speaks. */
export const PROTOCOL = "agentwire.v1";
// ---------------------------------------------------------------------------
// Close codes (PROTOCOL.md section 6).
export const CloseCode = {
    Normal: 1000,
    GoingAway: 1001,
    Abnormal: 1006,
    PolicyViolation: 1008,
    TooLarge: 1009,
    InternalError: 1011,
    NoPong: 4000,
    TokenExpired: 4001,
    SlowConsumer: 4008,
    TooManyErrors: 4029,
};
/** A rejected sendMessage/stop/ping. `code` is the error frame's code, or `timeout`, `closed`. */
export class AgentwireError extends Error {
    constructor(code, message, ref) {
        super(message);
        this.name = "AgentwireError";
        this.code = code;
        this.ref = ref;
    }
}
const OPEN = 1;
let idCounter = 0;
function randomID() {
    const c = globalThis.crypto;
    if (c?.randomUUID)
        return c.randomUUID();
    let s = "";
    for (let i = 0; i < 4; i++)
        s += Math.floor(Math.random() * 0x100000000).toString(16).padStart(8, "0");
    return s;
}
function frameID() {
    idCounter = (idCounter + 1) % 1e9;
    return "c" + idCounter.toString(36) + "-" + randomID().slice(0, 8);
}
/** The `exp` claim of a JWT in ms since the epoch, or undefined. The token is not verified. */
export function tokenExpiry(token) {
    const part = token.split(".")[1];
    if (!part)
        return undefined;
    try {
        const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
        const padded = b64 + "=".repeat((4 - (b64.length % 4)) % 4);
        const bin = atob(padded);
        const bytes = Uint8Array.from(bin, (ch) => ch.charCodeAt(0));
        const claims = JSON.parse(new TextDecoder().decode(bytes));
        return typeof claims.exp === "number" ? claims.exp * 1000 : undefined;
    }
    catch {
        return undefined;
    }
}
/**
 * AgentwireClient holds one connection to agentwire and keeps it up.
 * Stream events reach handlers once each, in seq order, across reconnects.
 */
export class AgentwireClient {
    constructor(opts) {
        this.ws = null;
        this.token = null;
        this._state = "idle";
        this.wanted = false; // connect() called and close() not
        this.everConnected = false;
        this.attempt = 0;
        this.seq = 0;
        this.hasPosition = false;
        this.connectedAt = 0;
        this.gapResumeSent = false;
        this.established = null;
        this.firstConnect = null;
        this.pending = new Map();
        this.typeHandlers = new Map();
        this.runHandlers = new Map();
        this.runBuffer = new Map();
        this.resyncHandlers = new Set();
        this.stateHandlers = new Set();
        this.opts = opts;
        const WS = opts.WebSocket ?? globalThis.WebSocket;
        const f = opts.fetch ?? globalThis.fetch;
        if (!WS)
            throw new Error("agentwire: no WebSocket: pass options.WebSocket");
        if (!f)
            throw new Error("agentwire: no fetch: pass options.fetch");
        this.WS = WS;
        this.fetchFn = f.bind(globalThis);
        const loc = globalThis.location;
        const base = opts.url ?? loc?.origin;
        if (!base)
            throw new Error("agentwire: options.url is required outside a browser");
        this.base = base.replace(/\/+$/, "");
        this.rand = opts.random ?? Math.random;
        if (opts.since !== undefined) {
            this.seq = opts.since;
            this.epoch = opts.epoch;
            this.hasPosition = true;
        }
    }
    /** The connection state. */
    get state() {
        return this._state;
    }
    /** The last seq handled and its epoch: pass them as options.since/epoch to continue elsewhere. */
    get position() {
        return { since: this.seq, epoch: this.epoch };
    }
    /** The current connection's connection_established frame, or null while disconnected. */
    get connection() {
        return this.established;
    }
    /**
     * Starts the connection and keeps it up until close(). Resolves on the
     * first connection_established; rejects only if close() comes first or the
     * server refuses for good (1008, 1009).
     */
    connect() {
        if (this.wanted) {
            return this.everConnected && this.established ? Promise.resolve() : this.waitFirst();
        }
        this.wanted = true;
        const p = this.waitFirst();
        this.setState({ state: this.everConnected ? "reconnecting" : "connecting" });
        void this.dial();
        return p;
    }
    waitFirst() {
        return new Promise((resolve, reject) => {
            const prev = this.firstConnect;
            this.firstConnect = {
                resolve: () => {
                    prev?.resolve();
                    resolve();
                },
                reject: (e) => {
                    prev?.reject(e);
                    reject(e);
                },
            };
        });
    }
    /** Closes the connection with 1000 and stops reconnecting. Pending requests reject with `closed`. */
    close() {
        this.wanted = false;
        clearTimeout(this.reconnectTimer);
        clearTimeout(this.refreshTimer);
        clearInterval(this.pingTimer);
        const ws = this.ws;
        this.ws = null;
        this.established = null;
        if (ws) {
            ws.onclose = ws.onmessage = ws.onerror = ws.onopen = null;
            try {
                ws.close(CloseCode.Normal, "client closed");
            }
            catch {
                /* already closed */
            }
        }
        for (const [id, p] of this.pending) {
            clearTimeout(p.timer);
            p.reject(new AgentwireError("closed", "client closed", id));
        }
        this.pending.clear();
        this.firstConnect?.reject(new AgentwireError("closed", "client closed"));
        this.firstConnect = null;
        this.setState({ state: "closed", code: CloseCode.Normal });
    }
    on(type, fn) {
        let set = this.typeHandlers.get(type);
        if (!set)
            this.typeHandlers.set(type, (set = new Set()));
        set.add(fn);
        return () => {
            set.delete(fn);
        };
    }
    /**
     * Calls fn for every stream event of run runId, in seq order. Events of the
     * run that arrived before the call (kept for the last runBufferRuns runs)
     * are delivered first, so registering right after sendMessage resolves
     * misses nothing.
     */
    onRun(runId, fn) {
        let set = this.runHandlers.get(runId);
        if (!set)
            this.runHandlers.set(runId, (set = new Set()));
        set.add(fn);
        for (const ev of this.runBuffer.get(runId) ?? [])
            fn(ev);
        return () => {
            set.delete(fn);
            if (set.size === 0)
                this.runHandlers.delete(runId);
        };
    }
    /**
     * Calls fn when the server cannot replay what was missed (resync_required):
     * reload state from REST. Events then continue live from frame.head_seq.
     */
    onResync(fn) {
        this.resyncHandlers.add(fn);
        return () => {
            this.resyncHandlers.delete(fn);
        };
    }
    /** Calls fn on every connection state change. */
    onStateChange(fn) {
        this.stateHandlers.add(fn);
        return () => {
            this.stateHandlers.delete(fn);
        };
    }
    // -- requests ------------------------------------------------------------
    /**
     * Sends a user_message and resolves with its ack (thread_id, run_id,
     * message_id). Sent now if connected, else on the next connection; if the
     * connection drops before the ack it is sent again with the same
     * client_message_id, so the server starts the run once. Rejects with an
     * AgentwireError on an error frame answering it, or on timeout.
     */
    async sendMessage(content, opts = {}) {
        const cmid = opts.clientMessageId ?? randomID();
        const frame = {
            type: "user_message",
            id: frameID(),
            content,
            client_message_id: cmid,
        };
        if (opts.threadId)
            frame.thread_id = opts.threadId;
        const ack = (await this.request(frame, opts.timeoutMs));
        return { ...ack, client_message_id: cmid };
    }
    /** Asks the server to stop run runId; resolves with the ack. The run then ends with agent_error `cancelled`. */
    async stop(runId, timeoutMs) {
        return (await this.request({ type: "stop_agent", id: frameID(), run_id: runId }, timeoutMs));
    }
    /**
     * Answers a run's `input_required` (`request_id`) with exactly one of
     * `approved`, `text` or `choice`; resolves with the ack. The first answer
     * from any tab wins; a later one rejects with code `conflict`. Every tab
     * then sees `input_received`.
     */
    async answerInput(runId, requestId, answer, timeoutMs) {
        return (await this.request({ type: "user_input", id: frameID(), run_id: runId, request_id: requestId, ...answer }, timeoutMs));
    }
    /** Sends an application-level ping; resolves with the pong. */
    async ping(timeoutMs) {
        return (await this.request({ type: "ping", id: frameID() }, timeoutMs));
    }
    request(frame, timeoutMs) {
        return new Promise((resolve, reject) => {
            if (!this.wanted) {
                reject(new AgentwireError("closed", "client is not connected: call connect() first", frame.id));
                return;
            }
            const ms = timeoutMs ?? this.opts.ackTimeoutMs ?? 15000;
            const timer = setTimeout(() => {
                this.pending.delete(frame.id);
                reject(new AgentwireError("timeout", `no answer to ${frame.type} within ${ms} ms`, frame.id));
            }, ms);
            this.pending.set(frame.id, { frame, resolve, reject, timer });
            if (this.established && this.ws?.readyState === OPEN)
                this.ws.send(JSON.stringify(frame));
        });
    }
    /**
     * Asks the server to replay retained events after since (default: from the
     * start of the retained history) on the open connection. Events already
     * handled are dropped by seq, so handlers see only what they missed.
     * Returns false when not connected.
     */
    requestReplay(since = 0) {
        if (!this.established || this.ws?.readyState !== OPEN)
            return false;
        const frame = { type: "resume", since };
        if (this.epoch)
            frame.epoch = this.epoch;
        this.ws.send(JSON.stringify(frame));
        return true;
    }
    // -- connection ----------------------------------------------------------
    async currentToken() {
        if (this.token === null)
            this.token = await this.opts.getToken();
        return this.token;
    }
    async refresh(reason) {
        const hook = this.opts.refreshToken ?? (() => this.opts.getToken());
        this.token = await hook(reason);
    }
    wsURL(query) {
        const u = new URL(this.base + "/ws");
        u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
        for (const [k, v] of Object.entries(query))
            u.searchParams.set(k, v);
        return u.toString();
    }
    async ticket(token) {
        const res = await this.fetchFn(this.base + "/api/v1/tickets", {
            method: "POST",
            headers: { Authorization: "Bearer " + token },
        });
        if (!res.ok)
            return { status: res.status };
        const body = (await res.json());
        return { ticket: body.ticket, status: res.status };
    }
    async dial() {
        if (!this.wanted)
            return;
        let ws;
        try {
            let token = await this.currentToken();
            const exp = tokenExpiry(token);
            if (exp !== undefined && exp <= Date.now()) {
                await this.refresh("expired");
                token = await this.currentToken();
            }
            const query = {};
            if (this.hasPosition) {
                query.since = String(this.seq);
                if (this.epoch)
                    query.epoch = this.epoch;
            }
            if ((this.opts.auth ?? "ticket") === "ticket") {
                let t = await this.ticket(token);
                if (t.status === 401) {
                    await this.refresh("unauthorized");
                    t = await this.ticket(await this.currentToken());
                }
                if (!t.ticket)
                    throw new Error(`POST /api/v1/tickets answered ${t.status}`);
                query.ticket = t.ticket;
                if (!this.wanted)
                    return;
                ws = new this.WS(this.wsURL(query));
            }
            else {
                if (!this.wanted)
                    return;
                ws = new this.WS(this.wsURL(query), [PROTOCOL, "bearer." + token]);
            }
        }
        catch (err) {
            if (!this.wanted)
                return;
            this.scheduleReconnect(CloseCode.Abnormal, String(err?.message ?? err));
            return;
        }
        this.ws = ws;
        ws.onmessage = (ev) => {
            if (this.ws !== ws)
                return;
            if (typeof ev.data !== "string")
                return;
            let frame;
            try {
                frame = JSON.parse(ev.data);
            }
            catch {
                return;
            }
            this.handleFrame(frame);
        };
        ws.onerror = () => {
            /* a close follows */
        };
        ws.onclose = (ev) => {
            if (this.ws !== ws)
                return;
            this.onSocketClose(ev.code, ev.reason);
        };
    }
    onSocketClose(code, reason) {
        const wasUp = this.established !== null;
        this.ws = null;
        this.established = null;
        clearTimeout(this.refreshTimer);
        clearInterval(this.pingTimer);
        if (!this.wanted)
            return;
        if (wasUp && Date.now() - this.connectedAt > 10000)
            this.attempt = 0;
        switch (code) {
            case CloseCode.Normal:
            case CloseCode.PolicyViolation:
            case CloseCode.TooLarge: {
                // The contract: 1008 stop, 1009 fix the client; 1000 is a deliberate end.
                this.wanted = false;
                const err = new AgentwireError("closed", `connection closed with ${code}${reason ? ": " + reason : ""}`);
                for (const [, p] of this.pending) {
                    clearTimeout(p.timer);
                    p.reject(err);
                }
                this.pending.clear();
                this.firstConnect?.reject(err);
                this.firstConnect = null;
                this.setState({ state: "closed", code, reason });
                return;
            }
            case CloseCode.TokenExpired: {
                // The first 4001 reconnects at once with the fresh token; a repeat backs off.
                const first = this.attempt === 0;
                this.setState({ state: "reconnecting", code, reason, attempt: this.attempt });
                this.refresh("expired").then(() => this.scheduleReconnect(code, reason, first ? 0 : undefined), () => this.scheduleReconnect(code, reason));
                if (first)
                    this.attempt++;
                return;
            }
        }
        // Before connection_established a 401 looks like 1006 to a browser: an
        // expired token is the likely cause when exp has passed (checked in dial).
        this.scheduleReconnect(code, reason);
    }
    /** Waits (full jitter over an exponential ceiling, or delayMs) and dials again with resume. */
    scheduleReconnect(code, reason, delayMs) {
        if (!this.wanted)
            return;
        clearTimeout(this.reconnectTimer);
        const base = this.opts.initialDelayMs ?? 500;
        const max = this.opts.maxDelayMs ?? 30000;
        let delay = delayMs;
        if (delay === undefined) {
            const ceiling = Math.min(max, base * 2 ** Math.min(this.attempt, 20));
            delay = Math.floor(this.rand() * ceiling);
            if (code === CloseCode.TooManyErrors) {
                const floor = this.opts.tooManyErrorsDelayMs ?? 5000;
                delay = floor + Math.floor(this.rand() * Math.max(floor, ceiling));
            }
            this.attempt++;
        }
        this.setState({ state: "reconnecting", code, reason, delayMs: delay, attempt: this.attempt });
        this.reconnectTimer = setTimeout(() => void this.dial(), delay);
    }
    handleFrame(frame) {
        switch (frame.type) {
            case "connection_established":
                this.onEstablished(frame);
                return;
            case "resync_required": {
                const f = frame;
                this.epoch = f.epoch;
                this.seq = f.head_seq;
                this.hasPosition = true;
                for (const fn of this.resyncHandlers)
                    fn(f);
                this.emitType(f);
                return;
            }
            case "ack":
            case "pong": {
                const f = frame;
                const p = f.ref !== undefined ? this.pending.get(f.ref) : undefined;
                if (p) {
                    this.pending.delete(f.ref);
                    clearTimeout(p.timer);
                    p.resolve(f);
                }
                this.emitType(f);
                return;
            }
            case "error": {
                const f = frame;
                const p = f.ref !== undefined ? this.pending.get(f.ref) : undefined;
                if (p) {
                    this.pending.delete(f.ref);
                    clearTimeout(p.timer);
                    p.reject(new AgentwireError(f.code, f.message, f.ref));
                }
                this.emitType(f);
                return;
            }
        }
        const ev = frame;
        if (typeof ev.seq !== "number") {
            this.emitType(frame); // deprecation and other control frames
            return;
        }
        this.onEvent(ev);
    }
    onEstablished(f) {
        const resumed = this.everConnected;
        this.established = f;
        this.connectedAt = Date.now();
        this.gapResumeSent = false;
        if (!this.hasPosition || this.epoch === undefined) {
            // Live from the head: a resume asked for (since without epoch) keeps its seq.
            if (!this.hasPosition)
                this.seq = f.head_seq;
            this.epoch = f.epoch;
            this.hasPosition = true;
        }
        this.everConnected = true;
        this.setState({ state: resumed ? "resumed" : "connected" });
        this.emitType(f);
        for (const [, p] of this.pending)
            this.ws?.send(JSON.stringify(p.frame));
        this.armRefresh();
        this.armPing();
        this.firstConnect?.resolve();
        this.firstConnect = null;
    }
    onEvent(ev) {
        if (ev.epoch === this.epoch && ev.seq <= this.seq)
            return; // seen
        if (ev.epoch !== this.epoch) {
            // A new epoch without resync_required (only when none was known).
            this.epoch = ev.epoch;
        }
        else if (ev.seq > this.seq + 1 && this.ws?.readyState === OPEN) {
            // A gap the contract rules out; ask for it (once) rather than lose it.
            if (!this.gapResumeSent) {
                this.gapResumeSent = true;
                const resume = { type: "resume", since: this.seq, epoch: this.epoch };
                this.ws.send(JSON.stringify(resume));
            }
            return;
        }
        this.gapResumeSent = false;
        this.seq = ev.seq;
        if (ev.run_id) {
            let buf = this.runBuffer.get(ev.run_id);
            if (!buf) {
                this.runBuffer.set(ev.run_id, (buf = []));
                const limit = this.opts.runBufferRuns ?? 100;
                while (this.runBuffer.size > limit) {
                    const oldest = this.runBuffer.keys().next().value;
                    this.runBuffer.delete(oldest);
                }
            }
            buf.push(ev);
        }
        this.emitType(ev);
        for (const fn of this.typeHandlers.get("*") ?? [])
            this.safe(fn, ev);
        if (ev.run_id) {
            for (const fn of this.runHandlers.get(ev.run_id) ?? [])
                this.safe(fn, ev);
        }
    }
    emitType(f) {
        for (const fn of this.typeHandlers.get(f.type) ?? [])
            this.safe(fn, f);
    }
    safe(fn, f) {
        try {
            fn(f);
        }
        catch (err) {
            // A failing handler must not stop delivery to the others.
            setTimeout(() => {
                throw err;
            });
        }
    }
    setState(change) {
        this._state = change.state;
        for (const fn of this.stateHandlers)
            this.safe(fn, change);
    }
    armRefresh() {
        clearTimeout(this.refreshTimer);
        const lead = this.opts.refreshBeforeExpMs ?? 30000;
        if (lead <= 0 || this.token === null)
            return;
        const exp = tokenExpiry(this.token);
        if (exp === undefined)
            return;
        const ms = Math.max(0, exp - lead - Date.now());
        this.refreshTimer = setTimeout(() => void this.refreshAndReconnect(), ms);
    }
    /** Gets a fresh token before exp and moves to a new connection with resume. */
    async refreshAndReconnect() {
        try {
            await this.refresh("expiring");
        }
        catch {
            return; // 4001 at exp will try again
        }
        const ws = this.ws;
        if (!this.wanted || !ws)
            return;
        this.ws = null;
        this.established = null;
        clearInterval(this.pingTimer);
        ws.onclose = ws.onmessage = ws.onerror = ws.onopen = null;
        try {
            ws.close(CloseCode.Normal, "token refresh");
        }
        catch {
            /* already closed */
        }
        this.scheduleReconnect(CloseCode.TokenExpired, "token refresh", 0);
    }
    armPing() {
        clearInterval(this.pingTimer);
        const every = this.opts.pingIntervalMs ?? 0;
        if (every <= 0)
            return;
        this.pingTimer = setInterval(() => {
            const ws = this.ws;
            if (!ws || !this.established)
                return;
            this.ping(every).catch((err) => {
                // No pong in time: this socket is dead even if it looks open.
                if (err.code === "timeout" && this.ws === ws) {
                    ws.onclose = ws.onmessage = ws.onerror = ws.onopen = null;
                    try {
                        ws.close(CloseCode.Normal, "no pong");
                    }
                    catch {
                        /* already closed */
                    }
                    this.onSocketClose(CloseCode.NoPong, "no pong");
                }
            });
        }, every);
    }
}
