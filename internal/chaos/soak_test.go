package chaos

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentwire/agentwire/internal/auth"
	"github.com/agentwire/agentwire/internal/testproc"
)

var (
	flagDuration = flag.Duration("chaos.duration", 0, "soak length of the cluster chaos test (default 60s: the package fits CI's 3 minutes); the SQLite test soaks a quarter of it, at least 15s")
	flagSeed     = flag.Uint64("chaos.seed", 0, "seed of the fault schedule and of every random choice (0: random, printed at start)")
	flagUsers    = flag.Int("chaos.users", 24, "users, each with two tabs")
	flagRate     = flag.Int("chaos.rate", 80, "publishes per second (attempted; closed loop under 16 publishers)")
	flagFaults   = flag.String("chaos.faults", "", "comma-separated fault kinds the cluster test draws from (default all: redis_kill,node_kill,pg_terminate,redis_pause,partition)")
)

// load is what a soak drives besides its faults.
type load struct {
	users     int
	pubRate   int           // publishes/s
	runEvery  time.Duration // one user_message every …
	dropsPerS float64       // abrupt tab drops per second
}

func ciLoad() load {
	return load{users: *flagUsers, pubRate: *flagRate, runEvery: 400 * time.Millisecond, dropsPerS: 4}
}

// soak is one chaos run: nodes, tabs, publishers, runs and the record of it
// all.
type soak struct {
	t      *testing.T
	seed   uint64
	id     string
	load   load
	signer *auth.Signer
	nodes  []*node
	users  []string
	tabs   []*tab
	hc     *http.Client

	tokMu  sync.Mutex
	tokens map[string]string

	stats struct {
		connects, frames, drops, pubAttempts, runsSent atomic.Int64
	}

	start    time.Time
	stopTabs func()

	mu         sync.Mutex
	violations []violation
	errs       map[string]int // error answers by kind
	errAt      []timedErr     // the same, timed, for the per-fault figures
	pubs       []*pubRec
	runs       []*runRec
	faults     []faultRec
}

func newSoak(t *testing.T, name string, l load) *soak {
	seed := *flagSeed
	if seed == 0 {
		seed = rand.Uint64() % 1_000_000
	}
	t.Logf("chaos %s: seed %d (replay: go test -race -run '%s$' ./internal/chaos/ -chaos.seed %d)", name, seed, t.Name(), seed)
	s := &soak{t: t, seed: seed, id: randID(), load: l, signer: auth.NewSigner([]byte(testSecret)),
		tokens: map[string]string{}, errs: map[string]int{},
		hc: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	t.Cleanup(s.hc.CloseIdleConnections)
	for i := range l.users {
		s.users = append(s.users, fmt.Sprintf("chaos-%s-u%02d", s.id, i))
	}
	return s
}

// rng is a source derived from the seed, one per goroutine.
func (s *soak) rng(stream uint64) *rand.Rand { return rand.New(rand.NewPCG(s.seed, stream)) }

func (s *soak) token(user string) string {
	s.tokMu.Lock()
	defer s.tokMu.Unlock()
	if tok, ok := s.tokens[user]; ok {
		return tok
	}
	tok, _, err := s.signer.Sign(user, 3*time.Hour, "", "")
	if err != nil {
		panic(err)
	}
	s.tokens[user] = tok
	return tok
}

func (s *soak) count(c *atomic.Int64) { c.Add(1) }

// timedErr is one error answer (or refused connect) and when it came.
type timedErr struct {
	kind string
	at   time.Time
}

func (s *soak) countErr(kind string) {
	s.mu.Lock()
	s.errs[kind]++
	s.errAt = append(s.errAt, timedErr{kind, time.Now()})
	s.mu.Unlock()
}

func (s *soak) violate(inv, format string, args ...any) {
	s.mu.Lock()
	s.violations = append(s.violations, violation{inv, fmt.Sprintf(format, args...)})
	s.mu.Unlock()
}

// addTabs gives every user two tabs on different nodes.
func (s *soak) addTabs() {
	for i, u := range s.users {
		for j := range 2 {
			k := (i + j) % len(s.nodes)
			n := s.nodes[k]
			s.tabs = append(s.tabs, newTab(s, u, j, func() *node { return n }))
		}
	}
}

// do sends an HTTP request and returns status and body (0 on a transport
// error).
func (s *soak) do(method, u, bearer string, body any) (int, []byte) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = strings.NewReader(string(b))
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		return 0, nil
	}
	req.Header.Set("Authorization", "Bearer "+bearer)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func errorCodeOf(b []byte) string {
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(b, &e)
	return e.Error.Code
}

