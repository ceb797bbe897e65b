package main

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// RegressionThreshold is how much worse a row may get before bench-compare calls it a
// regression: 10%, in the row's direction (a latency 10% higher, a rate 10% lower).
const RegressionThreshold = 0.10

// Delta is one row of two runs side by side.
type Delta struct {
	ID, Figure, Unit, Better string
	Old, New                 *float64
	Change                   *float64 // new / old
	OldRatio, NewRatio       *float64 // each run's value / baseline
	Regressed                bool
	Note                     string
}

// Compare matches the rows of two reports by ID, in the new report's order (rows only the
// old one has come last). A row regresses when its value got worse by more than threshold
// in the direction its unit says is better.
func Compare(old, cur *Report, threshold float64) []Delta {
	oldRows := map[string]Row{}
	for _, r := range old.Rows {
		oldRows[r.ID] = r
	}
	var out []Delta
	seen := map[string]bool{}
	for _, n := range cur.Rows {
		seen[n.ID] = true
		d := Delta{ID: n.ID, Figure: n.Figure, Unit: n.Unit, Better: n.Better, New: n.Value, NewRatio: n.Ratio}
		o, ok := oldRows[n.ID]
		switch {
		case !ok:
			d.Note = "new row"
		case o.Unit != n.Unit:
			d.Note = fmt.Sprintf("unit changed (%s → %s): not compared", o.Unit, n.Unit)
		default:
			d.Old, d.OldRatio = o.Value, o.Ratio
			switch {
			case o.Value == nil && n.Value == nil:
				d.Note = "in neither"
			case o.Value == nil:
				d.Note = "not in OLD"
			case n.Value == nil:
				d.Note = "not in NEW"
			case *o.Value == 0:
				d.Note = "OLD is 0"
			default:
				c := *n.Value / *o.Value
				d.Change = &c
				if n.Better == "higher" {
					d.Regressed = c < 1-threshold
				} else {
					d.Regressed = c > 1+threshold
				}
			}
		}
		out = append(out, d)
	}
	for _, o := range old.Rows {
		if !seen[o.ID] {
			out = append(out, Delta{ID: o.ID, Figure: o.Figure, Unit: o.Unit, Better: o.Better, Old: o.Value, OldRatio: o.Ratio, Note: "not in NEW"})
		}
	}
	return out
}

// RenderCompare prints the deltas and returns how many regressed.
func RenderCompare(w io.Writer, old, cur *Report, deltas []Delta, threshold float64) (int, error) {
	fmt.Fprintf(w, "OLD %s commit %s (%s, %d CPUs)\nNEW %s commit %s (%s, %d CPUs)\n",
		old.Date.UTC().Format("2006-01-02 15:04"), old.Commit, old.Machine.CPU, old.Machine.NumCPU,
		cur.Date.UTC().Format("2006-01-02 15:04"), cur.Commit, cur.Machine.CPU, cur.Machine.NumCPU)
	if old.Machine.CPU != cur.Machine.CPU || old.Machine.NumCPU != cur.Machine.NumCPU {
		fmt.Fprintln(w, "note: different machines; NEW/OLD compares the machines too (the same-run ratios less so)")
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ROW\tOLD\tNEW\tNEW/OLD\tBETTER\tVS BASELINE OLD → NEW\tVERDICT\t")
	regressions := 0
	for _, d := range deltas {
		verdict := d.Note
		if d.Change != nil {
			switch {
			case d.Regressed:
				verdict = fmt.Sprintf("REGRESSION (> %.0f%% worse)", 100*threshold)
				regressions++
			default:
				verdict = "ok"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s → %s\t%s\t\n", d.ID, optional(d.Old, d.Unit), optional(d.New, d.Unit), ratioText(d.Change), d.Better,
			ratioText(d.OldRatio), ratioText(d.NewRatio), verdict)
	}
	if err := tw.Flush(); err != nil {
		return regressions, err
	}
	fmt.Fprintf(w, "\n%d regression(s) over %.0f%%\n", regressions, 100*threshold)
	return regressions, nil
}
