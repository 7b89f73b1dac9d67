// Package web is the chat page agentwire serves at /: static files embedded
// in the binary (no CDN, no font, works offline) that talk to the server
// through the JavaScript SDK of clients/js.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/agentwire/agentwire/internal/httpx"
	"github.com/agentwire/agentwire/protocol"
)

// static/agentwire.js is a copy of clients/js/dist/agentwire.js, the one
// source; TestSDKCopyIsCurrent fails when they differ.
//
//go:generate cp ../clients/js/dist/agentwire.js static/agentwire.js

//go:embed static
var files embed.FS

// csp lets the page load only its own files and talk only to its own origin
// (connect-src 'self' covers same-origin ws: and wss: in current browsers).
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

type asset struct {
	body  []byte
	ctype string
	etag  string
}

// Handler serves the page: index.html at / and the files under /static/.
// Every answer carries Cache-Control: no-cache and an ETag, so a browser
// revalidates (cheaply) and never runs a page older than the binary. A path
// that names no file answers a JSON 404 in the API's error shape.
func Handler() http.Handler {
	assets := map[string]asset{}
	_ = fs.WalkDir(files, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		ctype := mime.TypeByExtension(path.Ext(p))
		switch path.Ext(p) { // not every system's MIME table knows these
		case ".js":
			ctype = "text/javascript; charset=utf-8"
		case ".css":
			ctype = "text/css; charset=utf-8"
		case ".html":
			ctype = "text/html; charset=utf-8"
		}
		assets["/"+p] = asset{body: body, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	assets["/"] = assets["/static/index.html"]
	delete(assets, "/static/index.html")

	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, ok := assets[r.URL.Path]
		if !ok || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
			httpx.Error(w, http.StatusNotFound, protocol.CodeNotFound, "no such endpoint")
			return
		}
		h := w.Header()
		h.Set("Content-Type", a.ctype)
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", a.etag)
		if strings.HasPrefix(a.ctype, "text/html") {
			h.Set("Content-Security-Policy", csp)
			h.Set("X-Frame-Options", "DENY")
		}
		// ServeContent answers If-None-Match with 304 and HEAD without a body.
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
	})
}