// publisher publishes one key, retrying (same idempotency key, any node)
// until acked or 20 s pass.
func (s *soak) publish(r *rand.Rand, user, key string) {
	p := &pubRec{user: user, key: key, start: time.Now()}
	s.mu.Lock()
	s.pubs = append(s.pubs, p)
	s.mu.Unlock()
	body := map[string]any{"user_id": user, "type": "chaos.pub", "data": map[string]any{"u": user, "k": key}, "idempotency_key": key}
	for time.Since(p.start) < 20*time.Second {
		s.count(&s.stats.pubAttempts)
		n := s.nodes[r.IntN(len(s.nodes))]
		code, b := s.do("POST", n.url()+"/api/v1/publish", testAPIKey, body)
		s.mu.Lock()
		p.attempts++
		s.mu.Unlock()
		if code == 200 {
			var out struct {
				Seq   uint64 `json:"seq"`
				Epoch string `json:"epoch"`
			}
			if err := json.Unmarshal(b, &out); err == nil {
				s.mu.Lock()
				p.acked, p.seq, p.epoch, p.ackAt = true, out.Seq, out.Epoch, time.Now()
				s.mu.Unlock()
				return
			}
		}
		s.countErr(fmt.Sprintf("publish %d %s", code, errorCodeOf(b)))
		time.Sleep(time.Duration(100+r.IntN(200)) * time.Millisecond)
	}
}

