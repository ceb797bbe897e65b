package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sample is go test output as make bench collects it: two packages, sub-benchmarks with
// and without a GOMAXPROCS suffix, custom units, a benchmark's own printed table, logs, and
// the same benchmark run twice.
const sample = `goos: linux
goarch: amd64
pkg: github.com/petfabric/petfabric/pkg/iscsi
cpu: Intel(R) Xeon(R) Processor
BenchmarkProbe/discovery-2              	     100	   1200000 ns/op	       900.0 p50-µs	      2500 p99-µs	       800.0 rtt-µs
BenchmarkProbe/tcp-connect-baseline-2   	    1000	     60000 ns/op	        50.00 p50-µs	       200.0 p99-µs
PASS
ok  	github.com/petfabric/petfabric/pkg/iscsi	3.1s
goos: linux
goarch: amd64
pkg: github.com/petfabric/petfabric/cmd/flex
cpu: Intel(R) Xeon(R) Processor
BenchmarkExecInit-2   	     100	   4000000 ns/op
BenchmarkExecTrue-2   	     500	   1000000 ns/op
BenchmarkExecTrue     	     500	   3000000 ns/op
request                | encoding/json floor | petfabric filter
names500 (0.0 MB)      |  4883 req/s p50 1ms | 4148 req/s
    bench_test.go:40: a log line: with a colon
PASS
ok  	github.com/petfabric/petfabric/cmd/flex	9.0s
`

func TestParse(t *testing.T) {
	run, err := Parse(strings.NewReader(sample), "sample")
	require.NoError(t, err)
	assert.Empty(t, run.Failures)
	assert.Equal(t, map[string]string{"goos": "linux", "goarch": "amd64", "cpu": "Intel(R) Xeon(R) Processor"}, run.Config)
	require.Len(t, run.Results, 5)
	assert.Equal(t, Result{Pkg: module + "pkg/iscsi", Name: "BenchmarkProbe/discovery", Iters: 100,
		Metrics: map[string]float64{"ns/op": 1.2e6, "p50-µs": 900, "p99-µs": 2500, "rtt-µs": 800}}, run.Results[0])
	assert.Equal(t, "BenchmarkProbe/tcp-connect-baseline", run.Results[1].Name)
	// ns/op stays ns/op (benchfmt would tidy it to sec/op): the specs name what go test printed.
	assert.Equal(t, Result{Pkg: module + "cmd/flex", Name: "BenchmarkExecInit", Iters: 100, Metrics: map[string]float64{"ns/op": 4e6}}, run.Results[2])
	assert.Equal(t, "BenchmarkExecTrue", run.Results[3].Name, "GOMAXPROCS suffix dropped")
	assert.Equal(t, "BenchmarkExecTrue", run.Results[4].Name, "no suffix with -cpu 1")
	assert.Empty(t, run.Stamp)

	run, err = Parse(strings.NewReader("commit: abc123\nversion: v1-dirty\ndate: 2026-11-30T13:43:00Z\n"+sample+"commit: later\n"), "stamped")
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"commit": "abc123", "version": "v1-dirty", "date": "2026-11-30T13:43:00Z"}, run.Stamp, "the first stamp wins")
	assert.Len(t, run.Results, 5)
}

func TestParseFailures(t *testing.T) {
	for _, tc := range []struct {
		name, out string
		want      []string
	}{
		{"benchmark failed", sample + "--- FAIL: BenchmarkProbe/discovery\n    probe_bench_test.go:30: refused\nFAIL\nFAIL\tgithub.com/petfabric/petfabric/pkg/iscsi\t1.0s\n",
			[]string{"--- FAIL: BenchmarkProbe/discovery", "FAIL", "FAIL\tgithub.com/petfabric/petfabric/pkg/iscsi\t1.0s"}},
		{"build failed", "FAIL\tgithub.com/petfabric/petfabric/test/e2e [build failed]\n",
			[]string{"FAIL\tgithub.com/petfabric/petfabric/test/e2e [build failed]"}},
		{"timeout", sample + "panic: test timed out after 20m0s\n", []string{"panic: test timed out after 20m0s"}},
		{"line torn by output", sample + "BenchmarkStatefulSetCreate-2 \tI1130 started apiserver\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			run, err := Parse(strings.NewReader(tc.out), "out")
			require.NoError(t, err)
			if tc.want == nil {
				require.Len(t, run.Failures, 1)
				assert.Contains(t, run.Failures[0], "unreadable benchmark line")
				return
			}
			assert.Equal(t, tc.want, run.Failures)
		})
	}
	_, err := Parse(strings.NewReader("PASS\nok  \tx\t0.1s\n"), "empty")
	assert.ErrorContains(t, err, "no benchmark results")
}

