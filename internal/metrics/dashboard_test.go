package metrics_test

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/agentwire/agentwire/internal/metrics"
)

// dashboardPath is the Grafana dashboard shipped in deploy/.
const dashboardPath = "../../deploy/grafana/agentwire.json"

// dashboard is what the check reads of a Grafana dashboard.
type dashboard struct {
	Title         string  `json:"title"`
	UID           string  `json:"uid"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int                 `json:"id"`
	Type       string              `json:"type"`
	Title      string              `json:"title"`
	Datasource *datasource         `json:"datasource"`
	GridPos    *struct{ H, W int } `json:"gridPos"`
	Targets    []struct {
		RefID      string      `json:"refId"`
		Expr       string      `json:"expr"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// exported is every metric name the server's registry exports, with its
// type where a family has a sample (every histogram does once the vectors
// below have children).
func exported(t *testing.T) (names map[string]bool, types map[string]dto.MetricType) {
	t.Helper()
	m := metrics.New()
	// The vectors the server gives children to as it starts.
	m.Runs("demo")
	m.StreamAppend.WithLabelValues("memory")
	m.Closes.WithLabelValues("1000")
	m.ErrorsSent.WithLabelValues("invalid_request")
	m.Tokens.WithLabelValues("demo", "input")

	names = make(map[string]bool)
	ch := make(chan *prometheus.Desc)
	go func() { m.Registry.Describe(ch); close(ch) }()
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range ch {
		sub := fq.FindStringSubmatch(d.String())
		if sub == nil {
			t.Fatalf("no name in %s", d)
		}
		names[sub[1]] = true
	}
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	types = make(map[string]dto.MetricType)
	for _, f := range fams {
		types[f.GetName()] = f.GetType()
	}
	return names, types
}

// checkName reports why name is not a series the server exports: a
// registered metric, or a histogram's (or summary's) _bucket, _sum or _count.
func checkName(name string, names map[string]bool, types map[string]dto.MetricType) error {
	if names[name] {
		return nil
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suf)
		if !ok || !names[base] {
			continue
		}
		switch types[base] {
		case dto.MetricType_HISTOGRAM:
			return nil
		case dto.MetricType_SUMMARY:
			if suf != "_bucket" {
				return nil
			}
		}
		return fmt.Errorf("%s: %s is a %v, which has no %s series", name, base, types[base], suf)
	}
	return fmt.Errorf("%s is not exported by the server", name)
}

var (
	promString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	promMatchers = regexp.MustCompile(`\{[^{}]*\}`)
	promRange    = regexp.MustCompile(`\[[^\[\]]*\]`)
	promGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	promIdent    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	promKeywords = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true,
		"group_right": true, "and": true, "or": true, "unless": true, "offset": true, "bool": true, "inf": true, "nan": true}
	labelValues = regexp.MustCompile(`^\s*label_values\(\s*(.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$`)
)

// metricNames returns the metric names a PromQL expression selects: the
// identifiers left once strings, label matchers, ranges and grouping
// labels are cut out that are neither functions (followed by "("),
// keywords nor parts of numbers. Grafana's label_values(metric, label)
// gives its metric.
func metricNames(expr string) []string {
	if m := labelValues.FindStringSubmatch(expr); m != nil {
		expr = m[1]
	}
	expr = promString.ReplaceAllString(expr, `""`)
	expr = promMatchers.ReplaceAllString(expr, " ")
	expr = promRange.ReplaceAllString(expr, " ")
	expr = promGrouping.ReplaceAllString(expr, " ")
	var out []string
	for _, loc := range promIdent.FindAllStringIndex(expr, -1) {
		id := expr[loc[0]:loc[1]]
		if loc[0] > 0 && strings.ContainsAny(expr[loc[0]-1:loc[0]], "0123456789.$") {
			continue // 1e3, 0.5, a $variable
		}
		if rest := strings.TrimLeft(expr[loc[1]:], " \t\n"); strings.HasPrefix(rest, "(") || promKeywords[strings.ToLower(id)] {
			continue
		}
		out = append(out, id)
	}
	return out
}

func TestMetricNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`histogram_quantile(0.95, sum by (le, tool) (rate(agentwire_tool_duration_seconds_bucket{instance=~"$instance"}[$__rate_interval])))`,
			[]string{"agentwire_tool_duration_seconds_bucket"}},
		{`sum(rate(a_total{x="}{[by (y)"}[5m])) / on(instance) group_left(job) b_total > bool 1e3`, []string{"a_total", "b_total"}},
		{`label_values(agentwire_connections{job=~"$job"}, instance)`, []string{"agentwire_connections"}},
		{`sum without (le) (rate(up[1m] offset 5m)) or vector(0)`, []string{"up"}},
	} {
		if got := metricNames(tc.expr); !slices.Equal(got, tc.want) {
			t.Errorf("metricNames(%q) = %q, want %q", tc.expr, got, tc.want)
		}
	}
}

