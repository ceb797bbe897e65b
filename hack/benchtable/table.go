package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// SchemaVersion is bench.json's format version; Read refuses any other.
const SchemaVersion = 1

// Report is bench.json: one `make bench` run.
type Report struct {
	Schema   int       `json:"schema"`
	Date     time.Time `json:"date"`
	Commit   string    `json:"commit"`
	Version  string    `json:"version,omitempty"`
	Machine  Machine   `json:"machine"`
	Rows     []Row     `json:"rows"`
	Failures []string  `json:"failures,omitempty"`
	Results  []Result  `json:"results"`
}

// Machine is where the run happened (ratios from different machines compare machines too).
type Machine struct {
	GOOS     string `json:"goos"`
	GOARCH   string `json:"goarch"`
	CPU      string `json:"cpu"`
	NumCPU   int    `json:"numCPU"`
	MemBytes uint64 `json:"memBytes,omitempty"`
	Kernel   string `json:"kernel,omitempty"`
	Go       string `json:"go"`
}

// Row is one figure of the table with its baseline from the same run.
type Row struct {
	ID       string   `json:"id"`
	Figure   string   `json:"figure"`
	Baseline string   `json:"baseline"`
	Unit     string   `json:"unit"`
	Better   string   `json:"better"` // "lower" or "higher"
	Value    *float64 `json:"value"`
	Base     *float64 `json:"baselineValue"`
	Ratio    *float64 `json:"ratio"` // value / baseline; null when either is missing or the baseline is 0
	Goal     *Goal    `json:"goal,omitempty"`
	GoalMet  *bool    `json:"goalMet,omitempty"`
	Missing  string   `json:"missing,omitempty"` // why there is no value or baseline
	ValueRef Ref      `json:"valueRef"`
	BaseRef  Ref      `json:"baselineRef"`
}

// better is the direction of a unit: rates (anything per second) are better higher;
// times, bytes, counts and events lower.
func better(unit string) string {
	if strings.HasSuffix(unit, "/s") {
		return "higher"
	}
	return "lower"
}

// Build turns a run into the rows of specs. A metric some benchmark printed more than once
// (the same benchmark in two go test runs, or -count) is the median of its values.
func Build(run *Run, specs []Spec) []Row {
	values := map[Ref][]float64{}
	for _, r := range run.Results {
		for unit, v := range r.Metrics {
			k := Ref{Pkg: strings.TrimPrefix(r.Pkg, module), Bench: r.Name, Metric: unit}
			values[k] = append(values[k], v)
		}
	}
	rows := make([]Row, 0, len(specs))
	for _, s := range specs {
		row := Row{ID: s.ID, Figure: s.Figure, Baseline: s.Baseline, Unit: s.Unit, Better: better(s.Unit),
			Goal: s.Goal, ValueRef: s.Value, BaseRef: s.Base}
		var missing []string
		for _, side := range []struct {
			ref Ref
			dst **float64
		}{{s.Value, &row.Value}, {s.Base, &row.Base}} {
			vs, ok := values[side.ref]
			if !ok {
				missing = append(missing, fmt.Sprintf("%s %s of %s", side.ref.Bench, side.ref.Metric, side.ref.Pkg))
				continue
			}
			m := median(vs)
			*side.dst = &m
		}
		if len(missing) > 0 {
			row.Missing = "not in this run: " + strings.Join(missing, ", ")
		}
		if row.Value != nil && row.Base != nil && *row.Base != 0 {
			r := *row.Value / *row.Base
			row.Ratio = &r
		}
		if met, ok := s.Goal.met(row); ok {
			row.GoalMet = &met
		}
		rows = append(rows, row)
	}
	return rows
}

