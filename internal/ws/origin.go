package ws

import "net/http"

// OriginAllowed reports whether a browser at r's Origin may call: no
// Origin (not a browser), the request's own host, an origin of
// Config.AllowedOrigins ("*": any), or with Config.Dev a localhost one. It
// is /ws's origin check, shared with the HTTP endpoints browsers call from
// other origins (the AG-UI endpoints' CORS).
func (s *Server) OriginAllowed(r *http.Request) bool { return s.originAllowed(r) }