func TestCheckName(t *testing.T) {
	names, types := exported(t)
	for name, ok := range map[string]bool{
		"agentwire_runs_total":                   true,
		"agentwire_run_duration_seconds_bucket":  true,
		"agentwire_stream_append_seconds_count":  true,
		"go_gc_duration_seconds_sum":             true,  // a summary
		"go_gc_duration_seconds_bucket":          false, // a summary has no buckets
		"agentwire_runs_total_count":             false, // a counter
		"agentwire_runs":                         false,
		"agentwire_run_duration_seconds_buckets": false,
	} {
		if err := checkName(name, names, types); (err == nil) != ok {
			t.Errorf("checkName(%s) = %v, want ok %v", name, err, ok)
		}
	}
}

// TestDashboard checks deploy/grafana/agentwire.json: a Grafana dashboard
// on a Prometheus data source variable whose every query selects only
// series the server exports, with a panel for each of the metrics an
// operator of agentwire watches.
func TestDashboard(t *testing.T) {
	raw, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s is not dashboard JSON: %v", dashboardPath, err)
	}
	if d.Title == "" || d.UID == "" || d.SchemaVersion < 30 || len(d.Panels) == 0 {
		t.Fatalf("dashboard: title %q, uid %q, schemaVersion %d, %d panels", d.Title, d.UID, d.SchemaVersion, len(d.Panels))
	}
	names, types := exported(t)

	var bad []string
	used := make(map[string]bool)
	check := func(where, expr string) {
		ns := metricNames(expr)
		if len(ns) == 0 {
			bad = append(bad, fmt.Sprintf("%s: %q selects no metric", where, expr))
		}
		for _, n := range ns {
			if err := checkName(n, names, types); err != nil {
				bad = append(bad, fmt.Sprintf("%s: %v", where, err))
			}
			used[n] = true
		}
	}

	dsVar := ""
	for _, v := range d.Templating.List {
		switch v.Type {
		case "datasource":
			var q string
			if err := json.Unmarshal(v.Query, &q); err != nil || q != "prometheus" {
				bad = append(bad, fmt.Sprintf("variable %s: a data source variable of %s, want prometheus", v.Name, v.Query))
			}
			dsVar = "${" + v.Name + "}"
		case "query":
			var q struct {
				Query string `json:"query"`
			}
			if err := json.Unmarshal(v.Query, &q); err != nil {
				if err := json.Unmarshal(v.Query, &q.Query); err != nil {
					bad = append(bad, fmt.Sprintf("variable %s: query %s unreadable", v.Name, v.Query))
				}
			}
			check("variable "+v.Name, q.Query)
		}
	}
	if dsVar == "" {
		t.Fatal("the dashboard has no Prometheus data source variable")
	}

	ids := make(map[int]bool)
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
			if ids[p.ID] {
				bad = append(bad, where+": duplicate id")
			}
			ids[p.ID] = true
			if p.GridPos == nil || p.GridPos.W <= 0 || p.GridPos.H <= 0 {
				bad = append(bad, where+": no gridPos")
			}
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != dsVar {
				bad = append(bad, fmt.Sprintf("%s: data source %+v, want prometheus %s", where, p.Datasource, dsVar))
			}
			if len(p.Targets) == 0 {
				bad = append(bad, where+": no query")
			}
			for _, tg := range p.Targets {
				if tg.Datasource != nil && tg.Datasource.UID != dsVar {
					bad = append(bad, fmt.Sprintf("%s %s: data source %+v", where, tg.RefID, tg.Datasource))
				}
				check(where+" "+tg.RefID, tg.Expr)
			}
		}
	}
	walk(d.Panels)

	// What an operator watches must be on it; latencies as quantiles.
	for _, n := range []string{
		"agentwire_connections", "agentwire_frames_in_total", "agentwire_frames_out_total", "agentwire_runs_total",
		"agentwire_run_duration_seconds_bucket", "agentwire_first_event_seconds_bucket", "agentwire_first_delta_seconds_bucket",
		"agentwire_tool_calls_total", "agentwire_tool_duration_seconds_bucket", "agentwire_resumes_total",
		"agentwire_queue_overflows_total", "agentwire_auth_failures_total", "agentwire_stream_append_seconds_bucket",
	} {
		if !used[n] {
			bad = append(bad, "no panel uses "+n)
		}
	}
	if len(bad) > 0 {
		t.Fatalf("%s:\n%s", dashboardPath, strings.Join(bad, "\n"))
	}
}