// sendRun sends one user_message from a tab of user with a
// client_message_id, retrying (same id) over drops and retryable errors
// until acked, refused for good, or 20 s pass.
func (s *soak) sendRun(r *rand.Rand, user string, tabs []*tab, n int) {
	content := "what is " + strconv.Itoa(n%97) + "*3?"
	if r.IntN(3) == 0 {
		content = "slow: what is " + strconv.Itoa(n%89) + "+4?"
	}
	rec := &runRec{user: user, cmid: fmt.Sprintf("m-%s-%d", s.id, n), content: content, sentAt: time.Now()}
	s.mu.Lock()
	s.runs = append(s.runs, rec)
	s.mu.Unlock()
	s.count(&s.stats.runsSent)
	for try := 0; time.Since(rec.sentAt) < 20*time.Second; try++ {
		tb := tabs[r.IntN(len(tabs))]
		f, err := tb.request(map[string]any{"type": "user_message", "content": content, "client_message_id": rec.cmid},
			fmt.Sprintf("r%d-%d", n, try), 15*time.Second)
		if err != nil {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		if f.Type == "ack" {
			s.mu.Lock()
			rec.runID, rec.ackAt = f.RunID, time.Now()
			s.mu.Unlock()
			return
		}
		s.mu.Lock()
		rec.errs = append(rec.errs, f.Code)
		s.mu.Unlock()
		s.countErr("user_message " + f.Code)
		if f.Code == "too_many_runs" || f.Code == "rate_limited" {
			return
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// drive runs tabs, publishers, runs and drops until stop is closed, then
// waits for the in-flight publishes and runs (they retry for at most 20 s).
// It returns a func that stops the tabs.
func (s *soak) drive(stop <-chan struct{}) (stopTabs func()) {
	tabStop := make(chan struct{})
	var tabWG, loadWG sync.WaitGroup
	for _, tb := range s.tabs {
		tabWG.Add(1)
		go tb.run(tabStop, &tabWG)
	}
	// Every tab is connected before the first event, so each tab's view
	// starts at seq 1.
	if !testproc.WaitFor(2*time.Minute, func() bool {
		for _, tb := range s.tabs {
			tb.mu.Lock()
			n := len(tb.estab)
			tb.mu.Unlock()
			if n == 0 {
				return false
			}
		}
		return true
	}) {
		s.t.Errorf("tabs not all connected within 2 minutes")
	}
	byUser := map[string][]*tab{}
	for _, tb := range s.tabs {
		byUser[tb.user] = append(byUser[tb.user], tb)
	}

	// Publishers: a pacer hands out tickets; 16 workers publish.
	tickets := make(chan int, 16)
	loadWG.Add(1)
	go func() {
		defer loadWG.Done()
		defer close(tickets)
		every := time.Second / time.Duration(max(s.load.pubRate, 1))
		tk := time.NewTicker(every)
		defer tk.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tk.C:
				select {
				case tickets <- i:
				default: // all busy: the achieved rate is what the cluster sustains
				}
			}
		}
	}()
	for w := range 16 {
		loadWG.Add(1)
		go func() {
			defer loadWG.Done()
			r := s.rng(100 + uint64(w))
			for i := range tickets {
				u := s.users[r.IntN(len(s.users))]
				s.publish(r, u, fmt.Sprintf("p%d", i))
			}
		}()
	}

	// Runs.
	loadWG.Add(1)
	go func() {
		defer loadWG.Done()
		r := s.rng(200)
		tk := time.NewTicker(s.load.runEvery)
		defer tk.Stop()
		var wg sync.WaitGroup
		defer wg.Wait()
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			case <-tk.C:
			}
			u := s.users[r.IntN(len(s.users))]
			rr := s.rng(1000 + uint64(n))
			wg.Add(1)
			go func() { defer wg.Done(); s.sendRun(rr, u, byUser[u], n) }()
		}
	}()

	// Abrupt drops.
	loadWG.Add(1)
	go func() {
		defer loadWG.Done()
		r := s.rng(300)
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
			}
			for k := s.load.dropsPerS / 10; k > 0; k-- {
				if k < 1 && r.Float64() > k {
					break
				}
				if s.tabs[r.IntN(len(s.tabs))].drop() {
					s.count(&s.stats.drops)
				}
			}
		}
	}()

	<-stop
	loadWG.Wait()
	return func() {
		close(tabStop)
		done := make(chan struct{})
		go func() { tabWG.Wait(); close(done) }()
		for {
			for _, tb := range s.tabs { // a tab blocks in its read until its socket goes
				tb.drop()
			}
			select {
			case <-done:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// fault is one entry of the schedule.
type fault struct {
	kind   string
	target int
	hold   time.Duration
	gap    time.Duration // calm after it
}

func (f fault) String() string {
	return fmt.Sprintf("%s(%d, hold %s, then %s calm)", f.kind, f.target, f.hold.Round(100*time.Millisecond), f.gap.Round(100*time.Millisecond))
}

// schedule draws faults from kinds until d is filled: every kind once in a
// seeded order first, then seeded random picks.
func schedule(r *rand.Rand, kinds []string, targets int, d time.Duration, hold func(kind string, r *rand.Rand) time.Duration) []fault {
	var out []fault
	order := append([]string(nil), kinds...)
	r.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	var used time.Duration
	for i := 0; ; i++ {
		k := kinds[r.IntN(len(kinds))]
		if i < len(order) {
			k = order[i]
		}
		f := fault{kind: k, target: r.IntN(targets), hold: hold(k, r), gap: time.Duration(3000+r.IntN(3000)) * time.Millisecond}
		if used > 0 && used+f.hold+f.gap > d {
			return out
		}
		used += f.hold + f.gap
		out = append(out, f)
	}
}

// runFaults plays the schedule, each fault through inject (which returns
// when the fault is healed), after a calm warm-up; it stops early when stop
// is closed.
func (s *soak) runFaults(plan []fault, inject func(f fault) (target string, err error), stop <-chan struct{}) {
	select {
	case <-stop:
		return
	case <-time.After(3 * time.Second):
	}
	for _, f := range plan {
		select {
		case <-stop:
			return
		default:
		}
		start := time.Now()
		target, err := inject(f)
		if err != nil {
			s.t.Errorf("fault %s: %v", f, err)
			return
		}
		s.mu.Lock()
		s.faults = append(s.faults, faultRec{kind: f.kind, target: target, start: start, healed: time.Now()})
		s.mu.Unlock()
		select {
		case <-stop:
			return
		case <-time.After(f.gap):
		}
	}
}

// play drives the load while the fault plan runs, then stops the load
// (the tabs stay connected until finish).
func (s *soak) play(plan []fault, inject func(f fault) (string, error), d time.Duration) {
	s.start = time.Now()
	stop, hard := make(chan struct{}), make(chan struct{})
	go func() {
		s.runFaults(plan, inject, hard)
		// The plan fits in d; a slow box may take longer, never much.
		close(stop)
	}()
	timer := time.AfterFunc(d+time.Minute, func() { close(hard) })
	defer timer.Stop()
	s.stopTabs = s.drive(stop)
}

// history reads u's whole retained stream through n, following the pages
// of GET /api/v1/events.
func (s *soak) history(n *node, u string) (history, error) {
	var h history
	since := uint64(0)
	for {
		code, b := s.do("GET", n.url()+"/api/v1/events?limit=1000&since="+strconv.FormatUint(since, 10), s.token(u), nil)
		var page struct {
			history
			Next *uint64 `json:"next"`
		}
		if code != 200 || json.Unmarshal(b, &page) != nil {
			return history{}, fmt.Errorf("status %d %.200s", code, b)
		}
		h.Epoch, h.HeadSeq = page.Epoch, page.HeadSeq
		h.Events = append(h.Events, page.Events...)
		if page.Next == nil {
			return h, nil
		}
		since = *page.Next
	}
}

// pages calls get with the cursor of each page of a paged list endpoint
// (u plus after=<next>), from the first page until next is null.
func (s *soak) pages(u, bearer string, each func([]byte) error) error {
	next := ""
	for {
		q := u + "?limit=1000"
		if next != "" {
			q += "&after=" + url.QueryEscape(next)
		}
		code, b := s.do("GET", q, bearer, nil)
		var page struct {
			Next *string `json:"next"`
		}
		if code != 200 || json.Unmarshal(b, &page) != nil {
			return fmt.Errorf("%s: status %d", u, code)
		}
		if err := each(b); err != nil {
			return err
		}
		if page.Next == nil {
			return nil
		}
		next = *page.Next
	}
}

// restStored lists, through the user endpoints, every run a stored user
// message names (GET /api/v1/threads, then each thread's messages): the
// runs a store without direct access (SQLite in the node's data dir) kept.
func (s *soak) restStored() ([]storedRun, error) {
	var out []storedRun
	n := s.nodes[0]
	for _, u := range s.users {
		var threads []string
		err := s.pages(n.url()+"/api/v1/threads", s.token(u), func(b []byte) error {
			var ts struct {
				Threads []struct {
					ID string `json:"id"`
				} `json:"threads"`
			}
			if err := json.Unmarshal(b, &ts); err != nil {
				return err
			}
			for _, th := range ts.Threads {
				threads = append(threads, th.ID)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("threads of %s: %w", u, err)
		}
		for _, th := range threads {
			err := s.pages(n.url()+"/api/v1/threads/"+th+"/messages", s.token(u), func(b []byte) error {
				var ms struct {
					Messages []struct {
						Role  string `json:"role"`
						RunID string `json:"run_id"`
					} `json:"messages"`
				}
				if err := json.Unmarshal(b, &ms); err != nil {
					return err
				}
				for _, m := range ms.Messages {
					if m.Role == "user" && m.RunID != "" {
						var r restRun
						_, rb := s.do("GET", n.url()+"/api/v1/runs/"+m.RunID, s.token(u), nil)
						_ = json.Unmarshal(rb, &r)
						out = append(out, storedRun{ID: m.RunID, User: u, Status: r.Status, ErrorCode: r.ErrorCode})
					}
				}
				return nil
			})
			if err != nil {
				return nil, fmt.Errorf("messages of thread %s of %s: %w", th, u, err)
			}
		}
	}
	return out, nil
}

// finish waits for the runs to end, makes every tab resume one last time,
// reads the server's history and checks every invariant; it prints the
// summary and fails the test on any violation.
func (s *soak) finish(stopTabs func(), stored func() ([]storedRun, error), historyLost bool, soakStart time.Time) {
	t := s.t
	n0 := s.nodes[0]
	// Runs end: acked runs leave "running" (slow runs take ~2 s, a lost node's
	// runs are reaped after their lease). Progress-based: give up after 45 s
	// without any run ending.
	s.mu.Lock()
	runs := append([]*runRec(nil), s.runs...)
	pubs := append([]*pubRec(nil), s.pubs...)
	s.mu.Unlock()
	ids := map[string]string{} // run → user
	for _, r := range runs {
		if r.runID != "" {
			ids[r.runID] = r.user
		}
	}
	var rows []storedRun
	if stored != nil {
		var err error
		if rows, err = stored(); err != nil {
			t.Errorf("read stored runs: %v", err)
		}
		for _, r := range rows {
			ids[r.ID] = r.User
		}
	}
	rest := map[string]restRun{}
	readRuns := func() (running int) {
		for id, u := range ids {
			if r, ok := rest[id]; ok && r.code == 200 && r.Status != "running" {
				continue
			}
			code, b := s.do("GET", n0.url()+"/api/v1/runs/"+id, s.token(u), nil)
			var rr restRun
			_ = json.Unmarshal(b, &rr)
			rr.code = code
			rest[id] = rr
			if code != 200 || rr.Status == "running" {
				running++
			}
		}
		return running
	}
	left, lastProgress := readRuns(), time.Now()
	for left > 0 && time.Since(lastProgress) < 45*time.Second {
		time.Sleep(500 * time.Millisecond)
		if l := readRuns(); l < left {
			left, lastProgress = l, time.Now()
		}
	}
	settled := time.Now()

	// The server's history, then one last resume per tab.
	stopTabs()
	hist := map[string]history{}
	for _, u := range s.users {
		var h history
		for try := 0; ; try++ {
			var err error
			if h, err = s.history(n0, u); err == nil {
				break
			}
			if try == 20 {
				t.Fatalf("history of %s: %v", u, err)
			}
			time.Sleep(500 * time.Millisecond)
		}
		hist[u] = h
	}
	var views []tabView
	var wg sync.WaitGroup
	var resumeErrs sync.Map
	sem := make(chan struct{}, 8)
	for _, tb := range s.tabs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := tb.finalResume(hist[tb.user].HeadSeq, 30*time.Second); err != nil {
				resumeErrs.Store(tb.name, err)
			}
		}()
	}
	wg.Wait()
	for _, tb := range s.tabs {
		tb.mu.Lock()
		views = append(views, tabView{name: tb.name, user: tb.user, frames: append([]got(nil), tb.frames...)})
		tb.mu.Unlock()
	}
	s.mu.Lock()
	in := checkInput{historyLost: historyLost, histories: hist, tabs: views, stored: rows, rest: rest, faults: s.faults}
	for _, p := range pubs {
		in.pubs = append(in.pubs, *p)
	}
	for _, r := range runs {
		in.runs = append(in.runs, *r)
	}
	vs := append(s.violations, check(in)...)
	s.mu.Unlock()

	s.summary(in, vs, soakStart, settled)
	resumeErrs.Range(func(k, v any) bool {
		t.Errorf("%s: %v", k, v)
		return true
	})
	if len(vs) > 0 {
		by := map[string][]string{}
		for _, v := range vs {
			by[v.inv] = append(by[v.inv], v.msg)
		}
		for _, inv := range invariants {
			msgs := by[inv]
			if len(msgs) == 0 {
				continue
			}
			const maxShown = 25
			var b strings.Builder
			for i, m := range msgs {
				if i == maxShown {
					fmt.Fprintf(&b, "\n    … and %d more", len(msgs)-maxShown)
					break
				}
				b.WriteString("\n    " + m)
			}
			t.Errorf("seed %d: invariant %q violated %d times:%s", s.seed, inv, len(msgs), b.String())
		}
	}
}

func p99(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[min(len(ds)-1, len(ds)*99/100)]
}

// summary prints the figures of the soak (and writes them to
// $AGENTWIRE_ARTIFACTS/chaos-<test>.txt when that is set).
func (s *soak) summary(in checkInput, vs []violation, start, settled time.Time) {
	var b strings.Builder
	acked, runsAcked := 0, 0
	var lat []time.Duration
	for _, p := range in.pubs {
		if p.acked {
			acked++
			lat = append(lat, p.ackAt.Sub(p.start))
		}
	}
	for _, r := range in.runs {
		if r.runID != "" {
			runsAcked++
		}
	}
	fmt.Fprintf(&b, "chaos summary %s, seed %d, %d nodes, %d users x 2 tabs, soak %s (+%s to settle)\n",
		s.t.Name(), s.seed, len(s.nodes), len(s.users), settled.Sub(start).Round(time.Second), time.Since(settled).Round(time.Second))
	fmt.Fprintf(&b, "  publishes: %d keys, %d acked, %d attempts, ack p99 %s\n", len(in.pubs), acked, s.stats.pubAttempts.Load(), p99(lat))
	fmt.Fprintf(&b, "  tabs: %d connects, %d abrupt drops, %d frames\n", s.stats.connects.Load(), s.stats.drops.Load(), s.stats.frames.Load())
	dial := map[string]int{}
	for _, tb := range s.tabs {
		tb.mu.Lock()
		for k, v := range tb.dialErrs {
			dial[k] += v
		}
		tb.mu.Unlock()
	}
	fmt.Fprintf(&b, "  refused connects: %v\n", dial)
	fmt.Fprintf(&b, "  runs: %d user_messages, %d acked, %d stored rows\n", len(in.runs), runsAcked, len(in.stored))
	s.mu.Lock()
	fmt.Fprintf(&b, "  error answers: %v\n", s.errs)
	s.mu.Unlock()
	// Per fault: publish-ack p99 over publishes started from the fault to 2 s
	// after its heal; delivery recovery: from the heal until the first
	// publish started after it had reached every tab of its user.
	recv := map[string]map[uint64]time.Time{} // user → seq → last tab's first receipt
	seen := map[string]map[uint64]int{}
	for _, tv := range in.tabs {
		if recv[tv.user] == nil {
			recv[tv.user], seen[tv.user] = map[uint64]time.Time{}, map[uint64]int{}
		}
		firsts := map[uint64]time.Time{}
		for _, g := range tv.frames {
			if g.Seq > 0 && g.Type != "resync_required" {
				if _, ok := firsts[g.Seq]; !ok {
					firsts[g.Seq] = g.at
				}
			}
		}
		for seq, at := range firsts {
			seen[tv.user][seq]++
			if at.After(recv[tv.user][seq]) {
				recv[tv.user][seq] = at
			}
		}
	}
	for _, f := range in.faults {
		var fl []time.Duration
		recovery := time.Duration(-1)
		for _, p := range in.pubs {
			if !p.acked {
				continue
			}
			if !p.start.Before(f.start) && !p.start.After(f.healed.Add(2*time.Second)) {
				fl = append(fl, p.ackAt.Sub(p.start))
			}
			if !p.start.Before(f.healed) && seen[p.user][p.seq] == 2 {
				if d := recv[p.user][p.seq].Sub(f.healed); recovery < 0 || d < recovery {
					recovery = d
				}
			}
		}
		errs := map[string]int{}
		s.mu.Lock()
		for _, e := range s.errAt {
			if !e.at.Before(f.start) && !e.at.After(f.healed.Add(2*time.Second)) {
				errs[e.kind]++
			}
		}
		s.mu.Unlock()
		fmt.Fprintf(&b, "  fault %-13s %-8s at +%5.1fs, held %5.1fs: %4d publishes, ack p99 %s, delivery recovered in %s; errors until heal+2s %v\n",
			f.kind, f.target, f.start.Sub(start).Seconds(), f.healed.Sub(f.start).Seconds(), len(fl), p99(fl).Round(time.Millisecond), recovery.Round(time.Millisecond), errs)
	}
	by := map[string]int{}
	for _, v := range vs {
		by[v.inv]++
	}
	for _, inv := range invariants {
		fmt.Fprintf(&b, "  invariant %-62q %d violations\n", inv, by[inv])
	}
	s.t.Log(b.String())
	if dir := os.Getenv("AGENTWIRE_ARTIFACTS"); dir != "" {
		name := strings.NewReplacer("/", "_").Replace(s.t.Name())
		for _, v := range vs { // every violation, not only the first of each kind
			fmt.Fprintf(&b, "VIOLATION %s: %s\n", v.inv, v.msg)
		}
		_ = os.WriteFile(filepath.Join(dir, "chaos-"+name+".txt"), []byte(b.String()), 0o644)
	}
}
