package main

// The table's rows. Convention: a row is one figure an issue asks for and the baseline it is
// judged against, both read from the same `make bench` run. Each side is a Ref: a benchmark
// (package, name without GOMAXPROCS) and one metric it reports (ns/op or a b.ReportMetric
// unit). A benchmark may report value and baseline on its own line (e.g.
// BenchmarkStatefulSetCreate's p50-webhook-µs and p50-baseline-µs), or the baseline may be a
// sibling sub-benchmark or another benchmark of the same go test run (e.g. ExecInit and
// ExecTrue); new benchmarks should prefer the first form: `<figure>-<unit>` and
// `baseline-<figure>-<unit>` on one line. Ratios are computed here (value / baseline), never
// read from a benchmark, so every row's ratio means the same thing. Unit is the unit both
// sides are in (it decides how values print and which direction is better: see better).

const module = "github.com/petfabric/petfabric/"

// Ref names one metric of one benchmark result.
type Ref struct {
	Pkg    string `json:"pkg"`    // import path below the module, e.g. "pkg/extender"
	Bench  string `json:"bench"`  // full name without GOMAXPROCS, e.g. "BenchmarkProbe/discovery"
	Metric string `json:"metric"` // unit as the benchmark printed it, e.g. "p50-µs" or "ns/op"
}

// Goal is a target an issue states, on the ratio or on the value.
type Goal struct {
	On    string  `json:"on"` // "ratio" or "value"
	Op    string  `json:"op"` // "<", "<=" or ">="
	Limit float64 `json:"limit"`
}

// Spec is one row of the table.
type Spec struct {
	ID       string // stable key for bench-compare
	Figure   string // what is measured
	Baseline string // what it is compared with
	Unit     string // unit of value and baseline: ns, µs, ms, s, req/s, MiB, events …
	Value    Ref
	Base     Ref
	Goal     *Goal
}

func ref(pkg, bench, metric string) Ref { return Ref{Pkg: pkg, Bench: bench, Metric: metric} }

func ratioGoal(op string, limit float64) *Goal { return &Goal{On: "ratio", Op: op, Limit: limit} }
func valueGoal(op string, limit float64) *Goal { return &Goal{On: "value", Op: op, Limit: limit} }