func ptr(v float64) *float64 { return &v }

func TestBuild(t *testing.T) {
	run, err := Parse(strings.NewReader(sample), "sample")
	require.NoError(t, err)
	// The same benchmark name in another package must not be read for cmd/flex's rows.
	run.Results = append(run.Results, Result{Pkg: module + "pkg/other", Name: "BenchmarkExecInit", Metrics: map[string]float64{"ns/op": 1}},
		Result{Pkg: module + "pkg/zero", Name: "BenchmarkZero", Metrics: map[string]float64{"v": 5, "base": 0}})
	specs := []Spec{
		{ID: "probe", Unit: "µs", Value: ref("pkg/iscsi", "BenchmarkProbe/discovery", "p50-µs"),
			Base: ref("pkg/iscsi", "BenchmarkProbe/tcp-connect-baseline", "p50-µs"), Goal: ratioGoal("<=", 10)},
		{ID: "init", Unit: "ns", Value: ref("cmd/flex", "BenchmarkExecInit", "ns/op"), Base: ref("cmd/flex", "BenchmarkExecTrue", "ns/op"),
			Goal: valueGoal("<", 1e6)},
		{ID: "missing", Unit: "s", Value: ref("test/e2e", "BenchmarkGone", "s"), Base: ref("cmd/flex", "BenchmarkExecTrue", "ns/op")},
		{ID: "zero-baseline", Unit: "events", Value: ref("pkg/zero", "BenchmarkZero", "v"), Base: ref("pkg/zero", "BenchmarkZero", "base"), Goal: ratioGoal("<=", 1)},
		{ID: "rate", Unit: "req/s", Value: ref("pkg/iscsi", "BenchmarkProbe/discovery", "rtt-µs"), Base: ref("pkg/iscsi", "BenchmarkProbe/discovery", "p50-µs"), Goal: ratioGoal(">=", 0.5)},
	}
	rows := Build(run, specs)
	require.Len(t, rows, len(specs))

	assert.Equal(t, ptr(900), rows[0].Value)
	assert.Equal(t, ptr(50), rows[0].Base)
	assert.Equal(t, ptr(18), rows[0].Ratio)
	assert.Equal(t, new(false), rows[0].GoalMet, "18× misses ≤ 10")
	assert.Equal(t, "lower", rows[0].Better)

	assert.Equal(t, ptr(4e6), rows[1].Value, "pkg/other's BenchmarkExecInit not mixed in")
	assert.Equal(t, ptr(2e6), rows[1].Base, "ExecTrue ran twice: the median of 1 ms and 3 ms")
	assert.Equal(t, ptr(2), rows[1].Ratio)
	assert.Equal(t, new(false), rows[1].GoalMet)

	assert.Nil(t, rows[2].Value)
	assert.NotNil(t, rows[2].Base)
	assert.Nil(t, rows[2].Ratio)
	assert.Nil(t, rows[2].GoalMet)
	assert.Equal(t, "not in this run: BenchmarkGone s of test/e2e", rows[2].Missing)

	assert.Equal(t, ptr(5), rows[3].Value)
	assert.Nil(t, rows[3].Ratio, "no ratio to a zero baseline")
	assert.Nil(t, rows[3].GoalMet, "a ratio goal cannot be judged without a ratio")
	assert.Empty(t, rows[3].Missing)

	assert.Equal(t, "higher", rows[4].Better)
	assert.Equal(t, new(true), rows[4].GoalMet, "800/900 ≥ 0.5")
}

func TestRatioText(t *testing.T) {
	for _, tc := range []struct {
		r    *float64
		want string
	}{{nil, "–"}, {ptr(1.004), "1.00×"}, {ptr(18), "18.00×"}, {ptr(0.00565), "0.00565×"}, {ptr(0.5432), "0.54×"}, {ptr(1234.5), "1,235×"}} {
		assert.Equal(t, tc.want, ratioText(tc.r))
	}
}

func TestGoalMet(t *testing.T) {
	for _, tc := range []struct {
		goal         *Goal
		value, ratio float64
		met          bool
	}{
		{valueGoal("<", 200), 199, 0, true},
		{valueGoal("<", 200), 200, 0, false},
		{valueGoal("<=", 0), 0, 0, true},
		{valueGoal("<=", 0), 1, 0, false},
		{ratioGoal("<=", 1), 5, 1, true},
		{ratioGoal("<=", 1), 5, 1.01, false},
		{ratioGoal(">=", 2), 5, 2, true},
		{ratioGoal(">=", 2), 5, 1.99, false},
	} {
		met, ok := tc.goal.met(Row{Value: ptr(tc.value), Ratio: ptr(tc.ratio)})
		require.True(t, ok)
		assert.Equal(t, tc.met, met, "%+v value %v ratio %v", *tc.goal, tc.value, tc.ratio)
	}
	_, ok := (*Goal)(nil).met(Row{Value: ptr(1)})
	assert.False(t, ok)
}