func median(vs []float64) float64 {
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// met reports whether row meets g; ok is false when there is no goal or no figure to judge.
func (g *Goal) met(row Row) (met, ok bool) {
	if g == nil {
		return false, false
	}
	var x *float64
	switch g.On {
	case "ratio":
		x = row.Ratio
	case "value":
		x = row.Value
	}
	if x == nil {
		return false, false
	}
	switch g.Op {
	case "<":
		return *x < g.Limit, true
	case "<=":
		return *x <= g.Limit, true
	case ">=":
		return *x >= g.Limit, true
	}
	return false, false
}

// text is the goal as the table prints it: "ratio ≤ 1", "< 200 µs".
func (g *Goal) text(unit string) string {
	if g == nil {
		return ""
	}
	op := map[string]string{"<": "<", "<=": "≤", ">=": "≥"}[g.Op]
	if g.On == "ratio" {
		return fmt.Sprintf("ratio %s %s", op, strconv.FormatFloat(g.Limit, 'g', -1, 64))
	}
	return op + " " + formatValue(g.Limit, unit)
}

// formatValue prints a value in its unit; times are shown in the unit that suits their size.
func formatValue(v float64, unit string) string {
	scale := map[string]float64{"ns": 1, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}
	if f, ok := scale[unit]; ok {
		ns := v * f
		switch {
		case ns >= 1e9:
			return num(ns/1e9) + " s"
		case ns >= 1e6:
			return num(ns/1e6) + " ms"
		case ns >= 1e3:
			return num(ns/1e3) + " µs"
		}
		return num(ns) + " ns"
	}
	return num(v) + " " + unit
}

// num prints three significant digits, without exponent, grouping thousands.
func num(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	if math.Abs(v) >= 1000 {
		s := strconv.FormatFloat(math.Round(v), 'f', 0, 64)
		neg := strings.HasPrefix(s, "-")
		s = strings.TrimPrefix(s, "-")
		for i := len(s) - 3; i > 0; i -= 3 {
			s = s[:i] + "," + s[i:]
		}
		if neg {
			s = "-" + s
		}
		return s
	}
	return strconv.FormatFloat(roundSig(v, 3), 'f', -1, 64)
}

func roundSig(v float64, digits int) float64 {
	if v == 0 {
		return 0
	}
	p := math.Pow(10, float64(digits)-math.Ceil(math.Log10(math.Abs(v))))
	return math.Round(v*p) / p
}

// ratioText prints a ratio with two decimals ("1.00×" for 1.004: a ratio goal of ≤ 1 is
// judged on the exact value, the table must not print it as a round 1), tiny ones with three
// significant digits.
func ratioText(r *float64) string {
	switch {
	case r == nil:
		return "–"
	case math.Abs(*r) < 0.01 || math.Abs(*r) >= 1000:
		return num(*r) + "×"
	}
	return strconv.FormatFloat(*r, 'f', 2, 64) + "×"
}

func optional(v *float64, unit string) string {
	if v == nil {
		return "–"
	}
	return formatValue(*v, unit)
}

// Render prints the table: figure, value, baseline, ratio, goal; then the rows that are
// missing and why, and the failures go test printed.
func Render(w io.Writer, rep *Report) error {
	fmt.Fprintf(w, "petfabric bench %s  commit %s  %s/%s  %s  %d CPUs  %s\n\n", rep.Date.UTC().Format(time.RFC3339), rep.Commit,
		rep.Machine.GOOS, rep.Machine.GOARCH, rep.Machine.CPU, rep.Machine.NumCPU, rep.Machine.Go)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FIGURE\tVALUE\tBASELINE (same run)\t\tRATIO\tGOAL\t")
	for _, r := range rep.Rows {
		goal := r.Goal.text(r.Unit)
		if r.GoalMet != nil {
			goal += map[bool]string{true: " met", false: " MISSED"}[*r.GoalMet]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", r.Figure, optional(r.Value, r.Unit), optional(r.Base, r.Unit), r.Baseline, ratioText(r.Ratio), goal)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range rep.Rows {
		if r.Missing != "" {
			fmt.Fprintf(w, "missing %s: %s\n", r.ID, r.Missing)
		}
	}
	for _, f := range rep.Failures {
		fmt.Fprintf(w, "failure: %s\n", f)
	}
	return nil
}

// Write stores rep as indented JSON.
func Write(path string, rep *Report) error {
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// Read loads a bench.json, refusing another schema version.
func Read(path string) (*Report, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read bench report: %w", err)
	}
	var rep Report
	if err := json.Unmarshal(data, &rep); err != nil {
		return nil, fmt.Errorf("%s is not a bench.json: %w", path, err)
	}
	if rep.Schema != SchemaVersion {
		return nil, fmt.Errorf("%s has schema %d; this benchtable reads schema %d", path, rep.Schema, SchemaVersion)
	}
	return &rep, nil
}
