package ws

import (
	"encoding/base64"
	"net/http"
	"strings"
)

const errBadVersion = "websocket: unsupported version: 13 only"

// checkHandshake checks the upgrade request the way the upgrader will, before
// the connection is hijacked, so that a bad request gets the contract's JSON
// error (status 0: fine).
func checkHandshake(r *http.Request) (status int, msg string) {
	switch {
	case r.Method != http.MethodGet:
		return http.StatusMethodNotAllowed, "websocket: request method is not GET"
	case r.ProtoMajor < 1 || (r.ProtoMajor == 1 && r.ProtoMinor < 1):
		return http.StatusBadRequest, "websocket: HTTP/1.1 or later required"
	case r.Host == "":
		return http.StatusBadRequest, "websocket: missing Host"
	case !strings.EqualFold(strings.TrimSpace(r.Header.Get("Upgrade")), "websocket"):
		return http.StatusBadRequest, "websocket: 'websocket' token not found in 'Upgrade' header"
	case !headerHasToken(r.Header.Get("Connection"), "upgrade"):
		return http.StatusBadRequest, "websocket: 'upgrade' token not found in 'Connection' header"
	case r.Header.Get("Sec-Websocket-Version") != "13":
		return http.StatusBadRequest, errBadVersion
	case !validKey(r.Header.Get("Sec-Websocket-Key")):
		return http.StatusBadRequest, "websocket: not a websocket handshake: 'Sec-WebSocket-Key' header must be Base64 encoded value of 16-byte in length"
	}
	return 0, ""
}

func validKey(k string) bool {
	if len(k) != 24 {
		return false
	}
	var b [18]byte
	n, err := base64.StdEncoding.Decode(b[:], []byte(k))
	return err == nil && n == 16
}

// headerHasToken reports whether the comma-separated header value v holds
// token (case-insensitive).
func headerHasToken(v, token string) bool {
	for v != "" {
		var t string
		t, v, _ = strings.Cut(v, ",")
		if strings.EqualFold(strings.TrimSpace(t), token) {
			return true
		}
	}
	return false
}

// subprotocols returns the subprotocols the client offered, in order.
func subprotocols(r *http.Request) []string {
	var out []string
	for _, h := range r.Header.Values("Sec-Websocket-Protocol") {
		for h != "" {
			var p string
			p, h, _ = strings.Cut(h, ",")
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

func offersSubprotocol(r *http.Request, name string) bool {
	for _, p := range subprotocols(r) {
		if p == name {
			return true
		}
	}
	return false
}