// Specs lists every figure the component issues ask for, in the table's order.
var Specs = func() []Spec {
	const (
		wh   = "pkg/webhook"
		ext  = "pkg/extender"
		e2e  = "test/e2e"
		flex = "cmd/flex"
	)
	specs := []Spec{
		{ID: "webhook-admit-p50", Figure: "webhook handler p50: StatefulSet CREATE, 3 Datera templates × 3 replicas", Baseline: "no-op handler (decode + allow)", Unit: "µs",
			Value: ref(wh, "BenchmarkAdmitStatefulSet/datera-3x3", "µs-p50"), Base: ref(wh, "BenchmarkAdmitNoop", "µs-p50")},
		{ID: "webhook-admit-p99", Figure: "webhook handler p99: StatefulSet CREATE, 3 Datera templates × 3 replicas", Baseline: "no-op handler (decode + allow)", Unit: "µs",
			Value: ref(wh, "BenchmarkAdmitStatefulSet/datera-3x3", "µs-p99"), Base: ref(wh, "BenchmarkAdmitNoop", "µs-p99"), Goal: valueGoal("<", 200)},
		{ID: "sts-create-p50", Figure: "create StatefulSet p50 through the apiserver, webhook makes 3 PVs", Baseline: "same create, webhook not called", Unit: "µs",
			Value: ref(e2e, "BenchmarkStatefulSetCreate", "p50-webhook-µs"), Base: ref(e2e, "BenchmarkStatefulSetCreate", "p50-baseline-µs")},
		{ID: "sts-create-p99", Figure: "create StatefulSet p99 through the apiserver, webhook makes 3 PVs", Baseline: "same create, webhook not called", Unit: "µs",
			Value: ref(e2e, "BenchmarkStatefulSetCreate", "p99-webhook-µs"), Base: ref(e2e, "BenchmarkStatefulSetCreate", "p99-baseline-µs")},
		{ID: "pets100-chart-default", Figure: "100 pets create → all Running on 200 kwok nodes, petfabric as the chart configures it (WaitForFirstConsumer, scheduling gate, extender)", Baseline: "100 hand-made static PVs, no extender", Unit: "s",
			Value: ref("test/e2e/scale", "BenchmarkScale100", "petfabric-running-s"), Base: ref("test/e2e/scale", "BenchmarkScale100", "static-running-s"), Goal: ratioGoal("<=", 1.0)},
		{ID: "pets100-chart-default-failedscheduling", Figure: "100 pets as the chart configures it: FailedScheduling events", Baseline: "hand-made static PVs' events", Unit: "events",
			Value: ref("test/e2e/scale", "BenchmarkScale100", "petfabric-FailedScheduling"), Base: ref("test/e2e/scale", "BenchmarkScale100", "static-FailedScheduling"), Goal: valueGoal("<=", 0)},
		{ID: "pets100-webhook-50nodes", Figure: "100 pets create → all Running, petfabric PVs (50 kwok nodes, no extender)", Baseline: "100 hand-made static PVs, same cluster", Unit: "s",
			Value: ref(e2e, "BenchmarkClaimsBound100", "petfabric-running-s"), Base: ref(e2e, "BenchmarkClaimsBound100", "handmade-running-s"), Goal: ratioGoal("<=", 1.0)},
		{ID: "pets100-immediate-200nodes", Figure: "100 pets create → all Running, petfabric Immediate class (200 kwok nodes, extender)", Baseline: "100 hand-made static PVs, same scheduler + extender", Unit: "s",
			Value: ref(e2e, "BenchmarkBindingModes100", "immediate-running-s"), Base: ref(e2e, "BenchmarkBindingModes100", "handmade-running-s"), Goal: ratioGoal("<=", 1.0)},
		{ID: "pets100-wffc-200nodes", Figure: "100 pets create → all Running, petfabric WaitForFirstConsumer class (200 kwok nodes, extender)", Baseline: "100 hand-made static PVs, same scheduler + extender", Unit: "s",
			Value: ref(e2e, "BenchmarkBindingModes100", "wffc-running-s"), Base: ref(e2e, "BenchmarkBindingModes100", "handmade-running-s"), Goal: ratioGoal("<=", 1.0)},
		{ID: "pets100-wffc-failedscheduling", Figure: "100 pets, WaitForFirstConsumer without the scheduling gate: FailedScheduling events", Baseline: "hand-made static PVs' events", Unit: "events",
			Value: ref(e2e, "BenchmarkBindingModes100", "wffc-FailedScheduling"), Base: ref(e2e, "BenchmarkBindingModes100", "handmade-FailedScheduling")},
		{ID: "pets100-immediate-failedscheduling", Figure: "100 pets, Immediate without the scheduling gate: FailedScheduling events", Baseline: "hand-made static PVs' events", Unit: "events",
			Value: ref(e2e, "BenchmarkBindingModes100", "immediate-FailedScheduling"), Base: ref(e2e, "BenchmarkBindingModes100", "handmade-FailedScheduling")},
		// The shipped configuration gates each pet until its claims are Bound (the webhook's pod
		// hook and the reconcile loop), which is what the 0-events goal is held to.
		{ID: "pets100-wffc-gated-200nodes", Figure: "100 pets create → all Running, WaitForFirstConsumer + scheduling gate (200 kwok nodes, extender)", Baseline: "100 hand-made static PVs, same scheduler + extender", Unit: "s",
			Value: ref(e2e, "BenchmarkBindingModes100", "wffc-gated-running-s"), Base: ref(e2e, "BenchmarkBindingModes100", "handmade-running-s"), Goal: ratioGoal("<=", 1.0)},
		{ID: "pets100-immediate-gated-200nodes", Figure: "100 pets create → all Running, Immediate + scheduling gate (200 kwok nodes, extender)", Baseline: "100 hand-made static PVs, same scheduler + extender", Unit: "s",
			Value: ref(e2e, "BenchmarkBindingModes100", "immediate-gated-running-s"), Base: ref(e2e, "BenchmarkBindingModes100", "handmade-running-s"), Goal: ratioGoal("<=", 1.0)},
		{ID: "pets100-wffc-gated-failedscheduling", Figure: "100 pets, WaitForFirstConsumer + scheduling gate: FailedScheduling events", Baseline: "hand-made static PVs' events", Unit: "events",
			Value: ref(e2e, "BenchmarkBindingModes100", "wffc-gated-FailedScheduling"), Base: ref(e2e, "BenchmarkBindingModes100", "handmade-FailedScheduling"), Goal: valueGoal("<=", 0)},
		{ID: "pets100-immediate-gated-failedscheduling", Figure: "100 pets, Immediate + scheduling gate: FailedScheduling events", Baseline: "hand-made static PVs' events", Unit: "events",
			Value: ref(e2e, "BenchmarkBindingModes100", "immediate-gated-FailedScheduling"), Base: ref(e2e, "BenchmarkBindingModes100", "handmade-FailedScheduling"), Goal: valueGoal("<=", 0)},
	}
	// The extender's rows: filter from BenchmarkRows, prioritize from BenchmarkPrioritizeRows,
	// each next to the encoding/json floor (and, for full Nodes p99, the no-op handler the
	// issue states that goal against). Each filter shape is measured under two loads: "seq",
	// one call at a time as kube-scheduler makes them (and as the issue's own baseline
	// figures were taken), which the goals are read from; and "conc4", four clients at once.
	baseName := map[string]string{"floor-encoding-json": "encoding/json decode+echo floor", "noop": "no-op handler"}
	for _, ld := range []struct {
		load, label string
		judged      bool // the goals are read from this load
	}{{"seq", "one call at a time", true}, {"conc4", "4 concurrent clients", false}} {
		goal := func(g *Goal) *Goal {
			if ld.judged {
				return g
			}
			return nil
		}
		for _, sh := range []struct {
			shape, label string
			fullNodes    bool
			rpsGoal      *Goal
			p99Base      string
			p99Goal      *Goal
		}{
			{"names500", "500 node names", false, ratioGoal(">=", 2), "floor-encoding-json", nil},
			{"names5000", "5,000 node names", false, ratioGoal(">=", 2), "floor-encoding-json", nil},
			{"fullNodes500", "500 full Nodes", true, nil, "noop", ratioGoal("<=", 3)},
			{"fullNodes5000", "5,000 full Nodes", true, nil, "floor-encoding-json", valueGoal("<", 50000)},
		} {
			rows := "BenchmarkRows/" + sh.shape + "/" + ld.load + "/"
			id := "extender-filter-" + sh.shape + "-" + ld.load
			label := sh.label + ", " + ld.label
			specs = append(specs,
				Spec{ID: id + "-rps", Figure: "extender filter req/s, " + label, Baseline: baseName["floor-encoding-json"], Unit: "req/s",
					Value: ref(ext, rows+"petfabric-filter", "req/s"), Base: ref(ext, rows+"floor-encoding-json", "req/s"), Goal: goal(sh.rpsGoal)},
				Spec{ID: id + "-p99", Figure: "extender filter p99, " + label, Baseline: baseName[sh.p99Base], Unit: "µs",
					Value: ref(ext, rows+"petfabric-filter", "p99-µs"), Base: ref(ext, rows+sh.p99Base, "p99-µs"), Goal: goal(sh.p99Goal)})
			// Full Nodes go back to the scheduler: next to the no-op, what writing the body
			// back unparsed costs on the same machine (the echo handler), the floor of any
			// extender in this mode.
			if sh.fullNodes {
				specs = append(specs, Spec{ID: id + "-p99-vs-echo", Figure: "extender filter p99, " + label, Baseline: "echo handler (body written back unparsed)", Unit: "µs",
					Value: ref(ext, rows+"petfabric-filter", "p99-µs"), Base: ref(ext, rows+"echo-body", "p99-µs")})
			}
		}
	}
	// How much this machine's own noise stretches a tail: a fixed computation's p99 next to
	// its p50, measured in the same run as the rows above.
	specs = append(specs, Spec{ID: "machine-noise-p99", Figure: "machine noise: p99 of a fixed pure-CPU loop (no allocation, no I/O)", Baseline: "its p50", Unit: "µs",
		Value: ref(ext, "BenchmarkRows/machine-noise", "p99-µs"), Base: ref(ext, "BenchmarkRows/machine-noise", "p50-µs")})
	for _, sh := range []struct{ shape, label string }{{"names500", "500 node names"}, {"names5000", "5,000 node names"}} {
		rows := "BenchmarkPrioritizeRows/" + sh.shape + "/"
		specs = append(specs,
			Spec{ID: "extender-prioritize-" + sh.shape + "-rps", Figure: "extender prioritize req/s, " + sh.label, Baseline: "encoding/json decode+score-0 floor", Unit: "req/s",
				Value: ref(ext, rows+"petfabric-prioritize", "req/s"), Base: ref(ext, rows+"floor-encoding-json", "req/s")},
			Spec{ID: "extender-prioritize-" + sh.shape + "-p99", Figure: "extender prioritize p99, " + sh.label, Baseline: "encoding/json decode+score-0 floor", Unit: "µs",
				Value: ref(ext, rows+"petfabric-prioritize", "p99-µs"), Base: ref(ext, rows+"floor-encoding-json", "p99-µs")})
	}
	specs = append(specs,
		Spec{ID: "probe-p50", Figure: "iSCSI discovery probe p50 against tgtd (connect, login, SendTargets, logout)", Baseline: "TCP connect to the same portal", Unit: "µs",
			Value: ref("pkg/iscsi", "BenchmarkProbe/discovery", "p50-µs"), Base: ref("pkg/iscsi", "BenchmarkProbe/tcp-connect-baseline", "p50-µs")},
		Spec{ID: "probe-p99", Figure: "iSCSI discovery probe p99 against tgtd", Baseline: "TCP connect to the same portal", Unit: "µs",
			Value: ref("pkg/iscsi", "BenchmarkProbe/discovery", "p99-µs"), Base: ref("pkg/iscsi", "BenchmarkProbe/tcp-connect-baseline", "p99-µs")},
		Spec{ID: "flex-init", Figure: "flex driver `init` (one exec of the built driver)", Baseline: "one exec of /bin/true", Unit: "ns",
			Value: ref(flex, "BenchmarkExecInit", "ns/op"), Base: ref(flex, "BenchmarkExecTrue", "ns/op")},
		Spec{ID: "flex-mount-unmount", Figure: "flex mount + unmount of a formatted volume (two driver execs)", Baseline: "the same Datera calls alone, in-process", Unit: "ns",
			Value: ref(flex, "BenchmarkMountUnmountFormatted", "ns/op"), Base: ref(flex, "BenchmarkDateraCallsOnly", "ns/op")},
		Spec{ID: "recovery-trigger-p99", Figure: "rejected pet placed after its node's report turns good, p99 over 20 (requeue trigger on)", Baseline: "trigger off, p50 (each wait capped at 60 s)", Unit: "s",
			Value: ref("test/e2e/extender", "BenchmarkRecoveryRequeue", "p99-trigger-s"), Base: ref("test/e2e/extender", "BenchmarkRecoveryRequeue", "p50-baseline-s"), Goal: valueGoal("<=", 5)},
		Spec{ID: "kubelet-pod-running-p50", Figure: "kubelet pod create → Running p50, new Datera volume mounted by the driver", Baseline: "same pod without a volume", Unit: "ms",
			Value: ref("test/e2e/kubelet", "BenchmarkKubeletPodRunning", "datera-running-p50-ms"), Base: ref("test/e2e/kubelet", "BenchmarkKubeletPodRunning", "baseline-running-p50-ms")},
		Spec{ID: "extender-rss", Figure: "extender RSS, 5,000 node reports + 50,000 pets cached", Baseline: "extender RSS on the empty cluster", Unit: "MiB",
			Value: ref(e2e, "BenchmarkCacheRSS", "extender-rss-MiB"), Base: ref(e2e, "BenchmarkCacheRSS", "extender-empty-rss-MiB")},
		Spec{ID: "webhook-rss", Figure: "webhook RSS, 5,000 node reports + 50,000 pets cached", Baseline: "webhook RSS on the empty cluster", Unit: "MiB",
			Value: ref(e2e, "BenchmarkCacheRSS", "webhook-rss-MiB"), Base: ref(e2e, "BenchmarkCacheRSS", "webhook-empty-rss-MiB")},
	)
	return specs
}()