func TestFormatValue(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		unit string
		want string
	}{
		{1234567, "ns", "1.23 ms"},
		{950, "ns", "950 ns"},
		{203.7, "µs", "204 µs"},
		{50000, "µs", "50 ms"},
		{81.25, "s", "81.3 s"},
		{0.25, "s", "250 ms"},
		{1250, "ms", "1.25 s"},
		{4883.4, "req/s", "4,883 req/s"},
		{1234567, "req/s", "1,234,567 req/s"},
		{0.61, "MiB", "0.61 MiB"},
		{0, "events", "0 events"},
	} {
		assert.Equal(t, tc.want, formatValue(tc.v, tc.unit), "%v %s", tc.v, tc.unit)
	}
}

func testReport(t *testing.T) *Report {
	run, err := Parse(strings.NewReader(sample+"--- FAIL: BenchmarkX\n"), "sample")
	require.NoError(t, err)
	specs := []Spec{
		{ID: "probe", Figure: "iSCSI probe p50", Baseline: "TCP connect", Unit: "µs", Value: ref("pkg/iscsi", "BenchmarkProbe/discovery", "p50-µs"),
			Base: ref("pkg/iscsi", "BenchmarkProbe/tcp-connect-baseline", "p50-µs"), Goal: ratioGoal("<=", 20)},
		{ID: "init", Figure: "flex init", Baseline: "/bin/true", Unit: "ns", Value: ref("cmd/flex", "BenchmarkExecInit", "ns/op"),
			Base: ref("cmd/flex", "BenchmarkExecTrue", "ns/op"), Goal: valueGoal("<", 1e6)},
		{ID: "gone", Figure: "gone figure", Baseline: "nothing", Unit: "s", Value: ref("test/e2e", "BenchmarkGone", "s"), Base: ref("test/e2e", "BenchmarkGone", "b")},
	}
	return &Report{Schema: SchemaVersion, Date: time.Date(2026, 11, 30, 14, 0, 0, 0, time.UTC), Commit: "abc123", Version: "v0-dirty",
		Machine: machine(run.Config), Rows: Build(run, specs), Failures: run.Failures, Results: run.Results}
}

func TestRender(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, Render(&out, testReport(t)))
	lines := strings.Split(out.String(), "\n")
	require.GreaterOrEqual(t, len(lines), 8, out.String())
	assert.Contains(t, lines[0], "commit abc123")
	assert.Contains(t, lines[0], "Intel(R) Xeon(R) Processor")
	ws := regexp.MustCompile(`\s{2,}`)
	cells := func(line string) []string { return ws.Split(strings.TrimSpace(line), -1) }
	assert.Equal(t, []string{"FIGURE", "VALUE", "BASELINE (same run)", "RATIO", "GOAL"}, cells(lines[2]))
	assert.Equal(t, []string{"iSCSI probe p50", "900 µs", "50 µs", "TCP connect", "18.00×", "ratio ≤ 20 met"}, cells(lines[3]))
	assert.Equal(t, []string{"flex init", "4 ms", "2 ms", "/bin/true", "2.00×", "< 1 ms MISSED"}, cells(lines[4]))
	assert.Equal(t, []string{"gone figure", "–", "–", "nothing", "–"}, cells(lines[5]))
	assert.Contains(t, out.String(), "missing gone: not in this run: BenchmarkGone s of test/e2e, BenchmarkGone b of test/e2e\n")
	assert.Contains(t, out.String(), "failure: --- FAIL: BenchmarkX\n")
}

func TestJSONRoundTrip(t *testing.T) {
	rep := testReport(t)
	path := filepath.Join(t.TempDir(), "bench.json")
	require.NoError(t, Write(path, rep))
	got, err := Read(path)
	require.NoError(t, err)
	assert.Equal(t, rep, got)
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Contains(t, string(raw), `"schema": 1`)
	assert.Contains(t, string(raw), `"ratio": null`, "a missing ratio is null, not 0")

	for _, tc := range []struct{ name, content, err string }{
		{"other schema", `{"schema": 2, "rows": []}`, "has schema 2; this benchtable reads schema 1"},
		{"no schema", `{"rows": []}`, "has schema 0"},
		{"not json", `goos: linux`, "is not a bench.json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "x.json")
			require.NoError(t, os.WriteFile(p, []byte(tc.content), 0o644))
			_, err := Read(p)
			assert.ErrorContains(t, err, tc.err)
		})
	}
	_, err = Read(filepath.Join(t.TempDir(), "absent.json"))
	assert.ErrorContains(t, err, "read bench report")
}

