//go:build linux

package leantcp

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// BenchmarkWriteBuffers compares a lean connection's writev of a batch of
// frames with net's (net.Buffers.WriteTo on a *net.TCPConn).
func BenchmarkWriteBuffers(b *testing.B) {
	frames := make([][]byte, 8)
	for i := range frames {
		frames[i] = make([]byte, 200)
	}
	run := func(b *testing.B, l net.Listener, write func(nc net.Conn, v *net.Buffers) error) {
		cc, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		defer cc.Close()
		go io.Copy(io.Discard, cc)
		nc, err := l.Accept()
		if err != nil {
			b.Fatal(err)
		}
		defer nc.Close()
		b.ReportAllocs()
		for b.Loop() {
			v := net.Buffers(append([][]byte(nil), frames...))
			if err := write(nc, &v); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("net", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		run(b, ln, func(nc net.Conn, v *net.Buffers) error { _, err := v.WriteTo(nc); return err })
	})
	b.Run("lean", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		l := Wrap(ln)
		defer l.Close()
		run(b, l, func(nc net.Conn, v *net.Buffers) error { _, err := nc.(*leanConn).WriteBuffers(v); return err })
	})
}

// BenchmarkHTTPKeepAlive: requests on a keep-alive connection, net's
// listener against the lean one. net/http aborts its background read with a
// past deadline once a request; the lean connection's timeout error costs
// one allocation more than net's (the *os.PathError package os makes).
func BenchmarkHTTPKeepAlive(b *testing.B) {
	for _, lean := range []bool{false, true} {
		name := "net"
		if lean {
			name = "lean"
		}
		b.Run(name, func(b *testing.B) {
			ln, _ := net.Listen("tcp", "127.0.0.1:0")
			if lean {
				ln = Wrap(ln)
			}
			hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				io.WriteString(w, `{"ok":true}`)
			})}
			go hs.Serve(ln)
			defer hs.Close()
			c := &http.Client{}
			url := "http://" + ln.Addr().String() + "/"
			b.ReportAllocs()
			for b.Loop() {
				resp, err := c.Post(url, "application/json", strings.NewReader(`{"a":1}`))
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
}
