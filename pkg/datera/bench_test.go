package datera_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/petfabric/petfabric/pkg/datera"
	"github.com/petfabric/petfabric/pkg/datera/fake"
)

// baselineNsPerOp carries the no-fault result to the storm sub-benchmark of the same run, so the
// retry overhead is a ratio of two measurements taken together.
var baselineNsPerOp float64

// BenchmarkRoundTrip measures create → online → access, the work a first mount does, against
// the simulator over loopback HTTP; run it with -cpu 1. "storm503" answers 50% of all requests
// (logins included) with 503 and reports its cost relative to "baseline"; the backoff (1 ms
// initial, 8 ms cap) dominates that cost, which "storm503-nobackoff" shows.
func BenchmarkRoundTrip(b *testing.B) {
	retry := datera.Retry{Initial: time.Millisecond, Max: 8 * time.Millisecond, Attempts: 30}
	b.Run("baseline", func(b *testing.B) {
		nsPerOp := benchRoundTrip(b, retry, 0)
		baselineNsPerOp = nsPerOp
	})
	b.Run("storm503", func(b *testing.B) {
		nsPerOp := benchRoundTrip(b, retry, 0.5)
		if baselineNsPerOp > 0 {
			b.ReportMetric(nsPerOp/baselineNsPerOp, "x-baseline")
		}
	})
	// The same storm with (almost) no backoff isolates the cost of the extra requests from the
	// time spent waiting politely.
	b.Run("storm503-nobackoff", func(b *testing.B) {
		nsPerOp := benchRoundTrip(b, datera.Retry{Initial: time.Microsecond, Max: time.Microsecond, Attempts: 30}, 0.5)
		if baselineNsPerOp > 0 {
			b.ReportMetric(nsPerOp/baselineNsPerOp, "x-baseline")
		}
	})
}

func benchRoundTrip(b *testing.B, retry datera.Retry, errorRate float64) float64 {
	s := newSim(b, fake.Options{Seed: 1})
	c := newClient(b, s, func(cfg *datera.Config) { cfg.Retry = retry })
	ctx := context.Background()
	if errorRate > 0 {
		s.SetFault(fake.AllRoutes, fake.Fault{ErrorRate: errorRate})
	}
	var (
		lat []time.Duration
		i   int
	)
	start := time.Now()
	for b.Loop() {
		name := fmt.Sprintf("pvc-bench-%08d", i)
		i++
		t0 := time.Now()
		if _, err := c.CreateAppInstance(ctx, datera.CreateVolumeRequest{Name: name, SizeGiB: 1, ReplicaCount: 1}); err != nil {
			b.Fatal(err)
		}
		if _, err := c.SetAdminState(ctx, name, datera.Online, false); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Access(ctx, name); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	elapsed := time.Since(start)
	slices.Sort(lat)
	p99 := lat[min(len(lat)-1, len(lat)*99/100)]
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "ops/s")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(s.Requests(fake.AllRoutes))/float64(len(lat)), "http-req/op")
	return float64(elapsed.Nanoseconds()) / float64(len(lat))
}
