//go:build !linux

package ws

// Without epoll every connection is read by its own goroutine (readLoop).

type pollState struct{}

type pollSet struct{}

func (*pollSet) stop() {}

func (s *Server) startReading(c *conn) { go c.readLoop() }

func (c *conn) untrack() {}