func reportWith(rows ...Row) *Report { return &Report{Schema: SchemaVersion, Rows: rows} }

func TestCompare(t *testing.T) {
	row := func(id, unit string, v float64) Row {
		return Row{ID: id, Unit: unit, Better: better(unit), Value: ptr(v), Ratio: ptr(v / 10)}
	}
	old := reportWith(row("lat-up-11", "µs", 100), row("lat-up-9", "µs", 100), row("lat-down", "ms", 100),
		row("rps-down-11", "req/s", 1000), row("rps-down-9", "req/s", 1000), row("rps-up", "req/s", 1000),
		row("rss-up-20", "MiB", 100), row("unit-changed", "ms", 1), row("gone", "s", 1),
		Row{ID: "was-missing", Unit: "s", Better: "lower"}, Row{ID: "never-ran", Unit: "s", Better: "lower"})
	cur := reportWith(row("lat-up-11", "µs", 111), row("lat-up-9", "µs", 109), row("lat-down", "ms", 50),
		row("rps-down-11", "req/s", 889), row("rps-down-9", "req/s", 910), row("rps-up", "req/s", 1500),
		row("rss-up-20", "MiB", 120), row("unit-changed", "µs", 1000), row("was-missing", "s", 3), Row{ID: "never-ran", Unit: "s", Better: "lower"}, row("brand-new", "s", 1))
	deltas := Compare(old, cur, RegressionThreshold)
	got := map[string]Delta{}
	var order []string
	for _, d := range deltas {
		got[d.ID] = d
		order = append(order, d.ID)
	}
	assert.Equal(t, []string{"lat-up-11", "lat-up-9", "lat-down", "rps-down-11", "rps-down-9", "rps-up", "rss-up-20",
		"unit-changed", "was-missing", "never-ran", "brand-new", "gone"}, order)
	for id, regressed := range map[string]bool{"lat-up-11": true, "lat-up-9": false, "lat-down": false,
		"rps-down-11": true, "rps-down-9": false, "rps-up": false, "rss-up-20": true} {
		assert.Equal(t, regressed, got[id].Regressed, id)
		require.NotNil(t, got[id].Change, id)
	}
	assert.InDelta(t, 1.11, *got["lat-up-11"].Change, 1e-9)
	assert.InDelta(t, 0.889, *got["rps-down-11"].Change, 1e-9)
	assert.Equal(t, "unit changed (ms → µs): not compared", got["unit-changed"].Note)
	assert.Equal(t, "not in OLD", got["was-missing"].Note)
	assert.Equal(t, "in neither", got["never-ran"].Note)
	assert.Equal(t, "new row", got["brand-new"].Note)
	assert.Equal(t, "not in NEW", got["gone"].Note)
	for _, id := range []string{"unit-changed", "was-missing", "never-ran", "brand-new", "gone"} {
		assert.False(t, got[id].Regressed, id)
		assert.Nil(t, got[id].Change, id)
	}

	var out bytes.Buffer
	n, err := RenderCompare(&out, old, cur, deltas, RegressionThreshold)
	require.NoError(t, err)
	assert.Equal(t, 3, n)
	assert.Regexp(t, `lat-up-11\s+100 µs\s+111 µs\s+1\.11×\s+lower\s+10\.00× → 11\.10×\s+REGRESSION \(> 10% worse\)`, out.String())
	assert.Regexp(t, `rps-up\s+1,000 req/s\s+1,500 req/s\s+1\.50×\s+higher\s+100\.00× → 150\.00×\s+ok`, out.String())
	assert.Contains(t, out.String(), "3 regression(s) over 10%")
}

