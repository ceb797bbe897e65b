package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"golang.org/x/perf/benchfmt"
)

// Result is one benchmark result line of `go test -bench` output: its package, its name
// without the GOMAXPROCS suffix, and its metrics keyed by the unit the benchmark printed
// (ns/op, B/op, and every b.ReportMetric unit, untouched).
type Result struct {
	Pkg     string             `json:"pkg"`
	Name    string             `json:"name"`
	Iters   int                `json:"iters"`
	Metrics map[string]float64 `json:"metrics"`
}

// Run is what one `make bench` printed: the results in order, the configuration lines go
// test writes before them (goos, goarch, cpu; the last value of each) and the lines that
// say a test binary or benchmark failed.
type Run struct {
	Results  []Result
	Config   map[string]string
	Failures []string
	// Stamp holds what make bench wrote at the top of its log before any go test ran
	// ("commit: …", "version: …", "date: …"): the code measured, not the code at the time
	// the table is drawn.
	Stamp map[string]string
}

// stampKeys are the lines make bench writes at the top of its log.
var stampKeys = []string{"commit", "version", "date"}

// Parse reads `go test -bench` output (several go test runs concatenated are fine).
// Benchmark lines are read by golang.org/x/perf/benchfmt, the parser of the Go benchmark
// format that benchstat uses, so every line go test can print (sub-benchmarks, GOMAXPROCS
// suffixes, custom units, configuration lines) is read as go test means it; a Benchmark
// line that does not parse (a benchmark's own output torn into it) is a failure, as are
// go test's "--- FAIL", "FAIL" and "panic:" lines.
func Parse(r io.Reader, name string) (*Run, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	run := &Run{Config: map[string]string{}, Stamp: map[string]string{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "--- FAIL") || line == "FAIL" || strings.HasPrefix(line, "FAIL\t") ||
			strings.HasPrefix(line, "panic:") {
			run.Failures = append(run.Failures, line)
		}
		for _, k := range stampKeys {
			if v, ok := strings.CutPrefix(line, k+": "); ok && run.Stamp[k] == "" {
				run.Stamp[k] = strings.TrimSpace(v)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	br := benchfmt.NewReader(bytes.NewReader(data), name)
	for br.Scan() {
		switch rec := br.Result().(type) {
		case *benchfmt.Result:
			res := Result{Pkg: rec.GetConfig("pkg"), Name: benchName(rec.Name), Iters: rec.Iters, Metrics: map[string]float64{}}
			for _, v := range rec.Values {
				unit, val := v.Unit, v.Value
				if v.OrigUnit != "" {
					unit, val = v.OrigUnit, v.OrigValue
				}
				res.Metrics[unit] = val
			}
			for _, k := range []string{"goos", "goarch", "cpu"} {
				if v := rec.GetConfig(k); v != "" {
					run.Config[k] = v
				}
			}
			run.Results = append(run.Results, res)
		case *benchfmt.SyntaxError:
			run.Failures = append(run.Failures, "unreadable benchmark line: "+rec.Error())
		}
	}
	if err := br.Err(); err != nil {
		return nil, fmt.Errorf("parse %s: %w", name, err)
	}
	if len(run.Results) == 0 && len(run.Failures) == 0 {
		return nil, errors.New(name + ": no benchmark results")
	}
	return run, nil
}

// benchName is the name as go test prints it (benchfmt drops the "Benchmark" prefix; it is
// put back so a row names the function) without the -GOMAXPROCS suffix go test adds when
// GOMAXPROCS is not 1, so a row names "BenchmarkProbe/discovery" whatever the core count.
func benchName(n benchfmt.Name) string {
	base, parts := n.Parts()
	var sb strings.Builder
	sb.WriteString("Benchmark")
	sb.Write(base)
	for _, p := range parts {
		if len(p) > 0 && p[0] == '-' {
			continue
		}
		sb.Write(p)
	}
	return sb.String()
}
