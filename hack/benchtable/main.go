// Command benchtable turns `make bench` output into the one table the issues ask for and
// bench.json, and compares two bench.json files.
//
//	benchtable table -in bench.txt -json bench.json -commit C -version V
//	benchtable compare OLD.json NEW.json
//
// table prints every row of Specs (figure, value, baseline from the same run, ratio, goal)
// and exits 1 when a row is missing or go test reported a failure (the table and the JSON
// are written anyway). compare prints NEW/OLD per row and exits 1 when a row regressed by
// more than 10% in its unit's direction.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// exitError carries the exit status a subcommand chose.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: benchtable table|compare …")
		return 2
	}
	var err error
	switch args[0] {
	case "table":
		err = tableCmd(args[1:], stdout, stderr)
	case "compare":
		err = compareCmd(args[1:], stdout, stderr)
	default:
		err = &exitError{2, fmt.Sprintf("unknown subcommand %q (want table or compare)", args[0])}
	}
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "benchtable:", err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 2
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func tableCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("table", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var in multiFlag
	fs.Var(&in, "in", "go test -bench output (repeatable; - for stdin)")
	jsonOut := fs.String("json", "bench.json", "where to write the report (empty: nowhere)")
	commit := fs.String("commit", "", "commit the run measured, when the log has no \"commit:\" line")
	version := fs.String("version", "", "version string of the run (git describe), when the log has no \"version:\" line")
	allowMissing := fs.Bool("allow-missing", false, "exit 0 when rows are missing (a partial run)")
	if err := fs.Parse(args); err != nil {
		return &exitError{2, err.Error()}
	}
	if len(in) == 0 {
		return &exitError{2, "no -in file"}
	}
	merged := &Run{Config: map[string]string{}, Stamp: map[string]string{"commit": *commit, "version": *version}}
	date := time.Now().UTC()
	for _, name := range in {
		f := os.Stdin
		if name != "-" {
			var err error
			if f, err = os.Open(name); err != nil {
				return fmt.Errorf("open bench output: %w", err)
			}
		}
		r, err := Parse(f, name)
		_ = f.Close()
		if err != nil {
			return err
		}
		merged.Results = append(merged.Results, r.Results...)
		merged.Failures = append(merged.Failures, r.Failures...)
		for k, v := range r.Config {
			merged.Config[k] = v
		}
		for k, v := range r.Stamp {
			merged.Stamp[k] = v
		}
	}
	if d := merged.Stamp["date"]; d != "" {
		t, err := time.Parse(time.RFC3339, d)
		if err != nil {
			return fmt.Errorf("the log's date line: %w", err)
		}
		date = t.UTC()
	}
	rep := &Report{Schema: SchemaVersion, Date: date, Commit: merged.Stamp["commit"], Version: merged.Stamp["version"],
		Machine: machine(merged.Config), Rows: Build(merged, Specs), Failures: merged.Failures, Results: merged.Results}
	fmt.Fprintln(stdout)
	if err := Render(stdout, rep); err != nil {
		return err
	}
	if *jsonOut != "" {
		if err := Write(*jsonOut, rep); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "\nwritten to %s\n", *jsonOut)
	}
	missing := 0
	for _, r := range rep.Rows {
		if r.Missing != "" {
			missing++
		}
	}
	switch {
	case len(rep.Failures) > 0:
		return &exitError{1, fmt.Sprintf("%d failure line(s) in the benchmark output", len(rep.Failures))}
	case missing > 0 && !*allowMissing:
		return &exitError{1, fmt.Sprintf("%d of %d rows missing", missing, len(rep.Rows))}
	}
	return nil
}

func compareCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	threshold := fs.Float64("threshold", RegressionThreshold, "fraction by which a row may get worse")
	if err := fs.Parse(args); err != nil {
		return &exitError{2, err.Error()}
	}
	if fs.NArg() != 2 {
		return &exitError{2, "usage: benchtable compare OLD.json NEW.json"}
	}
	old, err := Read(fs.Arg(0))
	if err != nil {
		return err
	}
	cur, err := Read(fs.Arg(1))
	if err != nil {
		return err
	}
	n, err := RenderCompare(stdout, old, cur, Compare(old, cur, *threshold), *threshold)
	if err != nil {
		return err
	}
	if n > 0 {
		return &exitError{1, fmt.Sprintf("%d row(s) regressed", n)}
	}
	return nil
}

// machine describes this host, preferring what go test printed (goos, goarch, cpu).
func machine(cfg map[string]string) Machine {
	m := Machine{GOOS: cfg["goos"], GOARCH: cfg["goarch"], CPU: cfg["cpu"], NumCPU: runtime.NumCPU(), Go: runtime.Version()}
	if m.GOOS == "" {
		m.GOOS, m.GOARCH = runtime.GOOS, runtime.GOARCH
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
				if kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64); err == nil {
					m.MemBytes = kb << 10
				}
			}
		}
		_ = f.Close()
	}
	return m
}
