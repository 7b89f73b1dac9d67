package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/agentwire/agentwire/client"
	"github.com/agentwire/agentwire/internal/testserver"
)

// serverURL is where `agentwire serve --dev --api-keys example-key`
// listens, e.g. "http://127.0.0.1:8080". Here it starts one in this test
// process the first time an example asks (examples run after the tests),
// which TestMain stops.
func serverURL() string {
	exampleOnce.Do(func() {
		dir, err := os.MkdirTemp("", "client-examples-")
		if err != nil {
			log.Fatal(err)
		}
		exampleDir = dir
		exampleServer, err = testserver.StartMain(dir, "--dev", "--jwt-secret", testSecret, "--log-level", "error", "--api-keys", "example-key")
		if err != nil {
			log.Fatal(err)
		}
	})
	return exampleServer.URL
}

var (
	exampleOnce   sync.Once
	exampleServer *testserver.Server
	exampleDir    string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if exampleServer != nil {
		if err := exampleServer.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "example server:", err)
			code = 1
		}
		os.RemoveAll(exampleDir)
	}
	os.Exit(code)
}

// A run's events, then its end.
func ExampleConn_Send() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, client.Options{
		URL:      serverURL(),
		Token:    client.DevTokens(nil, serverURL(), "alice"),
		RunsOnly: true, // only Runs get events: nobody has to drain Conn.Events
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	run, err := c.Send(ctx, "what is 12*(3+4)?", client.SendOptions{})
	if err != nil {
		log.Fatal(err)
	}
	for ev := range run.Events() { // closed after the terminal event
		if tc, ok := ev.ToolCompleted(); ok {
			fmt.Printf("tool %s: %s\n", tc.Tool, tc.Result)
		}
	}
	final, err := run.Wait(ctx)
	if err != nil {
		log.Fatal(err)
	}
	done, _ := final.AgentCompleted()
	fmt.Println(done.FinalResponse)
	// Output:
	// tool calculator: 84
	// The calculator says 12*(3+4) = 84.
}

// Wait alone: it takes the run's events itself.
func ExampleRun_Wait() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, client.Options{URL: serverURL(), Token: client.DevTokens(nil, serverURL(), "bob"), RunsOnly: true})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	run, err := c.Send(ctx, "what is 1+1?", client.SendOptions{})
	if err != nil {
		log.Fatal(err)
	}
	final, err := run.Wait(ctx)
	if err != nil {
		log.Fatal(err)
	}
	done, _ := final.AgentCompleted()
	fmt.Println(done.FinalResponse)

	// The same run over REST: the thread's messages, and the run's outcome.
	page, err := c.MessagesPage(ctx, run.ThreadID, client.Page{Limit: 10})
	if err != nil {
		log.Fatal(err)
	}
	for _, m := range page.Messages {
		fmt.Printf("%s: %s\n", m.Role, m.Content)
	}
	info, err := c.Run(ctx, run.RunID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(info.Status)
	// Output:
	// The calculator says 1+1 = 2.
	// user: what is 1+1?
	// assistant: The calculator says 1+1 = 2.
	// completed
}

// Stop a run; it ends with agent_error code cancelled.
func ExampleRun_Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, client.Options{URL: serverURL(), Token: client.DevTokens(nil, serverURL(), "carol"), RunsOnly: true})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	run, err := c.Send(ctx, "slow: count to ten", client.SendOptions{})
	if err != nil {
		log.Fatal(err)
	}
	if err := run.Stop(ctx); err != nil {
		log.Fatal(err)
	}
	final, err := run.Wait(ctx)
	if err != nil {
		log.Fatal(err)
	}
	if e, ok := final.AgentError(); ok {
		fmt.Println(final.Type, e.Code)
	}
	// Output:
	// agent_error cancelled
}

// A server program adds an event to a user's stream; every connection of
// that user gets it.
func ExamplePublisher_Publish() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, client.Options{URL: serverURL(), Token: client.DevTokens(nil, serverURL(), "dave")})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	pub := &client.Publisher{URL: serverURL(), APIKey: "example-key"}
	data, _ := json.Marshal(map[string]string{"text": "your report is ready"})
	if _, err := pub.Publish(ctx, client.PublishRequest{UserID: "dave", Type: "app.notice", Data: data}); err != nil {
		log.Fatal(err)
	}
	for ev := range c.Events() {
		if ev.Type == "app.notice" {
			fmt.Println(ev.Type, string(ev.Data))
			break
		}
	}
	// Output:
	// app.notice {"text":"your report is ready"}
}