func TestRunExitCodes(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
		return p
	}
	ok := write("ok.txt", sample)
	failed := write("failed.txt", sample+"FAIL\tgithub.com/petfabric/petfabric/test/e2e\t5s\n")
	oldJSON, newJSON := filepath.Join(dir, "old.json"), filepath.Join(dir, "new.json")
	code := func(args ...string) (int, string) {
		var out, errOut bytes.Buffer
		c := run(args, &out, &errOut)
		return c, out.String() + errOut.String()
	}

	// The sample has a few of the real rows: the others are missing, which fails a full run.
	c, out := code("table", "-in", ok, "-json", oldJSON)
	assert.Equal(t, 1, c, out)
	assert.Contains(t, out, "rows missing")
	assert.Regexp(t, `flex driver .init.*\s4 ms\s+2 ms\s+one exec of /bin/true\s+2\.00×`, out)
	c, out = code("table", "-in", ok, "-json", oldJSON, "-allow-missing", "-commit", "c1")
	assert.Equal(t, 0, c, out)
	c, out = code("table", "-in", failed, "-json", "", "-allow-missing")
	assert.Equal(t, 1, c, out)
	assert.Contains(t, out, "1 failure line(s)")

	// The log's stamp names the code measured; the flags are only the fallback.
	stamped := write("stamped.txt", "commit: measured\nversion: v9\ndate: 2026-11-30T13:43:00Z\n"+sample)
	stampedJSON := filepath.Join(dir, "stamped.json")
	c, out = code("table", "-in", stamped, "-json", stampedJSON, "-allow-missing", "-commit", "drawn-later", "-version", "v10")
	require.Equal(t, 0, c, out)
	rep, err := Read(stampedJSON)
	require.NoError(t, err)
	assert.Equal(t, "measured", rep.Commit)
	assert.Equal(t, "v9", rep.Version)
	assert.Equal(t, time.Date(2026, 11, 30, 13, 43, 0, 0, time.UTC), rep.Date)
	c, out = code("table", "-in", write("baddate.txt", "date: yesterday\n"+sample), "-json", "", "-allow-missing")
	assert.Equal(t, 2, c, out)
	assert.Contains(t, out, "the log's date line")

	slower := write("slower.txt", strings.Replace(sample, "BenchmarkExecInit-2   \t     100\t   4000000 ns/op", "BenchmarkExecInit-2   \t     100\t   5000000 ns/op", 1))
	c, out = code("table", "-in", slower, "-json", newJSON, "-allow-missing", "-commit", "c2")
	require.Equal(t, 0, c, out)
	c, out = code("compare", oldJSON, newJSON)
	assert.Equal(t, 1, c, out)
	assert.Regexp(t, `flex-init\s+4 ms\s+5 ms\s+1\.25×\s+lower.*REGRESSION`, out)
	c, out = code("compare", oldJSON, oldJSON)
	assert.Equal(t, 0, c, out)
	assert.Contains(t, out, "0 regression(s)")
	c, out = code("compare", "-threshold", "0.3", oldJSON, newJSON)
	assert.Equal(t, 0, c, out)

	for _, args := range [][]string{{}, {"nope"}, {"table"}, {"compare", oldJSON}} {
		c, out = code(args...)
		assert.Equal(t, 2, c, "%v: %s", args, out)
	}
	c, out = code("compare", oldJSON, filepath.Join(dir, "absent.json"))
	assert.Equal(t, 2, c, out)
}

// TestSpecs checks the row list itself: unique IDs, units and goals the table understands,
// and every benchmark it names defined in the package it names (a renamed benchmark must
// fail here, not show up as a missing row after an hour of make bench).
func TestSpecs(t *testing.T) {
	ids := map[string]bool{}
	for _, s := range Specs {
		assert.False(t, ids[s.ID], "duplicate id %s", s.ID)
		ids[s.ID] = true
		assert.NotEmpty(t, s.Figure, s.ID)
		assert.NotEmpty(t, s.Baseline, s.ID)
		assert.NotEmpty(t, s.Unit, s.ID)
		if s.Goal != nil {
			assert.Contains(t, []string{"ratio", "value"}, s.Goal.On, s.ID)
			assert.Contains(t, []string{"<", "<=", ">="}, s.Goal.Op, s.ID)
		}
		for _, r := range []Ref{s.Value, s.Base} {
			require.NotEmpty(t, r.Metric, s.ID)
			fn := strings.SplitN(r.Bench, "/", 2)[0]
			files, err := filepath.Glob(filepath.Join("..", "..", r.Pkg, "*_test.go"))
			require.NoError(t, err)
			found := false
			for _, f := range files {
				src, err := os.ReadFile(f)
				require.NoError(t, err)
				if bytes.Contains(src, []byte("func "+fn+"(b *testing.B)")) {
					found = true
				}
			}
			assert.True(t, found, "%s: no func %s in %s", s.ID, fn, r.Pkg)
		}
	}
	assert.Equal(t, "higher", better("req/s"))
	assert.Equal(t, "higher", better("ops/s"))
	for _, u := range []string{"ns", "µs", "ms", "s", "MiB", "events"} {
		assert.Equal(t, "lower", better(u), u)
	}
}
